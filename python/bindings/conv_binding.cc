// iapdcnn._C.im2col_conv2d (+ _backprop_input / _backprop_filter): the Im2col convolution
// (csrc/conv, spec §2b). Each function dispatches by device on its first array argument: NumPy
// arrays (float16 / bfloat16 (ml_dtypes) / float32 / float64) to the CPU kernels, CUDA arrays
// (float16 / float32 / float64) to the CUDA kernels on their stream.
#include <pybind11/stl.h>

#include <Eigen/Core>
#include <string>
#include <vector>

#include "binding_util.h"
#include "common/parallel.h"
#include "conv/conv.h"
#include "cuda_array.h"

#ifdef IAPDCNN_WITH_CUDA
#include <cuda_fp16.h>
#endif

namespace iapdcnn {
namespace bindings {
namespace {

// ---- argument conventions: ints or lists for strides and dilations; "SAME", "VALID" or
// explicit pads for padding ---------------------------------------------------------------------

// One int of argument `name`: a Python or NumPy integer (not a bool, not a float), in int64.
int64_t IntOf(py::handle x, const char* name) {
  const std::string type_name = py::str(py::type::of(x).attr("__name__"));
  const bool is_bool = type_name == "bool" || type_name == "bool_";
  if (is_bool || !py::hasattr(x, "__index__")) {
    throw py::type_error(std::string("im2col_conv2d: ") + name + " must be integers, got " +
                         py::repr(x).cast<std::string>());
  }
  try {
    return py::reinterpret_borrow<py::object>(x).attr("__index__")().cast<int64_t>();
  } catch (const py::cast_error&) {
    throw py::value_error(std::string("im2col_conv2d: ") + name + " value " +
                          py::repr(x).cast<std::string>() + " does not fit int64");
  }
}

// An int, or a sequence of ints and (explicit padding) pairs, flattened.
std::vector<int64_t> Ints(const py::object& v, const char* name) {
  if (py::hasattr(v, "__index__") || py::isinstance<py::bool_>(v)) return {IntOf(v, name)};
  if (py::isinstance<py::str>(v) || !py::hasattr(v, "__iter__")) {
    throw py::type_error(std::string("im2col_conv2d: ") + name +
                         " must be an int or a sequence of ints, got " +
                         py::repr(v).cast<std::string>());
  }
  std::vector<int64_t> r;
  for (auto item : v) {
    if (py::hasattr(item, "__index__") || !py::hasattr(item, "__iter__")) {
      r.push_back(IntOf(item, name));
    } else {
      for (auto x : item) r.push_back(IntOf(x, name));  // explicit padding pairs
    }
  }
  return r;
}

// padding: "SAME", "VALID", or explicit pads (4 values, or 8 / 4 pairs in data_format order).
Im2colConv2DParams ConvParams(const std::vector<int64_t>& input_shape,
                              const std::vector<int64_t>& filter_shape, const py::object& strides,
                              const py::object& padding, const std::string& data_format,
                              const py::object& dilations, int64_t groups) {
  std::string pad = "EXPLICIT";
  std::vector<int64_t> explicit_paddings;
  if (py::isinstance<py::str>(padding)) {
    pad = padding.cast<std::string>();
  } else {
    explicit_paddings = Ints(padding, "padding");
  }
  Im2colConv2DParams p;
  ThrowIfError(ValidateIm2colConv2D(input_shape, filter_shape, Ints(strides, "strides"), pad,
                                    explicit_paddings, data_format, Ints(dilations, "dilations"),
                                    groups, &p));
  return p;
}

// ---- host (NumPy) ------------------------------------------------------------------------------

enum class Kind { kF16, kBF16, kF32, kF64 };

Kind KindOf(const py::array& a) {
  const std::string name = py::str(a.dtype().attr("name"));
  if (name == "float32") return Kind::kF32;
  if (name == "float64") return Kind::kF64;
  if (name == "float16") return Kind::kF16;
  if (name == "bfloat16") return Kind::kBF16;
  throw py::type_error("im2col_conv2d: input must be float16, bfloat16, float32 or float64, got " +
                       name);
}

// Floating input keeps its dtype; anything else becomes float64. Other arrays take its dtype.
py::array AsInput(const py::object& x, const char* fn, const char* what) {
  RequireHost(x, fn, what);
  py::module_ np = py::module_::import("numpy");
  py::array a = np.attr("asarray")(x);
  const char k = a.dtype().kind();
  const std::string name = py::str(a.dtype().attr("name"));
  if (k != 'f' && k != 'i' && k != 'u' && k != 'b' && name != "bfloat16") {
    // complex would lose its imaginary part, strings and objects have no numbers
    throw py::type_error(std::string("im2col_conv2d: ") + what +
                         " must be a real (float, integer or bool) array, got dtype " + name);
  }
  if (k != 'f' && name != "bfloat16") a = np.attr("asarray")(a, "float64");
  return np.attr("ascontiguousarray")(a);
}
py::array Like(const py::object& x, const py::array& ref, const char* fn, const char* what) {
  RequireHost(x, fn, what);
  py::module_ np = py::module_::import("numpy");
  py::array a = np.attr("asarray")(x);
  const char k = a.dtype().kind();
  const std::string name = py::str(a.dtype().attr("name"));
  if (k != 'f' && k != 'i' && k != 'u' && k != 'b' && name != "bfloat16") {
    throw py::type_error(std::string("im2col_conv2d: ") + what +
                         " must be a real (float, integer or bool) array, got dtype " + name);
  }
  return np.attr("ascontiguousarray")(a, ref.dtype());
}

template <typename T, typename Fn>
void WithoutGil(Fn fn) {
  Status st;
  {
    py::gil_scoped_release nogil;
    st = fn();
  }
  ThrowIfError(st);
}

template <typename Fn>
void Dispatch(Kind k, Fn fn) {
  switch (k) {
    case Kind::kF32:
      fn(float{});
      break;
    case Kind::kF64:
      fn(double{});
      break;
    case Kind::kF16:
      fn(Eigen::half{});
      break;
    case Kind::kBF16:
      fn(Eigen::bfloat16{});
      break;
  }
}

py::object ForwardHost(const py::object& input_obj, const py::object& filters_obj,
                       const py::object& strides, const py::object& padding,
                       const std::string& data_format, const py::object& dilations,
                       int64_t groups) {
  py::array input = AsInput(input_obj, "im2col_conv2d", "input");
  py::array filters = Like(filters_obj, input, "im2col_conv2d", "filters");
  const Im2colConv2DParams p =
      ConvParams(Dims(input), Dims(filters), strides, padding, data_format, dilations, groups);
  py::array out(input.dtype(), p.OutputShape());
  Dispatch(KindOf(input), [&](auto tag) {
    using T = decltype(tag);
    const T* x = static_cast<const T*>(input.data());
    const T* w = static_cast<const T*>(filters.data());
    T* o = static_cast<T*>(out.mutable_data());
    WithoutGil<T>([&] { return Im2colConv2DCpu<T>(p, x, w, o, DefaultParallelFor()); });
  });
  return out;
}

py::object BackpropInputHost(const std::vector<int64_t>& input_sizes, const py::object& filters_obj,
                             const py::object& out_backprop_obj, const py::object& strides,
                             const py::object& padding, const std::string& data_format,
                             const py::object& dilations, int64_t groups) {
  // The gradient's dtype is out_backprop's.
  py::array dout = AsInput(out_backprop_obj, "im2col_conv2d_backprop_input", "out_backprop");
  py::array filters = Like(filters_obj, dout, "im2col_conv2d_backprop_input", "filters");
  const Im2colConv2DParams p =
      ConvParams(input_sizes, Dims(filters), strides, padding, data_format, dilations, groups);
  ThrowIfError(CheckShapeIs("out_backprop", Dims(dout), p.OutputShape()));
  py::array din(dout.dtype(), p.InputShape());
  Dispatch(KindOf(dout), [&](auto tag) {
    using T = decltype(tag);
    const T* w = static_cast<const T*>(filters.data());
    const T* d = static_cast<const T*>(dout.data());
    T* o = static_cast<T*>(din.mutable_data());
    WithoutGil<T>(
        [&] { return Im2colConv2DBackpropInputCpu<T>(p, w, d, o, DefaultParallelFor()); });
  });
  return din;
}

py::object BackpropFilterHost(const py::object& input_obj, const std::vector<int64_t>& filter_sizes,
                              const py::object& out_backprop_obj, const py::object& strides,
                              const py::object& padding, const std::string& data_format,
                              const py::object& dilations, int64_t groups) {
  py::array input = AsInput(input_obj, "im2col_conv2d_backprop_filter", "input");
  py::array dout = Like(out_backprop_obj, input, "im2col_conv2d_backprop_filter", "out_backprop");
  const Im2colConv2DParams p =
      ConvParams(Dims(input), filter_sizes, strides, padding, data_format, dilations, groups);
  ThrowIfError(CheckShapeIs("out_backprop", Dims(dout), p.OutputShape()));
  py::array dw(input.dtype(), p.FilterShape());
  Dispatch(KindOf(input), [&](auto tag) {
    using T = decltype(tag);
    const T* x = static_cast<const T*>(input.data());
    const T* d = static_cast<const T*>(dout.data());
    T* o = static_cast<T*>(dw.mutable_data());
    WithoutGil<T>(
        [&] { return Im2colConv2DBackpropFilterCpu<T>(p, x, d, o, DefaultParallelFor()); });
  });
  return dw;
}

// ---- device (CUDA arrays) ----------------------------------------------------------------------

#ifdef IAPDCNN_WITH_CUDA
template <typename Fn>
void CudaConvDispatch(const std::string& dtype, const char* fn_name, Fn fn) {
  if (dtype == "float32") {
    fn(float{});
  } else if (dtype == "float64") {
    fn(double{});
  } else if (dtype == "float16") {
    fn(__half{});
  } else {
    // bfloat16 reaches here only through DLPack; CUDA has no standard CAI typestr for results.
    throw py::type_error(std::string("iapdcnn._C.") + fn_name +
                         ": CUDA input must be float16, float32 or float64, got " + dtype);
  }
}
#endif

py::object ForwardDevice(const CudaArg& input, const py::object& filters_obj,
                         const py::object& strides, const py::object& padding,
                         const std::string& data_format, const py::object& dilations,
                         int64_t groups) {
#ifdef IAPDCNN_WITH_CUDA
  const CudaArg w = ParseCudaArrayLike(filters_obj, "filters", input, input.dtype);
  const Im2colConv2DParams p =
      ConvParams(input.shape, w.shape, strides, padding, data_format, dilations, groups);
  py::object out;
  CudaConvDispatch(input.dtype, "im2col_conv2d", [&](auto tag) {
    using T = decltype(tag);
    void* o = nullptr;
    out = NewCudaBuffer("im2col_conv2d", p.OutputShape(), input.dtype, input, &o);
    RunOnDevice("im2col_conv2d", input, [&] {
      return Im2colConv2DCuda<T>(p, static_cast<const T*>(input.data),
                                 static_cast<const T*>(w.data), static_cast<T*>(o), input.stream);
    });
  });
  return out;
#else
  (void)input, (void)filters_obj, (void)strides, (void)padding, (void)data_format, (void)dilations,
      (void)groups;
  ThrowNoCuda("im2col_conv2d");
#endif
}

py::object BackpropInputDevice(const std::vector<int64_t>& input_sizes, const CudaArg& filters,
                               const py::object& out_backprop_obj, const py::object& strides,
                               const py::object& padding, const std::string& data_format,
                               const py::object& dilations, int64_t groups) {
#ifdef IAPDCNN_WITH_CUDA
  const CudaArg dy = ParseCudaArrayLike(out_backprop_obj, "out_backprop", filters, filters.dtype);
  const Im2colConv2DParams p =
      ConvParams(input_sizes, filters.shape, strides, padding, data_format, dilations, groups);
  ThrowIfError(CheckShapeIs("out_backprop", dy.shape, p.OutputShape()));
  py::object out;
  CudaConvDispatch(filters.dtype, "im2col_conv2d_backprop_input", [&](auto tag) {
    using T = decltype(tag);
    void* o = nullptr;
    out = NewCudaBuffer("im2col_conv2d_backprop_input", p.InputShape(), filters.dtype, filters, &o);
    RunOnDevice("im2col_conv2d_backprop_input", filters, [&] {
      return Im2colConv2DBackpropInputCuda<T>(p, static_cast<const T*>(filters.data),
                                              static_cast<const T*>(dy.data), static_cast<T*>(o),
                                              filters.stream);
    });
  });
  return out;
#else
  (void)input_sizes, (void)filters, (void)out_backprop_obj, (void)strides, (void)padding,
      (void)data_format, (void)dilations, (void)groups;
  ThrowNoCuda("im2col_conv2d_backprop_input");
#endif
}

py::object BackpropFilterDevice(const CudaArg& input, const std::vector<int64_t>& filter_sizes,
                                const py::object& out_backprop_obj, const py::object& strides,
                                const py::object& padding, const std::string& data_format,
                                const py::object& dilations, int64_t groups) {
#ifdef IAPDCNN_WITH_CUDA
  const CudaArg dy = ParseCudaArrayLike(out_backprop_obj, "out_backprop", input, input.dtype);
  const Im2colConv2DParams p =
      ConvParams(input.shape, filter_sizes, strides, padding, data_format, dilations, groups);
  ThrowIfError(CheckShapeIs("out_backprop", dy.shape, p.OutputShape()));
  py::object out;
  CudaConvDispatch(input.dtype, "im2col_conv2d_backprop_filter", [&](auto tag) {
    using T = decltype(tag);
    void* o = nullptr;
    out = NewCudaBuffer("im2col_conv2d_backprop_filter", p.FilterShape(), input.dtype, input, &o);
    RunOnDevice("im2col_conv2d_backprop_filter", input, [&] {
      return Im2colConv2DBackpropFilterCuda<T>(p, static_cast<const T*>(input.data),
                                               static_cast<const T*>(dy.data), static_cast<T*>(o),
                                               input.stream);
    });
  });
  return out;
#else
  (void)input, (void)filter_sizes, (void)out_backprop_obj, (void)strides, (void)padding,
      (void)data_format, (void)dilations, (void)groups;
  ThrowNoCuda("im2col_conv2d_backprop_filter");
#endif
}

// ---- the bound functions: dispatch on the first array argument's device ------------------------

py::object Forward(const py::object& input, const py::object& filters, const py::object& strides,
                   const py::object& padding, const std::string& data_format,
                   const py::object& dilations, int64_t groups) {
  if (IsCudaArray(input)) {
    return ForwardDevice(ParseCudaArray(input, "input"), filters, strides, padding, data_format,
                         dilations, groups);
  }
  return ForwardHost(input, filters, strides, padding, data_format, dilations, groups);
}

py::object BackpropInput(const std::vector<int64_t>& input_sizes, const py::object& filters,
                         const py::object& out_backprop, const py::object& strides,
                         const py::object& padding, const std::string& data_format,
                         const py::object& dilations, int64_t groups) {
  if (IsCudaArray(filters)) {
    return BackpropInputDevice(input_sizes, ParseCudaArray(filters, "filters"), out_backprop,
                               strides, padding, data_format, dilations, groups);
  }
  return BackpropInputHost(input_sizes, filters, out_backprop, strides, padding, data_format,
                           dilations, groups);
}

py::object BackpropFilter(const py::object& input, const std::vector<int64_t>& filter_sizes,
                          const py::object& out_backprop, const py::object& strides,
                          const py::object& padding, const std::string& data_format,
                          const py::object& dilations, int64_t groups) {
  if (IsCudaArray(input)) {
    return BackpropFilterDevice(ParseCudaArray(input, "input"), filter_sizes, out_backprop, strides,
                                padding, data_format, dilations, groups);
  }
  return BackpropFilterHost(input, filter_sizes, out_backprop, strides, padding, data_format,
                            dilations, groups);
}

// (per-task scratch bytes, shared bytes) for a float32 convolution of these shapes.
py::tuple ScratchBytes(const std::vector<int64_t>& input_shape,
                       const std::vector<int64_t>& filter_shape, const py::object& strides,
                       const py::object& padding, const std::string& data_format,
                       const py::object& dilations, int64_t groups, int64_t elem_bytes) {
  const Im2colConv2DParams p =
      ConvParams(input_shape, filter_shape, strides, padding, data_format, dilations, groups);
  return py::make_tuple(Im2colConv2DScratchBytesPerTask(p, elem_bytes),
                        Im2colConv2DSharedBytes(p, elem_bytes));
}

const Register reg([](py::module_& m) {
  using D = Im2colConv2DDefaults;
  m.def("im2col_conv2d", &Forward, py::arg("input"), py::arg("filters"),
        py::arg("strides") = D::strides, py::arg("padding") = D::padding,
        py::arg("data_format") = D::data_format, py::arg("dilations") = D::dilations,
        py::arg("groups") = D::groups,
        "Im2col + GEMM conv2d with tf.nn.conv2d semantics (spec §2b). input NHWC/NCHW, filters "
        "[k_h, k_w, in_c / groups, out_c]; padding 'SAME', 'VALID' (any case) or explicit pads. "
        "NumPy input runs on the CPU; CUDA arrays on their device (returns a CudaBuffer).");
  m.def("im2col_conv2d_backprop_input", &BackpropInput, py::arg("input_sizes"), py::arg("filters"),
        py::arg("out_backprop"), py::arg("strides") = D::strides, py::arg("padding") = D::padding,
        py::arg("data_format") = D::data_format, py::arg("dilations") = D::dilations,
        py::arg("groups") = D::groups, "Gradient of im2col_conv2d with respect to its input.");
  m.def("im2col_conv2d_backprop_filter", &BackpropFilter, py::arg("input"), py::arg("filter_sizes"),
        py::arg("out_backprop"), py::arg("strides") = D::strides, py::arg("padding") = D::padding,
        py::arg("data_format") = D::data_format, py::arg("dilations") = D::dilations,
        py::arg("groups") = D::groups, "Gradient of im2col_conv2d with respect to its filters.");
  m.def("im2col_conv2d_scratch_bytes", &ScratchBytes, py::arg("input_shape"),
        py::arg("filter_shape"), py::arg("strides") = D::strides, py::arg("padding") = D::padding,
        py::arg("data_format") = D::data_format, py::arg("dilations") = D::dilations,
        py::arg("groups") = D::groups, py::arg("elem_bytes") = 4,
        "(largest per-task scratch, shared scratch) in bytes the three conv kernels allocate.");
  Defaults(m)["im2col_conv2d"] =
      py::dict(py::arg("strides") = D::strides, py::arg("padding") = D::padding,
               py::arg("data_format") = D::data_format, py::arg("dilations") = D::dilations,
               py::arg("groups") = D::groups);
});

}  // namespace
}  // namespace bindings
}  // namespace iapdcnn
