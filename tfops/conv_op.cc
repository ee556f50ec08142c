// TensorFlow adapter for the Im2col convolution (csrc/conv, spec §2b): Iapdcnn>Im2colConv2D and
// its two gradient ops, with tf.nn.conv2d's attributes (strides / dilations of 1, 2 or 4 values
// in data_format order, padding SAME / VALID / EXPLICIT in any case + explicit_paddings) plus
// groups. conv.cc checks them all.
#include <algorithm>

#include "conv/conv.h"
#include "tf_adapter.h"
#if GOOGLE_CUDA
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

namespace iapdcnn {
namespace tfops {

namespace si = ::tensorflow::shape_inference;

// padding is a plain string: ValidateIm2colConv2D says which (in any case) are valid.
using ConvDefaults = Im2colConv2DDefaults;
#define IAPDCNN_CONV_ATTRS                                              \
  Attr("T: {half, bfloat16, float, double}")                            \
      .Attr(AttrList("strides", ConvDefaults::strides, 4))              \
      .Attr(AttrSpec("padding: string", ConvDefaults::padding))         \
      .Attr("explicit_paddings: list(int) = []")                        \
      .Attr(AttrSpec("data_format: string", ConvDefaults::data_format)) \
      .Attr(AttrList("dilations", ConvDefaults::dilations, 4))          \
      .Attr(AttrSpec("groups: int", ConvDefaults::groups))

struct ConvAttrs {
  std::vector<int64_t> strides, explicit_paddings, dilations;
  std::string padding, data_format;
  int64_t groups = ConvDefaults::groups;
  template <typename Ctx>
  ::tensorflow::Status Read(Ctx* c) {
    std::vector<int32_t> s, e, d;
    TF_RETURN_IF_ERROR(c->GetAttr("strides", &s));
    TF_RETURN_IF_ERROR(c->GetAttr("explicit_paddings", &e));
    TF_RETURN_IF_ERROR(c->GetAttr("dilations", &d));
    TF_RETURN_IF_ERROR(c->GetAttr("padding", &padding));
    TF_RETURN_IF_ERROR(c->GetAttr("data_format", &data_format));
    TF_RETURN_IF_ERROR(c->GetAttr("groups", &groups));
    strides.assign(s.begin(), s.end());
    explicit_paddings.assign(e.begin(), e.end());
    dilations.assign(d.begin(), d.end());
    return ::tensorflow::OkStatus();
  }
  Status Validate(const std::vector<int64_t>& in, const std::vector<int64_t>& f,
                  Im2colConv2DParams* p) const {
    return ValidateIm2colConv2D(in, f, strides, padding, explicit_paddings, data_format, dilations,
                                groups, p);
  }
};

// Output shape from (input, filters) shapes; unknown where they are unknown.
::tensorflow::Status ForwardShape(si::InferenceContext* c, si::ShapeHandle in, si::ShapeHandle f,
                                  si::ShapeHandle* out) {
  ConvAttrs a;
  TF_RETURN_IF_ERROR(a.Read(c));
  TF_RETURN_IF_ERROR(ToTf(ValidateConvDataFormat(a.data_format)));
  TF_RETURN_IF_ERROR(WithRankNamed(c, in, 4, "im2col_conv2d", "input", &in));
  TF_RETURN_IF_ERROR(WithRankNamed(c, f, 4, "im2col_conv2d", "filters", &f));
  const bool nchw = a.data_format == "NCHW";
  const int ci = nchw ? 1 : 3, hi = nchw ? 2 : 1, wi = nchw ? 3 : 2;
  std::vector<int64_t> ins(4), fs(4);
  bool known = true;
  for (int i = 0; i < 4; ++i) {
    ins[i] = c->Value(c->Dim(in, i));
    fs[i] = c->Value(c->Dim(f, i));
    if (fs[i] < 0 || (i != 0 && i != ci && ins[i] < 0)) known = false;
  }
  // channels unknown: any multiple of fs[2] gives the same spatial output (checked at run time)
  if (ins[ci] < 0 && fs[2] > 0) ins[ci] = fs[2] * std::max<int64_t>(a.groups, 1);
  si::DimensionHandle oh = c->UnknownDim(), ow = c->UnknownDim();
  if (known) {
    Im2colConv2DParams p;
    ins[0] = 0;
    TF_RETURN_IF_ERROR(ToTf(a.Validate(ins, fs, &p)));
    oh = c->MakeDim(p.out_h);
    ow = c->MakeDim(p.out_w);
  }
  std::vector<si::DimensionHandle> d(4);
  d[0] = c->Dim(in, 0);
  d[ci] = c->Dim(f, 3);
  d[hi] = oh;
  d[wi] = ow;
  *out = c->MakeShape(d);
  return ::tensorflow::OkStatus();
}

REGISTER_OP("Iapdcnn>Im2colConv2D")
    .Input("input: T")
    .Input("filters: T")
    .Output("output: T")
    .IAPDCNN_CONV_ATTRS
    .SetShapeFn([](si::InferenceContext* c) {
      si::ShapeHandle out;
      TF_RETURN_IF_ERROR(ForwardShape(c, c->input(0), c->input(1), &out));
      c->set_output(0, out);
      return ::tensorflow::OkStatus();
    })
    .Doc("Im2col + GEMM conv2d with tf.nn.conv2d semantics (spec §2b).");

REGISTER_OP("Iapdcnn>Im2colConv2DBackpropInput")
    .Input("input_sizes: int32")
    .Input("filters: T")
    .Input("out_backprop: T")
    .Output("output: T")
    .IAPDCNN_CONV_ATTRS
    .SetShapeFn([](si::InferenceContext* c) {
      si::ShapeHandle s;
      TF_RETURN_IF_ERROR(c->MakeShapeFromShapeTensor(0, &s));
      TF_RETURN_IF_ERROR(
          WithRankNamed(c, s, 4, "im2col_conv2d_backprop_input", "input_sizes (a shape)", &s));
      c->set_output(0, s);
      return ::tensorflow::OkStatus();
    })
    .Doc("Gradient of Im2colConv2D with respect to its input (GEMM then col2im).");

REGISTER_OP("Iapdcnn>Im2colConv2DBackpropFilter")
    .Input("input: T")
    .Input("filter_sizes: int32")
    .Input("out_backprop: T")
    .Output("output: T")
    .IAPDCNN_CONV_ATTRS
    .SetShapeFn([](si::InferenceContext* c) {
      si::ShapeHandle s;
      TF_RETURN_IF_ERROR(c->MakeShapeFromShapeTensor(1, &s));
      TF_RETURN_IF_ERROR(
          WithRankNamed(c, s, 4, "im2col_conv2d_backprop_filter", "filter_sizes (a shape)", &s));
      c->set_output(0, s);
      return ::tensorflow::OkStatus();
    })
    .Doc("Gradient of Im2colConv2D with respect to its filters (im2col^T x out_backprop).");

std::vector<int64_t> SizesOf(const Tensor& t) {
  std::vector<int64_t> v;
  if (t.dims() != 1) return {-1};  // rejected as "must have shape [4]" below
  for (int64_t i = 0; i < t.NumElements(); ++i) v.push_back(t.flat<int32_t>()(i));
  return v;
}

// The CUDA entry points' element type for T: Eigen::half / bfloat16 are bit-compatible with
// CUDA's __half / __nv_bfloat16.
template <typename T>
struct CudaOf {
  using type = T;
};
#if GOOGLE_CUDA
template <>
struct CudaOf<Eigen::half> {
  using type = __half;
};
template <>
struct CudaOf<Eigen::bfloat16> {
  using type = __nv_bfloat16;
};
#endif

// kMode: 0 forward, 1 grad input, 2 grad filter. kGpu: the DEVICE_GPU kernel (TF's stream).
template <typename T, int kMode, bool kGpu = false>
class Im2colConv2DOp : public OpKernel {
 public:
  explicit Im2colConv2DOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, attrs_.Read(ctx));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& a = ctx->input(0);
    const Tensor& b = ctx->input(1);
    Im2colConv2DParams p;
    std::vector<int64_t> in_shape = kMode == 1 ? SizesOf(a) : Dims(a.shape());
    std::vector<int64_t> f_shape = kMode == 2 ? SizesOf(b) : Dims(b.shape());
    if (kMode == 1)
      IAPDCNN_OP_REQUIRES_OK(
          ctx, CheckShapeIs("input_sizes", {static_cast<int64_t>(in_shape.size())}, {4}));
    if (kMode == 2)
      IAPDCNN_OP_REQUIRES_OK(
          ctx, CheckShapeIs("filter_sizes", {static_cast<int64_t>(f_shape.size())}, {4}));
    IAPDCNN_OP_REQUIRES_OK(ctx, attrs_.Validate(in_shape, f_shape, &p));
    if (kMode != 0) {
      IAPDCNN_OP_REQUIRES_OK(
          ctx, CheckShapeIs("out_backprop", Dims(ctx->input(2).shape()), p.OutputShape()));
    }
    const std::vector<int64_t> out_dims =
        kMode == 0 ? p.OutputShape() : (kMode == 1 ? p.InputShape() : p.FilterShape());
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, AllocateOutput(ctx, "im2col_conv2d", 0, out_dims, &out));
    if constexpr (kGpu) {
      using D = typename CudaOf<T>::type;
      auto d = [](const Tensor& t) { return reinterpret_cast<const D*>(t.flat<T>().data()); };
      D* o = reinterpret_cast<D*>(out->flat<T>().data());
      TfGpuScratch scratch(ctx);
      const cudaStream_t s = TfGpuStream(ctx);
      if (kMode == 0) {
        IAPDCNN_OP_REQUIRES_OK(ctx, Im2colConv2DCuda<D>(p, d(a), d(b), o, s, &scratch));
      } else if (kMode == 1) {
        IAPDCNN_OP_REQUIRES_OK(
            ctx, Im2colConv2DBackpropInputCuda<D>(p, d(b), d(ctx->input(2)), o, s, &scratch));
      } else {
        IAPDCNN_OP_REQUIRES_OK(
            ctx, Im2colConv2DBackpropFilterCuda<D>(p, d(a), d(ctx->input(2)), o, s, &scratch));
      }
      return;
    }
    const ParallelFor pf = TfParallelFor(ctx);
    T* o = out->flat<T>().data();
    if (kMode == 0) {
      IAPDCNN_OP_REQUIRES_OK(ctx,
                             Im2colConv2DCpu<T>(p, a.flat<T>().data(), b.flat<T>().data(), o, pf));
    } else if (kMode == 1) {
      IAPDCNN_OP_REQUIRES_OK(
          ctx, Im2colConv2DBackpropInputCpu<T>(p, b.flat<T>().data(),
                                               ctx->input(2).flat<T>().data(), o, pf));
    } else {
      IAPDCNN_OP_REQUIRES_OK(
          ctx, Im2colConv2DBackpropFilterCpu<T>(p, a.flat<T>().data(),
                                                ctx->input(2).flat<T>().data(), o, pf));
    }
  }

 private:
  ConvAttrs attrs_;
};

#define REGISTER_CPU(T)                                                                           \
  REGISTER_KERNEL_BUILDER(Name("Iapdcnn>Im2colConv2D").Device(DEVICE_CPU).TypeConstraint<T>("T"), \
                          Im2colConv2DOp<T, 0>);                                                  \
  REGISTER_KERNEL_BUILDER(Name("Iapdcnn>Im2colConv2DBackpropInput")                               \
                              .Device(DEVICE_CPU)                                                 \
                              .TypeConstraint<T>("T")                                             \
                              .HostMemory("input_sizes"),                                         \
                          Im2colConv2DOp<T, 1>);                                                  \
  REGISTER_KERNEL_BUILDER(Name("Iapdcnn>Im2colConv2DBackpropFilter")                              \
                              .Device(DEVICE_CPU)                                                 \
                              .TypeConstraint<T>("T")                                             \
                              .HostMemory("filter_sizes"),                                        \
                          Im2colConv2DOp<T, 2>);
REGISTER_CPU(float);
REGISTER_CPU(double);
REGISTER_CPU(Eigen::half);
REGISTER_CPU(Eigen::bfloat16);
#undef REGISTER_CPU

#if GOOGLE_CUDA
// input_sizes / filter_sizes stay in host memory, as for TF's own Conv2DBackprop* GPU kernels.
#define REGISTER_GPU(T)                                                                     \
  REGISTER_KERNEL_BUILDER(                                                                  \
      Name("Iapdcnn>Im2colConv2D").Device(::tensorflow::DEVICE_GPU).TypeConstraint<T>("T"), \
      Im2colConv2DOp<T, 0, true>);                                                          \
  REGISTER_KERNEL_BUILDER(Name("Iapdcnn>Im2colConv2DBackpropInput")                         \
                              .Device(::tensorflow::DEVICE_GPU)                             \
                              .TypeConstraint<T>("T")                                       \
                              .HostMemory("input_sizes"),                                   \
                          Im2colConv2DOp<T, 1, true>);                                      \
  REGISTER_KERNEL_BUILDER(Name("Iapdcnn>Im2colConv2DBackpropFilter")                        \
                              .Device(::tensorflow::DEVICE_GPU)                             \
                              .TypeConstraint<T>("T")                                       \
                              .HostMemory("filter_sizes"),                                  \
                          Im2colConv2DOp<T, 2, true>);
REGISTER_GPU(float);
REGISTER_GPU(double);
REGISTER_GPU(Eigen::half);
REGISTER_GPU(Eigen::bfloat16);
#undef REGISTER_GPU
#endif

}  // namespace tfops
}  // namespace iapdcnn
