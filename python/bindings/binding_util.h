// What every pybind11 binding shares: csrc Status -> Python ValueError, NumPy shapes -> the plain
// shape vectors csrc validates, host-array conversion, and self-registration of each kernel's
// bindings into iapdcnn._C (a new kernel adds one bindings file and touches nothing else).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <functional>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/status.h"

namespace iapdcnn {
namespace bindings {

namespace py = pybind11;

// Thrown for a ResourceExhausted Status; module.cc translates it into MemoryError (with its
// message; pybind11's own std::bad_alloc translation drops it). Safe to throw without the GIL.
struct OutOfMemory : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// InvalidArgument -> ValueError, ResourceExhausted -> MemoryError, Internal -> RuntimeError.
// May be called with the GIL released (it only throws C++ exceptions).
inline void ThrowIfError(const Status& s) {
  switch (s.code()) {
    case Status::Code::kOk:
      return;
    case Status::Code::kResourceExhausted:
      throw OutOfMemory(s.message());
    case Status::Code::kInternal:
      throw std::runtime_error(s.message());
    default:
      throw py::value_error(s.message());
  }
}

inline std::vector<int64_t> Dims(const py::array& a) {
  return std::vector<int64_t>(a.shape(), a.shape() + a.ndim());
}

// C-contiguous array of T (copies/casts only when needed).
template <typename T>
using CArray = py::array_t<T, py::array::c_style | py::array::forcecast>;

// True for a NumPy array of float32.
inline bool IsFloat32Array(py::handle obj) {
  return py::isinstance<py::array>(obj) &&
         py::str(py::reinterpret_borrow<py::array>(obj).dtype().attr("name")).cast<std::string>() ==
             "float32";
}

// The host dtype rule of the float32/float64 kernels: fn(float{}) when every array in `arrays` is
// a NumPy float32 array, else fn(double{}) (integer, float16, float64 and list input are computed
// in float64, as NumPy converts them).
template <typename Fn>
auto HostFloatDispatch(std::initializer_list<py::handle> arrays, Fn fn) {
  bool all_f32 = true;
  for (py::handle a : arrays) all_f32 = all_f32 && IsFloat32Array(a);
  return all_f32 ? fn(float{}) : fn(double{});
}

// Each <kernel>_binding.cc adds one Binder: one m.def per function (dispatching by device itself).
using Binder = std::function<void(py::module_&)>;
std::vector<Binder>& Registry();

struct Register {
  explicit Register(Binder b) { Registry().push_back(std::move(b)); }
};

// _C.defaults: {function: {argument: default}}, filled by each binding from csrc's
// <Kernel>Defaults structs. The Python wrappers take their defaults from it.
inline py::dict Defaults(py::module_& m) {
  if (!py::hasattr(m, "defaults")) m.attr("defaults") = py::dict();
  return m.attr("defaults").cast<py::dict>();
}

}  // namespace bindings
}  // namespace iapdcnn
