// Device dispatch in iapdcnn._C. Each function is bound once and looks at its first array
// argument: objects with __cuda_array_interface__ (CuPy, PyTorch CUDA tensors, Numba) and DLPack
// (capsules, or objects whose __dlpack_device__ is CUDA) are parsed into CudaArg and go to the csrc
// CUDA entry point; anything else goes, as a NumPy array, to the CPU one. CUDA results come back as
// CudaBuffer, which owns device memory (cudaMallocAsync) and exposes __cuda_array_interface__
// (cupy.asarray / torch.as_tensor wrap it without a copy). Built without CUDA, a CUDA array is a
// clear error.
#pragma once

#include <memory>
#include <stdexcept>
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
// A new CudaBuffer of shape/dtype on like's device, tagged with like's stream. fn names the
// function in errors: out of device memory is a MemoryError that names it and the output's size.
py::object NewCudaBuffer(const char* fn, const std::vector<int64_t>& shape,
                         const std::string& dtype, const CudaArg& like, void** data);
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

// The functions dispatch on their first array argument; a later one on the other device is an
// error naming it (ParseCudaArrayLike is the CUDA side's check).
inline void RequireHost(py::handle obj, const char* fn, const char* name) {
  if (IsCudaArray(obj)) {
    throw py::type_error(std::string("iapdcnn._C.") + fn + ": " + name +
                         " is a CUDA array but the first argument is not; pass all arrays on "
                         "the same device");
  }
}

// Argument `name` of function `fn` as a C-contiguous host array of T (NumPy converts / casts it).
template <typename T>
CArray<T> HostArray(const py::object& obj, const char* fn, const char* name) {
  RequireHost(obj, fn, name);
  CArray<T> a = CArray<T>::ensure(obj);
  if (!a) {
    throw py::type_error(std::string("iapdcnn._C.") + fn + ": " + name +
                         " must be a numeric array, got " +
                         py::str(py::type::of(obj)).cast<std::string>());
  }
  return a;
}

// CUDA-side helpers of the dispatching functions.

// Runs body on the device of `a` without the GIL; raises its csrc error (ThrowIfError), named
// after the function fn when the error does not say it already.
template <typename Body>
void RunOnDevice(const char* fn, const CudaArg& a, Body body) {
  Status st;
  {
    DeviceGuard guard(a.device);
    py::gil_scoped_release nogil;
    st = body();
  }
  ThrowIfError(st.Named(fn));
}

inline void RequireFloat(const CudaArg& a, const char* fn) {
  if (a.dtype != "float32" && a.dtype != "float64") {
    throw py::type_error(std::string("iapdcnn._C.") + fn +
                         ": CUDA input must be float32 or float64, got " + a.dtype);
  }
}

// fn(float{}) for a float32 CUDA array, fn(double{}) for float64 (RequireFloat checked it).
template <typename Fn>
void FloatDispatch(const std::string& dtype, Fn fn) {
  if (dtype == "float32") {
    fn(float{});
  } else {
    fn(double{});
  }
}

}  // namespace bindings
}  // namespace iapdcnn
