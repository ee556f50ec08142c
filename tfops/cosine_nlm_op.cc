// TensorFlow adapter for cosine NLM (csrc/nlm): Iapdcnn>CosineNlm(x [N,H,W,C]) -> same shape.
#include "nlm/nlm.h"
#include "tf_adapter.h"

namespace iapdcnn {
namespace tfops {

REGISTER_OP("Iapdcnn>CosineNlm")
    .Input("x: T")
    .Input("h: double")  // scalars, not float attributes: those are 32-bit (ScalarInput)
    .Input("eps: double")
    .Output("y: T")
    .Attr(AttrSpec("patch_radius: int", CosineNlmDefaults::patch_radius))
    .Attr(AttrSpec("search_radius: int", CosineNlmDefaults::search_radius))
    .Attr("T: {float, double}")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      shape_inference::ShapeHandle x;
      TF_RETURN_IF_ERROR(ScalarInputShape(c, 1, "cosine_nlm", "h"));
      TF_RETURN_IF_ERROR(ScalarInputShape(c, 2, "cosine_nlm", "eps"));
      TF_RETURN_IF_ERROR(WithRankNamed(c, c->input(0), 4, "cosine_nlm", "x", &x));
      c->set_output(0, x);
      return ::tensorflow::OkStatus();
    })
    .Doc("Cosine-similarity non-local means per channel, reflect borders (spec §1a).");

// kGpu: the DEVICE_GPU kernel (csrc CUDA entry point on TF's stream).
template <typename T, bool kGpu = false>
class CosineNlmOp : public OpKernel {
 public:
  explicit CosineNlmOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("patch_radius", &patch_radius_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("search_radius", &search_radius_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    double h = 0.0, eps = 0.0;
    OP_REQUIRES_OK(ctx, ScalarInput(ctx, 1, "cosine_nlm", "h", &h));
    OP_REQUIRES_OK(ctx, ScalarInput(ctx, 2, "cosine_nlm", "eps", &eps));
    CosineNlmParams p;
    IAPDCNN_OP_REQUIRES_OK(
        ctx, ValidateCosineNlm(Dims(x.shape()), patch_radius_, search_radius_, h, eps, &p));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &out));
    if constexpr (kGpu) {
      TfGpuScratch scratch(ctx);
      IAPDCNN_OP_REQUIRES_OK(ctx, CosineNlmCuda<T>(p, x.flat<T>().data(), out->flat<T>().data(),
                                                   TfGpuStream(ctx), &scratch));
    } else {
      IAPDCNN_OP_REQUIRES_OK(
          ctx, CosineNlmCpu<T>(p, x.flat<T>().data(), out->flat<T>().data(), TfParallelFor(ctx)));
    }
  }

 private:
  // set from the attributes (whose defaults are CosineNlmDefaults)
  int64_t patch_radius_ = 0, search_radius_ = 0;
};

#define REGISTER_CPU(T)                                                                        \
  REGISTER_KERNEL_BUILDER(Name("Iapdcnn>CosineNlm").Device(DEVICE_CPU).TypeConstraint<T>("T"), \
                          CosineNlmOp<T>)
REGISTER_CPU(float);
REGISTER_CPU(double);
#undef REGISTER_CPU

#if GOOGLE_CUDA
#define REGISTER_GPU(T)                                         \
  REGISTER_KERNEL_BUILDER(Name("Iapdcnn>CosineNlm")             \
                              .Device(::tensorflow::DEVICE_GPU) \
                              .HostMemory("h")                  \
                              .HostMemory("eps")                \
                              .TypeConstraint<T>("T"),          \
                          CosineNlmOp<T, true>)
REGISTER_GPU(float);
REGISTER_GPU(double);
#undef REGISTER_GPU
#endif

}  // namespace tfops
}  // namespace iapdcnn
