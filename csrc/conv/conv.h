// Im2col + GEMM 2-D convolution (spec §2b): O = im2col(I) x reshape(K), with the gradient with
// respect to the input (GEMM then col2im) and to the filter (im2col^T x dO). Semantics are those
// of tf.nn.conv2d: NHWC or NCHW input, HWIO filter [k_h, k_w, in_c / groups, out_c], strides,
// dilations, SAME / VALID / explicit (asymmetric) padding, groups.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/gpu.h"
#include "common/parallel.h"
#include "common/status.h"

namespace iapdcnn {

// The arguments' defaults: the one place they are written. The TensorFlow op's attribute
// defaults (tfops; [d, d, d, d] for strides and dilations), the _C keyword defaults and
// _C.defaults, which the Python wrappers read, all come from here.
struct Im2colConv2DDefaults {
  static constexpr int64_t strides = 1;
  static constexpr const char* padding = "VALID";
  static constexpr const char* data_format = "NHWC";
  static constexpr int64_t dilations = 1;
  // 0: inferred from the shapes (input channels / filters' in_channels), as tf.nn.conv2d does
  static constexpr int64_t groups = 0;
};

// Everything the kernels need, filled by ValidateIm2colConv2D. Field order follows the public
// argument order (input, filters, strides, padding, data_format, dilations, groups).
struct Im2colConv2DParams {
  // input [batch, in_h, in_w, in_c] (NHWC) or [batch, in_c, in_h, in_w] (NCHW)
  int64_t batch = 0, in_h = 0, in_w = 0, in_c = 0;
  // filters [k_h, k_w, in_c / groups, out_c]
  int64_t k_h = 0, k_w = 0, out_c = 0;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;
  bool nchw = false;
  int64_t dilation_h = 1, dilation_w = 1;
  int64_t groups = 1;
  // output [batch, out_h, out_w, out_c] (NHWC) or [batch, out_c, out_h, out_w] (NCHW)
  int64_t out_h = 0, out_w = 0;

  std::vector<int64_t> InputShape() const;
  std::vector<int64_t> FilterShape() const;
  std::vector<int64_t> OutputShape() const;
};

// data_format: "NHWC" or "NCHW" (the shape function checks it before the shapes are known).
Status ValidateConvDataFormat(const std::string& data_format);

// Checks every argument against tf.nn.conv2d's rules and fills p. Messages name the argument.
//   strides, dilations: 1, 2 or 4 values (4 values in data_format order, batch/channel == 1).
//   padding: "SAME", "VALID" or "EXPLICIT", in any case; explicit_paddings: 8 values (pairs in
//     data_format order, batch/channel pairs 0) or 4 values (top, bottom, left, right); empty
//     otherwise.
//   data_format: "NHWC" or "NCHW".  groups >= 1, dividing in_c and out_c; 0 infers it as
//     in_c / filters' in_channels (tf.nn.conv2d's rule), and p->groups holds the value used.
Status ValidateIm2colConv2D(const std::vector<int64_t>& input_shape,
                            const std::vector<int64_t>& filter_shape,
                            const std::vector<int64_t>& strides, const std::string& padding,
                            const std::vector<int64_t>& explicit_paddings,
                            const std::string& data_format, const std::vector<int64_t>& dilations,
                            int64_t groups, Im2colConv2DParams* p);

// Checks that a shape given for one tensor of a gradient (out_backprop, or the input_sizes /
// filter_sizes vector) equals the one the forward convolution implies. `what` names it.
Status CheckShapeIs(const char* what, const std::vector<int64_t>& got,
                    const std::vector<int64_t>& want);

// T: float, double, Eigen::half, Eigen::bfloat16 (the last two pack into float and run the GEMM
// in float: float accumulation). All pointers are dense, row-major in the layout of p.
template <typename T>
Status Im2colConv2DCpu(const Im2colConv2DParams& p, const T* input, const T* filters, T* output,
                       const ParallelFor& pf);

// d input = col2im(d output x filters^T); stride 1 with out_c / groups <= 128: a forward
// convolution of d output with the flipped, in/out-transposed filter (no col2im).
template <typename T>
Status Im2colConv2DBackpropInputCpu(const Im2colConv2DParams& p, const T* filters,
                                    const T* out_backprop, T* in_backprop, const ParallelFor& pf);

// d filters = im2col(input)^T x d output, summed over the batch.
template <typename T>
Status Im2colConv2DBackpropFilterCpu(const Im2colConv2DParams& p, const T* input,
                                     const T* out_backprop, T* filter_backprop,
                                     const ParallelFor& pf);

// Largest per-task scratch buffer (bytes) any of the three kernels allocates for p, and the
// shared buffer (bytes, filter converted to float) that half/bfloat16 add once per call.
// The benchmark reports these. Both add up the buffer sizes of conv_plan.h's plans, which the
// kernels allocate from.
int64_t Im2colConv2DScratchBytesPerTask(const Im2colConv2DParams& p, int64_t elem_bytes);
int64_t Im2colConv2DSharedBytes(const Im2colConv2DParams& p, int64_t elem_bytes);

// CUDA entry points (conv_cuda.cu, built with IAPDCNN_WITH_CUDA): the three kernels above on
// device pointers, enqueued on `stream` (asynchronous; the Status reports launch and cuBLAS
// errors). T: float, double, __half, __nv_bfloat16 (the last two accumulate in fp32). Scratch
// comes from `scratch`, or from the stream's memory pool when it is null.
template <typename T>
Status Im2colConv2DCuda(const Im2colConv2DParams& p, const T* input, const T* filters, T* output,
                        cudaStream_t stream, GpuScratch* scratch = nullptr);
template <typename T>
Status Im2colConv2DBackpropInputCuda(const Im2colConv2DParams& p, const T* filters,
                                     const T* out_backprop, T* in_backprop, cudaStream_t stream,
                                     GpuScratch* scratch = nullptr);
template <typename T>
Status Im2colConv2DBackpropFilterCuda(const Im2colConv2DParams& p, const T* input,
                                      const T* out_backprop, T* filter_backprop,
                                      cudaStream_t stream, GpuScratch* scratch = nullptr);

}  // namespace iapdcnn
