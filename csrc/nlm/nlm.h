// Cosine-similarity non-local means (spec §1a), per channel of NHWC images:
//   cos(a,b) = <P_a, P_b> / (|P_a| |P_b| + eps),  w = exp(-(1 - cos) / h),
//   out(a)   = sum_b w(a,b) g(b) / sum_b w(a,b)   over the (2s+1)^2 search window,
// with reflect borders. Cost O(H W (2s+1)^2): for each offset the patch dot products of all
// pixels are one box filter of a product image, computed with running sums (fast NLM).
#pragma once

#include <cstdint>
#include <vector>

#include "common/gpu.h"
#include "common/parallel.h"
#include "common/status.h"

namespace iapdcnn {

// The arguments' defaults: the one place they are written. The TensorFlow op's attribute
// defaults (tfops), the _C keyword defaults and _C.defaults, which the Python wrappers read,
// all come from here.
struct CosineNlmDefaults {
  static constexpr int64_t patch_radius = 2;
  static constexpr int64_t search_radius = 5;
  static constexpr double h = 0.1;
  static constexpr double eps = 1e-8;
};

// x and out: [batch, height, width, channels], row-major (NHWC).
struct CosineNlmParams {
  int64_t batch = 0;
  int64_t height = 0;
  int64_t width = 0;
  int64_t channels = 0;
  int64_t patch_radius = CosineNlmDefaults::patch_radius;    // r: patches are (2r+1)^2
  int64_t search_radius = CosineNlmDefaults::search_radius;  // s: search windows are (2s+1)^2
  double h = CosineNlmDefaults::h;                           // filtering parameter, > 0
  double eps = CosineNlmDefaults::eps;  // keeps cos defined for all-zero patches (cos = 0 there)
};

// The scalar rules alone (ValidateCosineNlm applies them too): for callers that check the
// arguments before any image exists (the Keras layer's constructor, through _C).
Status ValidateCosineNlmArgs(int64_t patch_radius, int64_t search_radius, double h, double eps);

// Checks x's shape ([N, H, W, C]) and the scalar arguments, fills p. Messages name the argument.
Status ValidateCosineNlm(const std::vector<int64_t>& x_shape, int64_t patch_radius,
                         int64_t search_radius, double h, double eps, CosineNlmParams* p);

// Whether eps survives the cast to x's dtype T (float or double): all-zero patches would give
// 0 / 0 otherwise. Checked by the CPU and CUDA kernels, which know T.
template <typename T>
Status CheckCosineNlmEpsFor(const CosineNlmParams& p);

// T is float or double. float images: float sums (|<P_a, P_b>| clamped to |P_a| |P_b|, all-zero
// patches exact) and a vectorised 2^t (relative error ~2e-7); double: double sums and libm exp.
// Results do not depend on the batch composition or the number of threads.
template <typename T>
Status CosineNlmCpu(const CosineNlmParams& p, const T* x, T* out, const ParallelFor& pf);

// CUDA entry point (nlm_cuda.cu, built with IAPDCNN_WITH_CUDA): the same on device pointers,
// enqueued on `stream`; scratch from `scratch` or the stream's memory pool when null.
template <typename T>
Status CosineNlmCuda(const CosineNlmParams& p, const T* x, T* out, cudaStream_t stream,
                     GpuScratch* scratch = nullptr);

}  // namespace iapdcnn
