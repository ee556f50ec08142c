// The float32 NHWC forward of the Im2col convolution with our own AVX-512 GEMM micro-kernel
// (SPEC 2b). The im2col matrix is never materialised: after one zero-padded copy of the input,
// row r of im2col (output pixel r) restricted to one kernel row kh is a contiguous run of that
// copy, so the micro-kernel reads it in place while TensorFlow's Eigen GEMM would pack it again.
// Used by conv_cpu.cc's forward (and so by its stride-1 gradient with respect to the input).
#pragma once

#include <cstdint>

#include "common/parallel.h"
#include "conv/conv.h"

namespace iapdcnn {
namespace conv_direct {

// True when p suits the kernel (NHWC, groups 1, out_c a multiple of 16, a non-empty output), this
// CPU has AVX-512F and IAPDCNN_CONV_MICROKERNEL is not "0". Checked by the caller (float32
// only); Forward assumes it.
bool Supported(const Im2colConv2DParams& p);

// Bytes Forward allocates for p: the zero-padded input copy, shared by all tasks (bounded: the
// batch is processed in chunks of output rows), and each task's packed filter block.
int64_t SharedScratchBytes(const Im2colConv2DParams& p);
int64_t TaskScratchBytes(const Im2colConv2DParams& p);

// output = conv(input, w): input, output NHWC, w HWIO [k_h, k_w, in_c, out_c], all dense float.
void Forward(const Im2colConv2DParams& p, const float* input, const float* w, float* output,
             const ParallelFor& pf);

// The filter gradient of a pointwise convolution (1x1, stride 1, no padding) with the same
// micro-kernel: dW [in_c, out_c] = input^T x out_backprop, the batch's pixels as the depth.
// FilterSupported: Supported(p) and pointwise. FilterTaskScratchBytes: each task's packed
// out_backprop block; FilterSharedBytes: the pixel shards' dW accumulators.
bool FilterSupported(const Im2colConv2DParams& p);
int64_t FilterTaskScratchBytes(const Im2colConv2DParams& p);
int64_t FilterSharedBytes(const Im2colConv2DParams& p);
void BackpropFilterPointwise(const Im2colConv2DParams& p, const float* input,
                             const float* out_backprop, float* filter_backprop,
                             const ParallelFor& pf);

}  // namespace conv_direct
}  // namespace iapdcnn
