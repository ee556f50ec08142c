// CPU FCI: one pass centres every block (O((n_x + n_y) L)), then the pairwise covariances are
// dot products of centred rows, threaded over rows of x.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "common/checked.h"
#include "common/guard.h"
#include "fci/fci.h"
#include "fci/fci_impl.h"

namespace iapdcnn {

namespace {
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

template <typename T>
Status FciPairwiseCpu(const FciParams& p, const T* x, const T* y, T* out,
                      const ParallelFor& pf_in) {
  return GuardKernel("fci", pf_in, [&](const ParallelFor& pf) -> Status {
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
  });
}

template <typename T>
Status FciClassStatsCpu(const FciBlocksParams& p, const T* x, const int64_t* labels, double* counts,
                        double* sums, const ParallelFor& pf_in) {
  return GuardKernel("fci_class_stats", pf_in, [&](const ParallelFor& pf) -> Status {
    IAPDCNN_RETURN_IF_ERROR(CheckFciLabels(p, labels));
    const int64_t PL = p.positions * p.block_len;
    std::fill(counts, counts + p.num_classes, 0.0);
    std::fill(sums, sums + p.num_classes * PL, 0.0);
    for (int64_t i = 0; i < p.n; ++i) counts[labels[i]] += 1.0;
    // Threads own disjoint column ranges and walk the samples in order: deterministic sums.
    pf(PL, 2 * p.n + 1, [&](int64_t b, int64_t e) {
      for (int64_t i = 0; i < p.n; ++i) {
        const T* xi = x + i * PL;
        double* s = sums + labels[i] * PL;
        for (int64_t k = b; k < e; ++k) s[k] += static_cast<double>(xi[k]);
      }
    });
    return Status::OK();
  });
}

template <typename T>
Status FciPrototypeCpu(const FciBlocksParams& p, const T* x, const int64_t* labels,
                       const T* prototypes, T* out, const ParallelFor& pf_in) {
  return GuardKernel("fci_prototype", pf_in, [&](const ParallelFor& pf) -> Status {
    IAPDCNN_RETURN_IF_ERROR(CheckFciLabels(p, labels));
    const int64_t L = p.block_len, P = p.positions;
    pf(p.n * P, 8 * L, [&](int64_t b, int64_t e) {
      std::vector<double> xc(L), mc(L);
      for (int64_t q = b; q < e; ++q) {
        const int64_t i = q / P, pos = q % P;
        double mx = 0.0, mm = 0.0;
        const double vx = fci_impl::CentreBlock(x + q * L, L, &mx, xc.data());
        const double vm =
            fci_impl::CentreBlock(prototypes + (labels[i] * P + pos) * L, L, &mm, mc.data());
        double dot = 0.0;
        for (int64_t k = 0; k < L; ++k) dot += xc[k] * mc[k];
        out[q] = static_cast<T>(fci_impl::FciFromMoments(dot / L, vx, vm, mx, mm));
      }
    });
    return Status::OK();
  });
}

template <typename T>
Status FciWithinClassCpu(const FciBlocksParams& p, const T* x, const int64_t* labels, T* out,
                         const ParallelFor& pf_in) {
  return GuardKernel("fci_within_class", pf_in, [&](const ParallelFor& pf) -> Status {
    IAPDCNN_RETURN_IF_ERROR(CheckFciLabels(p, labels));
    const int64_t L = p.block_len, P = p.positions, n = p.n;
    // Samples grouped by class (stable), so each class is a contiguous run of `order`.
    std::vector<int64_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return labels[a] < labels[b]; });
    pf(P, 2 * n * n * L / std::max<int64_t>(1, p.num_classes) + n * L, [&](int64_t b, int64_t e) {
      std::vector<double> c(n * L), mean(n), var(n);
      for (int64_t pos = b; pos < e; ++pos) {
        for (int64_t i = 0; i < n; ++i) {
          var[i] = fci_impl::CentreBlock(x + (i * P + pos) * L, L, &mean[i], c.data() + i * L);
        }
        for (int64_t s0 = 0; s0 < n;) {
          int64_t s1 = s0;
          while (s1 < n && labels[order[s1]] == labels[order[s0]]) ++s1;
          for (int64_t a = s0; a < s1; ++a) {
            const int64_t i = order[a];
            double acc = 0.0;
            for (int64_t bb = s0; bb < s1; ++bb) {
              const int64_t j = order[bb];
              if (j == i) continue;
              double dot = 0.0;
              for (int64_t k = 0; k < L; ++k) dot += c[i * L + k] * c[j * L + k];
              acc += fci_impl::FciFromMoments(dot / L, var[i], var[j], mean[i], mean[j]);
            }
            out[i * P + pos] = static_cast<T>(s1 - s0 > 1 ? acc / (s1 - s0 - 1) : 0.5);
          }
          s0 = s1;
        }
      }
    });
    return Status::OK();
  });
}

#define IAPDCNN_INSTANTIATE_BLOCKS(T)                                                            \
  template Status FciClassStatsCpu<T>(const FciBlocksParams&, const T*, const int64_t*, double*, \
                                      double*, const ParallelFor&);                              \
  template Status FciPrototypeCpu<T>(const FciBlocksParams&, const T*, const int64_t*, const T*, \
                                     T*, const ParallelFor&);                                    \
  template Status FciWithinClassCpu<T>(const FciBlocksParams&, const T*, const int64_t*, T*,     \
                                       const ParallelFor&);
IAPDCNN_INSTANTIATE_BLOCKS(float)
IAPDCNN_INSTANTIATE_BLOCKS(double)
#undef IAPDCNN_INSTANTIATE_BLOCKS

template Status FciPairwiseCpu<float>(const FciParams&, const float*, const float*, float*,
                                      const ParallelFor&);
template Status FciPairwiseCpu<double>(const FciParams&, const double*, const double*, double*,
                                       const ParallelFor&);

}  // namespace iapdcnn
