// MDCV filter scores (spec §2a): the Mahalanobis distance of every filter of a conv layer from the
// filters' mean under a shrunk covariance,
//   d_i = sqrt((x_i - mu)^T S_l^-1 (x_i - mu)),  S_l = (1 - l) S + l (tr(S)/d) I,
// with l estimated by Ledoit-Wolf when the caller passes a negative shrinkage.
#pragma once

#include <cstdint>
#include <vector>

#include "common/gpu.h"
#include "common/parallel.h"
#include "common/status.h"

namespace iapdcnn {

// The arguments' defaults: the one place they are written. The TensorFlow op's attribute
// defaults (tfops), the _C keyword defaults and _C.defaults, which the Python wrappers read,
// all come from here.
struct MdcvDefaults {
  static constexpr double shrinkage = -1.0;  // Ledoit-Wolf
};

// filters: [kh, kw, cin, cout] row-major (Keras' Conv2D kernel layout); the n = cout filters are
// points in d = kh*kw*cin dimensions. shrinkage: l in [0, 1], or < 0 for Ledoit-Wolf.
struct MdcvParams {
  int64_t kh = 0;
  int64_t kw = 0;
  int64_t cin = 0;
  int64_t cout = 0;
  double shrinkage = MdcvDefaults::shrinkage;
  int64_t n() const { return cout; }
  int64_t d() const { return kh * kw * cin; }
};

// Checks the filter shape (rank 4, cout >= 2, d >= 1) and shrinkage (finite, <= 1) and fills p.
Status ValidateMdcv(const std::vector<int64_t>& filters_shape, double shrinkage, MdcvParams* p);

// distances: [cout]; center: [kh, kw, cin] (the filters' mean); shrinkage_used: one value.
// Accumulates in double for both T = float and T = double.
template <typename T>
Status MdcvDistancesCpu(const MdcvParams& p, const T* filters, T* distances, T* center,
                        T* shrinkage_used, const ParallelFor& pf);

// CUDA entry point (mdcv_cuda.cu, built with IAPDCNN_WITH_CUDA): filters, distances and center
// on the device, shrinkage_used on the host. The check, the centring and the Gram product
// (cuBLAS, float64) run on `stream`; the k x k solve, k = min(n, d), runs on the host
// (host_pf's threads), so the call synchronises `stream` and returns when the distances are
// written. Scratch from `scratch` or the stream's memory pool when null.
template <typename T>
Status MdcvDistancesCuda(const MdcvParams& p, const T* filters, T* distances, T* center,
                         double* shrinkage_used, cudaStream_t stream, const ParallelFor& host_pf,
                         GpuScratch* scratch = nullptr);

}  // namespace iapdcnn
