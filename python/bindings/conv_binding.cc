// iapdcnn._C.im2col_conv2d (+ _backprop_input / _backprop_filter): the Im2col convolution
// (csrc/conv, spec §2b) on NumPy arrays, float16 / bfloat16 (ml_dtypes) / float32 / float64.
#include <pybind11/stl.h>

#include <Eigen/Core>
#include <string>
#include <vector>

#include "binding_util.h"
#include "common/parallel.h"
#include "conv/conv.h"
#include "conv_args.h"

namespace iapdcnn {
namespace bindings {
namespace {

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
py::array AsInput(const py::object& x) {
  py::module_ np = py::module_::import("numpy");
  py::array a = np.attr("asarray")(x);
  const char k = a.dtype().kind();
  const std::string name = py::str(a.dtype().attr("name"));
  if (k != 'f' && k != 'i' && k != 'u' && k != 'b' && name != "bfloat16") {
    // complex would lose its imaginary part, strings and objects have no numbers
    throw py::type_error(
        "im2col_conv2d: input must be a real (float, integer or bool) array, got dtype " + name);
  }
  if (k != 'f' && name != "bfloat16") a = np.attr("asarray")(a, "float64");
  return np.attr("ascontiguousarray")(a);
}
py::array Like(const py::object& x, const py::array& ref, const char* what) {
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

py::array Forward(const py::object& input_obj, const py::object& filters_obj,
                  const py::object& strides, const py::object& padding,
                  const std::string& data_format, const py::object& dilations, int64_t groups) {
  py::array input = AsInput(input_obj);
  py::array filters = Like(filters_obj, input, "filters");
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

py::array BackpropInput(const std::vector<int64_t>& input_sizes, const py::object& filters_obj,
                        const py::object& out_backprop_obj, const py::object& strides,
                        const py::object& padding, const std::string& data_format,
                        const py::object& dilations, int64_t groups) {
  py::array dout = AsInput(out_backprop_obj);
  py::array filters = Like(filters_obj, dout, "filters");
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

py::array BackpropFilter(const py::object& input_obj, const std::vector<int64_t>& filter_sizes,
                         const py::object& out_backprop_obj, const py::object& strides,
                         const py::object& padding, const std::string& data_format,
                         const py::object& dilations, int64_t groups) {
  py::array input = AsInput(input_obj);
  py::array dout = Like(out_backprop_obj, input, "out_backprop");
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
        "[k_h, k_w, in_c / groups, out_c]; padding 'SAME', 'VALID' (any case) or explicit pads.");
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
