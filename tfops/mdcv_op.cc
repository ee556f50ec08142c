// TensorFlow adapter for MDCV (csrc/mdcv): Iapdcnn>MdcvDistances(filters, shrinkage) ->
// (distances [cout], center [kh, kw, cin], shrinkage_used []).
#include "mdcv/mdcv.h"
#include "tf_adapter.h"

namespace iapdcnn {
namespace tfops {

REGISTER_OP("Iapdcnn>MdcvDistances")
    .Input("filters: T")
    .Input("shrinkage: T")
    .Output("distances: T")
    .Output("center: T")
    .Output("shrinkage_used: T")
    .Attr("T: {float, double}")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      shape_inference::ShapeHandle f, center;
      TF_RETURN_IF_ERROR(WithRankNamed(c, c->input(0), 4, "mdcv_distances", "filters", &f));
      TF_RETURN_IF_ERROR(ScalarInputShape(c, 1, "mdcv_distances", "shrinkage"));
      TF_RETURN_IF_ERROR(c->Subshape(f, 0, 3, &center));
      c->set_output(0, c->Vector(c->Dim(f, 3)));
      c->set_output(1, center);
      c->set_output(2, c->Scalar());
      return ::tensorflow::OkStatus();
    })
    .Doc("MDCV filter distances from the filters' mean under a shrunk covariance (spec §2a).");

template <typename T, bool kGpu = false>
class MdcvDistancesOp : public OpKernel {
 public:
  explicit MdcvDistancesOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& filters = ctx->input(0);
    const Tensor& shrinkage = ctx->input(1);
    OP_REQUIRES(
        ctx, shrinkage.dims() == 0,
        ::tensorflow::errors::InvalidArgument("mdcv_distances: shrinkage must be a scalar"));
    MdcvParams p;
    IAPDCNN_OP_REQUIRES_OK(
        ctx, ValidateMdcv(Dims(filters.shape()), static_cast<double>(shrinkage.scalar<T>()()), &p));
    Tensor *dist = nullptr, *center = nullptr, *used = nullptr;
    TensorShape dist_shape, center_shape;
    OP_REQUIRES_OK(ctx, MakeShape({p.cout}, &dist_shape));
    OP_REQUIRES_OK(ctx, MakeShape({p.kh, p.kw, p.cin}, &center_shape));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, dist_shape, &dist));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, center_shape, &center));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({}), &used));
    if constexpr (kGpu) {
      // shrinkage and shrinkage_used are host memory (registered below); the solve runs on the
      // host and the call synchronises TF's stream.
      TfGpuScratch scratch(ctx);
      double l = 0.0;
      IAPDCNN_OP_REQUIRES_OK(
          ctx, MdcvDistancesCuda<T>(p, filters.flat<T>().data(), dist->flat<T>().data(),
                                    center->flat<T>().data(), &l, TfGpuStream(ctx),
                                    TfParallelFor(ctx), &scratch));
      used->scalar<T>()() = static_cast<T>(l);
    } else {
      IAPDCNN_OP_REQUIRES_OK(
          ctx, MdcvDistancesCpu<T>(p, filters.flat<T>().data(), dist->flat<T>().data(),
                                   center->flat<T>().data(), used->flat<T>().data(),
                                   TfParallelFor(ctx)));
    }
  }
};

#define REGISTER_CPU(T)                                                                            \
  REGISTER_KERNEL_BUILDER(Name("Iapdcnn>MdcvDistances").Device(DEVICE_CPU).TypeConstraint<T>("T"), \
                          MdcvDistancesOp<T>)
REGISTER_CPU(float);
REGISTER_CPU(double);
#undef REGISTER_CPU

#if GOOGLE_CUDA
#define REGISTER_GPU(T)                                         \
  REGISTER_KERNEL_BUILDER(Name("Iapdcnn>MdcvDistances")         \
                              .Device(::tensorflow::DEVICE_GPU) \
                              .TypeConstraint<T>("T")           \
                              .HostMemory("shrinkage")          \
                              .HostMemory("shrinkage_used"),    \
                          MdcvDistancesOp<T, true>)
REGISTER_GPU(float);
REGISTER_GPU(double);
#undef REGISTER_GPU
#endif

}  // namespace tfops
}  // namespace iapdcnn
