// TensorFlow adapter for the FCI kernel (csrc/fci): Iapdcnn>Fci(x, y) -> [n_x, n_y], and the
// block-screening ops FciClassStats, FciPrototype and FciWithinClass on x [n, positions, L].
#include "fci/fci.h"
#include "tf_adapter.h"

namespace iapdcnn {
namespace tfops {

REGISTER_OP("Iapdcnn>Fci")
    .Input("x: T")
    .Input("y: T")
    .Output("fci: T")
    .Attr("T: {float, double}")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      shape_inference::ShapeHandle x, y;
      TF_RETURN_IF_ERROR(WithRankNamed(c, c->input(0), 2, "fci", "x", &x));
      TF_RETURN_IF_ERROR(WithRankNamed(c, c->input(1), 2, "fci", "y", &y));
      shape_inference::DimensionHandle unused;
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(x, 1), c->Dim(y, 1), &unused));
      c->set_output(0, c->Matrix(c->Dim(x, 0), c->Dim(y, 0)));
      return ::tensorflow::OkStatus();
    })
    .Doc("Pairwise Feature Correlation Index between rows of x and rows of y (spec §1c).");

template <typename T, bool kGpu = false>
class FciOp : public OpKernel {
 public:
  explicit FciOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& y = ctx->input(1);
    FciParams p;
    IAPDCNN_OP_REQUIRES_OK(ctx, ValidateFci(Dims(x.shape()), Dims(y.shape()), &p));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, AllocateOutput(ctx, "fci", 0, {p.n_x, p.n_y}, &out));
    if constexpr (kGpu) {
      TfGpuScratch scratch(ctx);
      IAPDCNN_OP_REQUIRES_OK(
          ctx, FciPairwiseCuda<T>(p, x.flat<T>().data(), y.flat<T>().data(), out->flat<T>().data(),
                                  TfGpuStream(ctx), &scratch));
    } else {
      IAPDCNN_OP_REQUIRES_OK(ctx, FciPairwiseCpu<T>(p, x.flat<T>().data(), y.flat<T>().data(),
                                                    out->flat<T>().data(), TfParallelFor(ctx)));
    }
  }
};

#define REGISTER_CPU(T) \
  REGISTER_KERNEL_BUILDER(Name("Iapdcnn>Fci").Device(DEVICE_CPU).TypeConstraint<T>("T"), FciOp<T>)
REGISTER_CPU(float);
REGISTER_CPU(double);
#undef REGISTER_CPU

// Shared by the three block ops: x [n, P, L] and labels [n] -> [n, P].
static ::tensorflow::Status BlockShape(shape_inference::InferenceContext* c) {
  shape_inference::ShapeHandle x, labels;
  TF_RETURN_IF_ERROR(WithRankNamed(c, c->input(0), 3, "fci", "x", &x));
  TF_RETURN_IF_ERROR(WithRankNamed(c, c->input(1), 1, "fci", "labels", &labels));
  c->set_output(0, c->Matrix(c->Dim(x, 0), c->Dim(x, 1)));
  return ::tensorflow::OkStatus();
}

REGISTER_OP("Iapdcnn>FciClassStats")
    .Input("x: T")
    .Input("labels: int64")
    .Output("counts: double")
    .Output("sums: double")
    .Attr("num_classes: int")
    .Attr("T: {float, double}")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      shape_inference::ShapeHandle x, labels;
      TF_RETURN_IF_ERROR(WithRankNamed(c, c->input(0), 3, "fci", "x", &x));
      TF_RETURN_IF_ERROR(WithRankNamed(c, c->input(1), 1, "fci", "labels", &labels));
      int64_t k;
      TF_RETURN_IF_ERROR(c->GetAttr("num_classes", &k));
      c->set_output(0, c->Vector(k));
      c->set_output(1, c->MakeShape({c->MakeDim(k), c->Dim(x, 1), c->Dim(x, 2)}));
      return ::tensorflow::OkStatus();
    })
    .Doc("Mergeable per-class block counts and sums for FCI prototype mode (spec §1c).");

REGISTER_OP("Iapdcnn>FciPrototype")
    .Input("x: T")
    .Input("labels: int64")
    .Input("prototypes: T")
    .Output("fci: T")
    .Attr("T: {float, double}")
    .SetShapeFn(BlockShape)
    .Doc("FCI of every block against its class prototype block (spec §1c, prototype mode).");

REGISTER_OP("Iapdcnn>FciWithinClass")
    .Input("x: T")
    .Input("labels: int64")
    .Output("fci: T")
    .Attr("num_classes: int")
    .Attr("T: {float, double}")
    .SetShapeFn(BlockShape)
    .Doc("Mean FCI of every block with the same block of the other same-class samples (spec §1c).");

template <typename T, bool kGpu = false>
class FciClassStatsOp : public OpKernel {
 public:
  explicit FciClassStatsOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("num_classes", &num_classes_));
  }
  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& labels = ctx->input(1);
    FciBlocksParams p;
    IAPDCNN_OP_REQUIRES_OK(
        ctx, ValidateFciBlocks(Dims(x.shape()), Dims(labels.shape()), num_classes_, &p));
    Tensor *counts = nullptr, *sums = nullptr;
    IAPDCNN_OP_REQUIRES_OK(
        ctx, CheckedElements("fci_class_stats", "sums [num_classes, positions, block_len]",
                             {p.num_classes, p.positions, p.block_len}));
    OP_REQUIRES_OK(
        ctx, AllocateOutput(ctx, "fci_class_stats", 0, {p.num_classes}, &counts, "num_classes"));
    OP_REQUIRES_OK(
        ctx, AllocateOutput(ctx, "fci_class_stats", 1, {p.num_classes, p.positions, p.block_len},
                            &sums, "num_classes"));
    if constexpr (kGpu) {
      TfGpuScratch scratch(ctx);
      IAPDCNN_OP_REQUIRES_OK(
          ctx, FciClassStatsCuda<T>(p, x.flat<T>().data(), labels.flat<int64_t>().data(),
                                    counts->flat<double>().data(), sums->flat<double>().data(),
                                    TfGpuStream(ctx), &scratch));
    } else {
      IAPDCNN_OP_REQUIRES_OK(
          ctx, FciClassStatsCpu<T>(p, x.flat<T>().data(), labels.flat<int64_t>().data(),
                                   counts->flat<double>().data(), sums->flat<double>().data(),
                                   TfParallelFor(ctx)));
    }
  }

 private:
  int64_t num_classes_ = 0;
};

template <typename T, bool kGpu = false>
class FciPrototypeOp : public OpKernel {
 public:
  explicit FciPrototypeOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}
  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& labels = ctx->input(1);
    const Tensor& protos = ctx->input(2);
    const int64_t k = protos.dims() > 0 ? protos.dim_size(0) : 0;
    FciBlocksParams p;
    IAPDCNN_OP_REQUIRES_OK(ctx, ValidateFciBlocks(Dims(x.shape()), Dims(labels.shape()), k, &p));
    IAPDCNN_OP_REQUIRES_OK(ctx, ValidateFciPrototypes(p, Dims(protos.shape())));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, AllocateOutput(ctx, "fci_prototype", 0, {p.n, p.positions}, &out));
    if constexpr (kGpu) {
      TfGpuScratch scratch(ctx);
      IAPDCNN_OP_REQUIRES_OK(
          ctx, FciPrototypeCuda<T>(p, x.flat<T>().data(), labels.flat<int64_t>().data(),
                                   protos.flat<T>().data(), out->flat<T>().data(), TfGpuStream(ctx),
                                   &scratch));
    } else {
      IAPDCNN_OP_REQUIRES_OK(
          ctx,
          FciPrototypeCpu<T>(p, x.flat<T>().data(), labels.flat<int64_t>().data(),
                             protos.flat<T>().data(), out->flat<T>().data(), TfParallelFor(ctx)));
    }
  }
};

template <typename T, bool kGpu = false>
class FciWithinClassOp : public OpKernel {
 public:
  explicit FciWithinClassOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("num_classes", &num_classes_));
  }
  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& labels = ctx->input(1);
    FciBlocksParams p;
    IAPDCNN_OP_REQUIRES_OK(
        ctx, ValidateFciBlocks(Dims(x.shape()), Dims(labels.shape()), num_classes_, &p));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, AllocateOutput(ctx, "fci_within_class", 0, {p.n, p.positions}, &out));
    if constexpr (kGpu) {
      TfGpuScratch scratch(ctx);
      IAPDCNN_OP_REQUIRES_OK(
          ctx, FciWithinClassCuda<T>(p, x.flat<T>().data(), labels.flat<int64_t>().data(),
                                     out->flat<T>().data(), TfGpuStream(ctx), &scratch));
    } else {
      IAPDCNN_OP_REQUIRES_OK(
          ctx, FciWithinClassCpu<T>(p, x.flat<T>().data(), labels.flat<int64_t>().data(),
                                    out->flat<T>().data(), TfParallelFor(ctx)));
    }
  }

 private:
  int64_t num_classes_ = 0;
};

#define REGISTER_BLOCKS(T)                                                                         \
  REGISTER_KERNEL_BUILDER(Name("Iapdcnn>FciClassStats").Device(DEVICE_CPU).TypeConstraint<T>("T"), \
                          FciClassStatsOp<T>);                                                     \
  REGISTER_KERNEL_BUILDER(Name("Iapdcnn>FciPrototype").Device(DEVICE_CPU).TypeConstraint<T>("T"),  \
                          FciPrototypeOp<T>);                                                      \
  REGISTER_KERNEL_BUILDER(                                                                         \
      Name("Iapdcnn>FciWithinClass").Device(DEVICE_CPU).TypeConstraint<T>("T"),                    \
      FciWithinClassOp<T>)
REGISTER_BLOCKS(float);
REGISTER_BLOCKS(double);
#undef REGISTER_BLOCKS

#if GOOGLE_CUDA
// labels and the class statistics live on the device like the other tensors.
#define REGISTER_GPU(T)                                                                       \
  REGISTER_KERNEL_BUILDER(                                                                    \
      Name("Iapdcnn>Fci").Device(::tensorflow::DEVICE_GPU).TypeConstraint<T>("T"),            \
      FciOp<T, true>);                                                                        \
  REGISTER_KERNEL_BUILDER(                                                                    \
      Name("Iapdcnn>FciClassStats").Device(::tensorflow::DEVICE_GPU).TypeConstraint<T>("T"),  \
      FciClassStatsOp<T, true>);                                                              \
  REGISTER_KERNEL_BUILDER(                                                                    \
      Name("Iapdcnn>FciPrototype").Device(::tensorflow::DEVICE_GPU).TypeConstraint<T>("T"),   \
      FciPrototypeOp<T, true>);                                                               \
  REGISTER_KERNEL_BUILDER(                                                                    \
      Name("Iapdcnn>FciWithinClass").Device(::tensorflow::DEVICE_GPU).TypeConstraint<T>("T"), \
      FciWithinClassOp<T, true>)
REGISTER_GPU(float);
REGISTER_GPU(double);
#undef REGISTER_GPU
#endif

}  // namespace tfops
}  // namespace iapdcnn
