// Reflect-border index mapping shared by the image kernels (cosine NLM, Marr-Hildreth):
// numpy.pad(mode="reflect") semantics, d c b | a b c d | c b a, repeated for pads wider than the
// image (the period is 2 (n - 1)).
#pragma once

#include <cstdint>

#include "common/host_device.h"

namespace iapdcnn {

IAPDCNN_HD int64_t ReflectIndex(int64_t i, int64_t n) {
  if (n == 1) return 0;
  const int64_t period = 2 * (n - 1);
  i %= period;
  if (i < 0) i += period;
  return i < n ? i : period - i;
}

}  // namespace iapdcnn
