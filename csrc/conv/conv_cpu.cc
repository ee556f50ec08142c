// CPU Im2col + GEMM convolution (spec §2b). The paper's "map" is a tile of output pixels (forward,
// grad-input) or a block of im2col columns (grad-filter) handed to one task of the ParallelFor;
// each task packs its tile with im2col into a bounded buffer and multiplies it with Eigen's GEMM.
// The float32 NHWC forward (and pointwise filter gradient) on AVX-512 CPUs is conv_direct_cpu.cc's
// micro-kernel instead.
//
// Why Eigen's GEMM (header-only, from TensorFlow's include dir; no TensorFlow code): measured
// single-threaded on this 2-core AVX-512 machine against OpenBLAS 0.3.34 (scipy-openblas32) on
// ResNet-50 3x3 shapes ([3136x576]x[576x64], [784x1152]x[1152x128], [196x2304]x[2304x256]):
// Eigen 221 / 245 / 236 GFLOP/s, OpenBLAS 124 / 128 / 128 (its runtime dispatch picks the Haswell
// kernels on this VM; forced to SkylakeX it ties Eigen). Eigen is as fast, adds no dependency and
// runs single-threaded inside our tasks, so TensorFlow's intra-op pool is the only thread pool.
#define EIGEN_DONT_PARALLELIZE
#include <Eigen/Core>
#include <algorithm>
#include <cstring>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "common/checked.h"
#include "common/guard.h"
#include "conv/conv.h"
#include "conv/conv_direct.h"
#include "conv/conv_impl.h"

namespace iapdcnn {

namespace {

using conv_impl::EffectiveKernel;
using conv_impl::InputCoord;

// half and bfloat16 are packed into float and multiplied in float (float accumulation).
template <typename T>
struct ComputeOf {
  using type = float;
};
template <>
struct ComputeOf<double> {
  using type = double;
};

constexpr int64_t kColBudgetBytes = 4 << 20;  // one im2col tile: bounded per task
constexpr int64_t kMinTileRows = 32;          // below this GEMM efficiency drops
constexpr int64_t kMinSplitRows = 128;        // fewer rows per task: split output channels first
constexpr int64_t kMinFilterTileRows = 256;   // grad-filter: fewer rows per tile, no split
constexpr int64_t kMinOcBlock = 64;           // narrowest output-channel block of that split

// GEMM tiles per hardware thread: enough to balance the pool, few enough to keep GEMMs large.
constexpr int64_t kTasksPerThread = 2;
int64_t TargetTasks() { return iapdcnn::TargetTasks(kTasksPerThread); }

// ---- GEMM -------------------------------------------------------------------------------------

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

// ---- layouts ----------------------------------------------------------------------------------

struct Strides {
  int64_t n, h, w, c;
};
Strides InputStrides(const Im2colConv2DParams& p) {
  if (p.nchw) return {p.in_c * p.in_h * p.in_w, p.in_w, 1, p.in_h * p.in_w};
  return {p.in_h * p.in_w * p.in_c, p.in_w * p.in_c, p.in_c, 1};
}
int64_t Pixels(const Im2colConv2DParams& p) { return p.out_h * p.out_w; }
int64_t OutImageSize(const Im2colConv2DParams& p) { return Pixels(p) * p.out_c; }

// An image-shaped target (dI or a float band buffer): address of (ih, iw, c) is
// p + (ih - h0) * sh + iw * sw + (c - c0) * sc.
template <typename D>
struct View {
  D* p;
  int64_t sh, sw, sc, h0, c0;
  D* at(int64_t ih, int64_t iw, int64_t c) const {
    return p + (ih - h0) * sh + iw * sw + (c - c0) * sc;
  }
};

// Output tile [rows, cols] at output pixel r0 and output channel oc0 of image `img` (size-P
// planes in NCHW): a row-major view in NHWC, a transposed one in NCHW.
template <typename X>
X* OutTilePtr(const Im2colConv2DParams& p, X* img, int64_t r0, int64_t oc0, int64_t* ld, bool* t) {
  if (p.nchw) {
    *ld = Pixels(p);
    *t = true;
    return img + oc0 * Pixels(p) + r0;
  }
  *ld = p.out_c;
  *t = false;
  return img + r0 * p.out_c + oc0;
}

// Rows [r0, r0 + rows) x channels [oc0, oc0 + og) of one image's output gradient as a GEMM
// operand [rows, og]: read in place when T is the compute type C, else converted into `buf`.
template <typename T, typename C>
Mat<C> OutBackpropTile(const Im2colConv2DParams& p, const T* img, int64_t r0, int64_t oc0,
                       int64_t rows, int64_t og, std::vector<C>& buf) {
  int64_t ld;
  bool t;
  const T* src = OutTilePtr(p, img, r0, oc0, &ld, &t);
  if constexpr (std::is_same<T, C>::value) {
    return {src, ld, t};
  } else {
    buf.resize(static_cast<size_t>(rows * og));
    for (int64_t i = 0; i < rows; ++i) {
      for (int64_t j = 0; j < og; ++j)
        buf[i * og + j] = static_cast<C>(src[t ? j * ld + i : i * ld + j]);
    }
    return {buf.data(), og, false};
  }
}

// ---- im2col / col2im over a channel range ---------------------------------------------------

// Columns k in [k0, k1) of the im2col matrix of channels [cb, cb + cn): k = (kh * k_w + kw) * cn
// + ci. NHWC writes col [rows, k1 - k0]; NCHW writes its transpose [k1 - k0, rows], so that both
// read the input along its contiguous axis.
template <typename T, typename C>
void Im2colRange(const Im2colConv2DParams& p, const T* img, int64_t cb, int64_t cn, int64_t r0,
                 int64_t r1, int64_t k0, int64_t k1, C* col) {
  const Strides s = InputStrides(p);
  const int64_t kc = k1 - k0, rows = r1 - r0;
  if (!p.nchw && cn == p.in_c && p.dilation_w == 1 && k0 == 0 && k1 == p.k_h * p.k_w * cn) {
    // All channels, undilated rows: the k_w taps of one kernel row are one contiguous input run
    // (k_w * C values), e.g. 21 instead of 7 runs of 3 for ResNet's 7x7 stem.
    const int64_t run = p.k_w * cn;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t oh = r / p.out_w, ow = r % p.out_w;
      const int64_t iw0 = ow * p.stride_w - p.pad_left;
      const int64_t lo = std::max<int64_t>(0, -iw0), hi = std::min(p.k_w, p.in_w - iw0);
      for (int64_t kh = 0; kh < p.k_h; ++kh) {
        C* dst = col + (r - r0) * kc + kh * run;
        const int64_t ih = InputCoord(oh, p.stride_h, p.pad_top, kh, p.dilation_h);
        if (ih < 0 || ih >= p.in_h || lo >= hi) {
          std::fill_n(dst, run, C(0));
          continue;
        }
        std::fill_n(dst, lo * cn, C(0));
        const T* src = img + ih * s.h + (iw0 + lo) * s.w;
        if constexpr (std::is_same<T, C>::value) {
          std::memcpy(dst + lo * cn, src, sizeof(C) * (hi - lo) * cn);
        } else {
          for (int64_t j = 0; j < (hi - lo) * cn; ++j) dst[lo * cn + j] = static_cast<C>(src[j]);
        }
        std::fill_n(dst + hi * cn, (p.k_w - hi) * cn, C(0));
      }
    }
    return;
  }
  if (!p.nchw) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t oh = r / p.out_w, ow = r % p.out_w;
      C* dst = col + (r - r0) * kc;
      int64_t k = k0;
      int64_t ci = k % cn, kw = (k / cn) % p.k_w, kh = k / cn / p.k_w;
      while (k < k1) {
        const int64_t run = std::min(cn - ci, k1 - k);
        const int64_t ih = InputCoord(oh, p.stride_h, p.pad_top, kh, p.dilation_h);
        const int64_t iw = InputCoord(ow, p.stride_w, p.pad_left, kw, p.dilation_w);
        if (ih >= 0 && ih < p.in_h && iw >= 0 && iw < p.in_w) {
          const T* src = img + ih * s.h + iw * s.w + cb + ci;
          for (int64_t j = 0; j < run; ++j) dst[j] = static_cast<C>(src[j]);
        } else {
          std::fill_n(dst, run, C(0));
        }
        dst += run;
        k += run;
        ci = 0;
        if (++kw == p.k_w) kw = 0, ++kh;
      }
    }
    return;
  }
  for (int64_t k = k0; k < k1; ++k) {
    const int64_t ci = k % cn, kw = (k / cn) % p.k_w, kh = k / cn / p.k_w;
    const T* plane = img + (cb + ci) * s.c;
    C* dst = col + (k - k0) * rows;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t oh = r / p.out_w, ow = r % p.out_w;
      const int64_t ih = InputCoord(oh, p.stride_h, p.pad_top, kh, p.dilation_h);
      const int64_t iw = InputCoord(ow, p.stride_w, p.pad_left, kw, p.dilation_w);
      dst[r - r0] = (ih >= 0 && ih < p.in_h && iw >= 0 && iw < p.in_w)
                        ? static_cast<C>(plane[ih * s.h + iw])
                        : C(0);
    }
  }
}

// Im2colRange over rows [r0, r1) of the batch's row space: NHWC numbers output pixels across
// images (row = n * out_h * out_w + pixel), so one tile may span several images.
template <typename T, typename C>
void Im2colRows(const Im2colConv2DParams& p, const T* input, int64_t cb, int64_t cn, int64_t r0,
                int64_t r1, int64_t k0, int64_t k1, C* col) {
  const int64_t P = p.out_h * p.out_w, image = p.in_h * p.in_w * p.in_c;
  for (int64_t r = r0; r < r1;) {
    const int64_t n = r / P, end = std::min(r1, (n + 1) * P);
    Im2colRange<T, C>(p, input + n * image, cb, cn, r - n * P, end - n * P, k0, k1,
                      col + (r - r0) * (k1 - k0));
    r = end;
  }
}

// Adjoint of Im2colRange over all columns (k in [0, k_h * k_w * cn)), adding only into input rows
// [h_lo, h_hi) of the view.
template <typename C, typename D>
void Col2imRange(const Im2colConv2DParams& p, const C* col, int64_t cb, int64_t cn, int64_t r0,
                 int64_t r1, int64_t h_lo, int64_t h_hi, const View<D>& v) {
  const int64_t kc = p.k_h * p.k_w * cn, rows = r1 - r0;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t oh = r / p.out_w, ow = r % p.out_w;
    for (int64_t kh = 0; kh < p.k_h; ++kh) {
      const int64_t ih = InputCoord(oh, p.stride_h, p.pad_top, kh, p.dilation_h);
      if (ih < h_lo || ih >= h_hi) continue;
      for (int64_t kw = 0; kw < p.k_w; ++kw) {
        const int64_t iw = InputCoord(ow, p.stride_w, p.pad_left, kw, p.dilation_w);
        if (iw < 0 || iw >= p.in_w) continue;
        const int64_t k = (kh * p.k_w + kw) * cn;
        D* dst = v.at(ih, iw, cb);
        if (!p.nchw) {
          const C* src = col + (r - r0) * kc + k;
          if (v.sc == 1) {
            for (int64_t j = 0; j < cn; ++j) dst[j] = static_cast<D>(dst[j] + src[j]);
          } else {
            for (int64_t j = 0; j < cn; ++j) dst[j * v.sc] = static_cast<D>(dst[j * v.sc] + src[j]);
          }
        } else {
          const C* src = col + k * rows + (r - r0);
          for (int64_t j = 0; j < cn; ++j) {
            dst[j * v.sc] = static_cast<D>(dst[j * v.sc] + src[j * rows]);
          }
        }
      }
    }
  }
}

// A 1x1, stride-1, unpadded convolution's im2col matrix is the input itself.
bool IsPointwise(const Im2colConv2DParams& p) {
  return p.k_h == 1 && p.k_w == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_top == 0 &&
         p.pad_bottom == 0 && p.pad_left == 0 && p.pad_right == 0;
}

// The im2col matrix of channels [cb, cb + cn), rows [r0, r1), columns [k0, k1) of a pointwise
// convolution, read in place.
template <typename C>
Mat<C> PointwiseCols(const Im2colConv2DParams& p, const C* img, int64_t cb, int64_t r0,
                     int64_t k0) {
  if (p.nchw) return {img + (cb + k0) * Pixels(p) + r0, Pixels(p), true};
  return {img + r0 * p.in_c + cb + k0, p.in_c, false};
}

template <typename T, typename C>
std::vector<C> ToCompute(const T* x, int64_t n, const ParallelFor& pf) {
  std::vector<C> out(static_cast<size_t>(n));
  pf(n, 2, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) out[i] = static_cast<C>(x[i]);
  });
  return out;
}

// ---- tiling plans (shared with the scratch-size functions) -----------------------------------

struct FwdPlan {
  int64_t tile_rows, tiles, oc_block, oc_blocks;
};
// Row space of the forward and grad-filter tiles: an image's pixels (NCHW), or the whole batch's
// (NHWC, where output rows are contiguous across images: larger GEMMs on small images).
int64_t RowSpace(const Im2colConv2DParams& p) { return p.nchw ? Pixels(p) : p.batch * Pixels(p); }
int64_t RowSeqs(const Im2colConv2DParams& p) { return p.nchw ? p.batch : 1; }

FwdPlan PlanForward(const Im2colConv2DParams& p, int64_t cbytes) {
  const int64_t P = RowSpace(p), cg_out = p.out_c / p.groups;
  const int64_t K = p.k_h * p.k_w * (p.in_c / p.groups);
  FwdPlan f;
  f.tile_rows = std::max<int64_t>(kMinTileRows, kColBudgetBytes / std::max<int64_t>(1, K * cbytes));
  // Not enough tasks for the pool: smaller row tiles first, then output-channel blocks. Few
  // rows (deep layers at small batch): output-channel blocks first, since every row tile
  // repacks the whole filter for GEMM while a channel block packs only its slice (im2col,
  // repeated per block, is the cheaper copy: K values per row instead of K per filter column).
  const int64_t images = std::max<int64_t>(1, RowSeqs(p) * p.groups);
  f.oc_block = cg_out;
  const int64_t split_rows = CeilDiv(P, CeilDiv(TargetTasks(), images));
  if (images * CeilDiv(P, f.tile_rows) < TargetTasks() && split_rows < kMinSplitRows &&
      cg_out >= 2 * kMinOcBlock) {
    f.tile_rows = std::min(f.tile_rows, P);
    const int64_t want = CeilDiv(TargetTasks(), images * CeilDiv(P, f.tile_rows));
    f.oc_block = std::max<int64_t>(kMinOcBlock, CeilDiv(cg_out, want));
  }
  const int64_t ocb = CeilDiv(cg_out, f.oc_block);
  if (images * ocb * CeilDiv(P, f.tile_rows) < TargetTasks()) {
    f.tile_rows = std::max<int64_t>(kMinTileRows, CeilDiv(P, CeilDiv(TargetTasks(), images * ocb)));
  }
  f.tile_rows = std::max<int64_t>(1, std::min(f.tile_rows, P));
  f.tiles = CeilDiv(P, f.tile_rows);
  if (images * f.tiles * ocb < TargetTasks()) {
    const int64_t want = CeilDiv(TargetTasks(), images * f.tiles);
    f.oc_block = std::max<int64_t>(std::min<int64_t>(64, cg_out), CeilDiv(cg_out, want));
  }
  f.oc_block = std::max<int64_t>(1, f.oc_block);
  f.oc_blocks = CeilDiv(cg_out, f.oc_block);
  return f;
}

struct BwdInPlan {
  int64_t bands, band_h, ch_block, ch_blocks, tile_rows;
};
BwdInPlan PlanBackpropInput(const Im2colConv2DParams& p, int64_t cbytes) {
  const int64_t cg = p.in_c / p.groups;
  const int64_t images = std::max<int64_t>(1, p.batch * p.groups);
  BwdInPlan b;
  // Threads own disjoint input-row bands, so col2im needs no atomics; a band recomputes the
  // output rows it shares with its neighbour, so bands stay >= 2 dilated kernels tall.
  const int64_t kh_eff = EffectiveKernel(p.k_h, p.dilation_h);
  const int64_t max_bands = std::max<int64_t>(1, p.in_h / std::max<int64_t>(2 * kh_eff, 4));
  b.bands = std::min(max_bands, CeilDiv(TargetTasks(), images));
  b.band_h = CeilDiv(std::max<int64_t>(1, p.in_h), b.bands);
  b.bands = CeilDiv(std::max<int64_t>(1, p.in_h), b.band_h);
  // Still too few tasks: split the input channels too (disjoint writes again).
  b.ch_block = cg;
  if (images * b.bands < TargetTasks()) {
    const int64_t want = CeilDiv(TargetTasks(), images * b.bands);
    b.ch_block = std::max<int64_t>(std::min<int64_t>(32, cg), CeilDiv(cg, want));
  }
  b.ch_block = std::max<int64_t>(1, b.ch_block);
  b.ch_blocks = CeilDiv(cg, b.ch_block);
  const int64_t kc = p.k_h * p.k_w * b.ch_block;
  b.tile_rows =
      std::max<int64_t>(kMinTileRows, kColBudgetBytes / std::max<int64_t>(1, kc * cbytes));
  return b;
}

struct BwdFilPlan {
  int64_t k_block, k_blocks, shards, tile_rows, tiles_per_image;
};
BwdFilPlan PlanBackpropFilter(const Im2colConv2DParams& p, int64_t cbytes) {
  const int64_t K = p.k_h * p.k_w * (p.in_c / p.groups);
  const int64_t P = RowSpace(p);
  BwdFilPlan f;
  // Small dW (stem, most 1x1 layers): tasks split the rows, each with its own full-K
  // accumulator (fast whole-row im2col, long GEMMs). Large dW (deep 3x3 layers): tasks own
  // disjoint blocks of im2col columns (rows of dW), so no accumulator copies are needed.
  // Small dW also needs rows to split: a tile's rows are the GEMM's depth, and each shard adds
  // a dW accumulator to sum (32-row tiles of c5 1x1 layers at batch 1 ran at half speed), so
  // with fewer than kMinFilterTileRows rows per task column blocks feed the pool instead (one
  // unsplit task left batch-1 c3/c4 3x3 layers single-threaded: 0.6x TF in wall time).
  const int64_t want = CeilDiv(TargetTasks(), p.groups);
  const int64_t split = CeilDiv(P, CeilDiv(TargetTasks(), std::max<int64_t>(1, RowSeqs(p))));
  const bool small_dw = K * p.out_c * cbytes * TargetTasks() <= (int64_t{16} << 20) &&
                        (split >= kMinFilterTileRows || p.groups >= TargetTasks());
  f.k_block = small_dw ? K : std::max<int64_t>(std::min<int64_t>(32, K), CeilDiv(K, want));
  f.k_blocks = CeilDiv(K, f.k_block);
  f.tile_rows =
      std::max<int64_t>(kMinTileRows, kColBudgetBytes / std::max<int64_t>(1, f.k_block * cbytes));
  // Small dW: the tasks are shards of the (image, tile) sequence, so enough equal tiles to feed
  // the pool (one 8192-row tile of a batch-8 c3 1x1 layer ran single-threaded: 0.6x TF).
  if (small_dw && split >= kMinFilterTileRows) f.tile_rows = std::min(f.tile_rows, split);
  f.tile_rows = std::max<int64_t>(1, std::min(f.tile_rows, P));
  f.tiles_per_image = CeilDiv(P, f.tile_rows);
  // Few column blocks (small K): also split the (image, tile) sequence into shards with their
  // own dW accumulators, summed afterwards.
  const int64_t work = RowSeqs(p) * f.tiles_per_image;
  f.shards = 1;
  if (p.groups * f.k_blocks < TargetTasks()) {
    f.shards = std::max<int64_t>(1, std::min(work, CeilDiv(TargetTasks(), p.groups * f.k_blocks)));
  }
  return f;
}

// Stride-1, undilated NHWC forward without an im2col copy. The input rows of a band, zero-padded
// to width Wp = out_w + k_w - 1, are copied once; then for each kernel row kh the im2col matrix
// of the band's "virtual" output pixels r = oh * Wp + ow is a strided view of that copy (row r
// starts C values after row r - 1 and spans k_w * C: rows overlap), so the forward is k_h
// accumulated GEMMs of depth k_w * C reading the copy in place. Pixels with ow >= out_w are
// computed and dropped (k_w - 1 of every Wp). Saves the k_h * k_w * C-per-pixel im2col pass.
struct RowViewPlan {
  bool ok = false;
  int64_t band_h = 0, bands = 0, wp = 0;
};
constexpr int64_t kRowViewTargetRows = 2048;  // GEMM rows per band (Eigen's sweet spot here)
constexpr int64_t kRowViewMinRows = 192;      // fewer: every band repacks the filter for GEMM
RowViewPlan PlanRowView(const Im2colConv2DParams& p, int64_t cbytes) {
  RowViewPlan v;
  if (p.nchw || p.groups != 1 || p.stride_h != 1 || p.stride_w != 1 || p.dilation_h != 1 ||
      p.dilation_w != 1 || p.k_w < 2 || p.out_h <= 0 || p.out_w <= 0 || p.batch <= 0) {
    return v;
  }
  v.wp = p.out_w + p.k_w - 1;
  const int64_t row_bytes = v.wp * std::max(p.in_c, p.out_c) * cbytes;
  int64_t bh = std::max<int64_t>(1, kRowViewTargetRows / v.wp);
  bh = std::min(bh, std::max<int64_t>(1, kColBudgetBytes / row_bytes - (p.k_h - 1)));
  bh = std::min(bh, p.out_h);
  if (p.batch * CeilDiv(p.out_h, bh) < TargetTasks()) {
    bh = CeilDiv(p.out_h, CeilDiv(TargetTasks(), p.batch));
  }
  // Too short a band: the GEMMs get small and the halo (k_h - 1 rows) is copied too often.
  if (bh * v.wp - (p.k_w - 1) < kRowViewMinRows || bh < p.k_h - 1) return v;
  v.band_h = bh;
  v.bands = CeilDiv(p.out_h, bh);
  v.ok = true;
  return v;
}
int64_t RowViewScratchBytes(const Im2colConv2DParams& p, const RowViewPlan& v, int64_t cbytes) {
  return ((v.band_h + p.k_h - 1) * p.in_c + v.band_h * p.out_c) * v.wp * cbytes;
}

constexpr int64_t kMaxTransposedDepth = 128;  // largest out_c / groups for TransposedForward

// Stride-1 gradient with respect to the input as a forward convolution (spec §2b, the adjoint of
// a stride-1 convolution is a convolution): dI = conv(dO, W') with W' the spatially flipped,
// in/out-transposed filter and padding k_eff - 1 - pad on each side. It uses the forward's
// GEMM (depth k_h * k_w * out_c instead of out_c) and writes dI directly: no col2im scatter of
// k_h * k_w values per pixel, no recomputed band overlaps. Fills q, the forward problem; false
// (keep GEMM + col2im) for strides > 1, a padding wider than the dilated kernel reach, or
// out_c / groups > kMaxTransposedDepth.
bool TransposedForward(const Im2colConv2DParams& p, Im2colConv2DParams* q) {
  if (p.stride_h != 1 || p.stride_w != 1 || p.out_h <= 0 || p.out_w <= 0) return false;
  // GEMM + col2im scatters k_h * k_w * cn values per pixel for 2 * og * k_h * k_w * cn flops:
  // costly only when og is small. With og >= 256 (ResNet-50's c4/c5) GEMM + col2im measured
  // faster here (c5 3x3 batch 1: 1.3x vs 0.7x TF), as it needs no transposed filter copy.
  if (p.out_c / p.groups > kMaxTransposedDepth) return false;
  const int64_t rh = EffectiveKernel(p.k_h, p.dilation_h) - 1;
  const int64_t rw = EffectiveKernel(p.k_w, p.dilation_w) - 1;
  if (p.pad_top > rh || p.pad_bottom > rh || p.pad_left > rw || p.pad_right > rw) return false;
  *q = p;
  q->in_h = p.out_h;
  q->in_w = p.out_w;
  q->in_c = p.out_c;
  q->out_c = p.in_c;
  q->out_h = p.in_h;
  q->out_w = p.in_w;
  q->pad_top = rh - p.pad_top;
  q->pad_bottom = rh - p.pad_bottom;
  q->pad_left = rw - p.pad_left;
  q->pad_right = rw - p.pad_right;
  return true;
}

// W' [k_h, k_w, out_c / groups, in_c] of TransposedForward, in the compute type:
// W'[kh, kw, o, g * cg + c] = W[k_h - 1 - kh, k_w - 1 - kw, c, g * og + o].
template <typename T, typename C>
std::vector<C> FlippedTransposedFilter(const Im2colConv2DParams& p, const T* w,
                                       const ParallelFor& pf) {
  const int64_t cg = p.in_c / p.groups, og = p.out_c / p.groups, taps = p.k_h * p.k_w;
  std::vector<C> out(static_cast<size_t>(taps * cg * p.out_c));
  // 8 x 8 blocks: a plain loop over a c5 layer's 9.4 MiB filter costs more than the batch-1
  // GEMM; at this power-of-two stride, 16 x 16 blocks ran 7x slower than 8 x 8 (0.7 ms, L1
  // set conflicts).
  constexpr int64_t kB = 8;
  const int64_t ob = CeilDiv(og, kB);
  pf(taps * ob, kB * p.in_c * 2 + 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t t = i / ob, o0 = i % ob * kB, o1 = std::min(og, o0 + kB);
      const T* src = w + (taps - 1 - t) * cg * p.out_c;  // flipped tap: kh, kw both reversed
      C* dst = out.data() + t * og * p.in_c;
      for (int64_t g = 0; g < p.groups; ++g) {
        for (int64_t c0 = 0; c0 < cg; c0 += kB) {
          const int64_t c1 = std::min(cg, c0 + kB);
          for (int64_t o = o0; o < o1; ++o) {
            const T* s = src + g * og + o;
            C* d = dst + o * p.in_c + g * cg;
            for (int64_t c = c0; c < c1; ++c) d[c] = static_cast<C>(s[c * p.out_c]);
          }
        }
      }
    }
  });
  return out;
}

}  // namespace

// ---- validation ---------------------------------------------------------------------------------

std::vector<int64_t> Im2colConv2DParams::InputShape() const {
  return nchw ? std::vector<int64_t>{batch, in_c, in_h, in_w}
              : std::vector<int64_t>{batch, in_h, in_w, in_c};
}
std::vector<int64_t> Im2colConv2DParams::FilterShape() const {
  return {k_h, k_w, groups > 0 ? in_c / groups : 0, out_c};
}
std::vector<int64_t> Im2colConv2DParams::OutputShape() const {
  return nchw ? std::vector<int64_t>{batch, out_c, out_h, out_w}
              : std::vector<int64_t>{batch, out_h, out_w, out_c};
}

namespace {
// 1, 2 or 4 values (data_format order) -> (h, w).
Status SpatialPair(const char* name, const std::vector<int64_t>& v, bool nchw, int64_t* h,
                   int64_t* w) {
  if (v.size() == 1) {
    *h = *w = v[0];
  } else if (v.size() == 2) {
    *h = v[0];
    *w = v[1];
  } else if (v.size() == 4) {
    const int64_t nb = v[0], ch = nchw ? v[1] : v[3];
    if (nb != 1 || ch != 1) {
      return Status::InvalidArgument(std::string("im2col_conv2d: ") + name +
                                     " in the batch and channel dimensions must be 1, got " +
                                     ShapeStr(v));
    }
    *h = nchw ? v[2] : v[1];
    *w = nchw ? v[3] : v[2];
  } else {
    return Status::InvalidArgument(std::string("im2col_conv2d: ") + name +
                                   " must have 1, 2 or 4 values, got " + ShapeStr(v));
  }
  if (*h < 1 || *w < 1) {
    return Status::InvalidArgument(std::string("im2col_conv2d: ") + name + " must be >= 1, got " +
                                   ShapeStr(v));
  }
  return Status::OK();
}
}  // namespace

Status ValidateIm2colConv2D(const std::vector<int64_t>& input_shape,
                            const std::vector<int64_t>& filter_shape,
                            const std::vector<int64_t>& strides, const std::string& padding,
                            const std::vector<int64_t>& explicit_paddings,
                            const std::string& data_format, const std::vector<int64_t>& dilations,
                            int64_t groups, Im2colConv2DParams* p) {
  if (data_format != "NHWC" && data_format != "NCHW") {
    return Status::InvalidArgument("im2col_conv2d: data_format must be 'NHWC' or 'NCHW', got '" +
                                   data_format + "'");
  }
  const bool nchw = data_format == "NCHW";
  p->nchw = nchw;
  if (input_shape.size() != 4) {
    return Status::InvalidArgument("im2col_conv2d: input must be 4-D (" + data_format +
                                   "), got shape " + ShapeStr(input_shape));
  }
  if (filter_shape.size() != 4) {
    return Status::InvalidArgument(
        "im2col_conv2d: filters must be 4-D [k_h, k_w, in_channels / groups, out_channels], got "
        "shape " +
        ShapeStr(filter_shape));
  }
  for (int64_t d : input_shape) {
    if (d < 0) return Status::InvalidArgument("im2col_conv2d: input has a negative dimension");
  }
  p->batch = input_shape[0];
  p->in_c = nchw ? input_shape[1] : input_shape[3];
  p->in_h = nchw ? input_shape[2] : input_shape[1];
  p->in_w = nchw ? input_shape[3] : input_shape[2];
  p->k_h = filter_shape[0];
  p->k_w = filter_shape[1];
  p->out_c = filter_shape[3];
  if (p->k_h < 1 || p->k_w < 1 || filter_shape[2] < 1 || p->out_c < 1) {
    return Status::InvalidArgument("im2col_conv2d: every dimension of filters must be >= 1, got " +
                                   ShapeStr(filter_shape));
  }
  if (groups < 1) {
    return Status::InvalidArgument("im2col_conv2d: groups must be >= 1, got " +
                                   std::to_string(groups));
  }
  p->groups = groups;
  if (p->in_c != filter_shape[2] * groups) {
    return Status::InvalidArgument("im2col_conv2d: input channels (" + std::to_string(p->in_c) +
                                   ") must equal filters' in_channels (dimension 2 of filters " +
                                   ShapeStr(filter_shape) + ") times groups (" +
                                   std::to_string(groups) + ")");
  }
  if (p->out_c % groups != 0) {
    return Status::InvalidArgument("im2col_conv2d: groups (" + std::to_string(groups) +
                                   ") must divide the filters' out_channels (" +
                                   std::to_string(p->out_c) + ")");
  }
  IAPDCNN_RETURN_IF_ERROR(SpatialPair("strides", strides, nchw, &p->stride_h, &p->stride_w));
  IAPDCNN_RETURN_IF_ERROR(
      SpatialPair("dilations", dilations, nchw, &p->dilation_h, &p->dilation_w));
  if ((p->stride_h > 1 || p->stride_w > 1) && (p->dilation_h > 1 || p->dilation_w > 1)) {
    // tf.nn.conv2d rejects this combination on CPU as well.
    return Status::InvalidArgument(
        "im2col_conv2d: strides > 1 together with dilations > 1 is not supported (as in "
        "tf.nn.conv2d on CPU), got strides " +
        ShapeStr(strides) + " and dilations " + ShapeStr(dilations));
  }
  // Every size below in checked 64-bit arithmetic: strides, dilations and paddings are user input
  // (int64 through _C), and a wrapped size would reach TensorShape's CHECKs or the allocator.
  const CheckedInt kh_eff_c = (CheckedInt(p->k_h) - 1) * p->dilation_h + 1;
  const CheckedInt kw_eff_c = (CheckedInt(p->k_w) - 1) * p->dilation_w + 1;
  if (!kh_eff_c.ok() || !kw_eff_c.ok()) {
    return Status::InvalidArgument(
        "im2col_conv2d: the dilated kernel extent (k - 1) * dilation + 1 overflows 64-bit "
        "arithmetic: filters " +
        ShapeStr(filter_shape) + ", dilations " + ShapeStr(dilations));
  }
  const int64_t kh_eff = kh_eff_c.value(), kw_eff = kw_eff_c.value();
  // SAME: out = ceil(in / stride), total padding (out - 1) * stride + k_eff - in (>= 0).
  auto same = [](int64_t in, int64_t k_eff, int64_t stride, int64_t* before, int64_t* after) {
    const int64_t out = in / stride + (in % stride != 0);
    int64_t total = 0;
    if (out == 0) {  // in == 0: (out - 1) * stride + k_eff - in = k_eff - stride
      total = std::max<int64_t>(0, k_eff - stride);
    } else {
      const CheckedInt reach = (CheckedInt(out) - 1) * stride + k_eff;
      if (!reach.ok()) return false;
      total = std::max<int64_t>(0, reach.value() - in);
    }
    *before = total / 2;
    *after = total - total / 2;
    return true;
  };
  if (padding == "SAME") {
    if (!explicit_paddings.empty()) {
      return Status::InvalidArgument(
          "im2col_conv2d: explicit_paddings must be empty unless "
          "padding is 'EXPLICIT'");
    }
    if (!same(p->in_h, kh_eff, p->stride_h, &p->pad_top, &p->pad_bottom) ||
        !same(p->in_w, kw_eff, p->stride_w, &p->pad_left, &p->pad_right)) {
      return Status::InvalidArgument(
          "im2col_conv2d: the SAME padding of this input overflows 64-bit arithmetic (strides " +
          ShapeStr(strides) + ", dilations " + ShapeStr(dilations) + ")");
    }
  } else if (padding == "VALID") {
    if (!explicit_paddings.empty()) {
      return Status::InvalidArgument(
          "im2col_conv2d: explicit_paddings must be empty unless "
          "padding is 'EXPLICIT'");
    }
    p->pad_top = p->pad_bottom = p->pad_left = p->pad_right = 0;
  } else if (padding == "EXPLICIT") {
    const auto& e = explicit_paddings;
    if (e.size() == 8) {
      const int hi = nchw ? 4 : 2, wi = nchw ? 6 : 4, ci = nchw ? 2 : 6;
      if (e[0] || e[1] || e[ci] || e[ci + 1]) {
        return Status::InvalidArgument(
            "im2col_conv2d: explicit_paddings of the batch and channel dimensions must be 0, "
            "got " +
            ShapeStr(e));
      }
      p->pad_top = e[hi];
      p->pad_bottom = e[hi + 1];
      p->pad_left = e[wi];
      p->pad_right = e[wi + 1];
    } else if (e.size() == 4) {
      p->pad_top = e[0];
      p->pad_bottom = e[1];
      p->pad_left = e[2];
      p->pad_right = e[3];
    } else {
      return Status::InvalidArgument(
          "im2col_conv2d: explicit_paddings must have 8 values (4 pairs in data_format order) "
          "or 4 (top, bottom, left, right) when padding is 'EXPLICIT', got " +
          ShapeStr(e));
    }
    if (p->pad_top < 0 || p->pad_bottom < 0 || p->pad_left < 0 || p->pad_right < 0) {
      return Status::InvalidArgument("im2col_conv2d: explicit_paddings must be >= 0, got " +
                                     ShapeStr(e));
    }
  } else {
    return Status::InvalidArgument(
        "im2col_conv2d: padding must be 'SAME', 'VALID' or 'EXPLICIT', got '" + padding + "'");
  }
  const CheckedInt padded_h = CheckedInt(p->in_h) + p->pad_top + p->pad_bottom;
  const CheckedInt padded_w = CheckedInt(p->in_w) + p->pad_left + p->pad_right;
  if (!padded_h.ok() || !padded_w.ok()) {
    return Status::InvalidArgument(
        "im2col_conv2d: padding: the padded input size overflows 64-bit arithmetic (input " +
        ShapeStr(input_shape) + ", paddings " +
        ShapeStr({p->pad_top, p->pad_bottom, p->pad_left, p->pad_right}) + ")");
  }
  // TensorFlow's GetWindowedOutputSize, (padded - k_eff + stride) / stride truncated, without
  // the intermediate sum that could overflow.
  auto out_size = [](int64_t padded, int64_t k_eff, int64_t stride) {
    const int64_t diff = padded - k_eff;  // both >= 0: no overflow
    return diff >= 0 ? diff / stride + 1 : (diff + stride) / stride;
  };
  p->out_h = out_size(padded_h.value(), kh_eff, p->stride_h);
  p->out_w = out_size(padded_w.value(), kw_eff, p->stride_w);
  if (p->out_h < 0 || p->out_w < 0) {
    return Status::InvalidArgument(
        "im2col_conv2d: the dilated kernel (" + std::to_string(kh_eff) + " x " +
        std::to_string(kw_eff) + ") is larger than the padded input (" +
        std::to_string(padded_h.value()) + " x " + std::to_string(padded_w.value()) +
        "): computed output size would "
        "be negative");
  }
  IAPDCNN_RETURN_IF_ERROR(CheckedElements("im2col_conv2d", "input", p->InputShape()));
  IAPDCNN_RETURN_IF_ERROR(CheckedElements("im2col_conv2d", "filters", p->FilterShape()));
  IAPDCNN_RETURN_IF_ERROR(CheckedElements(
      "im2col_conv2d", "the output (from the input, padding, strides and dilations)",
      p->OutputShape()));
  return Status::OK();
}

Status CheckShapeIs(const char* what, const std::vector<int64_t>& got,
                    const std::vector<int64_t>& want) {
  if (got != want) {
    return Status::InvalidArgument(std::string("im2col_conv2d: ") + what + " must have shape " +
                                   ShapeStr(want) + ", got " + ShapeStr(got));
  }
  return Status::OK();
}

// ---- scratch sizes ------------------------------------------------------------------------------

namespace {
// The forward's per-task scratch for p (also run as the stride-1 gradient w.r.t. the input).
int64_t ForwardTaskBytes(const Im2colConv2DParams& p, int64_t elem_bytes) {
  const int64_t cb = elem_bytes == 8 ? 8 : 4;
  const bool packed = elem_bytes != cb;  // half / bfloat16
  if (elem_bytes == 4 && conv_direct::Supported(p)) return conv_direct::TaskScratchBytes(p);
  const RowViewPlan v = PlanRowView(p, cb);
  if (!packed && v.ok) return RowViewScratchBytes(p, v, cb);
  const FwdPlan f = PlanForward(p, cb);
  int64_t fwd =
      IsPointwise(p) && !packed ? 0 : f.tile_rows * p.k_h * p.k_w * (p.in_c / p.groups) * cb;
  if (packed) fwd += f.tile_rows * f.oc_block * cb;
  return fwd;
}
int64_t ForwardSharedBytes(const Im2colConv2DParams& p, int64_t elem_bytes) {
  return elem_bytes == 4 && conv_direct::Supported(p) ? conv_direct::SharedScratchBytes(p) : 0;
}
}  // namespace

int64_t Im2colConv2DScratchBytesPerTask(const Im2colConv2DParams& p, int64_t elem_bytes) {
  const int64_t cb = elem_bytes == 8 ? 8 : 4;
  const bool packed = elem_bytes != cb;  // half / bfloat16
  const int64_t og = p.out_c / p.groups;
  const int64_t fwd = ForwardTaskBytes(p, elem_bytes);
  int64_t bin = 0;
  Im2colConv2DParams q;
  if (TransposedForward(p, &q)) {
    bin = ForwardTaskBytes(q, elem_bytes);
  } else {
    const BwdInPlan bi = PlanBackpropInput(p, cb);
    bin = bi.tile_rows * p.k_h * p.k_w * bi.ch_block * cb;
    if (bi.ch_blocks > 1) bin += p.k_h * p.k_w * bi.ch_block * og * cb;
    if (packed) bin += bi.tile_rows * og * cb + bi.band_h * p.in_w * bi.ch_block * cb;
  }
  int64_t bfil = 0;
  if (elem_bytes == 4 && conv_direct::FilterSupported(p)) {
    bfil = conv_direct::FilterTaskScratchBytes(p);
  } else if (elem_bytes == 4 && conv_direct::FilterSmallSupported(p)) {
    bfil = conv_direct::FilterSmallTaskScratchBytes(p);
  } else {
    const BwdFilPlan bf = PlanBackpropFilter(p, cb);
    bfil = IsPointwise(p) && !packed ? 0 : bf.tile_rows * bf.k_block * cb;
    if (packed) bfil += bf.tile_rows * og * cb;
  }
  return std::max({fwd, bin, bfil});
}

int64_t Im2colConv2DSharedBytes(const Im2colConv2DParams& p, int64_t elem_bytes) {
  const int64_t cb = elem_bytes == 8 ? 8 : 4;
  const int64_t K = p.k_h * p.k_w * (p.in_c / p.groups);
  int64_t shared = 0;  // the filter gradient's accumulators
  if (elem_bytes == 4 && conv_direct::FilterSupported(p)) {
    shared = conv_direct::FilterSharedBytes(p);
  } else if (elem_bytes == 4 && conv_direct::FilterSmallSupported(p)) {
    shared = conv_direct::FilterSmallSharedBytes(p);
  } else {
    const BwdFilPlan bf = PlanBackpropFilter(p, cb);
    shared = bf.shards > 1 || elem_bytes != cb ? bf.shards * K * p.out_c * cb : 0;
  }
  shared = std::max(shared, ForwardSharedBytes(p, elem_bytes));
  Im2colConv2DParams q;
  if (TransposedForward(p, &q)) {
    shared = std::max(shared, K * p.out_c * cb + ForwardSharedBytes(q, elem_bytes));
  } else if (elem_bytes != cb) {
    shared = std::max(shared, K * p.out_c * cb);
  }
  return shared;
}

// ---- forward ------------------------------------------------------------------------------------

namespace {

// The forward of PlanRowView (see there); C is the element type of input, filter and output.
template <typename C>
void RowViewForward(const Im2colConv2DParams& p, const RowViewPlan& v, const C* input, const C* w,
                    C* output, const ParallelFor& pf) {
  const int64_t ci = p.in_c, oc = p.out_c, kwc = p.k_w * ci, wp = v.wp;
  pf(p.batch * v.bands, v.band_h * wp * p.k_h * kwc * oc / 4 + 1, [&](int64_t b, int64_t e) {
    std::vector<C> pad, tile;
    for (int64_t u = b; u < e; ++u) {
      const int64_t n = u / v.bands, oh0 = u % v.bands * v.band_h;
      const int64_t bh = std::min(p.out_h, oh0 + v.band_h) - oh0, ph = bh + p.k_h - 1;
      // The band's input rows, zero-padded: pad[hr][x][c] = input[n][oh0 - top + hr][x - left][c].
      pad.resize(static_cast<size_t>(ph * wp * ci));
      for (int64_t hr = 0; hr < ph; ++hr) {
        C* dst = pad.data() + hr * wp * ci;
        const int64_t ih = oh0 - p.pad_top + hr;
        if (ih < 0 || ih >= p.in_h) {
          std::fill_n(dst, wp * ci, C(0));
          continue;
        }
        std::fill_n(dst, p.pad_left * ci, C(0));
        std::memcpy(dst + p.pad_left * ci, input + ((n * p.in_h + ih) * p.in_w) * ci,
                    sizeof(C) * p.in_w * ci);
        std::fill_n(dst + (p.pad_left + p.in_w) * ci, (wp - p.pad_left - p.in_w) * ci, C(0));
      }
      // Virtual pixels r = (oh - oh0) * wp + ow; the last k_w - 1 would read past the copy.
      const int64_t m = bh * wp - (p.k_w - 1);
      tile.resize(static_cast<size_t>(m * oc));
      for (int64_t kh = 0; kh < p.k_h; ++kh) {
        const Mat<C> a{pad.data() + kh * wp * ci, ci, false};  // overlapping rows: ld < kwc
        const Mat<C> bm{w + kh * kwc * oc, oc, false};
        MatMul<C>(m, oc, kwc, a, bm, {tile.data(), oc, false}, kh > 0);
      }
      for (int64_t oh = oh0; oh < oh0 + bh; ++oh) {
        std::memcpy(output + ((n * p.out_h + oh) * p.out_w) * oc,
                    tile.data() + (oh - oh0) * wp * oc, sizeof(C) * p.out_w * oc);
      }
    }
  });
}

// The forward convolution with the filter w already in the compute type C (HWIO, dense). Also
// runs stride-1 gradients with respect to the input (see TransposedForward).
template <typename T, typename C>
void ForwardCore(const Im2colConv2DParams& p, const T* input, const C* w, T* output,
                 const ParallelFor& pf) {
  constexpr bool kPacked = !std::is_same<T, C>::value;
  const int64_t P = Pixels(p);
  if (p.batch == 0 || P == 0) return;
  const int64_t cg = p.in_c / p.groups, og = p.out_c / p.groups;
  const int64_t K = p.k_h * p.k_w * cg;
  const Strides is = InputStrides(p);
  const bool pointwise = IsPointwise(p) && !kPacked;
  if constexpr (std::is_same<T, float>::value) {  // float32 NHWC on AVX-512: the micro-kernel
    if (conv_direct::Supported(p)) return conv_direct::Forward(p, input, w, output, pf);
  }
  if constexpr (!kPacked) {
    const RowViewPlan v = PlanRowView(p, sizeof(C));
    if (v.ok) return RowViewForward<C>(p, v, input, w, output, pf);
  }
  const FwdPlan f = PlanForward(p, sizeof(C));
  const int64_t RS = RowSpace(p);
  const int64_t tasks = RowSeqs(p) * p.groups * f.tiles * f.oc_blocks;
  pf(tasks, f.tile_rows * K * f.oc_block / 4 + 1, [&](int64_t begin, int64_t end) {
    std::vector<C> col, otile;
    for (int64_t u = begin; u < end; ++u) {
      const int64_t ob = u % f.oc_blocks, tile = u / f.oc_blocks % f.tiles;
      const int64_t g = u / f.oc_blocks / f.tiles % p.groups,
                    n = u / f.oc_blocks / f.tiles / p.groups;
      const int64_t r0 = tile * f.tile_rows, r1 = std::min(RS, r0 + f.tile_rows), rows = r1 - r0;
      const int64_t oc0 = ob * f.oc_block, ocn = std::min(og, oc0 + f.oc_block) - oc0;
      const T* img = input + n * is.n;
      Mat<C> a;
      if constexpr (!kPacked) {
        if (pointwise) a = PointwiseCols<C>(p, img, g * cg, r0, 0);
      }
      if (!pointwise) {
        col.resize(static_cast<size_t>(rows * K));
        if (p.nchw) {
          Im2colRange<T, C>(p, img, g * cg, cg, r0, r1, 0, K, col.data());
        } else {
          Im2colRows<T, C>(p, input, g * cg, cg, r0, r1, 0, K, col.data());
        }
        a = p.nchw ? Mat<C>{col.data(), rows, true} : Mat<C>{col.data(), K, false};
      }
      const Mat<C> b{w + g * og + oc0, p.out_c, false};
      T* out_img = output + n * OutImageSize(p);
      if constexpr (kPacked) {
        otile.resize(static_cast<size_t>(rows * ocn));
        MatMul<C>(rows, ocn, K, a, b, {otile.data(), ocn, false}, false);
        int64_t ld;
        bool t;
        T* o = OutTilePtr(p, out_img, r0, g * og + oc0, &ld, &t);
        for (int64_t i = 0; i < rows; ++i) {
          for (int64_t j = 0; j < ocn; ++j) {
            o[t ? j * ld + i : i * ld + j] = static_cast<T>(otile[i * ocn + j]);
          }
        }
      } else {
        int64_t ld;
        bool t;
        C* o = OutTilePtr(p, out_img, r0, g * og + oc0, &ld, &t);
        MatMul<C>(rows, ocn, K, a, b, {o, ld, t}, false);
      }
    }
  });
}

}  // namespace

template <typename T>
Status Im2colConv2DCpu(const Im2colConv2DParams& p, const T* input, const T* filters, T* output,
                       const ParallelFor& pf_in) {
  return GuardKernel("im2col_conv2d", pf_in, [&](const ParallelFor& pf) -> Status {
    using C = typename ComputeOf<T>::type;
    if (p.batch == 0 || Pixels(p) == 0) return Status::OK();
    if constexpr (!std::is_same<T, C>::value) {
      const int64_t K = p.k_h * p.k_w * (p.in_c / p.groups);
      const std::vector<C> w = ToCompute<T, C>(filters, K * p.out_c, pf);
      ForwardCore<T, C>(p, input, w.data(), output, pf);
    } else {
      ForwardCore<T, C>(p, input, filters, output, pf);
    }
    return Status::OK();
  });
}

// ---- gradient with respect to the input ---------------------------------------------------------

template <typename T>
Status Im2colConv2DBackpropInputCpu(const Im2colConv2DParams& p, const T* filters,
                                    const T* out_backprop, T* in_backprop,
                                    const ParallelFor& pf_in) {
  return GuardKernel("im2col_conv2d_backprop_input", pf_in, [&](const ParallelFor& pf) -> Status {
    using C = typename ComputeOf<T>::type;
    constexpr bool kPacked = !std::is_same<T, C>::value;
    if (p.batch == 0 || p.in_h == 0 || p.in_w == 0) return Status::OK();
    Im2colConv2DParams q;
    if (TransposedForward(p, &q)) {
      const std::vector<C> wt = FlippedTransposedFilter<T, C>(p, filters, pf);
      ForwardCore<T, C>(q, out_backprop, wt.data(), in_backprop, pf);
      return Status::OK();
    }
    const int64_t P = Pixels(p);
    const int64_t cg = p.in_c / p.groups, og = p.out_c / p.groups;
    const int64_t K = p.k_h * p.k_w * cg, taps = p.k_h * p.k_w;
    const Strides is = InputStrides(p);
    std::vector<C> wbuf;
    const C* w = nullptr;
    if constexpr (kPacked) {
      wbuf = ToCompute<T, C>(filters, K * p.out_c, pf);
      w = wbuf.data();
    } else {
      w = filters;
    }
    const BwdInPlan b = PlanBackpropInput(p, sizeof(C));
    const int64_t tasks = p.batch * p.groups * b.bands * b.ch_blocks;
    const int64_t rows_per_band =
        std::min(P, (CeilDiv(b.band_h, p.stride_h) + p.k_h * p.dilation_h) * p.out_w);
    pf(tasks, rows_per_band * taps * b.ch_block * og / 4 + 1, [&](int64_t begin, int64_t end) {
      std::vector<C> dcol, wsub, dotile, band;
      for (int64_t u = begin; u < end; ++u) {
        const int64_t cbi = u % b.ch_blocks, bi = u / b.ch_blocks % b.bands;
        const int64_t g = u / b.ch_blocks / b.bands % p.groups;
        const int64_t n = u / b.ch_blocks / b.bands / p.groups;
        const int64_t c0 = g * cg + cbi * b.ch_block,
                      cn = std::min(g * cg + cg, c0 + b.ch_block) - c0;
        const int64_t h_lo = bi * b.band_h, h_hi = std::min(p.in_h, h_lo + b.band_h);
        const int64_t kc = taps * cn;
        T* dimg = in_backprop + n * is.n;
        // The target: dI itself, or a float band [h_hi - h_lo, in_w, cn] for half / bfloat16.
        View<C> fv{nullptr, 0, 0, 0, 0, 0};
        if constexpr (kPacked) {
          band.assign(static_cast<size_t>((h_hi - h_lo) * p.in_w * cn), C(0));
          fv = {band.data(), p.in_w * cn, cn, 1, h_lo, c0};
        } else {
          fv = {dimg, is.h, is.w, is.c, 0, 0};
          for (int64_t ih = h_lo; ih < h_hi; ++ih) {
            for (int64_t iw = 0; iw < p.in_w; ++iw) {
              for (int64_t c = c0; c < c0 + cn; ++c) *fv.at(ih, iw, c) = C(0);
            }
          }
        }
        // Filter rows of this channel block: W [taps, cg, out_c] -> [taps * cn, og].
        Mat<C> wt{w + g * og, p.out_c, false};
        if (cn != cg) {
          wsub.resize(static_cast<size_t>(kc * og));
          for (int64_t t = 0; t < taps; ++t) {
            for (int64_t c = 0; c < cn; ++c) {
              const C* src = w + (t * cg + (c0 - g * cg) + c) * p.out_c + g * og;
              std::copy_n(src, og, wsub.data() + (t * cn + c) * og);
            }
          }
          wt = {wsub.data(), og, false};
        }
        // Output rows whose receptive field meets [h_lo, h_hi).
        const int64_t reach = (p.k_h - 1) * p.dilation_h;
        int64_t oh_lo = h_lo + p.pad_top - reach;
        oh_lo = oh_lo <= 0 ? 0 : CeilDiv(oh_lo, p.stride_h);
        const int64_t oh_hi = std::min(p.out_h, (h_hi - 1 + p.pad_top) / p.stride_h + 1);
        if (oh_lo >= oh_hi) continue;
        const T* do_img = out_backprop + n * OutImageSize(p);
        for (int64_t r0 = oh_lo * p.out_w; r0 < oh_hi * p.out_w; r0 += b.tile_rows) {
          const int64_t r1 = std::min(oh_hi * p.out_w, r0 + b.tile_rows), rows = r1 - r0;
          const Mat<C> dot = OutBackpropTile<T, C>(p, do_img, r0, g * og, rows, og, dotile);
          dcol.resize(static_cast<size_t>(rows * kc));
          const OutMat<C> dc =
              p.nchw ? OutMat<C>{dcol.data(), rows, true} : OutMat<C>{dcol.data(), kc, false};
          MatMul<C>(rows, kc, og, dot, wt.T(), dc, false);
          Col2imRange<C, C>(p, dcol.data(), c0, cn, r0, r1, h_lo, h_hi, fv);
        }
        if constexpr (kPacked) {
          const View<T> tv{dimg, is.h, is.w, is.c, 0, 0};
          for (int64_t ih = h_lo; ih < h_hi; ++ih) {
            for (int64_t iw = 0; iw < p.in_w; ++iw) {
              for (int64_t c = c0; c < c0 + cn; ++c)
                *tv.at(ih, iw, c) = static_cast<T>(*fv.at(ih, iw, c));
            }
          }
        }
      }
    });
    return Status::OK();
  });
}

// ---- gradient with respect to the filter --------------------------------------------------------

template <typename T>
Status Im2colConv2DBackpropFilterCpu(const Im2colConv2DParams& p, const T* input,
                                     const T* out_backprop, T* filter_backprop,
                                     const ParallelFor& pf_in) {
  return GuardKernel("im2col_conv2d_backprop_filter", pf_in, [&](const ParallelFor& pf) -> Status {
    using C = typename ComputeOf<T>::type;
    constexpr bool kPacked = !std::is_same<T, C>::value;
    if constexpr (std::is_same<T, float>::value) {
      if (conv_direct::FilterSupported(p)) {
        conv_direct::BackpropFilterPointwise(p, input, out_backprop, filter_backprop, pf);
        return Status::OK();
      }
      if (conv_direct::FilterSmallSupported(p)) {
        conv_direct::BackpropFilterSmall(p, input, out_backprop, filter_backprop, pf);
        return Status::OK();
      }
    }
    const int64_t cg = p.in_c / p.groups, og = p.out_c / p.groups;
    const int64_t K = p.k_h * p.k_w * cg;
    const Strides is = InputStrides(p);
    const bool pointwise = IsPointwise(p) && !kPacked;
    const BwdFilPlan f = PlanBackpropFilter(p, sizeof(C));
    const int64_t RS = RowSpace(p);
    // Accumulators: dW itself, or one float/double [K, out_c] per shard.
    const bool direct = !kPacked && f.shards == 1;
    std::vector<C> acc(direct ? 0 : static_cast<size_t>(f.shards * K * p.out_c));
    const int64_t work = RowSeqs(p) * f.tiles_per_image;
    const int64_t per_shard = CeilDiv(std::max<int64_t>(1, work), f.shards);
    const int64_t tasks = p.groups * f.k_blocks * f.shards;
    pf(tasks, std::max<int64_t>(1, per_shard * f.tile_rows) * f.k_block * og / 4 + 1,
       [&](int64_t begin, int64_t end) {
         std::vector<C> col, dotile;
         for (int64_t u = begin; u < end; ++u) {
           const int64_t s = u % f.shards, kb = u / f.shards % f.k_blocks;
           const int64_t g = u / f.shards / f.k_blocks;
           const int64_t k0 = kb * f.k_block, k1 = std::min(K, k0 + f.k_block), kn = k1 - k0;
           C* dw = nullptr;
           if constexpr (kPacked) {
             dw = acc.data() + s * K * p.out_c;
           } else {
             dw = direct ? filter_backprop : acc.data() + s * K * p.out_c;
           }
           const OutMat<C> out{dw + k0 * p.out_c + g * og, p.out_c, false};
           for (int64_t i = 0; i < kn; ++i) std::fill_n(out.p + i * p.out_c, og, C(0));
           const int64_t w0 = s * per_shard, w1 = std::min(work, w0 + per_shard);
           for (int64_t wi = w0; wi < w1; ++wi) {
             const int64_t n = wi / f.tiles_per_image, tile = wi % f.tiles_per_image;
             const int64_t r0 = tile * f.tile_rows, r1 = std::min(RS, r0 + f.tile_rows);
             const int64_t rows = r1 - r0;
             const T* img = input + n * is.n;
             Mat<C> a;
             if constexpr (!kPacked) {
               if (pointwise) a = PointwiseCols<C>(p, img, g * cg, r0, k0);
             }
             if (!pointwise) {
               col.resize(static_cast<size_t>(rows * kn));
               if (p.nchw) {
                 Im2colRange<T, C>(p, img, g * cg, cg, r0, r1, k0, k1, col.data());
               } else {
                 Im2colRows<T, C>(p, input, g * cg, cg, r0, r1, k0, k1, col.data());
               }
               a = p.nchw ? Mat<C>{col.data(), rows, true} : Mat<C>{col.data(), kn, false};
             }
             const Mat<C> dot = OutBackpropTile<T, C>(p, out_backprop + n * OutImageSize(p), r0,
                                                      g * og, rows, og, dotile);
             MatMul<C>(kn, og, rows, a.T(), dot, out, true);
           }
         }
       });
    if (!direct) {
      const int64_t total = K * p.out_c;
      pf(total, f.shards + 1, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          C sum = 0;
          for (int64_t s = 0; s < f.shards; ++s) sum += acc[s * total + i];
          filter_backprop[i] = static_cast<T>(sum);
        }
      });
    }
    return Status::OK();
  });
}

#define IAPDCNN_INSTANTIATE_CONV(T)                                                               \
  template Status Im2colConv2DCpu<T>(const Im2colConv2DParams&, const T*, const T*, T*,           \
                                     const ParallelFor&);                                         \
  template Status Im2colConv2DBackpropInputCpu<T>(const Im2colConv2DParams&, const T*, const T*,  \
                                                  T*, const ParallelFor&);                        \
  template Status Im2colConv2DBackpropFilterCpu<T>(const Im2colConv2DParams&, const T*, const T*, \
                                                   T*, const ParallelFor&);
IAPDCNN_INSTANTIATE_CONV(float)
IAPDCNN_INSTANTIATE_CONV(double)
IAPDCNN_INSTANTIATE_CONV(Eigen::half)
IAPDCNN_INSTANTIATE_CONV(Eigen::bfloat16)
#undef IAPDCNN_INSTANTIATE_CONV

}  // namespace iapdcnn
