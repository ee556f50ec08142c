// cuBLAS, loaded on first use with dlopen instead of linked: the CUDA toolkits these modules are
// built with may lack cuBLAS (the CI image's nvcc has no libcublas), and iapdcnn._C / _tfops.so
// must import on machines without a GPU or without cuBLAS. Only the entry point the conv kernels
// use is declared (cublasGemmStridedBatchedEx, stable since CUDA 11; enum values as in
// cublas_api.h / library_types.h). Library search: $IAPDCNN_CUBLAS_LIBRARY, then libcublas.so.13,
// .so.12, .so.11, .so (an already-loaded copy, e.g. PyTorch's or TensorFlow's, is found by soname),
// then the same names next to the CUDA libraries already loaded, in the pip wheels' layout beside
// them (site-packages/nvidia/cublas/lib: CuPy loads cuBLAS lazily, so it may not be loaded yet),
// $CUDA_HOME/lib64, $CUDA_PATH/lib64 and /usr/local/cuda/lib64.
#pragma once

#include <cstdint>

#include "common/gpu.h"
#include "common/status.h"

namespace iapdcnn {
namespace cublas {

enum Op : int { kN = 0, kT = 1 };
// cudaDataType_t values.
enum DataType : int { kR32F = 0, kR64F = 1, kR16F = 2, kR16BF = 14 };
// cublasComputeType_t values: 32F is true fp32 (no TF32), also used for fp16 / bf16 inputs.
enum ComputeType : int { kCompute32F = 68, kCompute64F = 70 };

// Column-major C[i] = alpha op(A[i]) op(B[i]) + beta C[i] for i < batch, on `stream` (the calling
// thread's handle for the current device). alpha/beta point to float (32F) or double (64F).
Status GemmStridedBatched(cudaStream_t stream, Op ta, Op tb, int64_t m, int64_t n, int64_t k,
                          const void* alpha, const void* a, DataType a_type, int64_t lda,
                          int64_t stride_a, const void* b, DataType b_type, int64_t ldb,
                          int64_t stride_b, const void* beta, void* c, DataType c_type, int64_t ldc,
                          int64_t stride_c, int64_t batch, ComputeType compute);

// Empty when cuBLAS loads, else why not (for error messages and tests).
const char* LoadError();

}  // namespace cublas
}  // namespace iapdcnn
