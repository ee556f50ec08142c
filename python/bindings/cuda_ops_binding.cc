// CUDA-array overloads of every iapdcnn._C kernel function: same names and arguments as the NumPy
// ones, bound first so that a CUDA array (CuPy, PyTorch, DLPack) selects them. They validate with
// the same csrc functions, enqueue the csrc CUDA entry point on the input's stream (see
// cuda_array.h) and return CudaBuffer outputs without synchronising.
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "conv/conv.h"
#include "conv_args.h"
#include "cuda_array.h"
#include "fci/fci.h"
#include "marr_hildreth/marr_hildreth.h"
#include "nlm/nlm.h"

#ifdef IAPDCNN_WITH_CUDA
#include <cuda_fp16.h>
#endif

namespace iapdcnn {
namespace bindings {
namespace {

// Runs fn on the device of `a` without the GIL; raises csrc errors as ValueError.
template <typename Fn>
void Run(const CudaArg& a, Fn fn) {
  Status st;
  {
    DeviceGuard guard(a.device);
    py::gil_scoped_release nogil;
    st = fn();
  }
  ThrowIfError(st);
}

void RequireFloat(const CudaArg& a, const char* fn) {
  if (a.dtype != "float32" && a.dtype != "float64") {
    throw py::type_error(std::string("iapdcnn._C.") + fn +
                         ": CUDA input must be float32 or float64, got " + a.dtype);
  }
}

template <typename Fn>
void FloatDispatch(const std::string& dtype, Fn fn) {
  if (dtype == "float32") {
    fn(float{});
  } else {
    fn(double{});
  }
}

py::object CosineNlm(CudaArg x, int64_t patch_radius, int64_t search_radius, double h, double eps) {
#ifdef IAPDCNN_WITH_CUDA
  RequireFloat(x, "cosine_nlm");
  CosineNlmParams p;
  ThrowIfError(ValidateCosineNlm(x.shape, patch_radius, search_radius, h, eps, &p));
  void* o = nullptr;
  py::object out = NewCudaBuffer(x.shape, x.dtype, x, &o);
  FloatDispatch(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    Run(x, [&] {
      return CosineNlmCuda<T>(p, static_cast<const T*>(x.data), static_cast<T*>(o), x.stream);
    });
  });
  return out;
#else
  ThrowNoCuda("cosine_nlm");
#endif
}

py::object MarrHildreth(CudaArg x, int64_t laplacian, double threshold, bool relative,
                        const std::string& mode) {
#ifdef IAPDCNN_WITH_CUDA
  RequireFloat(x, "marr_hildreth");
  MarrHildrethParams p;
  ThrowIfError(ValidateMarrHildreth(x.shape, laplacian, threshold, relative, mode, &p));
  void* o = nullptr;
  py::object out = NewCudaBuffer(x.shape, x.dtype, x, &o);
  FloatDispatch(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    Run(x, [&] {
      return MarrHildrethCuda<T>(p, static_cast<const T*>(x.data), static_cast<T*>(o), x.stream);
    });
  });
  return out;
#else
  ThrowNoCuda("marr_hildreth");
#endif
}

py::object Fci(CudaArg x, const py::object& y_obj) {
#ifdef IAPDCNN_WITH_CUDA
  RequireFloat(x, "fci");
  const CudaArg y = ParseCudaArrayLike(y_obj, "y", x, x.dtype);
  FciParams p;
  ThrowIfError(ValidateFci(x.shape, y.shape, &p));
  void* o = nullptr;
  py::object out = NewCudaBuffer({p.n_x, p.n_y}, x.dtype, x, &o);
  FloatDispatch(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    Run(x, [&] {
      return FciPairwiseCuda<T>(p, static_cast<const T*>(x.data), static_cast<const T*>(y.data),
                                static_cast<T*>(o), x.stream);
    });
  });
  return out;
#else
  (void)y_obj;
  ThrowNoCuda("fci");
#endif
}

py::object FciClassStats(CudaArg x, const py::object& labels_obj, int64_t num_classes) {
#ifdef IAPDCNN_WITH_CUDA
  RequireFloat(x, "fci_class_stats");
  const CudaArg labels = ParseCudaArrayLike(labels_obj, "labels", x, "int64");
  FciBlocksParams p;
  ThrowIfError(ValidateFciBlocks(x.shape, labels.shape, num_classes, &p));
  void *c = nullptr, *s = nullptr;
  py::object counts = NewCudaBuffer({p.num_classes}, "float64", x, &c);
  py::object sums = NewCudaBuffer({p.num_classes, p.positions, p.block_len}, "float64", x, &s);
  FloatDispatch(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    Run(x, [&] {
      return FciClassStatsCuda<T>(p, static_cast<const T*>(x.data),
                                  static_cast<const int64_t*>(labels.data), static_cast<double*>(c),
                                  static_cast<double*>(s), x.stream);
    });
  });
  return py::make_tuple(counts, sums);
#else
  (void)labels_obj;
  (void)num_classes;
  ThrowNoCuda("fci_class_stats");
#endif
}

py::object FciPrototype(CudaArg x, const py::object& labels_obj, const py::object& protos_obj) {
#ifdef IAPDCNN_WITH_CUDA
  RequireFloat(x, "fci_prototype");
  const CudaArg labels = ParseCudaArrayLike(labels_obj, "labels", x, "int64");
  const CudaArg protos = ParseCudaArrayLike(protos_obj, "prototypes", x, x.dtype);
  FciBlocksParams p;
  ThrowIfError(
      ValidateFciBlocks(x.shape, labels.shape, protos.shape.empty() ? 0 : protos.shape[0], &p));
  ThrowIfError(ValidateFciPrototypes(p, protos.shape));
  void* o = nullptr;
  py::object out = NewCudaBuffer({p.n, p.positions}, x.dtype, x, &o);
  FloatDispatch(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    Run(x, [&] {
      return FciPrototypeCuda<T>(p, static_cast<const T*>(x.data),
                                 static_cast<const int64_t*>(labels.data),
                                 static_cast<const T*>(protos.data), static_cast<T*>(o), x.stream);
    });
  });
  return out;
#else
  (void)labels_obj;
  (void)protos_obj;
  ThrowNoCuda("fci_prototype");
#endif
}

py::object FciWithinClass(CudaArg x, const py::object& labels_obj, int64_t num_classes) {
#ifdef IAPDCNN_WITH_CUDA
  RequireFloat(x, "fci_within_class");
  const CudaArg labels = ParseCudaArrayLike(labels_obj, "labels", x, "int64");
  FciBlocksParams p;
  ThrowIfError(ValidateFciBlocks(x.shape, labels.shape, num_classes, &p));
  void* o = nullptr;
  py::object out = NewCudaBuffer({p.n, p.positions}, x.dtype, x, &o);
  FloatDispatch(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    Run(x, [&] {
      return FciWithinClassCuda<T>(p, static_cast<const T*>(x.data),
                                   static_cast<const int64_t*>(labels.data), static_cast<T*>(o),
                                   x.stream);
    });
  });
  return out;
#else
  (void)labels_obj;
  (void)num_classes;
  ThrowNoCuda("fci_within_class");
#endif
}

// ---- convolution (argument conventions: conv_args.h) ----------------------------------------

#ifdef IAPDCNN_WITH_CUDA
template <typename Fn>
void ConvDispatch(const std::string& dtype, Fn fn) {
  if (dtype == "float32") {
    fn(float{});
  } else if (dtype == "float64") {
    fn(double{});
  } else if (dtype == "float16") {
    fn(__half{});
  } else {
    // bfloat16 reaches here only through DLPack; CUDA has no standard CAI typestr for results.
    throw py::type_error(
        "iapdcnn._C.im2col_conv2d: CUDA input must be float16, float32 or "
        "float64, got " +
        dtype);
  }
}
#endif

py::object ConvForward(CudaArg input, const py::object& filters_obj, const py::object& strides,
                       const py::object& padding, const std::string& data_format,
                       const py::object& dilations, int64_t groups) {
#ifdef IAPDCNN_WITH_CUDA
  const CudaArg w = ParseCudaArrayLike(filters_obj, "filters", input, input.dtype);
  const Im2colConv2DParams p =
      ConvParams(input.shape, w.shape, strides, padding, data_format, dilations, groups);
  py::object out;
  ConvDispatch(input.dtype, [&](auto tag) {
    using T = decltype(tag);
    void* o = nullptr;
    out = NewCudaBuffer(p.OutputShape(), input.dtype, input, &o);
    Run(input, [&] {
      return Im2colConv2DCuda<T>(p, static_cast<const T*>(input.data),
                                 static_cast<const T*>(w.data), static_cast<T*>(o), input.stream);
    });
  });
  return out;
#else
  (void)filters_obj, (void)strides, (void)padding, (void)data_format, (void)dilations, (void)groups;
  ThrowNoCuda("im2col_conv2d");
#endif
}

py::object ConvBackpropInput(const std::vector<int64_t>& input_sizes, CudaArg filters,
                             const py::object& out_backprop_obj, const py::object& strides,
                             const py::object& padding, const std::string& data_format,
                             const py::object& dilations, int64_t groups) {
#ifdef IAPDCNN_WITH_CUDA
  const CudaArg dy = ParseCudaArrayLike(out_backprop_obj, "out_backprop", filters, filters.dtype);
  const Im2colConv2DParams p =
      ConvParams(input_sizes, filters.shape, strides, padding, data_format, dilations, groups);
  ThrowIfError(CheckShapeIs("out_backprop", dy.shape, p.OutputShape()));
  py::object out;
  ConvDispatch(filters.dtype, [&](auto tag) {
    using T = decltype(tag);
    void* o = nullptr;
    out = NewCudaBuffer(p.InputShape(), filters.dtype, filters, &o);
    Run(filters, [&] {
      return Im2colConv2DBackpropInputCuda<T>(p, static_cast<const T*>(filters.data),
                                              static_cast<const T*>(dy.data), static_cast<T*>(o),
                                              filters.stream);
    });
  });
  return out;
#else
  (void)input_sizes, (void)out_backprop_obj, (void)strides, (void)padding, (void)data_format,
      (void)dilations, (void)groups;
  ThrowNoCuda("im2col_conv2d_backprop_input");
#endif
}

py::object ConvBackpropFilter(CudaArg input, const std::vector<int64_t>& filter_sizes,
                              const py::object& out_backprop_obj, const py::object& strides,
                              const py::object& padding, const std::string& data_format,
                              const py::object& dilations, int64_t groups) {
#ifdef IAPDCNN_WITH_CUDA
  const CudaArg dy = ParseCudaArrayLike(out_backprop_obj, "out_backprop", input, input.dtype);
  const Im2colConv2DParams p =
      ConvParams(input.shape, filter_sizes, strides, padding, data_format, dilations, groups);
  ThrowIfError(CheckShapeIs("out_backprop", dy.shape, p.OutputShape()));
  py::object out;
  ConvDispatch(input.dtype, [&](auto tag) {
    using T = decltype(tag);
    void* o = nullptr;
    out = NewCudaBuffer(p.FilterShape(), input.dtype, input, &o);
    Run(input, [&] {
      return Im2colConv2DBackpropFilterCuda<T>(p, static_cast<const T*>(input.data),
                                               static_cast<const T*>(dy.data), static_cast<T*>(o),
                                               input.stream);
    });
  });
  return out;
#else
  (void)filter_sizes, (void)out_backprop_obj, (void)strides, (void)padding, (void)data_format,
      (void)dilations, (void)groups;
  ThrowNoCuda("im2col_conv2d_backprop_filter");
#endif
}

const Register reg(
    [](py::module_& m) {
      using Nlm = CosineNlmDefaults;
      using Mh = MarrHildrethDefaults;
      using Conv = Im2colConv2DDefaults;
      m.def("cosine_nlm", &CosineNlm, py::arg("x"), py::arg("patch_radius") = Nlm::patch_radius,
            py::arg("search_radius") = Nlm::search_radius, py::arg("h") = Nlm::h,
            py::arg("eps") = Nlm::eps);
      m.def("marr_hildreth", &MarrHildreth, py::arg("x"), py::arg("laplacian") = Mh::laplacian,
            py::arg("threshold") = Mh::threshold, py::arg("relative") = Mh::relative,
            py::arg("mode") = Mh::mode);
      m.def("fci", &Fci, py::arg("x"), py::arg("y"));
      m.def("fci_class_stats", &FciClassStats, py::arg("x"), py::arg("labels"),
            py::arg("num_classes"));
      m.def("fci_prototype", &FciPrototype, py::arg("x"), py::arg("labels"), py::arg("prototypes"));
      m.def("fci_within_class", &FciWithinClass, py::arg("x"), py::arg("labels"),
            py::arg("num_classes"));
      m.def("im2col_conv2d", &ConvForward, py::arg("input"), py::arg("filters"),
            py::arg("strides") = Conv::strides, py::arg("padding") = Conv::padding,
            py::arg("data_format") = Conv::data_format, py::arg("dilations") = Conv::dilations,
            py::arg("groups") = Conv::groups);
      m.def("im2col_conv2d_backprop_input", &ConvBackpropInput, py::arg("input_sizes"),
            py::arg("filters"), py::arg("out_backprop"), py::arg("strides") = Conv::strides,
            py::arg("padding") = Conv::padding, py::arg("data_format") = Conv::data_format,
            py::arg("dilations") = Conv::dilations, py::arg("groups") = Conv::groups);
      m.def("im2col_conv2d_backprop_filter", &ConvBackpropFilter, py::arg("input"),
            py::arg("filter_sizes"), py::arg("out_backprop"), py::arg("strides") = Conv::strides,
            py::arg("padding") = Conv::padding, py::arg("data_format") = Conv::data_format,
            py::arg("dilations") = Conv::dilations, py::arg("groups") = Conv::groups);
    },
    /*first=*/true);

}  // namespace
}  // namespace bindings
}  // namespace iapdcnn
