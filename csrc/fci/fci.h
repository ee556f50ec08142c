// Feature Correlation Index between blocks (spec §1c):
//   FCI(x, y) = cov(x, y) / (var(x) + var(y) + (mean(x) - mean(y))^2)
// with population moments (1/L). Its maximum is 0.5 at x == y (the paper's "-> 1" is wrong);
// 2*FCI is Lin's concordance correlation coefficient. Two identical constant blocks give 0.5,
// any other pair involving a constant block gives 0.
#pragma once

#include <cstdint>
#include <vector>

#include "common/gpu.h"
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

// The block screening's defaults (the FCIFilter layer's, the preprocessing job's), written once;
// _C.defaults["fci_filter"] carries them to Python.
struct FciFilterDefaults {
  static constexpr int64_t block_size = 4;  // B: blocks are B x B pixels
};

// The block size of the screening: B >= 1 and, where the image is known (height and width >= 0;
// -1: not yet known), at most its height and width. Messages name block_size.
Status ValidateFciBlockSize(int64_t block_size, int64_t height = -1, int64_t width = -1);

// Block screening (spec §1c). x: [n, positions, block_len] (block p of sample i is
// x[i, p, :]), labels: [n] class ids in [0, num_classes).
struct FciBlocksParams {
  int64_t n = 0;
  int64_t positions = 0;
  int64_t block_len = 0;
  int64_t num_classes = 0;
};

// Checks x ([n, P, L]) and labels ([n]) shapes and num_classes >= 1 (pass the prototypes'
// first dimension for the prototype op). Messages name the argument.
Status ValidateFciBlocks(const std::vector<int64_t>& x_shape,
                         const std::vector<int64_t>& labels_shape, int64_t num_classes,
                         FciBlocksParams* p);
// Checks that prototypes is [num_classes, P, L] for x's P and L.
Status ValidateFciPrototypes(const FciBlocksParams& p, const std::vector<int64_t>& proto_shape);
// Checks every label is in [0, num_classes) (needs the data, so kernels call it first).
Status CheckFciLabels(const FciBlocksParams& p, const int64_t* labels);

// Mergeable class statistics for prototype mode (the "map"): counts[k] = #samples of class k,
// sums[k, p, :] = sum of their blocks at position p, accumulated in double in sample order.
// Statistics of disjoint shards merge by addition (the "reduce"); the result does not depend on
// how samples were split whenever the float64 sums are exact: e.g. float32 images from 8-bit data
// (k/255 in float32 is a multiple of 2^-31) for up to 2^22 samples per class.
template <typename T>
Status FciClassStatsCpu(const FciBlocksParams& p, const T* x, const int64_t* labels, double* counts,
                        double* sums, const ParallelFor& pf);

// out[i, p] = FCI(x[i, p], prototypes[labels[i], p]) (prototype mode, O(n)).
template <typename T>
Status FciPrototypeCpu(const FciBlocksParams& p, const T* x, const int64_t* labels,
                       const T* prototypes, T* out, const ParallelFor& pf);

// out[i, p] = mean over j != i with labels[j] == labels[i] of FCI(x[i, p], x[j, p]) (pairwise
// mode, the paper's O(n^2) per class and position). A sample alone in its class gets 0.5: with
// nothing to disagree with, it is treated as typical.
template <typename T>
Status FciWithinClassCpu(const FciBlocksParams& p, const T* x, const int64_t* labels, T* out,
                         const ParallelFor& pf);

// CUDA entry points (fci_cuda.cu, built with IAPDCNN_WITH_CUDA): the same on device pointers
// (labels too), enqueued on `stream`; scratch from `scratch` or the stream's memory pool when
// null. The block functions check the labels on the device and synchronise `stream` once to do so.
template <typename T>
Status FciPairwiseCuda(const FciParams& p, const T* x, const T* y, T* out, cudaStream_t stream,
                       GpuScratch* scratch = nullptr);
template <typename T>
Status FciClassStatsCuda(const FciBlocksParams& p, const T* x, const int64_t* labels,
                         double* counts, double* sums, cudaStream_t stream,
                         GpuScratch* scratch = nullptr);
template <typename T>
Status FciPrototypeCuda(const FciBlocksParams& p, const T* x, const int64_t* labels,
                        const T* prototypes, T* out, cudaStream_t stream,
                        GpuScratch* scratch = nullptr);
template <typename T>
Status FciWithinClassCuda(const FciBlocksParams& p, const T* x, const int64_t* labels, T* out,
                          cudaStream_t stream, GpuScratch* scratch = nullptr);

}  // namespace iapdcnn
