// Per-element index math of the Im2col convolution (spec §2b), shared by the CPU and CUDA paths:
// the dilated kernel extent and the input coordinate an im2col column reads. Output sizes and
// padding are ValidateIm2colConv2D's (conv.cc), computed once into Im2colConv2DParams.
#pragma once

#include <cstdint>

#include "common/host_device.h"

namespace iapdcnn {
namespace conv_impl {

// Dilated kernel extent: (k - 1) * dilation + 1.
IAPDCNN_HD int64_t EffectiveKernel(int64_t k, int64_t dilation) { return (k - 1) * dilation + 1; }

// Input row (or column) read by output position o through kernel tap kk.
IAPDCNN_HD int64_t InputCoord(int64_t o, int64_t stride, int64_t pad_before, int64_t kk,
                              int64_t dilation) {
  return o * stride - pad_before + kk * dilation;
}

}  // namespace conv_impl
}  // namespace iapdcnn
