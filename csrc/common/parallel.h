// The one threading abstraction csrc kernels see. Kernels split work into [begin, end) ranges
// of independent units and hand them to a ParallelFor; the TensorFlow adapter backs it with TF's
// intra-op thread pool (so ops never oversubscribe the cores), the pybind11 binding with
// std::thread (DefaultParallelFor).
#pragma once

#include <cstdint>
#include <functional>

namespace iapdcnn {

// fn(begin, end) processes units [begin, end). cost_per_unit is a rough cycle count per unit,
// used to choose shard sizes (TF's Shard semantics).
using ParallelFor = std::function<void(int64_t total, int64_t cost_per_unit,
                                       const std::function<void(int64_t, int64_t)>& fn)>;

// std::thread-backed ParallelFor using up to hardware_concurrency threads; runs inline when
// the work is small.
const ParallelFor& DefaultParallelFor();

// Runs fn over [0, total) serially (tests, tiny problems).
const ParallelFor& SerialParallelFor();

// ceil(a / b) for a >= 0, b > 0.
constexpr int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// How many units a kernel splits its work into: per_thread per hardware thread, at least 2.
// Enough to balance the pool, few enough to keep each unit large. The ParallelFor does not say
// its size; TensorFlow's intra-op pool defaults to the core count, as DefaultParallelFor does.
// Each caller names its factor (conv's GEMM tiles 2, the AVX-512 micro-kernel's pixel shards 4).
int64_t TargetTasks(int64_t per_thread);

}  // namespace iapdcnn
