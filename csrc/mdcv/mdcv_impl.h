// Scalar pieces of MDCV (spec §2a) shared by the CPU path and a future CUDA path: the Ledoit-Wolf
// shrinkage from Gram-space moments, and the mapping from l to the Woodbury coefficients.
#pragma once

#include <algorithm>
#include <cstdint>

#include "common/host_device.h"

namespace iapdcnn {
namespace mdcv_impl {

// Ledoit-Wolf intensity, written as scikit-learn's ledoit_wolf_shrinkage (population moments,
// n samples of dimension d) but from quantities that need no d x d matrix:
//   trace = tr(Xc Xc^T) = sum_i |x_i|^2, frob2 = |Xc Xc^T|_F^2 = |Xc^T Xc|_F^2,
//   sum4 = sum_i |x_i|^4.
IAPDCNN_HD double LedoitWolf(double trace, double frob2, double sum4, int64_t n, int64_t d) {
  const double nn = static_cast<double>(n), dd = static_cast<double>(d);
  const double mu = trace / (nn * dd);
  const double delta_ = frob2 / (nn * nn);
  double beta = (sum4 / nn - delta_) / (dd * nn);
  const double delta = (delta_ - 2.0 * mu * trace / nn + dd * mu * mu) / dd;
  beta = beta < delta ? beta : delta;
  if (beta <= 0.0 || delta <= 0.0) return 0.0;
  return beta / delta;
}

// S_l = c I + a Xc^T Xc with S = Xc^T Xc / (n - 1), tr(S)/d = trace / ((n - 1) d).
struct Coeffs {
  double c;  // l * tr(S) / d
  double a;  // (1 - l) / (n - 1)
};

IAPDCNN_HD Coeffs WoodburyCoeffs(double l, double trace, int64_t n, int64_t d) {
  const double n1 = static_cast<double>(n - 1);
  return Coeffs{l * trace / (n1 * static_cast<double>(d)), (1.0 - l) / n1};
}

}  // namespace mdcv_impl
}  // namespace iapdcnn
