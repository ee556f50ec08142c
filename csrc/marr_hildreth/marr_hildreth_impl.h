// Per-pixel math of the Marr-Hildreth kernel (spec §1b), shared by the CPU and CUDA paths.
#pragma once

#include "common/finite.h"
#include "common/host_device.h"

namespace iapdcnn {
namespace marr_hildreth_impl {

// Zero-crossing test at a pixel whose Laplacian is c, given the Laplacian of its 8 neighbours in
// 4 opposite pairs (n[2k], n[2k+1]) = (p - d_k, p + d_k). A sign change lies between p and a
// neighbour when they have strictly opposite signs; it is attributed to the pixel on the negative
// side (the brighter side for spec §1b's kernel sign), so edges are one pixel thin and sit on
// bright objects. A pixel with lap exactly 0 is an edge when its two neighbours along some
// direction have strictly opposite signs (the crossing passes through it).
IAPDCNN_HD bool ZeroCrossing(double c, const double n[8]) {
  if (c < 0.0) {
    for (int k = 0; k < 8; ++k) {
      if (n[k] > 0.0) return true;
    }
    return false;
  }
  if (c == 0.0) {
    for (int k = 0; k < 4; ++k) {
      if (n[2 * k] * n[2 * k + 1] < 0.0) return true;
    }
  }
  return false;
}

// NaN policy (docs/nan_policy.md). Whether a Sobel magnitude m (>= 0, or NaN) counts toward the
// plane's maximum, which sets the relative threshold: finite ones only, so a NaN never wins and
// an Inf next to a non-finite pixel does not raise the threshold of the whole plane to Inf.
IAPDCNN_HD bool CountsTowardMax(double m) { return m <= 1.7976931348623157e308; }

// The output at a pixel with Sobel magnitude m, Laplacian c and neighbour Laplacians n (as in
// ZeroCrossing), for threshold t: NaN when the decision reads a non-finite value (m, c or one of
// n), else edge_value on an edge and 0 elsewhere.
IAPDCNN_HD double EdgeOutput(double m, double t, double c, const double n[8], double edge_value) {
  bool finite = IsFinite(m) && IsFinite(c);
  for (int k = 0; k < 8; ++k) finite = finite && IsFinite(n[k]);
  if (!finite) return QuietNaN();
  return m >= t && ZeroCrossing(c, n) ? edge_value : 0.0;
}

}  // namespace marr_hildreth_impl
}  // namespace iapdcnn
