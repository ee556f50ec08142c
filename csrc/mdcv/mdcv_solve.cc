// The host half of MDCV (spec §2a), shared by the CPU kernel (mdcv_cpu.cc) and the CUDA kernel
// (mdcv_cuda.cu): from the centred filters' squared norms and their Gram matrix, the shrinkage l
// and every distance. Every solve runs in k = min(n, d) dimensions: through the Woodbury identity
// in n x n Gram space when n <= d (the singular case the spec §2a is about, e.g. 512 filters of
// 3x3x512), and with the d x d shrunk covariance itself only when d < n, where that matrix is the
// smaller of the two (e.g. 2048 filters of 1x1x512). The cost is O(k^3) (plus O(n d k) for d < n).
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

// The centred filters [n, d] row-major; their memory is Xc^T [d, n] column-major.
E::Map<const RowMat> Centred(const double* u, int64_t n, int64_t d) {
  return E::Map<const RowMat>(u, n, d);
}

// d_i^2 = (x_i - mu)^T S_l^+ (x_i - mu) through K's eigenvalues (K = Xc Xc^T when gram, else
// Xc^T Xc), dropping null directions (lam <= tol, as the l = 0 branch does); for when the
// Cholesky of S_l (or of the Gram system) fails at a shrinkage below round-off.
void EigenFallback(const E::Map<const ColMat>& k, const mdcv_impl::Coeffs& cf, int64_t n, int64_t d,
                   bool gram, const double* u, double* d2) {
  E::SelfAdjointEigenSolver<ColMat> eig(k);
  const E::VectorXd& lam = eig.eigenvalues();
  const double tol = static_cast<double>(std::max(n, d)) * std::numeric_limits<double>::epsilon() *
                     std::max(lam.maxCoeff(), 0.0);
  std::fill(d2, d2 + n, 0.0);
  if (gram) {
    for (int64_t q = 0; q < lam.size(); ++q) {
      if (lam[q] <= tol) continue;
      const double f = lam[q] / (cf.a * lam[q] + cf.c);
      for (int64_t i = 0; i < n; ++i) {
        d2[i] += eig.eigenvectors()(i, q) * eig.eigenvectors()(i, q) * f;
      }
    }
    return;
  }
  const ColMat proj = Centred(u, n, d) * eig.eigenvectors();  // [n, d]
  for (int64_t q = 0; q < lam.size(); ++q) {
    if (lam[q] <= tol) continue;
    const double f = 1.0 / (cf.a * lam[q] + cf.c);
    for (int64_t i = 0; i < n; ++i) d2[i] += proj(i, q) * proj(i, q) * f;
  }
}

// Squared distances into d2 [n] (zeros on entry).
void SquaredDistances(const MdcvParams& p, const E::Map<const E::VectorXd>& r,
                      const E::Map<const ColMat>& k, const double* u, double trace, double l,
                      double* d2, const ParallelFor& pf) {
  const int64_t n = p.n(), d = p.d();
  const bool gram = n <= d;
  const mdcv_impl::Coeffs cf = mdcv_impl::WoodburyCoeffs(l, trace, n, d);
  if (trace <= 0.0) {
    return;  // All filters equal: every distance is 0 (0/0 taken as 0).
  }
  if (cf.a <= 0.0) {
    // l = 1: S_l = c I.
    for (int64_t i = 0; i < n; ++i) d2[i] = r[i] / cf.c;
    return;
  }
  if (cf.c <= 0.0) {
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
      for (int64_t i = 0; i < n; ++i) d2[i] /= cf.a;
    } else {
      const ColMat proj = Centred(u, n, d) * eig.eigenvectors();  // [n, d]
      for (int64_t q = 0; q < d; ++q) {
        if (lam[q] <= tol) continue;
        for (int64_t i = 0; i < n; ++i) d2[i] += proj(i, q) * proj(i, q) / (cf.a * lam[q]);
      }
    }
    return;
  }
  if (gram) {
    // Woodbury: S_l^-1 = (1/c)(I - Xc^T (c/a I + K)^-1 Xc), so with M = c I + a K [n, n]:
    //   d_i^2 = [K M^-1]_ii = (1 - c [M^-1]_ii) / a.
    // The subtraction loses only eps * c / (a lambda) relative: harmless unless l -> 1.
    ColMat m = cf.a * k;
    m.diagonal().array() += cf.c;
    E::LLT<ColMat> llt(m);
    if (llt.info() != E::Success) {
      // c is below K's round-off (a Ledoit-Wolf l of ~1e-17 where the exact value is 0): M is
      // not numerically positive definite. Eigenvalues instead, d_i^2 = sum_q V_iq^2 lam_q /
      // (a lam_q + c) over K's non-null directions, which is the l = 0 branch's result in the
      // limit.
      EigenFallback(k, cf, n, d, gram, u, d2);
      return;
    }
    ColMat linv = ColMat::Identity(n, n);
    llt.matrixL().solveInPlace(linv);  // L^-1: [M^-1]_ii is the squared norm of its column i
    for (int64_t i = 0; i < n; ++i) {
      d2[i] = std::max(0.0, (1.0 - cf.c * linv.col(i).squaredNorm()) / cf.a);
    }
    return;
  }
  // d < n: S_l = c I + a K [d, d] = L L^T, d_i^2 = |L^-1 (x_i - mu)|^2 (no cancellation).
  ColMat s = cf.a * k;
  s.diagonal().array() += cf.c;
  E::LLT<ColMat> llt(s);
  if (llt.info() != E::Success) {  // as above: S_l not numerically positive definite
    EigenFallback(k, cf, n, d, gram, u, d2);
    return;
  }
  ColMat y = E::Map<const ColMat>(u, d, n);  // [d, n], column i = x_i - mu
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
}  // namespace

Status MdcvNonFiniteError(int64_t flat, int64_t n, double value) {
  return Status::InvalidArgument("mdcv_distances: filters contains a non-finite value (" +
                                 NumStr(value) + ") in filter " + std::to_string(flat % n) +
                                 " (flat index " + std::to_string(flat) +
                                 "); distances of NaN or Inf weights would decide what is pruned");
}

Status MdcvSolveHost(const MdcvParams& p, const double* r_in, const double* k_in, const double* u,
                     double* l_out, double* distances, const ParallelFor& pf_in) {
  return GuardKernel("mdcv_distances", pf_in, [&](const ParallelFor& pf) -> Status {
    const int64_t n = p.n(), d = p.d(), kk = std::min(n, d);
    const E::Map<const E::VectorXd> r(r_in, n);
    const E::Map<const ColMat> k(k_in, kk, kk);
    const double trace = r.sum();
    double l = p.shrinkage;
    if (l < 0.0) l = mdcv_impl::LedoitWolf(trace, k.squaredNorm(), r.squaredNorm(), n, d);
    *l_out = l;
    std::vector<double> d2(static_cast<size_t>(n), 0.0);
    SquaredDistances(p, r, k, u, trace, l, d2.data(), pf);
    for (int64_t i = 0; i < n; ++i) {
      if (!std::isfinite(d2[i]) || !std::isfinite(trace)) {
        return Status::InvalidArgument(
            "mdcv_distances: filters' values are too large: the covariance overflows float64 "
            "(distance of filter " +
            std::to_string(i) + " is " + NumStr(d2[i]) + ")");
      }
      distances[i] = std::sqrt(d2[i]);
    }
    return Status::OK();
  });
}

}  // namespace iapdcnn
