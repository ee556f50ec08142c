// Exceptions never leave a csrc entry point. Scratch is allocated with std::vector (and Eigen),
// which throw std::bad_alloc / std::length_error when a request cannot be met; thrown on a worker
// thread of TensorFlow's pool or of DefaultParallelFor, such an exception would terminate the
// process. GuardKernel runs a kernel body with a ParallelFor whose shards catch what they throw
// (the remaining shards are then skipped), rethrows the first exception on the calling thread
// once the ParallelFor returns, and turns it into a Status: allocation failures become
// ResourceExhausted, anything else Internal, the message naming the op.
#pragma once

#include <atomic>
#include <exception>
#include <functional>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>

#include "common/parallel.h"
#include "common/status.h"

namespace iapdcnn {

class ShardErrors {
 public:
  bool failed() const { return failed_.load(std::memory_order_relaxed); }
  void Record(std::exception_ptr e) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!first_) first_ = e;
    failed_.store(true, std::memory_order_relaxed);
  }
  void RethrowIfAny() {
    std::lock_guard<std::mutex> lock(mu_);
    if (first_) std::rethrow_exception(first_);
  }

 private:
  std::mutex mu_;
  std::exception_ptr first_;
  std::atomic<bool> failed_{false};
};

// pf, with every shard's exceptions caught into *errors and rethrown on the caller's thread.
inline ParallelFor GuardedParallelFor(const ParallelFor& pf, ShardErrors* errors) {
  return [&pf, errors](int64_t total, int64_t cost_per_unit,
                       const std::function<void(int64_t, int64_t)>& fn) {
    pf(total, cost_per_unit, [&fn, errors](int64_t b, int64_t e) {
      if (errors->failed()) return;
      try {
        fn(b, e);
      } catch (...) {
        errors->Record(std::current_exception());
      }
    });
    errors->RethrowIfAny();
  };
}

// Runs body(guarded_pf) -> Status; see the file comment. op names the kernel in messages.
template <typename Body>
Status GuardKernel(const char* op, const ParallelFor& pf, Body&& body) {
  ShardErrors errors;
  try {
    const ParallelFor guarded = GuardedParallelFor(pf, &errors);
    return body(guarded);
  } catch (const std::bad_alloc&) {
    return Status::ResourceExhausted(std::string(op) +
                                     ": out of memory allocating the kernel's scratch buffers");
  } catch (const std::length_error& e) {
    return Status::ResourceExhausted(std::string(op) + ": a scratch buffer is too large (" +
                                     e.what() + ")");
  } catch (const std::exception& e) {
    return Status::Internal(std::string(op) + ": internal error: " + e.what());
  } catch (...) {
    return Status::Internal(std::string(op) + ": internal error (unknown exception)");
  }
}

}  // namespace iapdcnn
