// TensorFlow adapter for the FCI kernel (csrc/fci): Iapdcnn>Fci(x, y) -> [n_x, n_y].
#include "fci/fci.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tf_adapter.h"

namespace iapdcnn {
namespace tfops {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
namespace shape_inference = ::tensorflow::shape_inference;

REGISTER_OP("Iapdcnn>Fci")
    .Input("x: T")
    .Input("y: T")
    .Output("fci: T")
    .Attr("T: {float, double}")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      shape_inference::ShapeHandle x, y;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &x));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &y));
      shape_inference::DimensionHandle unused;
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(x, 1), c->Dim(y, 1), &unused));
      c->set_output(0, c->Matrix(c->Dim(x, 0), c->Dim(y, 0)));
      return ::tensorflow::OkStatus();
    })
    .Doc("Pairwise Feature Correlation Index between rows of x and rows of y (SPEC 1c).");

template <typename T>
class FciOp : public OpKernel {
 public:
  explicit FciOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& y = ctx->input(1);
    FciParams p;
    IAPDCNN_OP_REQUIRES_OK(ctx, ValidateFci(Dims(x.shape()), Dims(y.shape()), &p));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, {p.n_x, p.n_y}, &out));
    IAPDCNN_OP_REQUIRES_OK(ctx, FciPairwiseCpu<T>(p, x.flat<T>().data(), y.flat<T>().data(),
                                                  out->flat<T>().data(), TfParallelFor(ctx)));
  }
};

#define REGISTER_CPU(T) \
  REGISTER_KERNEL_BUILDER(Name("Iapdcnn>Fci").Device(DEVICE_CPU).TypeConstraint<T>("T"), FciOp<T>)
REGISTER_CPU(float);
REGISTER_CPU(double);
#undef REGISTER_CPU

}  // namespace tfops
}  // namespace iapdcnn
