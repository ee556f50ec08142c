// CPU MDCV distances (spec §2a): the filters are checked and centred, their Gram matrix K formed
// (Xc Xc^T [n, n] when n <= d, else Xc^T Xc [d, d]: never a matrix larger than min(n, d)^2), and
// the shared host solve of mdcv_solve.cc turns it into l and the distances. The cost is
// O(n d k + k^3), k = min(n, d).
#define EIGEN_DONT_PARALLELIZE  // threads come from the ParallelFor, never from Eigen
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
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
          return MdcvNonFiniteError(j * n + i, n, static_cast<double>(filters[j * n + i]));
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

    const E::VectorXd r = u.rowwise().squaredNorm();  // |x_i - mu|^2
    // u's row-major memory is Xc^T in column-major order, which the dual product reads as-is.
    const ColMat k =
        n <= d ? SymGram(u, pf) : SymGram(RowMat(E::Map<const ColMat>(u.data(), d, n)), pf);
    double l = 0.0;
    std::vector<double> dist(static_cast<size_t>(n));
    IAPDCNN_RETURN_IF_ERROR(MdcvSolveHost(p, r.data(), k.data(), u.data(), &l, dist.data(), pf));
    *shrinkage_used = static_cast<T>(l);
    for (int64_t i = 0; i < n; ++i) distances[i] = static_cast<T>(dist[i]);
    return Status::OK();
  });
}

template Status MdcvDistancesCpu<float>(const MdcvParams&, const float*, float*, float*, float*,
                                        const ParallelFor&);
template Status MdcvDistancesCpu<double>(const MdcvParams&, const double*, double*, double*,
                                         double*, const ParallelFor&);

}  // namespace iapdcnn
