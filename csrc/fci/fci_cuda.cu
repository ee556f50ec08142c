// CUDA FCI (spec §1c), same semantics and summation order as fci_cpu.cc: blocks are centred once
// with fci_impl::CentreBlock (shared with the CPU path) into scratch, then one thread per output
// sums its covariance in double. Class statistics walk the samples in order per column, so they
// are bitwise the CPU's. Label checks run on the device and report the first bad label (this
// synchronises the stream once, to return a Status).
#include <string>

#include "common/cuda_util.cuh"
#include "fci/fci.h"
#include "fci/fci_impl.h"

namespace iapdcnn {

namespace {

// centred [rows, len], mean [rows], var [rows] of rows of v.
template <typename T>
__global__ void CentreKernel(const T* __restrict__ v, int64_t rows, int64_t len,
                             double* __restrict__ centred, double* __restrict__ mean,
                             double* __restrict__ var) {
  IAPDCNN_GRID_STRIDE(i, rows) {
    var[i] = fci_impl::CentreBlock(v + i * len, len, &mean[i], centred + i * len);
  }
}

template <typename T>
__global__ void PairwiseKernel(const double* __restrict__ xc, const double* __restrict__ mx,
                               const double* __restrict__ vx, const double* __restrict__ yc,
                               const double* __restrict__ my, const double* __restrict__ vy,
                               int64_t n_x, int64_t n_y, int64_t len, T* __restrict__ out) {
  const double inv_l = 1.0 / static_cast<double>(len);
  IAPDCNN_GRID_STRIDE(idx, n_x * n_y) {
    const int64_t i = idx / n_y, j = idx % n_y;
    const double* a = xc + i * len;
    const double* b = yc + j * len;
    double dot = 0.0;
    for (int64_t k = 0; k < len; ++k) dot += a[k] * b[k];
    out[idx] = static_cast<T>(fci_impl::FciFromMoments(dot * inv_l, vx[i], vy[j], mx[i], my[j]));
  }
}

// first[0] = smallest i with labels[i] outside [0, num_classes) (n when none).
__global__ void CheckLabelsKernel(const int64_t* __restrict__ labels, int64_t n,
                                  int64_t num_classes, unsigned long long* __restrict__ first) {
  IAPDCNN_GRID_STRIDE(i, n) {
    if (labels[i] < 0 || labels[i] >= num_classes)
      atomicMin(first, static_cast<unsigned long long>(i));
  }
}

Status CheckLabels(const FciBlocksParams& p, const int64_t* labels, cudaStream_t stream,
                   GpuScratch* scratch) {
  if (p.n == 0) return Status::OK();
  cuda::Scratch mem(scratch, stream);
  void* raw = nullptr;
  IAPDCNN_RETURN_IF_ERROR(mem.Get(sizeof(unsigned long long), &raw));
  auto* first = static_cast<unsigned long long*>(raw);
  int64_t bad = p.n, value = 0;
  IAPDCNN_RETURN_IF_ERROR(cuda::FirstFlagged(
      p.n, labels, first, stream, "fci label check",
      [&] {
        CheckLabelsKernel<<<cuda::Blocks(p.n), cuda::kThreads, 0, stream>>>(labels, p.n,
                                                                            p.num_classes, first);
      },
      &bad, &value));
  if (bad == p.n) return Status::OK();
  return Status::InvalidArgument(
      "fci: labels must be in [0, num_classes = " + std::to_string(p.num_classes) +
      "), got labels[" + std::to_string(bad) + "] = " + std::to_string(value));
}

__global__ void CountKernel(const int64_t* __restrict__ labels, int64_t n,
                            double* __restrict__ counts) {
  IAPDCNN_GRID_STRIDE(i, n) { atomicAdd(counts + labels[i], 1.0); }  // integers: exact
}

// One thread per column of [positions * block_len], samples in order (deterministic).
template <typename T>
__global__ void SumKernel(const T* __restrict__ x, const int64_t* __restrict__ labels, int64_t n,
                          int64_t pl, double* __restrict__ sums) {
  IAPDCNN_GRID_STRIDE(k, pl) {
    for (int64_t i = 0; i < n; ++i) sums[labels[i] * pl + k] += static_cast<double>(x[i * pl + k]);
  }
}

template <typename T>
__global__ void PrototypeKernel(const double* __restrict__ xc, const double* __restrict__ mx,
                                const double* __restrict__ vx, const double* __restrict__ pc,
                                const double* __restrict__ mp, const double* __restrict__ vp,
                                const int64_t* __restrict__ labels, int64_t n, int64_t positions,
                                int64_t len, T* __restrict__ out) {
  IAPDCNN_GRID_STRIDE(q, n * positions) {
    const int64_t i = q / positions, pos = q % positions;
    const int64_t m = labels[i] * positions + pos;
    const double* a = xc + q * len;
    const double* b = pc + m * len;
    double dot = 0.0;
    for (int64_t k = 0; k < len; ++k) dot += a[k] * b[k];
    out[q] = static_cast<T>(fci_impl::FciFromMoments(dot / len, vx[q], vp[m], mx[q], mp[m]));
  }
}

// Same-class partners in increasing sample order: the CPU's stable class ordering.
template <typename T>
__global__ void WithinClassKernel(const double* __restrict__ xc, const double* __restrict__ mx,
                                  const double* __restrict__ vx, const int64_t* __restrict__ labels,
                                  int64_t n, int64_t positions, int64_t len, T* __restrict__ out) {
  IAPDCNN_GRID_STRIDE(q, n * positions) {
    const int64_t i = q / positions, pos = q % positions;
    const double* a = xc + q * len;
    double acc = 0.0;
    int64_t count = 0;
    for (int64_t j = 0; j < n; ++j) {
      if (j == i || labels[j] != labels[i]) continue;
      const int64_t r = j * positions + pos;
      const double* b = xc + r * len;
      double dot = 0.0;
      for (int64_t k = 0; k < len; ++k) dot += a[k] * b[k];
      acc += fci_impl::FciFromMoments(dot / len, vx[q], vx[r], mx[q], mx[r]);
      ++count;
    }
    out[q] = static_cast<T>(count > 0 ? acc / count : 0.5);
  }
}

// Centred rows + moments of `rows` blocks of length len, carved from one scratch block.
struct Centred {
  double *c = nullptr, *mean = nullptr, *var = nullptr;
};
Centred TakeCentred(cuda::Carver* carver, int64_t rows, int64_t len) {
  Centred r;
  r.c = carver->Take<double>(rows * len);
  r.mean = carver->Take<double>(rows);
  r.var = carver->Take<double>(rows);
  return r;
}
template <typename T>
Status LaunchCentre(const T* v, int64_t rows, int64_t len, const Centred& c, cudaStream_t stream) {
  if (rows == 0) return Status::OK();
  CentreKernel<T><<<cuda::Blocks(rows, 128), 128, 0, stream>>>(v, rows, len, c.c, c.mean, c.var);
  IAPDCNN_CUDA_CHECK_LAUNCH("fci centre");
  return Status::OK();
}

}  // namespace

template <typename T>
Status FciPairwiseCuda(const FciParams& p, const T* x, const T* y, T* out, cudaStream_t stream,
                       GpuScratch* scratch) {
  const int64_t L = p.block_len;
  if (p.n_x == 0 || p.n_y == 0) return Status::OK();
  cuda::Carver plan;
  TakeCentred(&plan, p.n_x, L);
  TakeCentred(&plan, p.n_y, L);
  cuda::Scratch mem(scratch, stream);
  void* raw = nullptr;
  IAPDCNN_RETURN_IF_ERROR(mem.Get(plan.bytes(), &raw));
  cuda::Carver carve(static_cast<char*>(raw));
  const Centred cx = TakeCentred(&carve, p.n_x, L), cy = TakeCentred(&carve, p.n_y, L);
  IAPDCNN_RETURN_IF_ERROR(LaunchCentre(x, p.n_x, L, cx, stream));
  IAPDCNN_RETURN_IF_ERROR(LaunchCentre(y, p.n_y, L, cy, stream));
  PairwiseKernel<T><<<cuda::Blocks(p.n_x * p.n_y), cuda::kThreads, 0, stream>>>(
      cx.c, cx.mean, cx.var, cy.c, cy.mean, cy.var, p.n_x, p.n_y, L, out);
  IAPDCNN_CUDA_CHECK_LAUNCH("fci pairwise");
  return Status::OK();
}

template <typename T>
Status FciClassStatsCuda(const FciBlocksParams& p, const T* x, const int64_t* labels,
                         double* counts, double* sums, cudaStream_t stream, GpuScratch* scratch) {
  IAPDCNN_RETURN_IF_ERROR(CheckLabels(p, labels, stream, scratch));
  const int64_t PL = p.positions * p.block_len;
  IAPDCNN_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(counts, 0, p.num_classes * sizeof(double), stream));
  IAPDCNN_CUDA_RETURN_IF_ERROR(
      cudaMemsetAsync(sums, 0, p.num_classes * PL * sizeof(double), stream));
  if (p.n == 0) return Status::OK();
  CountKernel<<<cuda::Blocks(p.n), cuda::kThreads, 0, stream>>>(labels, p.n, counts);
  IAPDCNN_CUDA_CHECK_LAUNCH("fci class counts");
  if (PL == 0) return Status::OK();
  SumKernel<T><<<cuda::Blocks(PL), cuda::kThreads, 0, stream>>>(x, labels, p.n, PL, sums);
  IAPDCNN_CUDA_CHECK_LAUNCH("fci class sums");
  return Status::OK();
}

template <typename T>
Status FciPrototypeCuda(const FciBlocksParams& p, const T* x, const int64_t* labels,
                        const T* prototypes, T* out, cudaStream_t stream, GpuScratch* scratch) {
  IAPDCNN_RETURN_IF_ERROR(CheckLabels(p, labels, stream, scratch));
  const int64_t L = p.block_len, P = p.positions, nx = p.n * P, np = p.num_classes * P;
  if (nx == 0) return Status::OK();
  cuda::Carver plan;
  TakeCentred(&plan, nx, L);
  TakeCentred(&plan, np, L);
  cuda::Scratch mem(scratch, stream);
  void* raw = nullptr;
  IAPDCNN_RETURN_IF_ERROR(mem.Get(plan.bytes(), &raw));
  cuda::Carver carve(static_cast<char*>(raw));
  const Centred cx = TakeCentred(&carve, nx, L), cp = TakeCentred(&carve, np, L);
  IAPDCNN_RETURN_IF_ERROR(LaunchCentre(x, nx, L, cx, stream));
  IAPDCNN_RETURN_IF_ERROR(LaunchCentre(prototypes, np, L, cp, stream));
  PrototypeKernel<T><<<cuda::Blocks(nx), cuda::kThreads, 0, stream>>>(
      cx.c, cx.mean, cx.var, cp.c, cp.mean, cp.var, labels, p.n, P, L, out);
  IAPDCNN_CUDA_CHECK_LAUNCH("fci prototype");
  return Status::OK();
}

template <typename T>
Status FciWithinClassCuda(const FciBlocksParams& p, const T* x, const int64_t* labels, T* out,
                          cudaStream_t stream, GpuScratch* scratch) {
  IAPDCNN_RETURN_IF_ERROR(CheckLabels(p, labels, stream, scratch));
  const int64_t L = p.block_len, P = p.positions, nx = p.n * P;
  if (nx == 0) return Status::OK();
  cuda::Carver plan;
  TakeCentred(&plan, nx, L);
  cuda::Scratch mem(scratch, stream);
  void* raw = nullptr;
  IAPDCNN_RETURN_IF_ERROR(mem.Get(plan.bytes(), &raw));
  cuda::Carver carve(static_cast<char*>(raw));
  const Centred cx = TakeCentred(&carve, nx, L);
  IAPDCNN_RETURN_IF_ERROR(LaunchCentre(x, nx, L, cx, stream));
  WithinClassKernel<T><<<cuda::Blocks(nx), cuda::kThreads, 0, stream>>>(cx.c, cx.mean, cx.var,
                                                                        labels, p.n, P, L, out);
  IAPDCNN_CUDA_CHECK_LAUNCH("fci within class");
  return Status::OK();
}

#define IAPDCNN_INSTANTIATE_FCI_CUDA(T)                                                           \
  template Status FciPairwiseCuda<T>(const FciParams&, const T*, const T*, T*, cudaStream_t,      \
                                     GpuScratch*);                                                \
  template Status FciClassStatsCuda<T>(const FciBlocksParams&, const T*, const int64_t*, double*, \
                                       double*, cudaStream_t, GpuScratch*);                       \
  template Status FciPrototypeCuda<T>(const FciBlocksParams&, const T*, const int64_t*, const T*, \
                                      T*, cudaStream_t, GpuScratch*);                             \
  template Status FciWithinClassCuda<T>(const FciBlocksParams&, const T*, const int64_t*, T*,     \
                                        cudaStream_t, GpuScratch*);
IAPDCNN_INSTANTIATE_FCI_CUDA(float)
IAPDCNN_INSTANTIATE_FCI_CUDA(double)
#undef IAPDCNN_INSTANTIATE_FCI_CUDA

}  // namespace iapdcnn
