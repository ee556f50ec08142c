// TensorFlow adapter for Marr-Hildreth edges (csrc/marr_hildreth):
// Iapdcnn>MarrHildreth(x [N,H,W,C]) -> same shape.
#include <string>

#include "marr_hildreth/marr_hildreth.h"
#include "tf_adapter.h"

namespace iapdcnn {
namespace tfops {

REGISTER_OP("Iapdcnn>MarrHildreth")
    .Input("x: T")
    .Input("threshold: double")  // a scalar, not a float attribute: those are 32-bit
    .Output("y: T")
    .Attr(AttrSpec("laplacian: int", MarrHildrethDefaults::laplacian))
    .Attr(AttrSpec("relative: bool", MarrHildrethDefaults::relative))
    .Attr(AttrSpec("mode: string", MarrHildrethDefaults::mode))
    .Attr("T: {float, double}")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      shape_inference::ShapeHandle x;
      TF_RETURN_IF_ERROR(ScalarInputShape(c, 1, "marr_hildreth", "threshold"));
      TF_RETURN_IF_ERROR(WithRankNamed(c, c->input(0), 4, "marr_hildreth", "x", &x));
      c->set_output(0, x);
      return ::tensorflow::OkStatus();
    })
    .Doc("Marr-Hildreth edges: Laplacian zero crossings gated by Sobel magnitude (spec §1b).");

// kGpu: the DEVICE_GPU kernel (csrc CUDA entry point on TF's stream).
template <typename T, bool kGpu = false>
class MarrHildrethOp : public OpKernel {
 public:
  explicit MarrHildrethOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("laplacian", &laplacian_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("relative", &relative_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("mode", &mode_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    double threshold = 0.0;
    OP_REQUIRES_OK(ctx, ScalarInput(ctx, 1, "marr_hildreth", "threshold", &threshold));
    MarrHildrethParams p;
    IAPDCNN_OP_REQUIRES_OK(
        ctx, ValidateMarrHildreth(Dims(x.shape()), laplacian_, threshold, relative_, mode_, &p));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &out));
    if constexpr (kGpu) {
      TfGpuScratch scratch(ctx);
      IAPDCNN_OP_REQUIRES_OK(ctx, MarrHildrethCuda<T>(p, x.flat<T>().data(), out->flat<T>().data(),
                                                      TfGpuStream(ctx), &scratch));
    } else {
      IAPDCNN_OP_REQUIRES_OK(ctx, MarrHildrethCpu<T>(p, x.flat<T>().data(), out->flat<T>().data(),
                                                     TfParallelFor(ctx)));
    }
  }

 private:
  // set from the attributes (whose defaults are MarrHildrethDefaults)
  int64_t laplacian_ = 0;
  bool relative_ = false;
  std::string mode_;
};

#define REGISTER_CPU(T)                                                                           \
  REGISTER_KERNEL_BUILDER(Name("Iapdcnn>MarrHildreth").Device(DEVICE_CPU).TypeConstraint<T>("T"), \
                          MarrHildrethOp<T>)
REGISTER_CPU(float);
REGISTER_CPU(double);
#undef REGISTER_CPU

#if GOOGLE_CUDA
#define REGISTER_GPU(T)                                         \
  REGISTER_KERNEL_BUILDER(Name("Iapdcnn>MarrHildreth")          \
                              .Device(::tensorflow::DEVICE_GPU) \
                              .HostMemory("threshold")          \
                              .TypeConstraint<T>("T"),          \
                          MarrHildrethOp<T, true>)
REGISTER_GPU(float);
REGISTER_GPU(double);
#undef REGISTER_GPU
#endif

}  // namespace tfops
}  // namespace iapdcnn
