// CPU Marr-Hildreth edges (spec §1b): one task per (image, channel) plane. Borders reflect
// (numpy "reflect"), both for the 3x3 filters and for the neighbours of the zero-crossing test.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "common/checked.h"
#include "common/guard.h"
#include "common/reflect.h"
#include "marr_hildreth/marr_hildreth.h"
#include "marr_hildreth/marr_hildreth_impl.h"

namespace iapdcnn {

template <typename T>
Status MarrHildrethCpu(const MarrHildrethParams& p, const T* x, T* out, const ParallelFor& pf_in) {
  return GuardKernel("marr_hildreth", pf_in, [&](const ParallelFor& pf) -> Status {
    const int64_t H = p.height, W = p.width, C = p.channels, planes = p.batch * C;
    if (planes == 0 || H == 0 || W == 0) return Status::OK();
    pf(planes, H * W * 60, [&](int64_t b, int64_t e) {
      // g and lap carry a 1-pixel reflected border, so the stencils index without branches.
      std::vector<double> g((H + 2) * (W + 2)), lap((H + 2) * (W + 2)), mag(H * W);
      const int64_t GW = W + 2;
      for (int64_t q = b; q < e; ++q) {
        const int64_t n = q / C, c = q % C;
        const T* plane = x + n * H * W * C + c;
        for (int64_t i = 0; i < H + 2; ++i) {
          const T* src = plane + ReflectIndex(i - 1, H) * W * C;
          double* dst = g.data() + i * GW;
          dst[0] = static_cast<double>(src[ReflectIndex(-1, W) * C]);
          for (int64_t j = 0; j < W; ++j) dst[j + 1] = static_cast<double>(src[j * C]);
          dst[W + 1] = static_cast<double>(src[ReflectIndex(W, W) * C]);
        }
        double max_mag = 0.0;
        for (int64_t i = 0; i < H; ++i) {
          const double* up = g.data() + i * GW + 1;  // g(i-1, .), column 0 at index 0 of up
          const double* mid = up + GW;
          const double* dn = mid + GW;
          for (int64_t j = 0; j < W; ++j) {
            const double cross = up[j] + dn[j] + mid[j - 1] + mid[j + 1];
            const double diag = up[j - 1] + up[j + 1] + dn[j - 1] + dn[j + 1];
            lap[(i + 1) * GW + j + 1] =
                p.laplacian == 4 ? cross - 4.0 * mid[j] : cross + diag - 8.0 * mid[j];
            const double gx = (up[j + 1] + 2.0 * mid[j + 1] + dn[j + 1]) -
                              (up[j - 1] + 2.0 * mid[j - 1] + dn[j - 1]);
            const double gy =
                (dn[j - 1] + 2.0 * dn[j] + dn[j + 1]) - (up[j - 1] + 2.0 * up[j] + up[j + 1]);
            mag[i * W + j] = std::sqrt(gx * gx + gy * gy);
          }
          // The maximum in a separate loop, with 4 partial maxima (m >= 0), over the magnitudes
          // the NaN policy lets count (marr_hildreth_impl::CountsTowardMax).
          using marr_hildreth_impl::CountsTowardMax;
          double mx[4] = {0.0, 0.0, 0.0, 0.0};
          const double* mrow = mag.data() + i * W;
          int64_t j = 0;
          for (; j + 4 <= W; j += 4) {
            for (int k = 0; k < 4; ++k) {
              const double m = mrow[j + k];
              mx[k] = m > mx[k] && CountsTowardMax(m) ? m : mx[k];
            }
          }
          for (; j < W; ++j) mx[0] = mrow[j] > mx[0] && CountsTowardMax(mrow[j]) ? mrow[j] : mx[0];
          for (int k = 0; k < 4; ++k) max_mag = std::max(max_mag, mx[k]);
        }
        for (int64_t i = 0; i < H; ++i) {  // reflected border columns, then rows
          lap[(i + 1) * GW] = lap[(i + 1) * GW + 1 + ReflectIndex(-1, W)];
          lap[(i + 1) * GW + W + 1] = lap[(i + 1) * GW + 1 + ReflectIndex(W, W)];
        }
        std::copy_n(lap.begin() + (1 + ReflectIndex(-1, H)) * GW, GW, lap.begin());
        std::copy_n(lap.begin() + (1 + ReflectIndex(H, H)) * GW, GW, lap.begin() + (H + 1) * GW);
        const double t = p.relative ? p.threshold * max_mag : p.threshold;
        T* o = out + n * H * W * C + c;
        for (int64_t i = 0; i < H; ++i) {
          const double* up = lap.data() + i * GW + 1;  // lap(i-1, .)
          const double* mid = up + GW;
          const double* dn = mid + GW;
          for (int64_t j = 0; j < W; ++j) {
            // Opposite pairs: left/right, up/down, the two diagonals.
            const double nb[8] = {mid[j - 1], mid[j + 1], up[j],     dn[j],
                                  up[j - 1],  dn[j + 1],  up[j + 1], dn[j - 1]};
            const double m = mag[i * W + j];
            const double v = p.mode == EdgeMode::kMasked   ? g[(i + 1) * GW + j + 1]
                             : p.mode == EdgeMode::kBinary ? 1.0
                                                           : m;
            // NaN where the decision reads a non-finite value (the NaN policy, shared with CUDA).
            o[(i * W + j) * C] =
                static_cast<T>(marr_hildreth_impl::EdgeOutput(m, t, mid[j], nb, v));
          }
        }
      }
    });
    return Status::OK();
  });
}

template Status MarrHildrethCpu<float>(const MarrHildrethParams&, const float*, float*,
                                       const ParallelFor&);
template Status MarrHildrethCpu<double>(const MarrHildrethParams&, const double*, double*,
                                        const ParallelFor&);

}  // namespace iapdcnn
