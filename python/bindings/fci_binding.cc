// iapdcnn._C.fci(x, y): pairwise FCI on NumPy arrays (csrc/fci).
#include "binding_util.h"
#include "common/parallel.h"
#include "fci/fci.h"

namespace iapdcnn {
namespace bindings {
namespace {

template <typename T>
py::array_t<T> Fci(CArray<T> x, CArray<T> y) {
  FciParams p;
  ThrowIfError(ValidateFci(Dims(x), Dims(y), &p));
  py::array_t<T> out({p.n_x, p.n_y});
  {
    py::gil_scoped_release nogil;
    ThrowIfError(
        FciPairwiseCpu<T>(p, x.data(), y.data(), out.mutable_data(), DefaultParallelFor()));
  }
  return out;
}

const Register reg([](py::module_& m) {
  // float64 first so that integer and float64 input keep full precision.
  m.def("fci", &Fci<double>, py::arg("x").noconvert(), py::arg("y").noconvert());
  m.def("fci", &Fci<float>, py::arg("x").noconvert(), py::arg("y").noconvert());
  m.def("fci", &Fci<double>, py::arg("x"), py::arg("y"),
        "Pairwise Feature Correlation Index (SPEC 1c): x [n_x, L], y [n_y, L] -> [n_x, n_y].");
});

}  // namespace
}  // namespace bindings
}  // namespace iapdcnn
