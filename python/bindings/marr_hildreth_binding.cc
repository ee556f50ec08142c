// iapdcnn._C.marr_hildreth(x, laplacian, threshold, relative, mode): csrc/marr_hildreth on a NumPy
// array (CPU) or a CUDA array (the CUDA kernel, on the array's stream); one function dispatching
// by device.
#include <iterator>
#include <string>

#include "binding_util.h"
#include "common/parallel.h"
#include "cuda_array.h"
#include "marr_hildreth/marr_hildreth.h"

namespace iapdcnn {
namespace bindings {
namespace {

template <typename T>
py::object MarrHildrethHost(const py::object& x_obj, int64_t laplacian, double threshold,
                            bool relative, const std::string& mode) {
  const CArray<T> x = HostArray<T>(x_obj, "marr_hildreth", "x");
  MarrHildrethParams p;
  ThrowIfError(ValidateMarrHildreth(Dims(x), laplacian, threshold, relative, mode, &p));
  py::array_t<T> out(Dims(x));
  {
    py::gil_scoped_release nogil;
    ThrowIfError(MarrHildrethCpu<T>(p, x.data(), out.mutable_data(), DefaultParallelFor()));
  }
  return std::move(out);
}

py::object MarrHildrethDevice(const CudaArg& x, int64_t laplacian, double threshold, bool relative,
                              const std::string& mode) {
#ifdef IAPDCNN_WITH_CUDA
  RequireFloat(x, "marr_hildreth");
  MarrHildrethParams p;
  ThrowIfError(ValidateMarrHildreth(x.shape, laplacian, threshold, relative, mode, &p));
  void* o = nullptr;
  py::object out = NewCudaBuffer("marr_hildreth", x.shape, x.dtype, x, &o);
  FloatDispatch(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    RunOnDevice("marr_hildreth", x, [&] {
      return MarrHildrethCuda<T>(p, static_cast<const T*>(x.data), static_cast<T*>(o), x.stream);
    });
  });
  return out;
#else
  (void)x, (void)laplacian, (void)threshold, (void)relative, (void)mode;
  ThrowNoCuda("marr_hildreth");
#endif
}

py::object MarrHildreth(const py::object& x, int64_t laplacian, double threshold, bool relative,
                        const std::string& mode) {
  if (IsCudaArray(x)) {
    return MarrHildrethDevice(ParseCudaArray(x, "x"), laplacian, threshold, relative, mode);
  }
  return HostFloatDispatch({x}, [&](auto tag) {
    return MarrHildrethHost<decltype(tag)>(x, laplacian, threshold, relative, mode);
  });
}

const Register reg([](py::module_& m) {
  using D = MarrHildrethDefaults;
  m.def("marr_hildreth", &MarrHildreth, py::arg("x"), py::arg("laplacian") = D::laplacian,
        py::arg("threshold") = D::threshold, py::arg("relative") = D::relative,
        py::arg("mode") = D::mode,
        "Marr-Hildreth edges (spec §1b): x [N, H, W, C] -> [N, H, W, C]; mode 'masked', 'binary' "
        "or 'magnitude'. A NumPy float32 array stays float32, other host input is computed in "
        "float64; a float32 / float64 CUDA array runs on its device and returns a CudaBuffer.");
  m.def(
      "validate_marr_hildreth_args",
      [](int64_t laplacian, double threshold, const std::string& mode) {
        ThrowIfError(ValidateMarrHildrethArgs(laplacian, threshold, mode));
      },
      py::arg("laplacian") = D::laplacian, py::arg("threshold") = D::threshold,
      py::arg("mode") = D::mode,
      "Raises ValueError (naming the argument) where marr_hildreth would refuse these scalars.");
  py::tuple modes(std::size(kEdgeModeNames));
  for (size_t i = 0; i < std::size(kEdgeModeNames); ++i) modes[i] = kEdgeModeNames[i];
  m.attr("marr_hildreth_modes") = modes;
  py::tuple laplacians(std::size(kLaplacianNeighbours));
  for (size_t i = 0; i < std::size(kLaplacianNeighbours); ++i) {
    laplacians[i] = kLaplacianNeighbours[i];
  }
  m.attr("marr_hildreth_laplacians") = laplacians;
  Defaults(m)["marr_hildreth"] =
      py::dict(py::arg("laplacian") = D::laplacian, py::arg("threshold") = D::threshold,
               py::arg("relative") = D::relative, py::arg("mode") = D::mode);
});

}  // namespace
}  // namespace bindings
}  // namespace iapdcnn
