// The float32 NHWC forward of the Im2col convolution with our own AVX-512 GEMM micro-kernel
// (spec §2b). The im2col matrix is never materialised: after one zero-padded copy of the input,
// row r of im2col (output pixel r) restricted to one kernel row kh is a contiguous run of that
// copy, so the micro-kernel reads it in place while TensorFlow's Eigen GEMM would pack it again.
// Used by conv_cpu.cc's forward (and so by its stride-1 gradient with respect to the input) when
// conv_plan.h's ForwardDirect says so.
#pragma once

#include <cstdint>

#include "common/parallel.h"
#include "conv/conv.h"

namespace iapdcnn {
namespace conv_direct {

// True when p suits the kernel (NHWC, groups 1, a non-empty output; any out_c: the last block of
// out_c % 16 channels is loaded and stored masked), this CPU has AVX-512F and
// IAPDCNN_CONV_MICROKERNEL is not "0". Checked by the caller (float32 only); Forward assumes it.
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

// The filter gradient of any convolution Forward supports whose dW is small (<= 1 MiB: every
// layer of the trainer's small_resnet): dW [k_h * k_w * in_c, out_c] = the batch's pixels'
// input taps^T x out_backprop (or its transpose for out_c < 64), reading units of ~512 output
// pixels (padded per unit into a task's buffer, or in place) once for all of dW. Each call the
// ParallelFor makes accumulates into its own dW (FilterSmallSharedBytes: all but the first, or
// all when transposed), summed at the end; one thread makes one call.
bool FilterSmallSupported(const Im2colConv2DParams& p);
int64_t FilterSmallTaskScratchBytes(const Im2colConv2DParams& p);
int64_t FilterSmallSharedBytes(const Im2colConv2DParams& p);
void BackpropFilterSmall(const Im2colConv2DParams& p, const float* input, const float* out_backprop,
                         float* filter_backprop, const ParallelFor& pf);

}  // namespace conv_direct
}  // namespace iapdcnn
