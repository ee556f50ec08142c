// CPU MDCV distances (spec §2a). The filters are centred, then every solve runs in k = min(n, d)
// dimensions: through the Woodbury identity in n x n Gram space when n <= d (the singular case the
// spec §2a is about, e.g. 512 filters of 3x3x512), and with the d x d shrunk covariance itself only
// when d < n, where that matrix is the smaller of the two (e.g. 2048 filters of 1x1x512). No
// matrix larger than min(n, d)^2 is ever formed; the cost is O(n d k + k^3).
#define EIGEN_DONT_PARALLELIZE  // threads come from the ParallelFor, never from Eigen
#include <Eigen/Cholesky>
#include <Eigen/Core>
#include <Eigen/Eigenvalues>
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "common/checked.h"
#include "common/guard.h"
#include "mdcv/mdcv.h"
#include "mdcv/mdcv_impl.h"

namespace iapdcnn {

namespace {
namespace E = ::Eigen;
using RowMat = E::Matrix<double, E::Dynamic, E::Dynamic, E::RowMajor>;
using ColMat = E::MatrixXd;

// K = A A^T for row-major A [m, len]; lower triangle by row blocks in parallel, then mirrored.
ColMat SymGram(const RowMat& a, const ParallelFor& pf) {
  const int64_t m = a.rows(), len = a.cols();
  ColMat k(m, m);
  const int64_t block = 64;
  const int64_t nblocks = (m + block - 1) / block;
  pf(nblocks, block * len * m, [&](int64_t b, int64_t e) {
    for (int64_t unit = b; unit < e; ++unit) {
      // Block row ib costs ~ib: zigzag (0, last, 1, last-1, ...) so contiguous shards balance.
      const int64_t ib = (unit % 2 == 0) ? unit / 2 : nblocks - 1 - unit / 2;
      const int64_t r0 = ib * block, rows = std::min(block, m - r0), cols = r0 + rows;
      k.block(r0, 0, rows, cols).noalias() = a.middleRows(r0, rows) * a.topRows(cols).transpose();
    }
  });
  for (int64_t j = 1; j < m; ++j) {
    for (int64_t i = 0; i < j; ++i) k(i, j) = k(j, i);
  }
  return k;
}
// d_i^2 = (x_i - mu)^T S_l^+ (x_i - mu) through K's eigenvalues (K = Xc Xc^T when gram, else
// Xc^T Xc), dropping null directions (lam <= tol, as the l = 0 branch does); for when the
// Cholesky of S_l (or of the Gram system) fails at a shrinkage below round-off.
void EigenFallback(const ColMat& k, const mdcv_impl::Coeffs& cf, int64_t n, int64_t d, bool gram,
                   const RowMat& u, std::vector<double>* d2) {
  E::SelfAdjointEigenSolver<ColMat> eig(k);
  const E::VectorXd& lam = eig.eigenvalues();
  const double tol = static_cast<double>(std::max(n, d)) * std::numeric_limits<double>::epsilon() *
                     std::max(lam.maxCoeff(), 0.0);
  std::fill(d2->begin(), d2->end(), 0.0);
  if (gram) {
    for (int64_t q = 0; q < lam.size(); ++q) {
      if (lam[q] <= tol) continue;
      const double f = lam[q] / (cf.a * lam[q] + cf.c);
      for (int64_t i = 0; i < n; ++i) {
        (*d2)[i] += eig.eigenvectors()(i, q) * eig.eigenvectors()(i, q) * f;
      }
    }
    return;
  }
  const ColMat proj = u * eig.eigenvectors();  // [n, d]
  for (int64_t q = 0; q < lam.size(); ++q) {
    if (lam[q] <= tol) continue;
    const double f = 1.0 / (cf.a * lam[q] + cf.c);
    for (int64_t i = 0; i < n; ++i) (*d2)[i] += proj(i, q) * proj(i, q) * f;
  }
}
}  // namespace

template <typename T>
Status MdcvDistancesCpu(const MdcvParams& p, const T* filters, T* distances, T* center,
                        T* shrinkage_used, const ParallelFor& pf_in) {
  return GuardKernel("mdcv_distances", pf_in, [&](const ParallelFor& pf) -> Status {
    const int64_t n = p.n(), d = p.d();
    // NaN policy (docs/nan_policy.md): distances rank filters for pruning, so a NaN or Inf weight
    // is an error that names the filter, never a score (one NaN once made every distance 0).
    for (int64_t j = 0; j < d; ++j) {
      for (int64_t i = 0; i < n; ++i) {
        if (!std::isfinite(static_cast<double>(filters[j * n + i]))) {
          return Status::InvalidArgument(
              "mdcv_distances: filters contains a non-finite value (" +
              NumStr(static_cast<double>(filters[j * n + i])) + ") in filter " + std::to_string(i) +
              " (flat index " + std::to_string(j * n + i) +
              "); distances of NaN or Inf weights would decide what is pruned");
        }
      }
    }
    // Keras layout [kh, kw, cin, cout] is [d, n] row-major: filter i is column i.
    std::vector<double> mu(static_cast<size_t>(d), 0.0);
    RowMat u(n, d);  // centred filters as rows
    pf(d, 4 * n, [&](int64_t b, int64_t e) {
      for (int64_t j = b; j < e; ++j) {
        const T* row = filters + j * n;
        double s = 0.0;
        bool constant = true;
        for (int64_t i = 0; i < n; ++i) {
          s += static_cast<double>(row[i]);
          constant = constant && row[i] == row[0];
        }
        // A coordinate all filters share is exactly their mean: no round-off may leak into S.
        mu[j] = constant ? static_cast<double>(row[0]) : s / static_cast<double>(n);
        for (int64_t i = 0; i < n; ++i) u(i, j) = static_cast<double>(row[i]) - mu[j];
      }
    });
    for (int64_t j = 0; j < d; ++j) center[j] = static_cast<T>(mu[j]);

    E::VectorXd r = u.rowwise().squaredNorm();  // |x_i - mu|^2
    const double trace = r.sum();
    const bool gram = n <= d;
    // Gram space K = Xc Xc^T [n, n]; dual K = Xc^T Xc [d, d] only when d < n (the smaller one).
    // u's row-major memory is Xc^T in column-major order, which the dual path reads as-is.
    E::Map<const ColMat> ut(u.data(), d, n);
    const ColMat k = gram ? SymGram(u, pf) : SymGram(RowMat(ut), pf);
    double l = p.shrinkage;
    if (l < 0.0) l = mdcv_impl::LedoitWolf(trace, k.squaredNorm(), r.squaredNorm(), n, d);
    *shrinkage_used = static_cast<T>(l);

    std::vector<double> d2(static_cast<size_t>(n), 0.0);
    const mdcv_impl::Coeffs cf = mdcv_impl::WoodburyCoeffs(l, trace, n, d);
    if (trace <= 0.0) {
      // All filters equal: every distance is 0 (0/0 taken as 0).
    } else if (cf.a <= 0.0) {
      // l = 1: S_l = c I.
      for (int64_t i = 0; i < n; ++i) d2[i] = r[i] / cf.c;
    } else if (cf.c <= 0.0) {
      // l = 0: S is singular when n <= d; the pseudo-inverse keeps the nonzero eigen-directions.
      // With n <= d this is the degenerate hat-matrix case, every d_i^2 = (n-1)^2/n (spec §2a).
      E::SelfAdjointEigenSolver<ColMat> eig(k);
      const E::VectorXd& lam = eig.eigenvalues();
      const double tol = static_cast<double>(std::max(n, d)) *
                         std::numeric_limits<double>::epsilon() * std::max(lam.maxCoeff(), 0.0);
      if (gram) {
        for (int64_t q = 0; q < n; ++q) {
          if (lam[q] <= tol) continue;
          for (int64_t i = 0; i < n; ++i)
            d2[i] += eig.eigenvectors()(i, q) * eig.eigenvectors()(i, q);
        }
        for (auto& v : d2) v /= cf.a;
      } else {
        const ColMat proj = u * eig.eigenvectors();  // [n, d]
        for (int64_t q = 0; q < d; ++q) {
          if (lam[q] <= tol) continue;
          for (int64_t i = 0; i < n; ++i) d2[i] += proj(i, q) * proj(i, q) / (cf.a * lam[q]);
        }
      }
    } else if (gram) {
      // Woodbury: S_l^-1 = (1/c)(I - Xc^T (c/a I + K)^-1 Xc), so with M = c I + a K [n, n]:
      //   d_i^2 = [K M^-1]_ii = (1 - c [M^-1]_ii) / a.
      // The subtraction loses only eps * c / (a lambda) relative: harmless unless l -> 1.
      ColMat m = cf.a * k;
      m.diagonal().array() += cf.c;
      E::LLT<ColMat> llt(m);
      if (llt.info() != E::Success) {
        // c is below K's round-off (a Ledoit-Wolf l of ~1e-17 where the exact value is 0):
        // M is not numerically positive definite. Eigenvalues instead, d_i^2 =
        // sum_q V_iq^2 lam_q / (a lam_q + c) over K's non-null directions, which is the l = 0
        // branch's result in the limit.
        EigenFallback(k, cf, n, d, gram, u, &d2);
        goto done;
      }
      ColMat linv = ColMat::Identity(n, n);
      llt.matrixL().solveInPlace(linv);  // L^-1: [M^-1]_ii is the squared norm of its column i
      for (int64_t i = 0; i < n; ++i) {
        d2[i] = std::max(0.0, (1.0 - cf.c * linv.col(i).squaredNorm()) / cf.a);
      }
    } else {
      // d < n: S_l = c I + a K [d, d] = L L^T, d_i^2 = |L^-1 (x_i - mu)|^2 (no cancellation).
      ColMat s = cf.a * k;
      s.diagonal().array() += cf.c;
      E::LLT<ColMat> llt(s);
      if (llt.info() != E::Success) {  // as above: S_l not numerically positive definite
        EigenFallback(k, cf, n, d, gram, u, &d2);
        goto done;
      }
      ColMat y = ut;  // [d, n], column i = x_i - mu
      const int64_t block = 32;
      pf((n + block - 1) / block, block * d * d, [&](int64_t b, int64_t e) {
        for (int64_t ib = b; ib < e; ++ib) {
          const int64_t c0 = ib * block, cols = std::min(block, n - c0);
          auto blk = y.middleCols(c0, cols);
          llt.matrixL().solveInPlace(blk);
          for (int64_t i = c0; i < c0 + cols; ++i) d2[i] = y.col(i).squaredNorm();
        }
      });
    }
  done:
    for (int64_t i = 0; i < n; ++i) {
      if (!std::isfinite(d2[i]) || !std::isfinite(trace)) {
        return Status::InvalidArgument(
            "mdcv_distances: filters' values are too large: the covariance overflows float64 "
            "(distance of filter " +
            std::to_string(i) + " is " + NumStr(d2[i]) + ")");
      }
      distances[i] = static_cast<T>(std::sqrt(d2[i]));
    }
    return Status::OK();
  });
}

template Status MdcvDistancesCpu<float>(const MdcvParams&, const float*, float*, float*, float*,
                                        const ParallelFor&);
template Status MdcvDistancesCpu<double>(const MdcvParams&, const double*, double*, double*,
                                         double*, const ParallelFor&);

}  // namespace iapdcnn
