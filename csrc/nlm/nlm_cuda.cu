// CUDA cosine NLM (spec §1a), same semantics as nlm_cpu.cc: every output pixel is one thread that
// visits its (2s+1)^2 search window directly (patch dot products summed in place, no running
// sums, so all-zero patches give exactly 0). Planes are first copied reflect-padded into scratch
// so the inner loops read coalesced rows without index math; patch norms are computed once per
// (extended) pixel. The weight (nlm_impl::CosineOf, WeightOf, WeightScale: the float 2^t, the
// floors against 0 / 0, the clamped 1 / h) and the eps check are the CPU path's own code.
// NaN policy (docs/nan_policy.md), as on the CPU: non-finite values are zeroed in the padded copy
// and flagged, and a pixel whose (2R+1)^2 padded window holds a flag is NaN; the rest are computed
// from the zeroed copy.
#include <cmath>

#include "common/cuda_util.cuh"
#include "common/finite.h"
#include "common/reflect.h"
#include "nlm/nlm.h"
#include "nlm/nlm_impl.h"

namespace iapdcnn {

namespace {

struct Geo {
  int64_t planes, H, W, C, r, s, R, EH, EW, NH, NW;
};

using nlm_impl::CosineOf;
using nlm_impl::WeightOf;

// ext[q][i][j] = x[n, refl(i - R), refl(j - R), c] for plane q = n * C + c, pad R = r + s, with
// NaN / Inf replaced by 0 and flagged in bad[q][i][j]; *any_bad = 1 when some value was.
template <typename T>
__global__ void PadKernel(Geo g, const T* __restrict__ x, T* __restrict__ ext,
                          unsigned char* __restrict__ bad, int* __restrict__ any_bad) {
  const int64_t total = g.planes * g.EH * g.EW;
  IAPDCNN_GRID_STRIDE(idx, total) {
    const int64_t j = idx % g.EW, i = idx / g.EW % g.EH, q = idx / g.EW / g.EH;
    const int64_t n = q / g.C, c = q % g.C;
    const int64_t si = ReflectIndex(i - g.R, g.H), sj = ReflectIndex(j - g.R, g.W);
    const T v = x[((n * g.H + si) * g.W + sj) * g.C + c];
    const bool finite = IsFinite(v);
    ext[idx] = finite ? v : T(0);
    bad[idx] = finite ? 0 : 1;
    if (!finite) *any_bad = 1;  // every writer stores the same value
  }
}

// Whether output pixel (i, j) of plane q reads a non-finite value: its padded window, rows
// [i, i + 2R] and columns [j, j + 2R] of ext (every patch of every candidate), holds a flag.
__device__ __forceinline__ bool ReadsNonFinite(const Geo& g, const unsigned char* bad, int64_t q,
                                               int64_t i, int64_t j) {
  const unsigned char* b = bad + (q * g.EH + i) * g.EW + j;
  for (int64_t ky = 0; ky <= 2 * g.R; ++ky) {
    for (int64_t kx = 0; kx <= 2 * g.R; ++kx) {
      if (b[ky * g.EW + kx]) return true;
    }
  }
  return false;
}

// norm[q][i][j] = |P_(i - s, j - s)| over the padded plane (rows/cols [-s, H + s)); the squares
// are summed in double, as on the CPU.
template <typename T>
__global__ void NormKernel(Geo g, const T* __restrict__ ext, T* __restrict__ norm) {
  const int64_t total = g.planes * g.NH * g.NW;
  IAPDCNN_GRID_STRIDE(idx, total) {
    const int64_t j = idx % g.NW, i = idx / g.NW % g.NH, q = idx / g.NW / g.NH;
    // Patch centre (i - s, j - s) sits at ext row i - s + R = i + r; its patch starts r earlier.
    const T* base = ext + (q * g.EH + i) * g.EW + j;
    double acc = 0.0;
    for (int64_t ky = 0; ky <= 2 * g.r; ++ky) {
      for (int64_t kx = 0; kx <= 2 * g.r; ++kx) {
        const double v = static_cast<double>(base[ky * g.EW + kx]);
        acc += v * v;
      }
    }
    norm[idx] = static_cast<T>(sqrt(acc));
  }
}

template <typename T>
__global__ void NlmKernel(Geo g, const T* __restrict__ ext, const T* __restrict__ norm,
                          const unsigned char* __restrict__ bad, const int* __restrict__ any_bad,
                          T scale, T eps, T* __restrict__ out) {
  const int64_t total = g.planes * g.H * g.W;
  IAPDCNN_GRID_STRIDE(idx, total) {
    const int64_t j = idx % g.W, i = idx / g.W % g.H, q = idx / g.W / g.H;
    const int64_t n = q / g.C, c = q % g.C;
    T* o = out + ((n * g.H + i) * g.W + j) * g.C + c;
    if (*any_bad && ReadsNonFinite(g, bad, q, i, j)) {
      *o = static_cast<T>(QuietNaN());
      continue;
    }
    const T* plane = ext + q * g.EH * g.EW;
    const T* nplane = norm + q * g.NH * g.NW;
    // Top-left of pixel a's patch in ext coordinates.
    const T* pa = plane + (i + g.R - g.r) * g.EW + (j + g.R - g.r);
    const T na = nplane[(i + g.s) * g.NW + (j + g.s)];
    // d = 0: cos(a, a) = |P_a|^2 / (|P_a|^2 + eps), as on the CPU.
    const T n2 = na * na;
    T w = WeightOf(n2 / (n2 + eps), scale);
    T num = w * plane[(i + g.R) * g.EW + (j + g.R)];
    T den = w;
    for (int64_t dy = -g.s; dy <= g.s; ++dy) {
      for (int64_t dx = -g.s; dx <= g.s; ++dx) {
        if (dy == 0 && dx == 0) continue;
        const T* pb = pa + dy * g.EW + dx;
        T dot = T(0);
        for (int64_t ky = 0; ky <= 2 * g.r; ++ky) {
          for (int64_t kx = 0; kx <= 2 * g.r; ++kx) {
            dot += pa[ky * g.EW + kx] * pb[ky * g.EW + kx];
          }
        }
        const T nb = nplane[(i + dy + g.s) * g.NW + (j + dx + g.s)];
        // spec §1a: cos = <P_a, P_b> / (|P_a| |P_b| + eps), w = exp(-(1 - cos) / h).
        w = WeightOf(CosineOf(dot, na * nb, eps), scale);
        num += w * plane[(i + dy + g.R) * g.EW + (j + dx + g.R)];
        den += w;
      }
    }
    *o = num / den;  // den >= w(a, a) > 0 (WeightOf's floors)
  }
}

}  // namespace

template <typename T>
Status CosineNlmCuda(const CosineNlmParams& p, const T* x, T* out, cudaStream_t stream,
                     GpuScratch* scratch) {
  Geo g;
  g.planes = p.batch * p.channels;
  g.H = p.height;
  g.W = p.width;
  g.C = p.channels;
  g.r = p.patch_radius;
  g.s = p.search_radius;
  g.R = g.r + g.s;
  g.EH = g.H + 2 * g.R;
  g.EW = g.W + 2 * g.R;
  g.NH = g.H + 2 * g.s;
  g.NW = g.W + 2 * g.s;
  IAPDCNN_RETURN_IF_ERROR(CheckCosineNlmEpsFor<T>(p));
  if (g.planes == 0 || g.H == 0 || g.W == 0) return Status::OK();
  const int64_t n_ext = g.planes * g.EH * g.EW, n_norm = g.planes * g.NH * g.NW;
  const int64_t n_out = g.planes * g.H * g.W;
  cuda::Carver plan;
  plan.Take<T>(n_ext);
  plan.Take<T>(n_norm);
  plan.Take<unsigned char>(n_ext);
  plan.Take<int>(1);
  cuda::Scratch mem(scratch, stream);
  void* raw = nullptr;
  IAPDCNN_RETURN_IF_ERROR(mem.Get(plan.bytes(), &raw));
  cuda::Carver carve(static_cast<char*>(raw));
  T* ext = carve.Take<T>(n_ext);
  T* norm = carve.Take<T>(n_norm);
  unsigned char* bad = carve.Take<unsigned char>(n_ext);
  int* any_bad = carve.Take<int>(1);
  IAPDCNN_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(any_bad, 0, sizeof(int), stream));
  PadKernel<T><<<cuda::Blocks(n_ext), cuda::kThreads, 0, stream>>>(g, x, ext, bad, any_bad);
  IAPDCNN_CUDA_CHECK_LAUNCH("cosine_nlm pad");
  NormKernel<T><<<cuda::Blocks(n_norm), cuda::kThreads, 0, stream>>>(g, ext, norm);
  IAPDCNN_CUDA_CHECK_LAUNCH("cosine_nlm norms");
  NlmKernel<T><<<cuda::Blocks(n_out), cuda::kThreads, 0, stream>>>(
      g, ext, norm, bad, any_bad, nlm_impl::WeightScale<T>(p.h), static_cast<T>(p.eps), out);
  IAPDCNN_CUDA_CHECK_LAUNCH("cosine_nlm");
  return Status::OK();
}

template Status CosineNlmCuda<float>(const CosineNlmParams&, const float*, float*, cudaStream_t,
                                     GpuScratch*);
template Status CosineNlmCuda<double>(const CosineNlmParams&, const double*, double*, cudaStream_t,
                                      GpuScratch*);

}  // namespace iapdcnn
