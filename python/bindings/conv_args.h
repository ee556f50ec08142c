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

// An int, or a sequence of ints and (explicit padding) pairs, flattened.
inline std::vector<int64_t> Ints(const py::object& v) {
  if (py::isinstance<py::int_>(v)) return {v.cast<int64_t>()};
  std::vector<int64_t> r;
  for (auto item : v) {
    if (py::isinstance<py::int_>(item)) {
      r.push_back(item.cast<int64_t>());
    } else {
      for (auto x : item) r.push_back(x.cast<int64_t>());  // explicit padding pairs
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
    explicit_paddings = Ints(padding);
  }
  Im2colConv2DParams p;
  ThrowIfError(ValidateIm2colConv2D(input_shape, filter_shape, Ints(strides), pad,
                                    explicit_paddings, data_format, Ints(dilations), groups, &p));
  return p;
}

}  // namespace bindings
}  // namespace iapdcnn
