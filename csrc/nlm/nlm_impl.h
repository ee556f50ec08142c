// Per-element math of the cosine NLM kernel (SPEC 1a), shared by the CPU and CUDA paths.
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

// exp for float without a libm call, so that the weight loop vectorises: Cephes' expf
// polynomial on a range-reduced argument (relative error ~1e-7 on [-87, 88]).
IAPDCNN_NLM_HD float FastExp(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  // Round to nearest via truncation of a positive number (x >= -87 keeps it positive).
  const int32_t n = static_cast<int32_t>(x * 1.44269504088896341f + 128.5f) - 128;
  const float nf = static_cast<float>(n);
  float r = x - nf * 0.693359375f;
  r = r + nf * 2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.0f;
  const int32_t bits = (n + 127) << 23;  // 2^n
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return y * scale;
}

}  // namespace nlm_impl
}  // namespace iapdcnn
