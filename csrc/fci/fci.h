// Feature Correlation Index between blocks (SPEC 1c):
//   FCI(x, y) = cov(x, y) / (var(x) + var(y) + (mean(x) - mean(y))^2)
// with population moments (1/L). Its maximum is 0.5 at x == y (the paper's "-> 1" is wrong);
// 2*FCI is Lin's concordance correlation coefficient. Two identical constant blocks give 0.5,
// any other pair involving a constant block gives 0.
#pragma once

#include <cstdint>
#include <vector>

#include "common/parallel.h"
#include "common/status.h"

namespace iapdcnn {

// x: [n_x, block_len], y: [n_y, block_len], out: [n_x, n_y], all row-major.
struct FciParams {
  int64_t n_x = 0;
  int64_t n_y = 0;
  int64_t block_len = 0;
};

// Checks the shapes of x and y (each [n, block_len]) and fills p. Messages name the argument.
Status ValidateFci(const std::vector<int64_t>& x_shape, const std::vector<int64_t>& y_shape,
                   FciParams* p);

// out[i, j] = FCI(x[i], y[j]). T is float or double; moments accumulate in double.
template <typename T>
Status FciPairwiseCpu(const FciParams& p, const T* x, const T* y, T* out, const ParallelFor& pf);

}  // namespace iapdcnn
