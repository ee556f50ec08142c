// CPU FCI: one pass centres every block (O((n_x + n_y) L)), then the pairwise covariances are
// dot products of centred rows, threaded over rows of x.
#include <cmath>
#include <string>
#include <vector>

#include "fci/fci.h"
#include "fci/fci_impl.h"

namespace iapdcnn {

namespace {
std::string ShapeStr(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

template <typename T>
void Centre(const T* v, int64_t n, int64_t len, std::vector<double>* centred,
            std::vector<double>* mean, std::vector<double>* var, const ParallelFor& pf) {
  centred->resize(static_cast<size_t>(n * len));
  mean->resize(static_cast<size_t>(n));
  var->resize(static_cast<size_t>(n));
  pf(n, 4 * len, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      (*var)[i] = fci_impl::CentreBlock(v + i * len, len, &(*mean)[i], centred->data() + i * len);
    }
  });
}
}  // namespace

Status ValidateFci(const std::vector<int64_t>& x_shape, const std::vector<int64_t>& y_shape,
                   FciParams* p) {
  if (x_shape.size() != 2) {
    return Status::InvalidArgument("fci: x must be 2-D [n_x, block_len], got shape " +
                                   ShapeStr(x_shape));
  }
  if (y_shape.size() != 2) {
    return Status::InvalidArgument("fci: y must be 2-D [n_y, block_len], got shape " +
                                   ShapeStr(y_shape));
  }
  if (x_shape[1] != y_shape[1]) {
    return Status::InvalidArgument("fci: x and y must have the same block length, got x " +
                                   ShapeStr(x_shape) + " and y " + ShapeStr(y_shape));
  }
  if (x_shape[1] < 1) {
    return Status::InvalidArgument("fci: block_len (last dimension of x and y) must be >= 1, got " +
                                   std::to_string(x_shape[1]));
  }
  p->n_x = x_shape[0];
  p->n_y = y_shape[0];
  p->block_len = x_shape[1];
  return Status::OK();
}

template <typename T>
Status FciPairwiseCpu(const FciParams& p, const T* x, const T* y, T* out, const ParallelFor& pf) {
  const int64_t L = p.block_len;
  std::vector<double> xc, yc, mx, my, vx, vy;
  Centre(x, p.n_x, L, &xc, &mx, &vx, pf);
  Centre(y, p.n_y, L, &yc, &my, &vy, pf);
  const double inv_l = 1.0 / static_cast<double>(L);
  pf(p.n_x, 2 * L * p.n_y + 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const double* xi = xc.data() + i * L;
      for (int64_t j = 0; j < p.n_y; ++j) {
        const double* yj = yc.data() + j * L;
        double dot = 0.0;
        for (int64_t k = 0; k < L; ++k) dot += xi[k] * yj[k];
        out[i * p.n_y + j] =
            static_cast<T>(fci_impl::FciFromMoments(dot * inv_l, vx[i], vy[j], mx[i], my[j]));
      }
    }
  });
  return Status::OK();
}

template Status FciPairwiseCpu<float>(const FciParams&, const float*, const float*, float*,
                                      const ParallelFor&);
template Status FciPairwiseCpu<double>(const FciParams&, const double*, const double*, double*,
                                       const ParallelFor&);

}  // namespace iapdcnn
