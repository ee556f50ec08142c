// CUDA Marr-Hildreth edges (spec §1b), same semantics as marr_hildreth_cpu.cc: one pass computes
// the Laplacian and the Sobel magnitude per pixel (in double, in the CPU's operation order) and
// each plane's maximum magnitude; a second pass applies the threshold and the zero-crossing test
// of marr_hildreth_impl.h (shared with the CPU path), with the NaN policy's rules from there too:
// which magnitudes count toward the maximum, and NaN where a decision reads a non-finite value.
// Borders reflect, as on the CPU.
#include "common/cuda_util.cuh"
#include "common/reflect.h"
#include "marr_hildreth/marr_hildreth.h"
#include "marr_hildreth/marr_hildreth_impl.h"

namespace iapdcnn {

namespace {

struct Geo {
  int64_t planes, H, W, C;
};

template <typename T>
__device__ __forceinline__ double At(const Geo& g, const T* x, int64_t q, int64_t i, int64_t j) {
  const int64_t n = q / g.C, c = q % g.C;
  return static_cast<double>(
      x[((n * g.H + ReflectIndex(i, g.H)) * g.W + ReflectIndex(j, g.W)) * g.C + c]);
}

template <typename T>
__global__ void LapMagKernel(Geo g, const T* __restrict__ x, int laplacian,
                             double* __restrict__ lap, double* __restrict__ mag,
                             unsigned long long* __restrict__ max_bits) {
  const int64_t total = g.planes * g.H * g.W;
  IAPDCNN_GRID_STRIDE(idx, total) {
    const int64_t j = idx % g.W, i = idx / g.W % g.H, q = idx / g.W / g.H;
    double up[3], mid[3], dn[3];  // columns j - 1, j, j + 1
    for (int k = 0; k < 3; ++k) {
      up[k] = At(g, x, q, i - 1, j - 1 + k);
      mid[k] = At(g, x, q, i, j - 1 + k);
      dn[k] = At(g, x, q, i + 1, j - 1 + k);
    }
    const double cross = up[1] + dn[1] + mid[0] + mid[2];
    const double diag = up[0] + up[2] + dn[0] + dn[2];
    lap[idx] = laplacian == 4 ? cross - 4.0 * mid[1] : cross + diag - 8.0 * mid[1];
    const double gx = (up[2] + 2.0 * mid[2] + dn[2]) - (up[0] + 2.0 * mid[0] + dn[0]);
    const double gy = (dn[0] + 2.0 * dn[1] + dn[2]) - (up[0] + 2.0 * up[1] + up[2]);
    const double m = sqrt(gx * gx + gy * gy);
    mag[idx] = m;
    // m >= 0, so its bit pattern orders like its value; NaN and Inf do not count (NaN policy).
    if (marr_hildreth_impl::CountsTowardMax(m)) {
      atomicMax(max_bits + q, static_cast<unsigned long long>(__double_as_longlong(m)));
    }
  }
}

template <typename T>
__global__ void EdgeKernel(Geo g, const T* __restrict__ x, const double* __restrict__ lap,
                           const double* __restrict__ mag,
                           const unsigned long long* __restrict__ max_bits, double threshold,
                           bool relative, int mode, T* __restrict__ out) {
  const int64_t total = g.planes * g.H * g.W;
  IAPDCNN_GRID_STRIDE(idx, total) {
    const int64_t j = idx % g.W, i = idx / g.W % g.H, q = idx / g.W / g.H;
    const double* L = lap + q * g.H * g.W;
    auto l = [&](int64_t di, int64_t dj) {
      return L[ReflectIndex(i + di, g.H) * g.W + ReflectIndex(j + dj, g.W)];
    };
    // Opposite pairs: left/right, up/down, the two diagonals (the CPU's order).
    const double nb[8] = {l(0, -1),  l(0, 1), l(-1, 0), l(1, 0),
                          l(-1, -1), l(1, 1), l(-1, 1), l(1, -1)};
    const double m = mag[idx];
    const double t = relative
                         ? threshold * __longlong_as_double(static_cast<long long>(max_bits[q]))
                         : threshold;
    const double v = mode == static_cast<int>(EdgeMode::kMasked)   ? At(g, x, q, i, j)
                     : mode == static_cast<int>(EdgeMode::kBinary) ? 1.0
                                                                   : m;
    const int64_t n = q / g.C, c = q % g.C;
    // NaN where the decision reads a non-finite value (the NaN policy, shared with the CPU).
    out[((n * g.H + i) * g.W + j) * g.C + c] =
        static_cast<T>(marr_hildreth_impl::EdgeOutput(m, t, L[i * g.W + j], nb, v));
  }
}

}  // namespace

template <typename T>
Status MarrHildrethCuda(const MarrHildrethParams& p, const T* x, T* out, cudaStream_t stream,
                        GpuScratch* scratch) {
  const Geo g{p.batch * p.channels, p.height, p.width, p.channels};
  const int64_t total = g.planes * g.H * g.W;
  if (total == 0) return Status::OK();
  cuda::Carver plan;
  plan.Take<double>(total);
  plan.Take<double>(total);
  plan.Take<unsigned long long>(g.planes);
  cuda::Scratch mem(scratch, stream);
  void* raw = nullptr;
  IAPDCNN_RETURN_IF_ERROR(mem.Get(plan.bytes(), &raw));
  cuda::Carver carve(static_cast<char*>(raw));
  double* lap = carve.Take<double>(total);
  double* mag = carve.Take<double>(total);
  unsigned long long* max_bits = carve.Take<unsigned long long>(g.planes);
  IAPDCNN_CUDA_RETURN_IF_ERROR(
      cudaMemsetAsync(max_bits, 0, g.planes * sizeof(unsigned long long), stream));
  LapMagKernel<T><<<cuda::Blocks(total), cuda::kThreads, 0, stream>>>(g, x, int(p.laplacian), lap,
                                                                      mag, max_bits);
  IAPDCNN_CUDA_CHECK_LAUNCH("marr_hildreth laplacian");
  EdgeKernel<T><<<cuda::Blocks(total), cuda::kThreads, 0, stream>>>(
      g, x, lap, mag, max_bits, p.threshold, p.relative, static_cast<int>(p.mode), out);
  IAPDCNN_CUDA_CHECK_LAUNCH("marr_hildreth edges");
  return Status::OK();
}

template Status MarrHildrethCuda<float>(const MarrHildrethParams&, const float*, float*,
                                        cudaStream_t, GpuScratch*);
template Status MarrHildrethCuda<double>(const MarrHildrethParams&, const double*, double*,
                                         cudaStream_t, GpuScratch*);

}  // namespace iapdcnn
