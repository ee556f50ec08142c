// Marks per-element math shared by the CPU (.cc) and CUDA (.cu) paths of a kernel.
#pragma once

#if defined(__CUDACC__)
#define IAPDCNN_HD __host__ __device__ __forceinline__
#else
#define IAPDCNN_HD inline
#endif
