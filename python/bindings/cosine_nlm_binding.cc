// iapdcnn._C.cosine_nlm(x, patch_radius, search_radius, h, eps): NumPy access to csrc/nlm.
#include "binding_util.h"
#include "common/parallel.h"
#include "nlm/nlm.h"

namespace iapdcnn {
namespace bindings {
namespace {

template <typename T>
py::array_t<T> CosineNlm(CArray<T> x, int64_t patch_radius, int64_t search_radius, double h,
                         double eps) {
  CosineNlmParams p;
  ThrowIfError(ValidateCosineNlm(Dims(x), patch_radius, search_radius, h, eps, &p));
  py::array_t<T> out(std::vector<int64_t>(x.shape(), x.shape() + x.ndim()));
  {
    py::gil_scoped_release nogil;
    ThrowIfError(CosineNlmCpu<T>(p, x.data(), out.mutable_data(), DefaultParallelFor()));
  }
  return out;
}

const Register reg([](py::module_& m) {
  const char* doc =
      "Cosine-similarity non-local means (spec §1a): x [N, H, W, C] -> [N, H, W, C], reflect "
      "borders.";
  using D = CosineNlmDefaults;
  m.def("cosine_nlm", &CosineNlm<float>, py::arg("x").noconvert(),
        py::arg("patch_radius") = D::patch_radius, py::arg("search_radius") = D::search_radius,
        py::arg("h") = D::h, py::arg("eps") = D::eps, doc);
  m.def("cosine_nlm", &CosineNlm<double>, py::arg("x"), py::arg("patch_radius") = D::patch_radius,
        py::arg("search_radius") = D::search_radius, py::arg("h") = D::h, py::arg("eps") = D::eps,
        doc);
  Defaults(m)["cosine_nlm"] = py::dict(py::arg("patch_radius") = D::patch_radius,
                                       py::arg("search_radius") = D::search_radius,
                                       py::arg("h") = D::h, py::arg("eps") = D::eps);
});

}  // namespace
}  // namespace bindings
}  // namespace iapdcnn
