// Per-element FCI math shared by the CPU and CUDA paths (spec §1c).
#pragma once

#include "common/host_device.h"

namespace iapdcnn {
namespace fci_impl {

// FCI from moments. The denominator is zero only when both blocks are the same constant
// (var = 0 for both and equal means): spec §1c defines that case as 1/2.
// NaN policy (docs/nan_policy.md): a block with a NaN or Inf (or moments that overflow) has no
// FCI: the result is NaN, never the 0.5 of identical constant blocks.
IAPDCNN_HD double FciFromMoments(double cov, double var_x, double var_y, double mean_x,
                                 double mean_y) {
  const double dm = mean_x - mean_y;
  const double den = var_x + var_y + dm * dm;
  // den - den is 0 for finite den, NaN for NaN or +-inf (no <cmath> needed on the device).
  if (den - den != 0.0 || cov - cov != 0.0) return (den - den) + (cov - cov);  // NaN
  return den > 0.0 ? cov / den : 0.5;
}

// Mean of a block, and its centred values written to `centred` (exactly zero for a constant
// block, so that round-off cannot invent covariance). Returns the population variance.
template <typename T>
IAPDCNN_HD double CentreBlock(const T* v, long long n, double* mean_out, double* centred) {
  double s = 0.0;
  T lo = v[0], hi = v[0];
  for (long long k = 0; k < n; ++k) {
    s += static_cast<double>(v[k]);
    lo = v[k] < lo ? v[k] : lo;
    hi = v[k] > hi ? v[k] : hi;
  }
  if (s - s != 0.0) {  // a NaN or Inf value (or an overflowing sum): NaN moments
    const double nan = s - s;
    *mean_out = nan;
    for (long long k = 0; k < n; ++k) centred[k] = nan;
    return nan;
  }
  if (lo == hi) {  // constant block: exact moments
    *mean_out = static_cast<double>(v[0]);
    for (long long k = 0; k < n; ++k) centred[k] = 0.0;
    return 0.0;
  }
  const double m = s / static_cast<double>(n);
  double ss = 0.0;
  for (long long k = 0; k < n; ++k) {
    centred[k] = static_cast<double>(v[k]) - m;
    ss += centred[k] * centred[k];
  }
  *mean_out = m;
  return ss / static_cast<double>(n);
}

}  // namespace fci_impl
}  // namespace iapdcnn
