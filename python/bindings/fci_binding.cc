// iapdcnn._C.fci(x, y): pairwise FCI (csrc/fci), and the block-screening functions
// fci_class_stats, fci_prototype and fci_within_class. Each is one function that dispatches by
// device: NumPy arrays to the CPU kernels, CUDA arrays to the CUDA kernels on their stream.
#include <string>

#include "binding_util.h"
#include "common/checked.h"
#include "common/parallel.h"
#include "cuda_array.h"
#include "fci/fci.h"

namespace iapdcnn {
namespace bindings {
namespace {

// ---- host (NumPy) ------------------------------------------------------------------------------

// Labels: an integer array (any integer dtype, cast to int64); float labels are not truncated.
CArray<int64_t> LabelsOf(const py::object& obj, const char* fn) {
  RequireHost(obj, fn, "labels");
  py::array arr = py::module_::import("numpy").attr("asarray")(obj);
  const char kind = arr.dtype().kind();
  if (kind != 'i' && kind != 'u') {
    throw py::type_error(std::string(fn) + ": labels must be integers, got dtype " +
                         std::string(py::str(arr.dtype())));
  }
  return CArray<int64_t>::ensure(arr);
}

template <typename T>
py::object FciHost(const py::object& x_obj, const py::object& y_obj) {
  const CArray<T> x = HostArray<T>(x_obj, "fci", "x");
  const CArray<T> y = HostArray<T>(y_obj, "fci", "y");
  FciParams p;
  ThrowIfError(ValidateFci(Dims(x), Dims(y), &p));
  py::array_t<T> out({p.n_x, p.n_y});
  {
    py::gil_scoped_release nogil;
    ThrowIfError(
        FciPairwiseCpu<T>(p, x.data(), y.data(), out.mutable_data(), DefaultParallelFor()));
  }
  return std::move(out);
}

template <typename T>
py::object FciClassStatsHost(const py::object& x_obj, const py::object& labels_obj,
                             int64_t num_classes) {
  const CArray<T> x = HostArray<T>(x_obj, "fci_class_stats", "x");
  const CArray<int64_t> labels = LabelsOf(labels_obj, "fci_class_stats");
  FciBlocksParams p;
  ThrowIfError(ValidateFciBlocks(Dims(x), Dims(labels), num_classes, &p));
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
py::object FciPrototypeHost(const py::object& x_obj, const py::object& labels_obj,
                            const py::object& protos_obj) {
  const CArray<T> x = HostArray<T>(x_obj, "fci_prototype", "x");
  const CArray<int64_t> labels = LabelsOf(labels_obj, "fci_prototype");
  const CArray<T> protos = HostArray<T>(protos_obj, "fci_prototype", "prototypes");
  FciBlocksParams p;
  ThrowIfError(ValidateFciBlocks(Dims(x), Dims(labels), protos.ndim() ? protos.shape(0) : 0, &p));
  ThrowIfError(ValidateFciPrototypes(p, Dims(protos)));
  py::array_t<T> out({p.n, p.positions});
  {
    py::gil_scoped_release nogil;
    ThrowIfError(FciPrototypeCpu<T>(p, x.data(), labels.data(), protos.data(), out.mutable_data(),
                                    DefaultParallelFor()));
  }
  return std::move(out);
}

template <typename T>
py::object FciWithinClassHost(const py::object& x_obj, const py::object& labels_obj,
                              int64_t num_classes) {
  const CArray<T> x = HostArray<T>(x_obj, "fci_within_class", "x");
  const CArray<int64_t> labels = LabelsOf(labels_obj, "fci_within_class");
  FciBlocksParams p;
  ThrowIfError(ValidateFciBlocks(Dims(x), Dims(labels), num_classes, &p));
  py::array_t<T> out({p.n, p.positions});
  {
    py::gil_scoped_release nogil;
    ThrowIfError(
        FciWithinClassCpu<T>(p, x.data(), labels.data(), out.mutable_data(), DefaultParallelFor()));
  }
  return std::move(out);
}

// ---- device (CUDA arrays) ----------------------------------------------------------------------

py::object FciDevice(const CudaArg& x, const py::object& y_obj) {
#ifdef IAPDCNN_WITH_CUDA
  RequireFloat(x, "fci");
  const CudaArg y = ParseCudaArrayLike(y_obj, "y", x, x.dtype);
  FciParams p;
  ThrowIfError(ValidateFci(x.shape, y.shape, &p));
  void* o = nullptr;
  py::object out = NewCudaBuffer("fci", {p.n_x, p.n_y}, x.dtype, x, &o);
  FloatDispatch(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    RunOnDevice("fci", x, [&] {
      return FciPairwiseCuda<T>(p, static_cast<const T*>(x.data), static_cast<const T*>(y.data),
                                static_cast<T*>(o), x.stream);
    });
  });
  return out;
#else
  (void)x, (void)y_obj;
  ThrowNoCuda("fci");
#endif
}

py::object FciClassStatsDevice(const CudaArg& x, const py::object& labels_obj,
                               int64_t num_classes) {
#ifdef IAPDCNN_WITH_CUDA
  RequireFloat(x, "fci_class_stats");
  const CudaArg labels = ParseCudaArrayLike(labels_obj, "labels", x, "int64");
  FciBlocksParams p;
  ThrowIfError(ValidateFciBlocks(x.shape, labels.shape, num_classes, &p));
  void *c = nullptr, *s = nullptr;
  py::object counts = NewCudaBuffer("fci_class_stats", {p.num_classes}, "float64", x, &c);
  py::object sums =
      NewCudaBuffer("fci_class_stats", {p.num_classes, p.positions, p.block_len}, "float64", x, &s);
  FloatDispatch(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    RunOnDevice("fci_class_stats", x, [&] {
      return FciClassStatsCuda<T>(p, static_cast<const T*>(x.data),
                                  static_cast<const int64_t*>(labels.data), static_cast<double*>(c),
                                  static_cast<double*>(s), x.stream);
    });
  });
  return py::make_tuple(counts, sums);
#else
  (void)x, (void)labels_obj, (void)num_classes;
  ThrowNoCuda("fci_class_stats");
#endif
}

py::object FciPrototypeDevice(const CudaArg& x, const py::object& labels_obj,
                              const py::object& protos_obj) {
#ifdef IAPDCNN_WITH_CUDA
  RequireFloat(x, "fci_prototype");
  const CudaArg labels = ParseCudaArrayLike(labels_obj, "labels", x, "int64");
  const CudaArg protos = ParseCudaArrayLike(protos_obj, "prototypes", x, x.dtype);
  FciBlocksParams p;
  ThrowIfError(
      ValidateFciBlocks(x.shape, labels.shape, protos.shape.empty() ? 0 : protos.shape[0], &p));
  ThrowIfError(ValidateFciPrototypes(p, protos.shape));
  void* o = nullptr;
  py::object out = NewCudaBuffer("fci_prototype", {p.n, p.positions}, x.dtype, x, &o);
  FloatDispatch(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    RunOnDevice("fci_prototype", x, [&] {
      return FciPrototypeCuda<T>(p, static_cast<const T*>(x.data),
                                 static_cast<const int64_t*>(labels.data),
                                 static_cast<const T*>(protos.data), static_cast<T*>(o), x.stream);
    });
  });
  return out;
#else
  (void)x, (void)labels_obj, (void)protos_obj;
  ThrowNoCuda("fci_prototype");
#endif
}

py::object FciWithinClassDevice(const CudaArg& x, const py::object& labels_obj,
                                int64_t num_classes) {
#ifdef IAPDCNN_WITH_CUDA
  RequireFloat(x, "fci_within_class");
  const CudaArg labels = ParseCudaArrayLike(labels_obj, "labels", x, "int64");
  FciBlocksParams p;
  ThrowIfError(ValidateFciBlocks(x.shape, labels.shape, num_classes, &p));
  void* o = nullptr;
  py::object out = NewCudaBuffer("fci_within_class", {p.n, p.positions}, x.dtype, x, &o);
  FloatDispatch(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    RunOnDevice("fci_within_class", x, [&] {
      return FciWithinClassCuda<T>(p, static_cast<const T*>(x.data),
                                   static_cast<const int64_t*>(labels.data), static_cast<T*>(o),
                                   x.stream);
    });
  });
  return out;
#else
  (void)x, (void)labels_obj, (void)num_classes;
  ThrowNoCuda("fci_within_class");
#endif
}

// ---- the bound functions: dispatch on x's device -----------------------------------------------

py::object Fci(const py::object& x, const py::object& y) {
  if (IsCudaArray(x)) return FciDevice(ParseCudaArray(x, "x"), y);
  return HostFloatDispatch({x, y}, [&](auto tag) { return FciHost<decltype(tag)>(x, y); });
}

py::object FciClassStats(const py::object& x, const py::object& labels, int64_t num_classes) {
  if (IsCudaArray(x)) return FciClassStatsDevice(ParseCudaArray(x, "x"), labels, num_classes);
  return HostFloatDispatch(
      {x}, [&](auto tag) { return FciClassStatsHost<decltype(tag)>(x, labels, num_classes); });
}

py::object FciPrototype(const py::object& x, const py::object& labels,
                        const py::object& prototypes) {
  if (IsCudaArray(x)) return FciPrototypeDevice(ParseCudaArray(x, "x"), labels, prototypes);
  return HostFloatDispatch({x, prototypes}, [&](auto tag) {
    return FciPrototypeHost<decltype(tag)>(x, labels, prototypes);
  });
}

py::object FciWithinClass(const py::object& x, const py::object& labels, int64_t num_classes) {
  if (IsCudaArray(x)) return FciWithinClassDevice(ParseCudaArray(x, "x"), labels, num_classes);
  return HostFloatDispatch(
      {x}, [&](auto tag) { return FciWithinClassHost<decltype(tag)>(x, labels, num_classes); });
}

const Register reg([](py::module_& m) {
  m.def("fci", &Fci, py::arg("x"), py::arg("y"),
        "Pairwise Feature Correlation Index (spec §1c): x [n_x, L], y [n_y, L] -> [n_x, n_y]. "
        "float32 when x and y are NumPy float32 arrays, else float64; CUDA arrays (x and y, same "
        "float dtype) run on their device and return a CudaBuffer.");
  m.def("fci_class_stats", &FciClassStats, py::arg("x"), py::arg("labels"), py::arg("num_classes"),
        "Per-class (counts [K], float64 block sums [K, P, L]) of x [n, P, L] (spec §1c).");
  m.def("fci_prototype", &FciPrototype, py::arg("x"), py::arg("labels"), py::arg("prototypes"),
        "FCI of x [n, P, L] against prototypes[labels] -> [n, P].");
  m.def("fci_within_class", &FciWithinClass, py::arg("x"), py::arg("labels"),
        py::arg("num_classes"),
        "Mean FCI against the other same-class samples, per block: x [n, P, L] -> [n, P].");
  m.def(
      "validate_fci_block_size",
      [](int64_t block_size, int64_t height, int64_t width) {
        ThrowIfError(ValidateFciBlockSize(block_size, height, width));
      },
      py::arg("block_size"), py::arg("height") = -1, py::arg("width") = -1,
      "Raises ValueError (naming block_size) unless 1 <= block_size <= height and width (-1: "
      "not known yet).");
  Defaults(m)["fci_filter"] = py::dict(py::arg("block_size") = FciFilterDefaults::block_size);
});

}  // namespace
}  // namespace bindings
}  // namespace iapdcnn
