// iapdcnn._C.fci(x, y): pairwise FCI on NumPy arrays (csrc/fci), and the block-screening
// functions fci_class_stats, fci_prototype and fci_within_class.
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

using Labels = CArray<int64_t>;

template <typename T>
py::tuple FciClassStats(CArray<T> x, Labels labels, int64_t num_classes) {
  FciBlocksParams p;
  ThrowIfError(ValidateFciBlocks(Dims(x), Dims(labels), num_classes, &p));
  py::array_t<double> counts({p.num_classes});
  py::array_t<double> sums({p.num_classes, p.positions, p.block_len});
  {
    py::gil_scoped_release nogil;
    ThrowIfError(FciClassStatsCpu<T>(p, x.data(), labels.data(), counts.mutable_data(),
                                     sums.mutable_data(), DefaultParallelFor()));
  }
  return py::make_tuple(counts, sums);
}

template <typename T>
py::array_t<T> FciPrototype(CArray<T> x, Labels labels, CArray<T> prototypes) {
  FciBlocksParams p;
  ThrowIfError(
      ValidateFciBlocks(Dims(x), Dims(labels), prototypes.ndim() ? prototypes.shape(0) : 0, &p));
  ThrowIfError(ValidateFciPrototypes(p, Dims(prototypes)));
  py::array_t<T> out({p.n, p.positions});
  {
    py::gil_scoped_release nogil;
    ThrowIfError(FciPrototypeCpu<T>(p, x.data(), labels.data(), prototypes.data(),
                                    out.mutable_data(), DefaultParallelFor()));
  }
  return out;
}

template <typename T>
py::array_t<T> FciWithinClass(CArray<T> x, Labels labels, int64_t num_classes) {
  FciBlocksParams p;
  ThrowIfError(ValidateFciBlocks(Dims(x), Dims(labels), num_classes, &p));
  py::array_t<T> out({p.n, p.positions});
  {
    py::gil_scoped_release nogil;
    ThrowIfError(
        FciWithinClassCpu<T>(p, x.data(), labels.data(), out.mutable_data(), DefaultParallelFor()));
  }
  return out;
}

const Register reg_blocks([](py::module_& m) {
  m.def("fci_class_stats", &FciClassStats<float>, py::arg("x").noconvert(), py::arg("labels"),
        py::arg("num_classes"));
  m.def("fci_class_stats", &FciClassStats<double>, py::arg("x"), py::arg("labels"),
        py::arg("num_classes"),
        "Per-class (counts [K], float64 block sums [K, P, L]) of x [n, P, L] (SPEC 1c).");
  m.def("fci_prototype", &FciPrototype<float>, py::arg("x").noconvert(), py::arg("labels"),
        py::arg("prototypes").noconvert());
  m.def("fci_prototype", &FciPrototype<double>, py::arg("x"), py::arg("labels"),
        py::arg("prototypes"), "FCI of x [n, P, L] against prototypes[labels] -> [n, P].");
  m.def("fci_within_class", &FciWithinClass<float>, py::arg("x").noconvert(), py::arg("labels"),
        py::arg("num_classes"));
  m.def("fci_within_class", &FciWithinClass<double>, py::arg("x"), py::arg("labels"),
        py::arg("num_classes"),
        "Mean FCI against the other same-class samples, per block: x [n, P, L] -> [n, P].");
});

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
