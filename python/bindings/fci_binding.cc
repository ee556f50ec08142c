// iapdcnn._C.fci(x, y): pairwise FCI on NumPy arrays (csrc/fci), and the block-screening
// functions fci_class_stats, fci_prototype and fci_within_class.
#include <string>

#include "binding_util.h"
#include "common/checked.h"
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

// Labels: an integer array (any integer dtype, cast to int64); float labels are not truncated.
struct Labels {
  CArray<int64_t> a;
  const int64_t* data() const { return a.data(); }
};
Labels LabelsOf(const py::object& obj, const char* fn) {
  py::array arr = py::module_::import("numpy").attr("asarray")(obj);
  const char kind = arr.dtype().kind();
  if (kind != 'i' && kind != 'u') {
    throw py::type_error(std::string(fn) + ": labels must be integers, got dtype " +
                         std::string(py::str(arr.dtype())));
  }
  return Labels{CArray<int64_t>::ensure(arr)};
}

template <typename T>
py::tuple FciClassStats(CArray<T> x, const py::object& labels_obj, int64_t num_classes) {
  const Labels labels = LabelsOf(labels_obj, "fci_class_stats");
  FciBlocksParams p;
  ThrowIfError(ValidateFciBlocks(Dims(x), Dims(labels.a), num_classes, &p));
  ThrowIfError(CheckedElements("fci_class_stats", "sums [num_classes, positions, block_len]",
                               {p.num_classes, p.positions, p.block_len}));
  py::array_t<double> counts, sums;
  try {
    counts = py::array_t<double>({p.num_classes});
    sums = py::array_t<double>({p.num_classes, p.positions, p.block_len});
  } catch (py::error_already_set& e) {
    if (!e.matches(PyExc_MemoryError)) throw;
    throw OutOfMemory("fci_class_stats: num_classes = " + std::to_string(p.num_classes) +
                      " needs float64 sums of shape " +
                      ShapeStr({p.num_classes, p.positions, p.block_len}) + ": " + e.what());
  }
  {
    py::gil_scoped_release nogil;
    ThrowIfError(FciClassStatsCpu<T>(p, x.data(), labels.data(), counts.mutable_data(),
                                     sums.mutable_data(), DefaultParallelFor()));
  }
  return py::make_tuple(counts, sums);
}

template <typename T>
py::array_t<T> FciPrototype(CArray<T> x, const py::object& labels_obj, CArray<T> prototypes) {
  const Labels labels = LabelsOf(labels_obj, "fci_prototype");
  FciBlocksParams p;
  ThrowIfError(
      ValidateFciBlocks(Dims(x), Dims(labels.a), prototypes.ndim() ? prototypes.shape(0) : 0, &p));
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
py::array_t<T> FciWithinClass(CArray<T> x, const py::object& labels_obj, int64_t num_classes) {
  const Labels labels = LabelsOf(labels_obj, "fci_within_class");
  FciBlocksParams p;
  ThrowIfError(ValidateFciBlocks(Dims(x), Dims(labels.a), num_classes, &p));
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
        "Per-class (counts [K], float64 block sums [K, P, L]) of x [n, P, L] (spec §1c).");
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
        "Pairwise Feature Correlation Index (spec §1c): x [n_x, L], y [n_y, L] -> [n_x, n_y].");
});

}  // namespace
}  // namespace bindings
}  // namespace iapdcnn
