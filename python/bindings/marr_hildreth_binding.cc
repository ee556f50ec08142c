// iapdcnn._C.marr_hildreth(x, laplacian, threshold, relative, mode): NumPy access to
// csrc/marr_hildreth.
#include <string>

#include "binding_util.h"
#include "common/parallel.h"
#include "marr_hildreth/marr_hildreth.h"

namespace iapdcnn {
namespace bindings {
namespace {

template <typename T>
py::array_t<T> MarrHildreth(CArray<T> x, int64_t laplacian, double threshold, bool relative,
                            const std::string& mode) {
  MarrHildrethParams p;
  ThrowIfError(ValidateMarrHildreth(Dims(x), laplacian, threshold, relative, mode, &p));
  py::array_t<T> out(std::vector<int64_t>(x.shape(), x.shape() + x.ndim()));
  {
    py::gil_scoped_release nogil;
    ThrowIfError(MarrHildrethCpu<T>(p, x.data(), out.mutable_data(), DefaultParallelFor()));
  }
  return out;
}

const Register reg([](py::module_& m) {
  const char* doc =
      "Marr-Hildreth edges (spec §1b): x [N, H, W, C] -> [N, H, W, C]; mode 'masked', 'binary' "
      "or 'magnitude'.";
  using D = MarrHildrethDefaults;
  m.def("marr_hildreth", &MarrHildreth<float>, py::arg("x").noconvert(),
        py::arg("laplacian") = D::laplacian, py::arg("threshold") = D::threshold,
        py::arg("relative") = D::relative, py::arg("mode") = D::mode, doc);
  m.def("marr_hildreth", &MarrHildreth<double>, py::arg("x"), py::arg("laplacian") = D::laplacian,
        py::arg("threshold") = D::threshold, py::arg("relative") = D::relative,
        py::arg("mode") = D::mode, doc);
  Defaults(m)["marr_hildreth"] =
      py::dict(py::arg("laplacian") = D::laplacian, py::arg("threshold") = D::threshold,
               py::arg("relative") = D::relative, py::arg("mode") = D::mode);
});

}  // namespace
}  // namespace bindings
}  // namespace iapdcnn
