// Per-element math of the cosine NLM kernel (spec §1a), shared by the CPU and CUDA paths.
#pragma once

#include <cstdint>
#include <cstring>

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

}  // namespace nlm_impl
}  // namespace iapdcnn
