// Per-element index math of the Im2col convolution (spec §2b), shared by the CPU path and a later
// CUDA path: output sizes and padding as tf.nn.conv2d computes them, and the input coordinate an
// im2col column reads.
#pragma once

#include <cstdint>

#include "common/host_device.h"

namespace iapdcnn {
namespace conv_impl {

// Dilated kernel extent: (k - 1) * dilation + 1.
IAPDCNN_HD int64_t EffectiveKernel(int64_t k, int64_t dilation) { return (k - 1) * dilation + 1; }

// TensorFlow's GetWindowedOutputSize: (in + pads - k_eff + stride) / stride with C++ truncation,
// so a window that does not fit gives 0 rows (or a negative size, which the caller rejects).
IAPDCNN_HD int64_t OutputSize(int64_t in, int64_t k_eff, int64_t stride, int64_t pad_before,
                              int64_t pad_after) {
  return (in + pad_before + pad_after - k_eff + stride) / stride;
}

// SAME: out = ceil(in / stride); the padding that achieves it, the extra row going after.
IAPDCNN_HD void SamePadding(int64_t in, int64_t k_eff, int64_t stride, int64_t* pad_before,
                            int64_t* pad_after) {
  const int64_t out = (in + stride - 1) / stride;
  int64_t total = (out - 1) * stride + k_eff - in;
  if (total < 0) total = 0;
  *pad_before = total / 2;
  *pad_after = total - total / 2;
}

// Input row (or column) read by output position o through kernel tap kk.
IAPDCNN_HD int64_t InputCoord(int64_t o, int64_t stride, int64_t pad_before, int64_t kk,
                              int64_t dilation) {
  return o * stride - pad_before + kk * dilation;
}

}  // namespace conv_impl
}  // namespace iapdcnn
