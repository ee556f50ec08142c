// Device arrays in iapdcnn._C: objects with __cuda_array_interface__ (CuPy, PyTorch CUDA
// tensors, Numba) and DLPack (capsules, or objects whose __dlpack_device__ is CUDA) are parsed into
// CudaArg; results come back as CudaBuffer, which owns device memory (cudaMallocAsync) and exposes
// __cuda_array_interface__ (cupy.asarray / torch.as_tensor wrap it without a copy). Built without
// CUDA, the same overloads exist and raise a clear error.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "binding_util.h"
#include "common/gpu.h"

namespace iapdcnn {
namespace bindings {

struct CudaArg {
  py::object obj;  // keeps the producer alive
  void* data = nullptr;
  std::vector<int64_t> shape;
  std::string dtype;  // NumPy name: float16, bfloat16, float32, float64, int64, ...
  int device = 0;
  // The producer's stream (CAI v3 "stream": 1 legacy default, 2 per-thread, else a handle);
  // nullptr: the legacy default stream.
  cudaStream_t stream = nullptr;
  std::shared_ptr<void> dl_owner;  // a consumed DLPack tensor, released through its deleter
};

// True for a CUDA array / CUDA DLPack capsule / object whose __dlpack_device__ is CUDA.
bool IsCudaArray(py::handle h);
// Parses h (which IsCudaArray); `name` names the argument in errors (non-contiguous, not CUDA).
CudaArg ParseCudaArray(py::handle h, const char* name);
// Like ParseCudaArray, also requiring the device and (when dtype is non-empty) dtype of `like`.
CudaArg ParseCudaArrayLike(py::handle h, const char* name, const CudaArg& like,
                           const std::string& dtype);
// A new CudaBuffer of shape/dtype on like's device, tagged with like's stream.
py::object NewCudaBuffer(const std::vector<int64_t>& shape, const std::string& dtype,
                         const CudaArg& like, void** data);
// Raises "iapdcnn._C was built without CUDA" for function fn.
[[noreturn]] void ThrowNoCuda(const char* fn);

// Makes like.device current for its lifetime (restoring the previous device).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

}  // namespace bindings
}  // namespace iapdcnn

namespace pybind11 {
namespace detail {
// Lets an overload taking CudaArg match only CUDA arrays, so NumPy input falls through to the
// NumPy overloads.
template <>
struct type_caster<iapdcnn::bindings::CudaArg> {
  PYBIND11_TYPE_CASTER(iapdcnn::bindings::CudaArg, const_name("CudaArray"));
  bool load(handle src, bool) {
    if (!iapdcnn::bindings::IsCudaArray(src)) return false;
    value = iapdcnn::bindings::ParseCudaArray(src, "argument");
    return true;
  }
  static handle cast(const iapdcnn::bindings::CudaArg& a, return_value_policy, handle) {
    return a.obj.inc_ref();
  }
};
}  // namespace detail
}  // namespace pybind11
