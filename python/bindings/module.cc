// The iapdcnn._C module: the csrc kernels on NumPy (and CUDA) arrays without TensorFlow. Each
// <kernel>_binding.cc registers its functions here through bindings::Register, one m.def per
// function, which dispatches by device itself (cuda_array.h).
#include "binding_util.h"

namespace iapdcnn {
namespace bindings {

std::vector<Binder>& Registry() {
  static std::vector<Binder> r;
  return r;
}

}  // namespace bindings
}  // namespace iapdcnn

PYBIND11_MODULE(_C, m) {
  m.doc() = "iapdcnn framework-free kernels (csrc/) on NumPy arrays";
#ifdef IAPDCNN_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  pybind11::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const iapdcnn::bindings::OutOfMemory& e) {
      PyErr_SetString(PyExc_MemoryError, e.what());
    }
  });
  for (auto& bind : iapdcnn::bindings::Registry()) bind(m);
}
