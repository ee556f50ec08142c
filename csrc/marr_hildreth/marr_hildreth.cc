// Marr-Hildreth edges: the argument rules and defaults of marr_hildreth.h, device-free. Compiled
// once and used by the CPU and CUDA kernels, the TensorFlow adapter and the _C bindings.
#include "marr_hildreth/marr_hildreth.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <string>

#include "common/checked.h"

namespace iapdcnn {

Status ParseEdgeMode(const std::string& mode, EdgeMode* out) {
  std::string names;
  for (int i = 0; i < 3; ++i) {
    if (mode == kEdgeModeNames[i]) {
      *out = static_cast<EdgeMode>(i);
      return Status::OK();
    }
    names += std::string(i == 0 ? "'" : i == 2 ? " or '" : ", '") + kEdgeModeNames[i] + "'";
  }
  return Status::InvalidArgument("marr_hildreth: mode must be " + names + ", got '" + mode + "'");
}

Status ValidateMarrHildrethArgs(int64_t laplacian, double threshold, const std::string& mode) {
  if (std::find(std::begin(kLaplacianNeighbours), std::end(kLaplacianNeighbours), laplacian) ==
      std::end(kLaplacianNeighbours)) {
    return Status::InvalidArgument("marr_hildreth: laplacian must be 4 or 8 (neighbours), got " +
                                   std::to_string(laplacian));
  }
  if (!(threshold >= 0.0) || !std::isfinite(threshold)) {
    return Status::InvalidArgument("marr_hildreth: threshold must be a finite number >= 0, got " +
                                   NumStr(threshold));
  }
  EdgeMode unused;
  return ParseEdgeMode(mode, &unused);
}

Status ValidateMarrHildreth(const std::vector<int64_t>& x_shape, int64_t laplacian,
                            double threshold, bool relative, const std::string& mode,
                            MarrHildrethParams* p) {
  if (x_shape.size() != 4) {
    return Status::InvalidArgument(
        "marr_hildreth: x must be 4-D [batch, height, width, channels], got shape " +
        ShapeStr(x_shape));
  }
  IAPDCNN_RETURN_IF_ERROR(ValidateMarrHildrethArgs(laplacian, threshold, mode));
  IAPDCNN_RETURN_IF_ERROR(ParseEdgeMode(mode, &p->mode));
  p->batch = x_shape[0];
  p->height = x_shape[1];
  p->width = x_shape[2];
  p->channels = x_shape[3];
  p->laplacian = laplacian;
  p->threshold = threshold;
  p->relative = relative;
  return Status::OK();
}

}  // namespace iapdcnn
