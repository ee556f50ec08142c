// Helpers for the csrc/*/*_cuda.cu files only (needs nvcc): CUDA errors as csrc Status, launch
// geometry from the problem size, and scratch buffers from a GpuScratch or the stream's pool.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "common/gpu.h"
#include "common/status.h"

namespace iapdcnn {
namespace cuda {

inline Status FromCuda(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return Status::OK();
  if (e == cudaErrorMemoryAllocation) {
    return Status::ResourceExhausted(std::string("cuda: ") + what + ": out of device memory");
  }
  return Status::Internal(std::string("cuda: ") + what + ": " + cudaGetErrorName(e) + " (" +
                          cudaGetErrorString(e) + ")");
}

#define IAPDCNN_CUDA_RETURN_IF_ERROR(expr) \
  IAPDCNN_RETURN_IF_ERROR(::iapdcnn::cuda::FromCuda((expr), #expr))
// After every <<<...>>>: launch-configuration errors surface here, not at the next sync.
#define IAPDCNN_CUDA_CHECK_LAUNCH(name) \
  IAPDCNN_RETURN_IF_ERROR(::iapdcnn::cuda::FromCuda(cudaGetLastError(), name))

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over n items: enough to fill the GPU, capped because the loop
// strides over the rest (grid.x is limited to 2^31 - 1 anyway).
inline unsigned Blocks(int64_t n, int threads = kThreads) {
  const int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(b, 65535 * 8)));
}

#define IAPDCNN_GRID_STRIDE(i, n)                                                        \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

// The first bad element of a device array data [n]: launch() enqueues a kernel on `stream` that
// atomicMin-s the index of every bad element into *slot (device memory). *index is the smallest
// such index, n when there is none; then *value is that element, read back. Synchronises the
// stream (the caller returns a Status that names the element). `what` names the kernel in errors.
template <typename V, typename Launch>
Status FirstFlagged(int64_t n, const V* data, unsigned long long* slot, cudaStream_t stream,
                    const char* what, Launch launch, int64_t* index, V* value) {
  const unsigned long long none = static_cast<unsigned long long>(n);
  IAPDCNN_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(slot, &none, sizeof(none), cudaMemcpyHostToDevice, stream));
  launch();
  IAPDCNN_CUDA_CHECK_LAUNCH(what);
  unsigned long long bad = none;
  IAPDCNN_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(&bad, slot, sizeof(bad), cudaMemcpyDeviceToHost, stream));
  IAPDCNN_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  *index = static_cast<int64_t>(bad);
  if (bad == none) return Status::OK();
  // On the caller's stream, not cudaMemcpy's legacy default stream (which TF's and PyTorch's
  // non-blocking streams do not order with, and which waits for every blocking stream).
  IAPDCNN_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(value, data + bad, sizeof(V), cudaMemcpyDeviceToHost, stream));
  return FromCuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
}

// One scratch allocation, freed (stream-ordered) on destruction when it came from the pool.
class Scratch {
 public:
  Scratch(GpuScratch* lender, cudaStream_t stream) : lender_(lender), stream_(stream) {}
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() {
    if (ptr_ != nullptr && lender_ == nullptr) cudaFreeAsync(ptr_, stream_);
  }
  // Allocates bytes (at least 1) once; returns the pointer through *out.
  Status Get(int64_t bytes, void** out) {
    bytes = std::max<int64_t>(bytes, 256);
    if (lender_ != nullptr) {
      ptr_ = lender_->Allocate(bytes);
      if (ptr_ == nullptr) {
        return Status::ResourceExhausted("cuda: out of device memory for " + std::to_string(bytes) +
                                         " bytes of scratch");
      }
    } else {
      IAPDCNN_CUDA_RETURN_IF_ERROR(cudaMallocAsync(&ptr_, static_cast<size_t>(bytes), stream_));
    }
    *out = ptr_;
    return Status::OK();
  }

 private:
  GpuScratch* lender_;
  cudaStream_t stream_;
  void* ptr_ = nullptr;
};

// Carves aligned sub-buffers out of one scratch block: first pass counts, second hands out.
class Carver {
 public:
  explicit Carver(char* base = nullptr) : base_(base) {}
  template <typename X>
  X* Take(int64_t count) {
    off_ = (off_ + 255) / 256 * 256;
    X* p = base_ == nullptr ? nullptr : reinterpret_cast<X*>(base_ + off_);
    off_ += count * static_cast<int64_t>(sizeof(X));
    return p;
  }
  int64_t bytes() const { return off_; }

 private:
  char* base_;
  int64_t off_ = 0;
};

}  // namespace cuda
}  // namespace iapdcnn
