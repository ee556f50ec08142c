// What the CPU (mdcv_cpu.cc) and CUDA (mdcv_cuda.cu) paths of MDCV (spec §2a) share: the error
// for a non-finite weight, the host solve (mdcv_solve.cc) that turns the centred filters' Gram
// matrix into l and the distances, and its scalar pieces (the Ledoit-Wolf shrinkage from
// Gram-space moments, the mapping from l to the Woodbury coefficients).
#pragma once

#include <algorithm>
#include <cstdint>

#include "common/host_device.h"
#include "common/parallel.h"
#include "common/status.h"
#include "mdcv/mdcv.h"

namespace iapdcnn {

// The NaN policy's error (docs/nan_policy.md) for filters[flat] = value, n = cout filters: it
// names the filter. Both paths report the first non-finite value in memory order.
Status MdcvNonFiniteError(int64_t flat, int64_t n, double value);

// From r [n] = |x_i - mu|^2 and the centred filters' Gram matrix k, column-major k x k with
// k = min(n, d) (Xc Xc^T when n <= d, else Xc^T Xc), picks l (Ledoit-Wolf when p.shrinkage < 0;
// written to *l) and writes distances [n]. u, the centred filters [n, d] row-major, is read only
// when d < n (pass nullptr otherwise). An overflowed covariance is an error naming the filter.
Status MdcvSolveHost(const MdcvParams& p, const double* r, const double* k, const double* u,
                     double* l, double* distances, const ParallelFor& pf);
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
