// iapdcnn._C.mdcv_distances(filters, shrinkage): MDCV filter distances (csrc/mdcv), one function
// that dispatches by device: a NumPy array to the CPU kernel, a CUDA array to the CUDA kernel on
// its stream (the Gram product on the device, the small solve on the host).
#include <tuple>

#include "binding_util.h"
#include "common/parallel.h"
#include "cuda_array.h"
#include "mdcv/mdcv.h"

namespace iapdcnn {
namespace bindings {
namespace {

template <typename T>
py::object MdcvDistancesHost(const py::object& filters_obj, double shrinkage) {
  const CArray<T> filters = HostArray<T>(filters_obj, "mdcv_distances", "filters");
  MdcvParams p;
  ThrowIfError(ValidateMdcv(Dims(filters), shrinkage, &p));
  py::array_t<T> distances({p.cout});
  py::array_t<T> center({p.kh, p.kw, p.cin});
  T used = 0;
  {
    py::gil_scoped_release nogil;
    ThrowIfError(MdcvDistancesCpu<T>(p, filters.data(), distances.mutable_data(),
                                     center.mutable_data(), &used, DefaultParallelFor()));
  }
  return py::make_tuple(distances, center, static_cast<double>(used));
}

py::object MdcvDistancesDevice(const CudaArg& filters, double shrinkage) {
#ifdef IAPDCNN_WITH_CUDA
  RequireFloat(filters, "mdcv_distances");
  MdcvParams p;
  ThrowIfError(ValidateMdcv(filters.shape, shrinkage, &p));
  void *dist = nullptr, *center = nullptr;
  py::object distances = NewCudaBuffer("mdcv_distances", {p.cout}, filters.dtype, filters, &dist);
  py::object centers =
      NewCudaBuffer("mdcv_distances", {p.kh, p.kw, p.cin}, filters.dtype, filters, &center);
  double used = 0.0;
  FloatDispatch(filters.dtype, [&](auto tag) {
    using T = decltype(tag);
    RunOnDevice("mdcv_distances", filters, [&] {
      return MdcvDistancesCuda<T>(p, static_cast<const T*>(filters.data), static_cast<T*>(dist),
                                  static_cast<T*>(center), &used, filters.stream,
                                  DefaultParallelFor());
    });
  });
  return py::make_tuple(distances, centers, used);
#else
  (void)filters, (void)shrinkage;
  ThrowNoCuda("mdcv_distances");
#endif
}

py::object MdcvDistances(const py::object& filters, double shrinkage) {
  if (IsCudaArray(filters))
    return MdcvDistancesDevice(ParseCudaArray(filters, "filters"), shrinkage);
  return HostFloatDispatch(
      {filters}, [&](auto tag) { return MdcvDistancesHost<decltype(tag)>(filters, shrinkage); });
}

const Register reg([](py::module_& m) {
  m.def("mdcv_distances", &MdcvDistances, py::arg("filters"),
        py::arg("shrinkage") = MdcvDefaults::shrinkage,
        "MDCV distances (spec §2a): filters [kh, kw, cin, cout] -> (distances [cout], "
        "center [kh, kw, cin], shrinkage used). shrinkage < 0 means Ledoit-Wolf. A NumPy float32 "
        "array stays float32, other input is computed and returned as float64. A CUDA array "
        "(float32 / float64) runs on its device: distances and center come back as CudaBuffer.");
  Defaults(m)["mdcv_distances"] = py::dict(py::arg("shrinkage") = MdcvDefaults::shrinkage);
});

}  // namespace
}  // namespace bindings
}  // namespace iapdcnn
