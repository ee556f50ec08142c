// iapdcnn._C.mdcv_distances(filters, shrinkage): MDCV filter distances on NumPy arrays (csrc/mdcv).
#include <tuple>

#include "binding_util.h"
#include "common/parallel.h"
#include "mdcv/mdcv.h"

namespace iapdcnn {
namespace bindings {
namespace {

template <typename T>
std::tuple<py::array_t<T>, py::array_t<T>, double> MdcvDistances(CArray<T> filters,
                                                                 double shrinkage) {
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
  return {distances, center, static_cast<double>(used)};
}

const Register reg([](py::module_& m) {
  // float32 input stays float32; anything else is computed and returned as float64.
  m.def("mdcv_distances", &MdcvDistances<float>, py::arg("filters").noconvert(),
        py::arg("shrinkage") = MdcvDefaults::shrinkage);
  m.def("mdcv_distances", &MdcvDistances<double>, py::arg("filters"),
        py::arg("shrinkage") = MdcvDefaults::shrinkage,
        "MDCV distances (spec §2a): filters [kh, kw, cin, cout] -> (distances [cout], "
        "center [kh, kw, cin], shrinkage used). shrinkage < 0 means Ledoit-Wolf.");
  Defaults(m)["mdcv_distances"] = py::dict(py::arg("shrinkage") = MdcvDefaults::shrinkage);
});

}  // namespace
}  // namespace bindings
}  // namespace iapdcnn
