// iapdcnn._C.mdcv_distances(filters, shrinkage): MDCV filter distances on a NumPy array
// (csrc/mdcv, CPU only: the dense solves are small and run where the weights are read).
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

py::object MdcvDistances(const py::object& filters, double shrinkage) {
  if (IsCudaArray(filters)) {
    throw py::type_error(
        "iapdcnn._C.mdcv_distances: filters is a CUDA array, but MDCV has no CUDA kernel; pass "
        "a NumPy array");
  }
  return HostFloatDispatch(
      {filters}, [&](auto tag) { return MdcvDistancesHost<decltype(tag)>(filters, shrinkage); });
}

const Register reg([](py::module_& m) {
  m.def("mdcv_distances", &MdcvDistances, py::arg("filters"),
        py::arg("shrinkage") = MdcvDefaults::shrinkage,
        "MDCV distances (spec §2a): filters [kh, kw, cin, cout] -> (distances [cout], "
        "center [kh, kw, cin], shrinkage used). shrinkage < 0 means Ledoit-Wolf. A NumPy float32 "
        "array stays float32, other input is computed and returned as float64.");
  Defaults(m)["mdcv_distances"] = py::dict(py::arg("shrinkage") = MdcvDefaults::shrinkage);
});

}  // namespace
}  // namespace bindings
}  // namespace iapdcnn
