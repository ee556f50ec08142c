// What the CUDA entry points of every kernel share, visible to code built without nvcc (the TF
// adapters, the pybind11 module): the stream type, and the device scratch callback through which
// TensorFlow lends its allocator. Including this header needs no CUDA headers.
#pragma once

#include <cstdint>

// The CUDA runtime's own definition (driver_types.h); repeating an identical typedef is legal.
struct CUstream_st;
typedef struct CUstream_st* cudaStream_t;  // NOLINT(modernize-use-using): must match CUDA's

namespace iapdcnn {

// Device memory for a kernel's temporaries, valid until the entry point's work on its stream has
// finished. The TF adapter backs it with allocate_temp (TF's stream-ordered BFC allocator); when
// a CUDA entry point gets nullptr it uses cudaMallocAsync / cudaFreeAsync on its stream.
class GpuScratch {
 public:
  virtual ~GpuScratch() = default;
  // Returns nullptr when out of memory.
  virtual void* Allocate(int64_t bytes) = 0;
};

}  // namespace iapdcnn
