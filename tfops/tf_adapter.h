// What every TensorFlow adapter in tfops/ shares: csrc Status -> TF status, TF's intra-op thread
// pool as the csrc ParallelFor, and TensorShape -> the plain shape vectors csrc validates.
#pragma once

#include <vector>

#include "common/parallel.h"
#include "common/status.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/util/work_sharder.h"

namespace iapdcnn {
namespace tfops {

inline ::tensorflow::Status ToTf(const Status& s) {
  if (s.ok()) return ::tensorflow::OkStatus();
  return ::tensorflow::errors::InvalidArgument(s.message());
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

inline std::vector<int64_t> Dims(const ::tensorflow::TensorShape& s) {
  std::vector<int64_t> d(s.dims());
  for (int i = 0; i < s.dims(); ++i) d[i] = s.dim_size(i);
  return d;
}

}  // namespace tfops
}  // namespace iapdcnn
