// What every TensorFlow adapter in tfops/ shares: csrc Status -> TF status, TF's intra-op thread
// pool as the csrc ParallelFor, and TensorShape -> the plain shape vectors csrc validates.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/checked.h"
#include "common/gpu.h"
#include "common/parallel.h"
#include "common/status.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"
#if GOOGLE_CUDA
// GOOGLE_CUDA builds (CMake sets it, with EIGEN_USE_GPU, when TensorFlow is built with CUDA and
// IAPDCNN_WITH_CUDA is on) also register a DEVICE_GPU kernel for every op.
#include "unsupported/Eigen/CXX11/Tensor"
#endif

namespace iapdcnn {
namespace tfops {

// The TensorFlow names every adapter uses.
using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
namespace shape_inference = ::tensorflow::shape_inference;

// Attribute specs "name: type = default" whose default is csrc's (the <Kernel>Defaults structs),
// so that no adapter restates a default. AttrList: "name: list(int) = [v, v, ...]" (n values).
inline std::string AttrSpec(const char* name_type, int64_t v) {
  return std::string(name_type) + " = " + std::to_string(v);
}
inline std::string AttrSpec(const char* name_type, bool v) {
  return std::string(name_type) + " = " + (v ? "true" : "false");
}
inline std::string AttrSpec(const char* name_type, const char* v) {
  return std::string(name_type) + " = '" + v + "'";
}
inline std::string AttrSpec(const char* name_type, double v) {
  char buf[32];
  for (int digits = 1; digits <= 17; ++digits) {  // the shortest text that reads back as v
    std::snprintf(buf, sizeof(buf), "%.*g", digits, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return std::string(name_type) + " = " + buf;
}
// A real-valued parameter as a scalar float64 input, not a float attribute: TensorFlow's float
// attributes are 32-bit, and would round h, eps or a threshold given for float64 data (a
// threshold 0.2 becoming 0.2000000030 moves an edge decision). The shape function checks the
// rank; this reads the value (host memory on GPU kernels: register with HostMemory(name)).
inline ::tensorflow::Status ScalarInput(OpKernelContext* ctx, int index, const char* op,
                                        const char* name, double* out) {
  const Tensor& t = ctx->input(index);
  if (t.dims() != 0) {
    return ::tensorflow::errors::InvalidArgument(op, ": ", name, " must be a scalar, got shape ",
                                                 t.shape().DebugString());
  }
  *out = t.scalar<double>()();
  return ::tensorflow::OkStatus();
}
// The shape functions' rank check (graph construction), with an error that names the op and
// the argument as csrc's Validate* messages do; TensorFlow's own names only the node. Unknown
// ranks pass (the kernel's Validate* checks them at run time).
inline ::tensorflow::Status WithRankNamed(shape_inference::InferenceContext* c,
                                          shape_inference::ShapeHandle s, int rank, const char* op,
                                          const char* name, shape_inference::ShapeHandle* out) {
  if (c->WithRank(s, rank, out).ok()) return ::tensorflow::OkStatus();
  return ::tensorflow::errors::InvalidArgument(
      op, ": ", name, " must be ",
      rank == 0 ? std::string("a scalar") : std::to_string(rank) + "-D", ", got shape ",
      c->DebugString(s));
}
// The shape function's half of ScalarInput: input `index` is a scalar.
inline ::tensorflow::Status ScalarInputShape(shape_inference::InferenceContext* c, int index,
                                             const char* op, const char* name) {
  shape_inference::ShapeHandle unused;
  return WithRankNamed(c, c->input(index), 0, op, name, &unused);
}

inline std::string AttrList(const char* name, int64_t v, int n) {
  std::string s = std::string(name) + ": list(int) = [";
  for (int i = 0; i < n; ++i) s += (i ? ", " : "") + std::to_string(v);
  return s + "]";
}

inline ::tensorflow::Status ToTf(const Status& s) {
  switch (s.code()) {
    case Status::Code::kOk:
      return ::tensorflow::OkStatus();
    case Status::Code::kResourceExhausted:
      return ::tensorflow::errors::ResourceExhausted(s.message());
    case Status::Code::kInternal:
      return ::tensorflow::errors::Internal(s.message());
    default:
      return ::tensorflow::errors::InvalidArgument(s.message());
  }
}

// Fails the op (and returns from the Compute method) when a csrc Status is not OK.
#define IAPDCNN_OP_REQUIRES_OK(ctx, expr) OP_REQUIRES_OK(ctx, ::iapdcnn::tfops::ToTf(expr))

// TensorFlow's intra-op pool (never a pool of our own: ops must not oversubscribe the cores).
inline ParallelFor TfParallelFor(::tensorflow::OpKernelContext* ctx) {
  auto* pool = ctx->device()->tensorflow_cpu_worker_threads()->workers;
  return [pool](int64_t total, int64_t cost_per_unit,
                const std::function<void(int64_t, int64_t)>& fn) {
    if (total <= 0) return;
    pool->ParallelFor(total, cost_per_unit, fn);
  };
}

// A TensorShape built with a Status (TensorShape's constructors CHECK-fail, killing the process,
// on a negative or overflowing size). csrc's Validate* functions already bound every output
// shape (common/checked.h); this is the adapter's own guard.
inline ::tensorflow::Status MakeShape(const std::vector<int64_t>& dims, TensorShape* out) {
  return TensorShape::BuildTensorShape(dims, out);
}

// ctx->allocate_output with a checked shape (see MakeShape); an allocation failure names the op
// and, where an argument rather than an input's size sets the shape, that argument (sized_by).
inline ::tensorflow::Status AllocateOutput(OpKernelContext* ctx, const char* op, int index,
                                           const std::vector<int64_t>& dims, Tensor** out,
                                           const char* sized_by = nullptr) {
  TensorShape shape;
  TF_RETURN_IF_ERROR(MakeShape(dims, &shape));
  const ::tensorflow::Status s = ctx->allocate_output(index, shape, out);
  if (s.ok()) return s;
  const std::string by =
      sized_by == nullptr ? "" : std::string(" (its size is set by ") + sized_by + ")";
  return ::tensorflow::errors::ResourceExhausted(
      op, ": cannot allocate output ", index, " of shape ", ShapeStr(dims), by, ": ", s.message());
}

inline std::vector<int64_t> Dims(const ::tensorflow::TensorShape& s) {
  std::vector<int64_t> d(s.dims());
  for (int i = 0; i < s.dims(); ++i) d[i] = s.dim_size(i);
  return d;
}

// ---- GPU kernels: TF's compute stream, and TF's allocator lent as csrc scratch ------------------

#if GOOGLE_CUDA
inline cudaStream_t TfGpuStream(::tensorflow::OpKernelContext* ctx) {
  return ctx->eigen_device<Eigen::GpuDevice>().stream();
}
#else
inline cudaStream_t TfGpuStream(::tensorflow::OpKernelContext*) { return nullptr; }  // unused
#endif

// Temporaries from allocate_temp: TF's allocator orders their reuse on the compute stream, so
// they may be released when Compute returns, before the kernels ran.
class TfGpuScratch : public GpuScratch {
 public:
  explicit TfGpuScratch(::tensorflow::OpKernelContext* ctx) : ctx_(ctx) {}
  void* Allocate(int64_t bytes) override {
    if (bytes < 0) return nullptr;  // an overflowed size: TensorShape would CHECK-fail on it
    ::tensorflow::Tensor t;
    if (!ctx_->allocate_temp(::tensorflow::DT_UINT8, ::tensorflow::TensorShape({bytes}), &t).ok()) {
      return nullptr;
    }
    temps_.push_back(t);
    return t.flat<uint8_t>().data();
  }

 private:
  ::tensorflow::OpKernelContext* ctx_;
  std::vector<::tensorflow::Tensor> temps_;
};

}  // namespace tfops
}  // namespace iapdcnn
