// MDCV filter scores: the argument rules and defaults of mdcv.h, device-free. Compiled once and
// used by the CPU kernel, the TensorFlow adapter and the _C bindings.
#include "mdcv/mdcv.h"

#include <cmath>
#include <string>

#include "common/checked.h"

namespace iapdcnn {

Status ValidateMdcv(const std::vector<int64_t>& filters_shape, double shrinkage, MdcvParams* p) {
  if (filters_shape.size() != 4) {
    return Status::InvalidArgument(
        "mdcv_distances: filters must be 4-D [kh, kw, cin, cout] (a Conv2D kernel), got shape " +
        ShapeStr(filters_shape));
  }
  for (int64_t s : filters_shape) {
    if (s < 1) {
      return Status::InvalidArgument("mdcv_distances: filters has an empty dimension, shape " +
                                     ShapeStr(filters_shape));
    }
  }
  if (filters_shape[3] < 2) {
    return Status::InvalidArgument(
        "mdcv_distances: filters needs at least 2 filters (cout, the last dimension) to have a "
        "covariance, got shape " +
        ShapeStr(filters_shape));
  }
  if (!std::isfinite(shrinkage) || shrinkage > 1.0) {
    return Status::InvalidArgument(
        "mdcv_distances: shrinkage must be in [0, 1] (or negative for Ledoit-Wolf), got " +
        NumStr(shrinkage));
  }
  p->kh = filters_shape[0];
  p->kw = filters_shape[1];
  p->cin = filters_shape[2];
  p->cout = filters_shape[3];
  p->shrinkage = shrinkage;
  return Status::OK();
}

}  // namespace iapdcnn
