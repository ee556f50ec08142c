// Per-element math of the cosine NLM kernel (spec §1a), shared by the CPU and CUDA paths.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "common/host_device.h"

// The CPU hot loops are target_clones'd; GCC will not inline a plain inline function into the
// AVX-512/AVX2 clones (a call per element, no vectorisation), so force it.
#if defined(__CUDACC__)
#define IAPDCNN_NLM_HD IAPDCNN_HD
#else
#define IAPDCNN_NLM_HD inline __attribute__((always_inline))
#endif

namespace iapdcnn {
namespace nlm_impl {

// 2^t for float without a libm call, so that the weight loop vectorises. t = n + f with n an
// integer (round to nearest by the 1.5 * 2^23 trick) and |f| <= 1/2; 2^f is a degree-5
// polynomial (Chebyshev fit on [-1/2, 1/2], relative error <= 1.1e-7, about 2e-7 with float
// rounding), and 2^n is added into the exponent bits. t is clamped to [-125, 126], which keeps the
// result a normal float (2^-125 ~ 2.4e-38; exp underflows to that instead of 0).
IAPDCNN_NLM_HD float FastExp2(float t) {
  t = t < -125.0f ? -125.0f : (t > 126.0f ? 126.0f : t);
  const float k = t + 12582912.0f;  // 1.5 * 2^23: the rounded t lands in k's low mantissa bits
  const float f = t - (k - 12582912.0f);
  float y = 1.3400433e-3f;
  y = y * f + 9.6760373e-3f;
  y = y * f + 5.5503272e-2f;
  y = y * f + 2.4022107e-1f;
  y = y * f + 6.9314718e-1f;
  y = y * f + 1.0000001f;
  int32_t kb, yb;
  std::memcpy(&kb, &k, sizeof(kb));
  std::memcpy(&yb, &y, sizeof(yb));
  yb += (kb - 0x4B400000) * (1 << 23);  // 0x4B400000 = bits of 1.5 * 2^23: adds n to the exponent
  std::memcpy(&y, &yb, sizeof(y));
  return y;
}

// exp(x) = 2^(x log2 e), same accuracy as FastExp2 plus the rounding of the product.
IAPDCNN_NLM_HD float FastExp(float x) { return FastExp2(x * 1.44269504088896341f); }

// spec §1a's cos = <P_a, P_b> / (|P_a| |P_b| + eps), from dot = <P_a, P_b> and q = |P_a| |P_b|.
// Cauchy-Schwarz: exact arithmetic has |dot| <= q; rounding must not break it (nor leave a
// non-zero dot product on an all-zero patch). A NaN dot stays NaN.
template <typename T>
IAPDCNN_NLM_HD T CosineOf(T dot, T q, T eps) {
  dot = dot < -q ? -q : (dot > q ? q : dot);  // not std::min: see IAPDCNN_NLM_HD
  return dot / (q + eps);
}

// spec §1a's weight exp(-(1 - cos) / h) = exp((cos - 1) * scale), with scale = WeightScale(h):
// float folds log2(e) into the scale and takes the vectorised 2^t (floored at 2^-125); double
// takes libm's exp with the exponent floored at -700 (exp(-700) ~ 1e-304, a normal double). So
// a window whose weights would all underflow to 0 (tiny h, or all-zero patches with h < 1/745)
// averages its candidates instead of returning 0 / 0 = NaN (docs/nan_policy.md). A NaN exponent
// stays NaN (the floor is not max(NaN, -700)).
IAPDCNN_NLM_HD float WeightOf(float cos, float scale) { return FastExp2((cos - 1.0f) * scale); }
IAPDCNN_NLM_HD double WeightOf(double cos, double scale) {
  const double t = (cos - 1.0) * scale;
#if defined(__CUDA_ARCH__)
  return ::exp(t < -700.0 ? -700.0 : t);
#else
  return std::exp(t < -700.0 ? -700.0 : t);
#endif
}

// 1 / h (times log2(e) for float), clamped to T's largest finite value: a subnormal h would
// make it inf, and (cos - 1) * inf is NaN where cos == 1. Computed on the host, once per call.
template <typename T>
inline T WeightScale(double h) {
  const double s = sizeof(T) == sizeof(float) ? 1.4426950408889634 / h : 1.0 / h;
  const double top = static_cast<double>(std::numeric_limits<T>::max());
  return static_cast<T>(s < top ? s : top);
}

}  // namespace nlm_impl
}  // namespace iapdcnn
