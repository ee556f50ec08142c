// Im2col convolution: the argument rules and defaults of conv.h, device-free. Compiled once and
// used by the CPU and CUDA kernels, the TensorFlow adapter (attributes and shape function) and
// the _C bindings.
#include "conv/conv.h"

#include <algorithm>
#include <cctype>
#include <string>

#include "common/checked.h"

namespace iapdcnn {

std::vector<int64_t> Im2colConv2DParams::InputShape() const {
  return nchw ? std::vector<int64_t>{batch, in_c, in_h, in_w}
              : std::vector<int64_t>{batch, in_h, in_w, in_c};
}
std::vector<int64_t> Im2colConv2DParams::FilterShape() const {
  return {k_h, k_w, groups > 0 ? in_c / groups : 0, out_c};
}
std::vector<int64_t> Im2colConv2DParams::OutputShape() const {
  return nchw ? std::vector<int64_t>{batch, out_c, out_h, out_w}
              : std::vector<int64_t>{batch, out_h, out_w, out_c};
}

namespace {
// "same" -> "SAME": padding names are matched case-insensitively, as ops.im2col_conv2d always did.
std::string PaddingMode(const std::string& padding) {
  std::string mode = padding;
  for (char& ch : mode) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  return mode;
}

// 1, 2 or 4 values (data_format order) -> (h, w).
Status SpatialPair(const char* name, const std::vector<int64_t>& v, bool nchw, int64_t* h,
                   int64_t* w) {
  if (v.size() == 1) {
    *h = *w = v[0];
  } else if (v.size() == 2) {
    *h = v[0];
    *w = v[1];
  } else if (v.size() == 4) {
    const int64_t nb = v[0], ch = nchw ? v[1] : v[3];
    if (nb != 1 || ch != 1) {
      return Status::InvalidArgument(std::string("im2col_conv2d: ") + name +
                                     " in the batch and channel dimensions must be 1, got " +
                                     ShapeStr(v));
    }
    *h = nchw ? v[2] : v[1];
    *w = nchw ? v[3] : v[2];
  } else {
    return Status::InvalidArgument(std::string("im2col_conv2d: ") + name +
                                   " must have 1, 2 or 4 values, got " + ShapeStr(v));
  }
  if (*h < 1 || *w < 1) {
    return Status::InvalidArgument(std::string("im2col_conv2d: ") + name + " must be >= 1, got " +
                                   ShapeStr(v));
  }
  return Status::OK();
}
}  // namespace

Status ValidateConvDataFormat(const std::string& data_format) {
  if (data_format != "NHWC" && data_format != "NCHW") {
    return Status::InvalidArgument("im2col_conv2d: data_format must be 'NHWC' or 'NCHW', got '" +
                                   data_format + "'");
  }
  return Status::OK();
}

Status ValidateIm2colConv2D(const std::vector<int64_t>& input_shape,
                            const std::vector<int64_t>& filter_shape,
                            const std::vector<int64_t>& strides, const std::string& padding,
                            const std::vector<int64_t>& explicit_paddings,
                            const std::string& data_format, const std::vector<int64_t>& dilations,
                            int64_t groups, Im2colConv2DParams* p) {
  IAPDCNN_RETURN_IF_ERROR(ValidateConvDataFormat(data_format));
  const bool nchw = data_format == "NCHW";
  p->nchw = nchw;
  if (input_shape.size() != 4) {
    return Status::InvalidArgument("im2col_conv2d: input must be 4-D (" + data_format +
                                   "), got shape " + ShapeStr(input_shape));
  }
  if (filter_shape.size() != 4) {
    return Status::InvalidArgument(
        "im2col_conv2d: filters must be 4-D [k_h, k_w, in_channels / groups, out_channels], got "
        "shape " +
        ShapeStr(filter_shape));
  }
  for (int64_t d : input_shape) {
    if (d < 0) return Status::InvalidArgument("im2col_conv2d: input has a negative dimension");
  }
  p->batch = input_shape[0];
  p->in_c = nchw ? input_shape[1] : input_shape[3];
  p->in_h = nchw ? input_shape[2] : input_shape[1];
  p->in_w = nchw ? input_shape[3] : input_shape[2];
  p->k_h = filter_shape[0];
  p->k_w = filter_shape[1];
  p->out_c = filter_shape[3];
  if (p->k_h < 1 || p->k_w < 1 || filter_shape[2] < 1 || p->out_c < 1) {
    return Status::InvalidArgument("im2col_conv2d: every dimension of filters must be >= 1, got " +
                                   ShapeStr(filter_shape));
  }
  if (groups == 0) {  // inferred, as tf.nn.conv2d: input channels / filters' in_channels
    if (p->in_c < filter_shape[2] || p->in_c % filter_shape[2] != 0) {
      return Status::InvalidArgument(
          "im2col_conv2d: input channels (" + std::to_string(p->in_c) +
          ") must be a multiple of filters' in_channels (dimension 2 of filters " +
          ShapeStr(filter_shape) + "), the groups being inferred (groups=0)");
    }
    groups = p->in_c / filter_shape[2];
  }
  if (groups < 1) {
    return Status::InvalidArgument(
        "im2col_conv2d: groups must be >= 1 (or 0: inferred from the shapes), got " +
        std::to_string(groups));
  }
  p->groups = groups;
  if (p->in_c != filter_shape[2] * groups) {
    return Status::InvalidArgument("im2col_conv2d: input channels (" + std::to_string(p->in_c) +
                                   ") must equal filters' in_channels (dimension 2 of filters " +
                                   ShapeStr(filter_shape) + ") times groups (" +
                                   std::to_string(groups) + ")");
  }
  if (p->out_c % groups != 0) {
    return Status::InvalidArgument("im2col_conv2d: groups (" + std::to_string(groups) +
                                   ") must divide the filters' out_channels (" +
                                   std::to_string(p->out_c) + ")");
  }
  IAPDCNN_RETURN_IF_ERROR(SpatialPair("strides", strides, nchw, &p->stride_h, &p->stride_w));
  IAPDCNN_RETURN_IF_ERROR(
      SpatialPair("dilations", dilations, nchw, &p->dilation_h, &p->dilation_w));
  if ((p->stride_h > 1 || p->stride_w > 1) && (p->dilation_h > 1 || p->dilation_w > 1)) {
    // tf.nn.conv2d rejects this combination on CPU as well.
    return Status::InvalidArgument(
        "im2col_conv2d: strides > 1 together with dilations > 1 is not supported (as in "
        "tf.nn.conv2d on CPU), got strides " +
        ShapeStr(strides) + " and dilations " + ShapeStr(dilations));
  }
  // Every size below in checked 64-bit arithmetic: strides, dilations and paddings are user input
  // (int64 through _C), and a wrapped size would reach TensorShape's CHECKs or the allocator.
  const CheckedInt kh_eff_c = (CheckedInt(p->k_h) - 1) * p->dilation_h + 1;
  const CheckedInt kw_eff_c = (CheckedInt(p->k_w) - 1) * p->dilation_w + 1;
  if (!kh_eff_c.ok() || !kw_eff_c.ok()) {
    return Status::InvalidArgument(
        "im2col_conv2d: the dilated kernel extent (k - 1) * dilation + 1 overflows 64-bit "
        "arithmetic: filters " +
        ShapeStr(filter_shape) + ", dilations " + ShapeStr(dilations));
  }
  const int64_t kh_eff = kh_eff_c.value(), kw_eff = kw_eff_c.value();
  // SAME: out = ceil(in / stride), total padding (out - 1) * stride + k_eff - in (>= 0).
  auto same = [](int64_t in, int64_t k_eff, int64_t stride, int64_t* before, int64_t* after) {
    const int64_t out = in / stride + (in % stride != 0);
    int64_t total = 0;
    if (out == 0) {  // in == 0: (out - 1) * stride + k_eff - in = k_eff - stride
      total = std::max<int64_t>(0, k_eff - stride);
    } else {
      const CheckedInt reach = (CheckedInt(out) - 1) * stride + k_eff;
      if (!reach.ok()) return false;
      total = std::max<int64_t>(0, reach.value() - in);
    }
    *before = total / 2;
    *after = total - total / 2;
    return true;
  };
  const std::string mode = PaddingMode(padding);
  if (mode == "SAME") {
    if (!explicit_paddings.empty()) {
      return Status::InvalidArgument(
          "im2col_conv2d: explicit_paddings must be empty unless "
          "padding is 'EXPLICIT'");
    }
    if (!same(p->in_h, kh_eff, p->stride_h, &p->pad_top, &p->pad_bottom) ||
        !same(p->in_w, kw_eff, p->stride_w, &p->pad_left, &p->pad_right)) {
      return Status::InvalidArgument(
          "im2col_conv2d: the SAME padding of this input overflows 64-bit arithmetic (strides " +
          ShapeStr(strides) + ", dilations " + ShapeStr(dilations) + ")");
    }
  } else if (mode == "VALID") {
    if (!explicit_paddings.empty()) {
      return Status::InvalidArgument(
          "im2col_conv2d: explicit_paddings must be empty unless "
          "padding is 'EXPLICIT'");
    }
    p->pad_top = p->pad_bottom = p->pad_left = p->pad_right = 0;
  } else if (mode == "EXPLICIT") {
    const auto& e = explicit_paddings;
    if (e.size() == 8) {
      const int hi = nchw ? 4 : 2, wi = nchw ? 6 : 4, ci = nchw ? 2 : 6;
      if (e[0] || e[1] || e[ci] || e[ci + 1]) {
        return Status::InvalidArgument(
            "im2col_conv2d: explicit_paddings of the batch and channel dimensions must be 0, "
            "got " +
            ShapeStr(e));
      }
      p->pad_top = e[hi];
      p->pad_bottom = e[hi + 1];
      p->pad_left = e[wi];
      p->pad_right = e[wi + 1];
    } else if (e.size() == 4) {
      p->pad_top = e[0];
      p->pad_bottom = e[1];
      p->pad_left = e[2];
      p->pad_right = e[3];
    } else {
      return Status::InvalidArgument(
          "im2col_conv2d: explicit_paddings must have 8 values (4 pairs in data_format order) "
          "or 4 (top, bottom, left, right) when padding is 'EXPLICIT', got " +
          ShapeStr(e));
    }
    if (p->pad_top < 0 || p->pad_bottom < 0 || p->pad_left < 0 || p->pad_right < 0) {
      return Status::InvalidArgument("im2col_conv2d: explicit_paddings must be >= 0, got " +
                                     ShapeStr(e));
    }
  } else {
    return Status::InvalidArgument(
        "im2col_conv2d: padding must be 'SAME', 'VALID' or 'EXPLICIT', got '" + padding + "'");
  }
  const CheckedInt padded_h = CheckedInt(p->in_h) + p->pad_top + p->pad_bottom;
  const CheckedInt padded_w = CheckedInt(p->in_w) + p->pad_left + p->pad_right;
  if (!padded_h.ok() || !padded_w.ok()) {
    return Status::InvalidArgument(
        "im2col_conv2d: padding: the padded input size overflows 64-bit arithmetic (input " +
        ShapeStr(input_shape) + ", paddings " +
        ShapeStr({p->pad_top, p->pad_bottom, p->pad_left, p->pad_right}) + ")");
  }
  // TensorFlow's GetWindowedOutputSize, (padded - k_eff + stride) / stride truncated, without
  // the intermediate sum that could overflow.
  auto out_size = [](int64_t padded, int64_t k_eff, int64_t stride) {
    const int64_t diff = padded - k_eff;  // both >= 0: no overflow
    return diff >= 0 ? diff / stride + 1 : (diff + stride) / stride;
  };
  p->out_h = out_size(padded_h.value(), kh_eff, p->stride_h);
  p->out_w = out_size(padded_w.value(), kw_eff, p->stride_w);
  if (p->out_h < 0 || p->out_w < 0) {
    return Status::InvalidArgument(
        "im2col_conv2d: the dilated kernel (" + std::to_string(kh_eff) + " x " +
        std::to_string(kw_eff) + ") is larger than the padded input (" +
        std::to_string(padded_h.value()) + " x " + std::to_string(padded_w.value()) +
        "): computed output size would "
        "be negative");
  }
  IAPDCNN_RETURN_IF_ERROR(CheckedElements("im2col_conv2d", "input", p->InputShape()));
  IAPDCNN_RETURN_IF_ERROR(CheckedElements("im2col_conv2d", "filters", p->FilterShape()));
  IAPDCNN_RETURN_IF_ERROR(CheckedElements(
      "im2col_conv2d", "the output (from the input, padding, strides and dilations)",
      p->OutputShape()));
  return Status::OK();
}

Status CheckShapeIs(const char* what, const std::vector<int64_t>& got,
                    const std::vector<int64_t>& want) {
  if (got != want) {
    return Status::InvalidArgument(std::string("im2col_conv2d: ") + what + " must have shape " +
                                   ShapeStr(want) + ", got " + ShapeStr(got));
  }
  return Status::OK();
}

}  // namespace iapdcnn
