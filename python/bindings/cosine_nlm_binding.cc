// iapdcnn._C.cosine_nlm(x, patch_radius, search_radius, h, eps): csrc/nlm on a NumPy array (CPU)
// or a CUDA array (the CUDA kernel, on the array's stream); one function dispatching by device.
#include "binding_util.h"
#include "common/parallel.h"
#include "cuda_array.h"
#include "nlm/nlm.h"

namespace iapdcnn {
namespace bindings {
namespace {

template <typename T>
py::object CosineNlmHost(const py::object& x_obj, int64_t patch_radius, int64_t search_radius,
                         double h, double eps) {
  const CArray<T> x = HostArray<T>(x_obj, "cosine_nlm", "x");
  CosineNlmParams p;
  ThrowIfError(ValidateCosineNlm(Dims(x), patch_radius, search_radius, h, eps, &p));
  py::array_t<T> out(Dims(x));
  {
    py::gil_scoped_release nogil;
    ThrowIfError(CosineNlmCpu<T>(p, x.data(), out.mutable_data(), DefaultParallelFor()));
  }
  return std::move(out);
}

py::object CosineNlmDevice(const CudaArg& x, int64_t patch_radius, int64_t search_radius, double h,
                           double eps) {
#ifdef IAPDCNN_WITH_CUDA
  RequireFloat(x, "cosine_nlm");
  CosineNlmParams p;
  ThrowIfError(ValidateCosineNlm(x.shape, patch_radius, search_radius, h, eps, &p));
  void* o = nullptr;
  py::object out = NewCudaBuffer("cosine_nlm", x.shape, x.dtype, x, &o);
  FloatDispatch(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    RunOnDevice("cosine_nlm", x, [&] {
      return CosineNlmCuda<T>(p, static_cast<const T*>(x.data), static_cast<T*>(o), x.stream);
    });
  });
  return out;
#else
  (void)x, (void)patch_radius, (void)search_radius, (void)h, (void)eps;
  ThrowNoCuda("cosine_nlm");
#endif
}

py::object CosineNlm(const py::object& x, int64_t patch_radius, int64_t search_radius, double h,
                     double eps) {
  if (IsCudaArray(x)) {
    return CosineNlmDevice(ParseCudaArray(x, "x"), patch_radius, search_radius, h, eps);
  }
  return HostFloatDispatch({x}, [&](auto tag) {
    return CosineNlmHost<decltype(tag)>(x, patch_radius, search_radius, h, eps);
  });
}

const Register reg([](py::module_& m) {
  using D = CosineNlmDefaults;
  m.def("cosine_nlm", &CosineNlm, py::arg("x"), py::arg("patch_radius") = D::patch_radius,
        py::arg("search_radius") = D::search_radius, py::arg("h") = D::h, py::arg("eps") = D::eps,
        "Cosine-similarity non-local means (spec §1a): x [N, H, W, C] -> [N, H, W, C], reflect "
        "borders. A NumPy float32 array stays float32, other host input is computed in float64; "
        "a float32 / float64 CUDA array runs on its device and returns a CudaBuffer.");
  m.def(
      "validate_cosine_nlm_args",
      [](int64_t patch_radius, int64_t search_radius, double h, double eps) {
        ThrowIfError(ValidateCosineNlmArgs(patch_radius, search_radius, h, eps));
      },
      py::arg("patch_radius") = D::patch_radius, py::arg("search_radius") = D::search_radius,
      py::arg("h") = D::h, py::arg("eps") = D::eps,
      "Raises ValueError (naming the argument) where cosine_nlm would refuse these scalars.");
  Defaults(m)["cosine_nlm"] = py::dict(py::arg("patch_radius") = D::patch_radius,
                                       py::arg("search_radius") = D::search_radius,
                                       py::arg("h") = D::h, py::arg("eps") = D::eps);
});

}  // namespace
}  // namespace bindings
}  // namespace iapdcnn
