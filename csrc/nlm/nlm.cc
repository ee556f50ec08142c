// Cosine non-local means: the argument rules and defaults of nlm.h, device-free. Compiled once
// and used by the CPU and CUDA kernels, the TensorFlow adapter and the _C bindings.
#include "nlm/nlm.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "common/checked.h"

namespace iapdcnn {

Status ValidateCosineNlmArgs(int64_t patch_radius, int64_t search_radius, double h, double eps) {
  if (patch_radius < 0) {
    return Status::InvalidArgument("cosine_nlm: patch_radius must be >= 0, got " +
                                   std::to_string(patch_radius));
  }
  if (search_radius < 0) {
    return Status::InvalidArgument("cosine_nlm: search_radius must be >= 0, got " +
                                   std::to_string(search_radius));
  }
  if (!(h > 0.0) || !std::isfinite(h)) {
    return Status::InvalidArgument("cosine_nlm: h must be a finite number > 0, got " + NumStr(h));
  }
  if (!(eps > 0.0) || !std::isfinite(eps)) {
    return Status::InvalidArgument("cosine_nlm: eps must be a finite number > 0, got " +
                                   NumStr(eps));
  }
  return Status::OK();
}

Status ValidateCosineNlm(const std::vector<int64_t>& x_shape, int64_t patch_radius,
                         int64_t search_radius, double h, double eps, CosineNlmParams* p) {
  if (x_shape.size() != 4) {
    return Status::InvalidArgument(
        "cosine_nlm: x must be 4-D [batch, height, width, channels], got shape " +
        ShapeStr(x_shape));
  }
  IAPDCNN_RETURN_IF_ERROR(ValidateCosineNlmArgs(patch_radius, search_radius, h, eps));
  for (int64_t d : x_shape) {
    if (d < 0) return Status::InvalidArgument("cosine_nlm: x has a negative dimension");
  }
  IAPDCNN_RETURN_IF_ERROR(CheckedElements("cosine_nlm", "x", x_shape));
  // Each task copies a plane reflect-padded by R = patch_radius + search_radius on every side.
  // Radii far beyond the image only repeat reflected pixels, yet that copy (and the O(H W s^2)
  // work) grows with R^2: refuse it before allocating when it is far larger than the image.
  const CheckedInt R = CheckedInt(patch_radius) + search_radius;
  const CheckedInt padded = (CheckedInt(x_shape[1]) + R * 2) * (CheckedInt(x_shape[2]) + R * 2);
  const int64_t limit = std::max<int64_t>(int64_t{1} << 26, 16 * x_shape[1] * x_shape[2]);
  if (!padded.FitsIn(limit)) {
    return Status::InvalidArgument(
        "cosine_nlm: patch_radius (" + std::to_string(patch_radius) + ") + search_radius (" +
        std::to_string(search_radius) + ") is too large for a " + std::to_string(x_shape[1]) +
        " x " + std::to_string(x_shape[2]) + " image: the reflect-padded plane would have " +
        (padded.ok() ? std::to_string(padded.value()) : std::string("more than 2^63")) +
        " values (at most " + std::to_string(limit) + ")");
  }
  p->batch = x_shape[0];
  p->height = x_shape[1];
  p->width = x_shape[2];
  p->channels = x_shape[3];
  p->patch_radius = patch_radius;
  p->search_radius = search_radius;
  p->h = h;
  p->eps = eps;
  return Status::OK();
}

template <typename T>
Status CheckCosineNlmEpsFor(const CosineNlmParams& p) {
  if (static_cast<T>(p.eps) > T(0)) return Status::OK();
  return Status::InvalidArgument("cosine_nlm: eps = " + NumStr(p.eps) +
                                 " underflows to 0 in x's dtype (float32); use a larger eps or "
                                 "float64 x");
}
template Status CheckCosineNlmEpsFor<float>(const CosineNlmParams&);
template Status CheckCosineNlmEpsFor<double>(const CosineNlmParams&);

}  // namespace iapdcnn
