// CUDA MDCV distances (spec §2a), the same semantics as mdcv_cpu.cc. On the device: the NaN
// policy's check (the first non-finite weight in memory order, as the CPU reports it), the
// centring (one warp per coordinate, the constant-coordinate rule of the CPU path), the squared
// norms and the Gram product (cuBLAS, float64, the O(n d k) part). On the host: the k x k solve of
// mdcv_solve.cc, k = min(n, d), shared with the CPU path. The centred filters stay in the filters'
// own layout, [d, n] row-major, which is Xc [n, d] in column-major order for cuBLAS.
#include <algorithm>
#include <string>
#include <vector>

#include "common/cublas_lazy.h"
#include "common/cuda_util.cuh"
#include "common/guard.h"
#include "mdcv/mdcv.h"
#include "mdcv/mdcv_impl.h"

namespace iapdcnn {

namespace {

constexpr int kWarp = 32;

// first[0] = smallest flat index of a non-finite filters value (total when none).
template <typename T>
__global__ void FirstNonFiniteKernel(const T* __restrict__ filters, int64_t total,
                                     unsigned long long* __restrict__ first) {
  IAPDCNN_GRID_STRIDE(i, total) {
    if (!isfinite(static_cast<double>(filters[i]))) {
      atomicMin(first, static_cast<unsigned long long>(i));
    }
  }
}

// One warp per coordinate j (a row of filters [d, n]): mu_j, center[j] = mu_j, and the centred
// row u[j, :] = filters[j, :] - mu_j. A coordinate all filters share is exactly their mean.
template <typename T>
__global__ void CentreKernel(const T* __restrict__ filters, int64_t n, int64_t d,
                             double* __restrict__ u, T* __restrict__ center) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / kWarp);
  for (int64_t j = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp; j < d;
       j += warps) {
    const T* row = filters + j * n;
    const T first = row[0];
    double s = 0.0;
    bool constant = true;
    for (int64_t i = lane; i < n; i += kWarp) {
      s += static_cast<double>(row[i]);
      constant = constant && row[i] == first;
    }
    for (int off = kWarp / 2; off > 0; off /= 2) s += __shfl_xor_sync(0xffffffffu, s, off);
    constant = __all_sync(0xffffffffu, constant);
    const double mu = constant ? static_cast<double>(first) : s / static_cast<double>(n);
    for (int64_t i = lane; i < n; i += kWarp) u[j * n + i] = static_cast<double>(row[i]) - mu;
    if (lane == 0) center[j] = static_cast<T>(mu);
  }
}

// r[i] = |x_i - mu|^2: column i of u [d, n].
__global__ void SquaredNormKernel(const double* __restrict__ u, int64_t n, int64_t d,
                                  double* __restrict__ r) {
  IAPDCNN_GRID_STRIDE(i, n) {
    double s = 0.0;
    for (int64_t j = 0; j < d; ++j) s += u[j * n + i] * u[j * n + i];
    r[i] = s;
  }
}

// The first non-finite weight as the CPU's error, or OK. Synchronises the stream.
template <typename T>
Status CheckFinite(const MdcvParams& p, const T* filters, unsigned long long* first,
                   cudaStream_t stream) {
  const int64_t total = p.n() * p.d();
  int64_t bad = total;
  T value{};
  IAPDCNN_RETURN_IF_ERROR(cuda::FirstFlagged(
      total, filters, first, stream, "mdcv finite check",
      [&] {
        FirstNonFiniteKernel<T>
            <<<cuda::Blocks(total), cuda::kThreads, 0, stream>>>(filters, total, first);
      },
      &bad, &value));
  if (bad == total) return Status::OK();
  return MdcvNonFiniteError(bad, p.n(), static_cast<double>(value));
}

}  // namespace

template <typename T>
Status MdcvDistancesCuda(const MdcvParams& p, const T* filters, T* distances, T* center,
                         double* shrinkage_used, cudaStream_t stream, const ParallelFor& host_pf,
                         GpuScratch* scratch) {
  // GuardKernel: the host vectors below throw std::bad_alloc on huge layers; as a Status.
  return GuardKernel("mdcv_distances", host_pf, [&](const ParallelFor& pf) -> Status {
    const int64_t n = p.n(), d = p.d(), k = std::min(n, d);
    const bool gram = n <= d;
    cuda::Carver plan;
    plan.Take<unsigned long long>(1);
    plan.Take<double>(n * d);
    plan.Take<double>(n);
    plan.Take<double>(k * k);
    cuda::Scratch mem(scratch, stream);
    void* raw = nullptr;
    IAPDCNN_RETURN_IF_ERROR(mem.Get(plan.bytes(), &raw));
    cuda::Carver carve(static_cast<char*>(raw));
    auto* first = carve.Take<unsigned long long>(1);
    double* u = carve.Take<double>(n * d);  // [d, n] row-major = Xc [n, d] column-major
    double* r = carve.Take<double>(n);
    double* gram_k = carve.Take<double>(k * k);

    IAPDCNN_RETURN_IF_ERROR(CheckFinite(p, filters, first, stream));
    CentreKernel<T>
        <<<cuda::Blocks(d * kWarp), cuda::kThreads, 0, stream>>>(filters, n, d, u, center);
    IAPDCNN_CUDA_CHECK_LAUNCH("mdcv centre");
    SquaredNormKernel<<<cuda::Blocks(n), cuda::kThreads, 0, stream>>>(u, n, d, r);
    IAPDCNN_CUDA_CHECK_LAUNCH("mdcv squared norms");
    // Column-major Xc [n, d] with ld n: K = Xc Xc^T [n, n] (n <= d) or Xc^T Xc [d, d].
    const double one = 1.0, zero = 0.0;
    IAPDCNN_RETURN_IF_ERROR(cublas::GemmStridedBatched(
        stream, gram ? cublas::kN : cublas::kT, gram ? cublas::kT : cublas::kN, k, k, gram ? d : n,
        &one, u, cublas::kR64F, n, 0, u, cublas::kR64F, n, 0, &zero, gram_k, cublas::kR64F, k, 0, 1,
        cublas::kCompute64F));

    std::vector<double> host_r(static_cast<size_t>(n)), host_k(static_cast<size_t>(k * k));
    IAPDCNN_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(host_r.data(), r, n * sizeof(double), cudaMemcpyDeviceToHost, stream));
    IAPDCNN_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host_k.data(), gram_k, k * k * sizeof(double),
                                                 cudaMemcpyDeviceToHost, stream));
    std::vector<double> u_dn, host_u;  // host_u: [n, d] row-major, for the solve when d < n
    if (!gram) {
      u_dn.resize(static_cast<size_t>(n * d));
      IAPDCNN_CUDA_RETURN_IF_ERROR(
          cudaMemcpyAsync(u_dn.data(), u, n * d * sizeof(double), cudaMemcpyDeviceToHost, stream));
    }
    IAPDCNN_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
    if (!gram) {
      host_u.resize(u_dn.size());
      for (int64_t j = 0; j < d; ++j) {
        for (int64_t i = 0; i < n; ++i) host_u[i * d + j] = u_dn[j * n + i];
      }
    }
    std::vector<double> dist(static_cast<size_t>(n));
    IAPDCNN_RETURN_IF_ERROR(MdcvSolveHost(p, host_r.data(), host_k.data(),
                                          gram ? nullptr : host_u.data(), shrinkage_used,
                                          dist.data(), pf));
    std::vector<T> out(dist.begin(), dist.end());
    IAPDCNN_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(distances, out.data(), n * sizeof(T), cudaMemcpyHostToDevice, stream));
    // `out` is freed on return: the copy must have finished.
    IAPDCNN_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
    return Status::OK();
  });
}

template Status MdcvDistancesCuda<float>(const MdcvParams&, const float*, float*, float*, double*,
                                         cudaStream_t, const ParallelFor&, GpuScratch*);
template Status MdcvDistancesCuda<double>(const MdcvParams&, const double*, double*, double*,
                                          double*, cudaStream_t, const ParallelFor&, GpuScratch*);

}  // namespace iapdcnn
