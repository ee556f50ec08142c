// Marr-Hildreth edges (spec §1b), per channel of NHWC images: lap = g * K (3x3, 4- or
// 8-neighbour), an edge pixel has a Laplacian sign change across it along one of the 4 directions
// and a Sobel gradient magnitude >= t (absolute, or a fraction of the plane's maximum).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/gpu.h"
#include "common/parallel.h"
#include "common/status.h"

namespace iapdcnn {

enum class EdgeMode : int { kMasked = 0, kBinary = 1, kMagnitude = 2 };

// The arguments' defaults: the one place they are written. The TensorFlow op's attribute
// defaults (tfops), the _C keyword defaults and _C.defaults, which the Python wrappers read,
// all come from here.
struct MarrHildrethDefaults {
  static constexpr int64_t laplacian = 4;
  static constexpr double threshold = 0.1;
  static constexpr bool relative = true;
  static constexpr const char* mode = "masked";
};

// The Laplacian kernels there are, by neighbour count (4: the cross, 8: the full 3x3);
// _C.marr_hildreth_laplacians carries them to Python (preprocess's --laplacian choices).
inline constexpr int64_t kLaplacianNeighbours[] = {4, 8};

// x and out: [batch, height, width, channels], row-major (NHWC).
struct MarrHildrethParams {
  int64_t batch = 0;
  int64_t height = 0;
  int64_t width = 0;
  int64_t channels = 0;
  // 4: [[0,1,0],[1,-4,1],[0,1,0]]; 8: [[1,1,1],[1,-8,1],[1,1,1]]
  int64_t laplacian = MarrHildrethDefaults::laplacian;
  double threshold = MarrHildrethDefaults::threshold;  // Sobel magnitude threshold t >= 0
  bool relative = MarrHildrethDefaults::relative;      // t is a fraction of the plane's maximum
  EdgeMode mode = EdgeMode::kMasked;
};

// The mode names, in EdgeMode order: the one list (ParseEdgeMode, _C.marr_hildreth_modes, and
// through it the Python layer's and the preprocessing job's choices).
inline constexpr const char* kEdgeModeNames[] = {"masked", "binary", "magnitude"};

// Parses "masked" | "binary" | "magnitude".
Status ParseEdgeMode(const std::string& mode, EdgeMode* out);

// The scalar rules alone (ValidateMarrHildreth applies them too), for callers that check the
// arguments before any image exists (the Keras layer's constructor, through _C).
Status ValidateMarrHildrethArgs(int64_t laplacian, double threshold, const std::string& mode);

// Checks x's shape ([N, H, W, C]) and the scalars, fills p. Messages name the argument.
Status ValidateMarrHildreth(const std::vector<int64_t>& x_shape, int64_t laplacian,
                            double threshold, bool relative, const std::string& mode,
                            MarrHildrethParams* p);

template <typename T>
Status MarrHildrethCpu(const MarrHildrethParams& p, const T* x, T* out, const ParallelFor& pf);

// CUDA entry point (marr_hildreth_cuda.cu, built with IAPDCNN_WITH_CUDA): the same on device
// pointers, enqueued on `stream`; scratch from `scratch` or the stream's memory pool when null.
template <typename T>
Status MarrHildrethCuda(const MarrHildrethParams& p, const T* x, T* out, cudaStream_t stream,
                        GpuScratch* scratch = nullptr);

}  // namespace iapdcnn
