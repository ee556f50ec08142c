// Parsing of __cuda_array_interface__ / DLPack inputs and the CudaBuffer output type of
// iapdcnn._C (see cuda_array.h). The CUDA runtime calls exist only in IAPDCNN_WITH_CUDA builds.
#include "cuda_array.h"

#include <pybind11/stl.h>

#include <cstdint>
#include <cstring>
#include <mutex>
#include <utility>

#ifdef IAPDCNN_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace iapdcnn {
namespace bindings {

namespace {

// DLPack's ABI (dlpack.h v0.x/1.0 unversioned tensors, which every producer still exports).
struct DLDevice {
  int32_t device_type;
  int32_t device_id;
};
struct DLDataType {
  uint8_t code;
  uint8_t bits;
  uint16_t lanes;
};
struct DLTensor {
  void* data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;
  int64_t* strides;
  uint64_t byte_offset;
};
struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor*);
};
constexpr int32_t kDLCUDA = 2, kDLCUDAManaged = 13;

bool IsCudaDevice(int32_t t) { return t == kDLCUDA || t == kDLCUDAManaged; }

std::string DtypeOfTypestr(const std::string& ts) {
  if (ts.size() < 3 || (ts[0] != '<' && ts[0] != '|' && ts[0] != '=')) return ts;
  const std::string k = ts.substr(1);
  if (k == "f2") return "float16";
  if (k == "f4") return "float32";
  if (k == "f8") return "float64";
  if (k == "i8") return "int64";
  if (k == "i4") return "int32";
  return ts;
}
std::string TypestrOf(const std::string& dtype) {
  if (dtype == "float16") return "<f2";
  if (dtype == "float32") return "<f4";
  if (dtype == "float64") return "<f8";
  if (dtype == "int64") return "<i8";
  throw py::type_error("iapdcnn._C: no __cuda_array_interface__ typestr for " + dtype);
}
int64_t ItemSize(const std::string& dtype) {
  if (dtype == "float16" || dtype == "bfloat16") return 2;
  if (dtype == "float32" || dtype == "int32") return 4;
  return 8;
}
std::string DtypeOfDl(const DLDataType& t) {
  if (t.lanes != 1) return "vector";
  if (t.code == 2 && t.bits == 16) return "float16";
  if (t.code == 2 && t.bits == 32) return "float32";
  if (t.code == 2 && t.bits == 64) return "float64";
  if (t.code == 4 && t.bits == 16) return "bfloat16";
  if (t.code == 0 && t.bits == 64) return "int64";
  if (t.code == 0 && t.bits == 32) return "int32";
  return "dlpack(code=" + std::to_string(t.code) + ", bits=" + std::to_string(t.bits) + ")";
}

void RequireContiguous(const std::vector<int64_t>& shape, const std::vector<int64_t>& strides_bytes,
                       int64_t itemsize, const char* name) {
  int64_t expect = itemsize;
  for (int64_t i = static_cast<int64_t>(shape.size()) - 1; i >= 0; --i) {
    if (shape[i] != 1 && strides_bytes[i] != expect) {
      throw py::value_error(std::string("iapdcnn._C: ") + name +
                            " must be a C-contiguous CUDA array (use .contiguous() / "
                            "cupy.ascontiguousarray)");
    }
    expect *= shape[i];
  }
}

CudaArg FromCai(py::handle h, const char* name) {
  CudaArg a;
  a.obj = py::reinterpret_borrow<py::object>(h);
  py::dict cai = h.attr("__cuda_array_interface__");
  for (auto d : cai["shape"]) a.shape.push_back(d.cast<int64_t>());
  a.dtype = DtypeOfTypestr(cai["typestr"].cast<std::string>());
  py::tuple data = cai["data"];
  a.data = reinterpret_cast<void*>(data[0].cast<uintptr_t>());
  if (cai.contains("strides") && !cai["strides"].is_none()) {
    std::vector<int64_t> st;
    for (auto s : cai["strides"]) st.push_back(s.cast<int64_t>());
    RequireContiguous(a.shape, st, ItemSize(a.dtype), name);
  }
  if (cai.contains("stream") && !cai["stream"].is_none()) {
    a.stream = reinterpret_cast<cudaStream_t>(cai["stream"].cast<uintptr_t>());
  }
#ifdef IAPDCNN_WITH_CUDA
  if (a.data != nullptr) {
    cudaPointerAttributes attr{};
    if (cudaPointerGetAttributes(&attr, a.data) == cudaSuccess) a.device = attr.device;
    cudaGetLastError();  // a failed query must not poison the next launch check
  }
#endif
  return a;
}

CudaArg FromCapsule(py::object capsule, py::handle owner, const char* name) {
  auto* mt = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule.ptr(), "dltensor"));
  if (mt == nullptr) throw py::error_already_set();
  // Consumed: the capsule no longer deletes it, we do (when the last CudaArg copy goes).
  PyCapsule_SetName(capsule.ptr(), "used_dltensor");
  CudaArg a;
  a.obj = py::reinterpret_borrow<py::object>(owner);
  a.dl_owner = std::shared_ptr<void>(mt, [](void* p) {
    auto* m = static_cast<DLManagedTensor*>(p);
    if (m->deleter != nullptr) m->deleter(m);
  });
  const DLTensor& t = mt->dl_tensor;
  if (!IsCudaDevice(t.device.device_type)) {
    throw py::value_error(std::string("iapdcnn._C: ") + name +
                          " is a DLPack tensor on device type " +
                          std::to_string(t.device.device_type) + ", not CUDA");
  }
  a.device = t.device.device_id;
  a.dtype = DtypeOfDl(t.dtype);
  a.shape.assign(t.shape, t.shape + t.ndim);
  a.data = static_cast<char*>(t.data) + t.byte_offset;
  if (t.strides != nullptr) {
    std::vector<int64_t> st(t.strides, t.strides + t.ndim);
    for (auto& s : st) s *= ItemSize(a.dtype);
    RequireContiguous(a.shape, st, ItemSize(a.dtype), name);
  }
  return a;
}

#ifdef IAPDCNN_WITH_CUDA
// Outputs and csrc scratch come from the device's default stream-ordered pool; by default it
// returns memory to the driver at every synchronisation, so a loop of calls would pay cudaMalloc's
// cost each time. Keep it cached, as PyTorch's and CuPy's allocators do.
void KeepPoolMemory(int device) {
  static std::once_flag once[64];
  if (device < 0 || device >= 64) return;
  std::call_once(once[device], [device] {
    cudaMemPool_t pool;
    if (cudaDeviceGetDefaultMemPool(&pool, device) == cudaSuccess) {
      uint64_t keep = UINT64_MAX;
      cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep);
    }
    cudaGetLastError();
  });
}

void Check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    cudaGetLastError();  // not left behind for the next launch check
    throw std::runtime_error(std::string("iapdcnn._C: ") + what + ": " + cudaGetErrorString(e));
  }
}
#endif

// Owns a block of the device's stream-ordered pool; what NewCudaBuffer returns.
struct CudaBuffer {
  void* ptr = nullptr;
  std::vector<int64_t> shape;
  std::string dtype;
  int device = 0;
  uintptr_t stream = 1;  // CAI v3: the stream the data is produced on (1: legacy default)
  // Where the block is freed: nullptr for the legacy default stream, which waits for all work on
  // blocking streams (the legacy and per-thread default streams, CuPy's default Stream()); else
  // the producing stream itself, when it is non-blocking (PyTorch's streams): the legacy stream
  // does not wait for those, so a free there could let the pool hand the block out again while
  // the kernels writing it still run. Such a stream must outlive the buffer.
  cudaStream_t free_on = nullptr;
  CudaBuffer() = default;
  CudaBuffer(const CudaBuffer&) = delete;
  CudaBuffer& operator=(const CudaBuffer&) = delete;
  ~CudaBuffer() {
#ifdef IAPDCNN_WITH_CUDA
    if (ptr != nullptr) {
      // Not DeviceGuard: it throws, and a destructor must not (std::terminate). Errors are
      // ignored (at interpreter exit the runtime may be gone), and cleared, so that the next
      // launch check (cudaGetLastError) does not report them.
      int previous = -1;
      if (cudaGetDevice(&previous) != cudaSuccess) previous = -1;
      if (previous != device) cudaSetDevice(device);
      // A consumer on another stream must synchronise it with `stream` before dropping the last
      // reference (PyTorch's record_stream contract).
      cudaFreeAsync(ptr, free_on == nullptr ? cudaStreamLegacy : free_on);
      if (previous >= 0 && previous != device) cudaSetDevice(previous);
      cudaGetLastError();
    }
#endif
  }
  py::dict Interface() const {
    py::dict d;
    d["shape"] = py::tuple(py::cast(shape));
    d["typestr"] = TypestrOf(dtype);
    d["data"] = py::make_tuple(reinterpret_cast<uintptr_t>(ptr), false);
    d["strides"] = py::none();
    d["version"] = 3;
    d["stream"] = stream;
    return d;
  }
};

const Register reg([](py::module_& m) {
  py::class_<CudaBuffer>(m, "CudaBuffer",
                         "Device memory returned by iapdcnn._C for CUDA inputs; wrap it with "
                         "cupy.asarray(buf) or torch.as_tensor(buf, device='cuda').")
      .def_property_readonly("__cuda_array_interface__", &CudaBuffer::Interface)
      .def_property_readonly("shape",
                             [](const CudaBuffer& b) { return py::tuple(py::cast(b.shape)); })
      .def_property_readonly("dtype", [](const CudaBuffer& b) { return b.dtype; })
      .def_property_readonly("device", [](const CudaBuffer& b) { return b.device; });
});

}  // namespace

bool IsCudaArray(py::handle h) {
  if (PyCapsule_CheckExact(h.ptr())) {
    if (!PyCapsule_IsValid(h.ptr(), "dltensor")) return false;
    auto* mt = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(h.ptr(), "dltensor"));
    return mt != nullptr && IsCudaDevice(mt->dl_tensor.device.device_type);
  }
  if (py::hasattr(h, "__cuda_array_interface__")) return true;
  if (py::hasattr(h, "__dlpack_device__")) {
    try {
      py::tuple d = h.attr("__dlpack_device__")();
      return IsCudaDevice(d[0].cast<int32_t>());
    } catch (const py::error_already_set&) {
      return false;
    }
  }
  return false;
}

CudaArg ParseCudaArray(py::handle h, const char* name) {
  if (PyCapsule_CheckExact(h.ptr())) {
    return FromCapsule(py::reinterpret_borrow<py::object>(h), h, name);
  }
  if (py::hasattr(h, "__cuda_array_interface__")) return FromCai(h, name);
  if (py::hasattr(h, "__dlpack__")) {
    // stream=1: we run on the legacy default stream; the producer orders its work before it.
    py::object cap = h.attr("__dlpack__")(py::arg("stream") = 1);
    return FromCapsule(cap, h, name);
  }
  throw py::type_error(std::string("iapdcnn._C: ") + name + " is not a CUDA array");
}

CudaArg ParseCudaArrayLike(py::handle h, const char* name, const CudaArg& like,
                           const std::string& dtype) {
  if (!IsCudaArray(h)) {
    throw py::type_error(std::string("iapdcnn._C: ") + name +
                         " must be a CUDA array like the first argument (got " +
                         py::str(py::type::of(h)).cast<std::string>() + ")");
  }
  CudaArg a = ParseCudaArray(h, name);
  if (a.device != like.device) {
    throw py::value_error(std::string("iapdcnn._C: ") + name + " is on CUDA device " +
                          std::to_string(a.device) + ", the first argument on " +
                          std::to_string(like.device));
  }
  if (!dtype.empty() && a.dtype != dtype) {
    throw py::type_error(std::string("iapdcnn._C: ") + name + " must be " + dtype + ", got " +
                         a.dtype);
  }
#ifdef IAPDCNN_WITH_CUDA
  // The kernels run on like.stream; CAI v3 asks the consumer to order its work after the stream
  // each array was produced on, so a different producer stream is waited for (an event, no host
  // synchronisation). nullptr is the legacy default stream.
  cudaStream_t from = a.stream == nullptr ? cudaStreamLegacy : a.stream;
  cudaStream_t to = like.stream == nullptr ? cudaStreamLegacy : like.stream;
  if (from != to && a.data != nullptr) {
    DeviceGuard g(like.device);
    cudaEvent_t ev = nullptr;
    Check(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming), "cudaEventCreateWithFlags");
    cudaError_t e = cudaEventRecord(ev, from);
    if (e == cudaSuccess) e = cudaStreamWaitEvent(to, ev, 0);
    cudaEventDestroy(ev);  // released once the wait is satisfied
    Check(e, "ordering an argument's producer stream before the kernel's stream");
  }
#endif
  return a;
}

py::object NewCudaBuffer(const char* fn, const std::vector<int64_t>& shape,
                         const std::string& dtype, const CudaArg& like, void** data) {
#ifdef IAPDCNN_WITH_CUDA
  auto buf = std::make_unique<CudaBuffer>();
  buf->shape = shape;
  buf->dtype = dtype;
  buf->device = like.device;
  buf->stream = like.stream == nullptr ? 1 : reinterpret_cast<uintptr_t>(like.stream);
  int64_t bytes = ItemSize(dtype);
  for (int64_t d : shape) bytes *= d;
  if (bytes > 0) {
    DeviceGuard g(like.device);
    KeepPoolMemory(like.device);
    cudaStream_t s = like.stream;
    if (s != nullptr && s != cudaStreamLegacy && s != cudaStreamPerThread) {
      unsigned flags = 0;
      Check(cudaStreamGetFlags(s, &flags), "cudaStreamGetFlags");
      if ((flags & cudaStreamNonBlocking) != 0) buf->free_on = s;
    }
    const cudaError_t e = cudaMallocAsync(&buf->ptr, static_cast<size_t>(bytes), like.stream);
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();  // not left behind for the next launch check
      throw OutOfMemory(std::string("iapdcnn._C.") + fn + ": out of device memory for an output " +
                        "of shape " + ShapeStr(shape) + " (" + dtype + ", " +
                        std::to_string(bytes) + " bytes) on CUDA device " +
                        std::to_string(like.device));
    }
    Check(e, (std::string(fn) + ": cudaMallocAsync of an output of shape " + ShapeStr(shape) +
              " (" + dtype + ")")
                 .c_str());
  }
  *data = buf->ptr;
  return py::cast(std::move(buf));
#else
  (void)shape;
  (void)dtype;
  (void)like;
  (void)data;
  ThrowNoCuda(fn);
#endif
}

void ThrowNoCuda(const char* fn) {
  throw py::type_error(std::string("iapdcnn._C.") + fn +
                       ": got a CUDA array, but iapdcnn was built without CUDA "
                       "(IAPDCNN_WITH_CUDA=OFF or no nvcc at build time); pass NumPy arrays or "
                       "rebuild with nvcc on PATH");
}

DeviceGuard::DeviceGuard(int device) {
#ifdef IAPDCNN_WITH_CUDA
  if (cudaGetDevice(&previous_) == cudaSuccess && previous_ != device) {
    Check(cudaSetDevice(device), "cudaSetDevice");
  } else {
    previous_ = -1;
  }
#else
  (void)device;
#endif
}

DeviceGuard::~DeviceGuard() {
#ifdef IAPDCNN_WITH_CUDA
  if (previous_ >= 0) cudaSetDevice(previous_);
#endif
}

}  // namespace bindings
}  // namespace iapdcnn
