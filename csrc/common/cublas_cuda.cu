// The dlopen-ed cuBLAS of cublas_lazy.h: resolves the few symbols once, then keeps one handle per
// (thread, device), since a cuBLAS handle must not be shared by threads setting streams.
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <link.h>

#include <climits>
#include <cstdlib>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/cublas_lazy.h"
#include "common/cuda_util.cuh"

namespace iapdcnn {
namespace cublas {

namespace {

using Handle = void*;
using CreateFn = int (*)(Handle*);
using SetStreamFn = int (*)(Handle, cudaStream_t);
using GemmFn = int (*)(Handle, int, int, int, int, int, const void*, const void*, int, int,
                       long long, const void*, int, int, long long, const void*, void*, int, int,
                       long long, int, int, int);

struct Lib {
  CreateFn create = nullptr;
  SetStreamFn set_stream = nullptr;
  GemmFn gemm = nullptr;
  std::string error;
};

// Directories where a cuBLAS may sit that the loader's search path misses: next to the CUDA
// libraries already loaded (a toolkit's lib64), the pip wheels' layout beside them
// (site-packages/nvidia/{cublas,cu13}/lib, e.g. CuPy's or PyTorch's), $CUDA_HOME / $CUDA_PATH,
// /usr/local/cuda.
std::vector<std::string> CandidateDirs() {
  std::vector<std::string> dirs;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) {
        auto* out = static_cast<std::vector<std::string>*>(data);
        const std::string path = info->dlpi_name == nullptr ? "" : info->dlpi_name;
        const size_t slash = path.rfind('/');
        if (slash == std::string::npos) return 0;
        const std::string file = path.substr(slash + 1);
        if (file.rfind("libcu", 0) != 0 && file.rfind("libnv", 0) != 0) return 0;
        out->push_back(path.substr(0, slash));
        const size_t nv = path.rfind("/nvidia/");
        if (nv != std::string::npos) {
          out->push_back(path.substr(0, nv) + "/nvidia/cublas/lib");
          out->push_back(path.substr(0, nv) + "/nvidia/cu13/lib");
        }
        return 0;
      },
      &dirs);
  for (const char* var : {"CUDA_HOME", "CUDA_PATH"}) {
    const char* v = std::getenv(var);
    if (v != nullptr && *v != '\0') dirs.push_back(std::string(v) + "/lib64");
  }
  dirs.push_back("/usr/local/cuda/lib64");
  return dirs;
}

const Lib& Load() {
  static const Lib lib = [] {
    Lib l;
    const char* env = std::getenv("IAPDCNN_CUBLAS_LIBRARY");
    const char* sonames[] = {"libcublas.so.13", "libcublas.so.12", "libcublas.so.11",
                             "libcublas.so"};
    std::vector<std::string> names;
    if (env != nullptr && *env != '\0') names.push_back(env);
    for (const char* so : sonames) names.push_back(so);
    for (const std::string& dir : CandidateDirs()) {
      for (const char* so : sonames) names.push_back(dir + "/" + so);
    }
    void* h = nullptr;
    for (const std::string& name : names) {
      h = dlopen(name.c_str(), RTLD_NOW | RTLD_GLOBAL);
      if (h != nullptr) break;
    }
    if (h == nullptr) {
      l.error =
          "cuBLAS not found (tried $IAPDCNN_CUBLAS_LIBRARY, libcublas.so.13/.12/.11/.so on the "
          "loader's path, next to the loaded CUDA libraries, in site-packages/nvidia/cublas/lib, "
          "$CUDA_HOME/lib64 and /usr/local/cuda/lib64); install it (e.g. pip install "
          "nvidia-cublas-cu12) or set IAPDCNN_CUBLAS_LIBRARY to its path";
      return l;
    }
    l.create = reinterpret_cast<CreateFn>(dlsym(h, "cublasCreate_v2"));
    l.set_stream = reinterpret_cast<SetStreamFn>(dlsym(h, "cublasSetStream_v2"));
    l.gemm = reinterpret_cast<GemmFn>(dlsym(h, "cublasGemmStridedBatchedEx"));
    if (l.create == nullptr || l.set_stream == nullptr || l.gemm == nullptr) {
      l.error =
          "cuBLAS loaded but lacks cublasCreate_v2 / cublasSetStream_v2 / "
          "cublasGemmStridedBatchedEx (cuBLAS >= 11 needed)";
    }
    return l;
  }();
  return lib;
}

Status HandleFor(const Lib& lib, Handle* out) {
  thread_local std::unordered_map<int, Handle> handles;  // never destroyed: see cuBLAS docs on
                                                         // destruction after driver teardown
  int device = 0;
  IAPDCNN_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  auto it = handles.find(device);
  if (it == handles.end()) {
    Handle h = nullptr;
    const int st = lib.create(&h);
    if (st != 0) {
      return Status::InvalidArgument("cuda: cublasCreate failed with status " + std::to_string(st));
    }
    it = handles.emplace(device, h).first;
  }
  *out = it->second;
  return Status::OK();
}

}  // namespace

const char* LoadError() { return Load().error.c_str(); }

Status GemmStridedBatched(cudaStream_t stream, Op ta, Op tb, int64_t m, int64_t n, int64_t k,
                          const void* alpha, const void* a, DataType a_type, int64_t lda,
                          int64_t stride_a, const void* b, DataType b_type, int64_t ldb,
                          int64_t stride_b, const void* beta, void* c, DataType c_type, int64_t ldc,
                          int64_t stride_c, int64_t batch, ComputeType compute) {
  if (m == 0 || n == 0 || batch == 0) return Status::OK();
  for (int64_t v : {m, n, k, lda, ldb, ldc, batch}) {
    if (v > INT_MAX) {
      return Status::InvalidArgument("cuda: GEMM dimension " + std::to_string(v) +
                                     " exceeds cuBLAS's 32-bit limit");
    }
  }
  const Lib& lib = Load();
  if (!lib.error.empty()) return Status::InvalidArgument("cuda: " + lib.error);
  Handle h = nullptr;
  IAPDCNN_RETURN_IF_ERROR(HandleFor(lib, &h));
  int st = lib.set_stream(h, stream);
  if (st == 0) {
    // k == 0 is valid in cuBLAS (C = beta C).
    st = lib.gemm(h, ta, tb, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha,
                  a, a_type, static_cast<int>(lda), stride_a, b, b_type, static_cast<int>(ldb),
                  stride_b, beta, c, c_type, static_cast<int>(ldc), stride_c,
                  static_cast<int>(batch), compute, /*CUBLAS_GEMM_DEFAULT=*/-1);
  }
  if (st != 0) {
    return Status::InvalidArgument("cuda: cublasGemmStridedBatchedEx failed with status " +
                                   std::to_string(st));
  }
  return Status::OK();
}

}  // namespace cublas
}  // namespace iapdcnn
