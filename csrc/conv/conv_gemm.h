// The GEMM of the CPU convolution (conv_cpu.cc): Eigen's, on row-major or transposed views of
// the buffers, in the compute type (float for float, half and bfloat16; double for double).
//
// Why Eigen's GEMM (header-only, from TensorFlow's include dir; no TensorFlow code): measured
// single-threaded on this 2-core AVX-512 machine against OpenBLAS 0.3.34 (scipy-openblas32) on
// ResNet-50 3x3 shapes ([3136x576]x[576x64], [784x1152]x[1152x128], [196x2304]x[2304x256]):
// Eigen 221 / 245 / 236 GFLOP/s, OpenBLAS 124 / 128 / 128 (its runtime dispatch picks the Haswell
// kernels on this VM; forced to SkylakeX it ties Eigen). Eigen is as fast, adds no dependency and
// runs single-threaded inside our tasks, so TensorFlow's intra-op pool is the only thread pool.
#pragma once

#ifndef EIGEN_DONT_PARALLELIZE
#define EIGEN_DONT_PARALLELIZE
#endif
#include <Eigen/Core>
#include <algorithm>
#include <cstdint>

namespace iapdcnn {
namespace conv_cpu {

// half and bfloat16 are packed into float and multiplied in float (float accumulation).
template <typename T>
struct ComputeOf {
  using type = float;
};
template <>
struct ComputeOf<double> {
  using type = double;
};

// A logical [rows x cols] matrix: stored row-major with leading dimension ld, or (t) stored as
// its transpose [cols x rows] row-major with leading dimension ld.
template <typename C>
struct Mat {
  const C* p;
  int64_t ld;
  bool t;
  Mat T() const { return {p, ld, !t}; }
};
template <typename C>
struct OutMat {
  C* p;
  int64_t ld;
  bool t;
};

template <typename C>
void Gemm(int64_t m, int64_t n, int64_t k, Mat<C> a, Mat<C> b, C* c, int64_t ldc, bool acc) {
  using Row = Eigen::Matrix<C, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using Col = Eigen::Matrix<C, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
  using S = Eigen::OuterStride<>;
  Eigen::Map<Row, 0, S> cm(c, m, n, S(ldc));
  auto run = [&](const auto& am, const auto& bm) {
    if (acc) {
      cm.noalias() += am * bm;
    } else {
      cm.noalias() = am * bm;
    }
  };
  using RA = Eigen::Map<const Row, 0, S>;
  using CA = Eigen::Map<const Col, 0, S>;
  if (!a.t && !b.t) run(RA(a.p, m, k, S(a.ld)), RA(b.p, k, n, S(b.ld)));
  if (!a.t && b.t) run(RA(a.p, m, k, S(a.ld)), CA(b.p, k, n, S(b.ld)));
  if (a.t && !b.t) run(CA(a.p, m, k, S(a.ld)), RA(b.p, k, n, S(b.ld)));
  if (a.t && b.t) run(CA(a.p, m, k, S(a.ld)), CA(b.p, k, n, S(b.ld)));
}

// out [m x n] (=|+=) A [m x k] x B [k x n]; a transposed output is computed as B^T A^T.
template <typename C>
void MatMul(int64_t m, int64_t n, int64_t k, Mat<C> a, Mat<C> b, OutMat<C> out, bool acc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    if (!acc) {
      for (int64_t i = 0; i < (out.t ? n : m); ++i)
        std::fill_n(out.p + i * out.ld, out.t ? m : n, C(0));
    }
    return;
  }
  if (out.t) {
    Gemm<C>(n, m, k, b.T(), a.T(), out.p, out.ld, acc);
  } else {
    Gemm<C>(m, n, k, a, b, out.p, out.ld, acc);
  }
}

}  // namespace conv_cpu
}  // namespace iapdcnn
