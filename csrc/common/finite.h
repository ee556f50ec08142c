// The NaN policy's one test (docs/nan_policy.md): whether a value is finite, usable from the CPU
// (.cc) and CUDA (.cu) paths alike, so both decide "non-finite" by the same rule.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "common/host_device.h"

namespace iapdcnn {

IAPDCNN_HD bool IsFinite(double v) {
#if defined(__CUDA_ARCH__)
  return ::isfinite(v);
#else
  return std::isfinite(v);
#endif
}

IAPDCNN_HD bool IsFinite(float v) {
#if defined(__CUDA_ARCH__)
  return ::isfinite(v);
#else
  return std::isfinite(v);
#endif
}

// The NaN that non-finite inputs turn into.
IAPDCNN_HD double QuietNaN() {
#if defined(__CUDA_ARCH__)
  return __longlong_as_double(0x7ff8000000000000LL);
#else
  return std::numeric_limits<double>::quiet_NaN();
#endif
}

// Whether v[0 .. n) are all finite (host code; T float or double).
template <typename T>
inline bool AllFinite(const T* v, int64_t n) {
  bool ok = true;
  for (int64_t i = 0; i < n; ++i) ok = ok && IsFinite(v[i]);
  return ok;
}

}  // namespace iapdcnn
