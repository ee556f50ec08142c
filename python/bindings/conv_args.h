// The Python-side conventions of the convolution's arguments (ints or lists for strides and
// dilations; "SAME", "VALID" or explicit pads for padding), shared by the NumPy and the CUDA-array
// bindings of _C.im2col_conv2d*.
#pragma once

#include <string>
#include <vector>

#include "binding_util.h"
#include "conv/conv.h"

namespace iapdcnn {
namespace bindings {

// One int of argument `name`: a Python or NumPy integer (not a bool, not a float), in int64.
inline int64_t IntOf(py::handle x, const char* name) {
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
inline std::vector<int64_t> Ints(const py::object& v, const char* name) {
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
inline Im2colConv2DParams ConvParams(const std::vector<int64_t>& input_shape,
                                     const std::vector<int64_t>& filter_shape,
                                     const py::object& strides, const py::object& padding,
                                     const std::string& data_format, const py::object& dilations,
                                     int64_t groups) {
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

}  // namespace bindings
}  // namespace iapdcnn
