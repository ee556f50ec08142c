// Float32 NHWC forward with our own AVX-512 GEMM micro-kernel (see conv_direct.h for the idea).
// Why a hand-written micro-kernel, against the rule of using a GEMM library: Eigen's GEMM must
// pack the im2col matrix (or the row view of the padded input) before it multiplies, repacks the
// filter in every task, and its 48 x 8 register tile leaves 64-channel layers a 16-wide tail.
// Measured on this 2-core AVX-512 machine, ResNet-50 3x3 layers at batch 8, against the Eigen
// path it replaced (row view / im2col + Eigen), single thread: 220 / 224 / 228 / 207 GFLOP/s
// against 199 / 216 / 205 / 195 for c2..c5 (SGEMM ~240); in bench_conv.py the 3x3 forward went
// from 0.70-0.74 of the SGEMM rate to 0.89-0.91, the stem from 0.65x to ~1.0x TensorFlow, and
// c2's 1x1 layers from 0.74-0.85x to ~0.95x. The pointwise filter gradient uses it too (c2's
// 256 -> 64 layer at batch 8: 0.67x TensorFlow with Eigen, 0.94-1.0x), and so does the filter
// gradient of every layer with a dW <= 1 MiB (small_resnet's: 16 -> 16 3x3 at batch 64 went from
// 0.30-0.34x TensorFlow with im2col + Eigen, whose GEMM of depth batch * pixels and width 16
// packs a 29 MB im2col matrix, to ~0.9x); the other gradients keep Eigen's GEMM (a flipped-filter
// forward for c4/c5's input gradient measured slower: the 9 MiB filter copy).
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "common/checked.h"
#include "conv/conv_direct.h"

namespace iapdcnn {
namespace conv_direct {

namespace {

// Register tile: R output pixels (or dW rows) x V * 16 output channels, V <= 4. 6 x 64 keeps 24
// accumulators, 4 filter vectors and one broadcast in the 32 zmm registers; per depth step it
// issues 24 FMAs against 4 + 6 loads, so FMA throughput, not loads, bounds it. Narrower tiles get
// more rows (RowsFor), for enough independent FMA chains: 8 x 48 (the transposed small filter
// gradient's 16 -> 16 3x3 tile) and 12 x 16 (16-channel layers). small_resnet at batch 64, one
// thread, min of 60 calls, 12 x 16 against 6 x 16: the stem's filter gradient 0.86-0.87x ->
// 1.02-1.04x TensorFlow, 16 -> 16 3x3's input gradient 0.80x -> 0.85-0.86x.
constexpr int kR = 6;
constexpr int kMaxR = 12;
constexpr int kMaxV = 4;
constexpr int RowsFor(int v) {
  static_assert(kMaxR >= 12);
  return v == 1 ? 12 : v == 3 ? 8 : 6;
}
constexpr int64_t kCopyBudgetBytes = 8 << 20;  // the padded copy of one chunk of output rows
constexpr int64_t kSegGroupBytes = 384 << 10;  // filter rows one pass keeps in L2 (1 MiB here)
constexpr int64_t kMinTaskPixels = 8 * kR;

// out[j][0:16V] (=|+=) sum over segments s, depth k < len of x[j][xoff[s] + k * xstep] *
// w[woff[s] + k * ldw][0:16V], for j < R. Row j of the output is out + j * ldo. The forward
// reads im2col rows (xstep 1); the pointwise filter gradient reads input columns (xstep C).
// Vector V - 1 covers only the lanes of `tail` (a block of out_c % 16 channels at the end of a
// layer whose out_c is not a multiple of 16, e.g. a pruned one): it is loaded and stored masked,
// so neither w's nor out's rows are read or written past their last channel.
template <int R, int V>
__attribute__((target("avx512f"))) void Tile(const float* const* x, const int64_t* xoff,
                                             const int64_t* woff, int64_t nseg, int64_t len,
                                             int64_t xstep, const float* w, int64_t ldw, float* out,
                                             int64_t ldo, bool acc, __mmask16 tail) {
  __m512 c[R][V];
#pragma GCC unroll 12
  for (int j = 0; j < R; ++j) {
#pragma GCC unroll 4
    for (int v = 0; v < V - 1; ++v) {
      c[j][v] = acc ? _mm512_loadu_ps(out + j * ldo + 16 * v) : _mm512_setzero_ps();
    }
    c[j][V - 1] =
        acc ? _mm512_maskz_loadu_ps(tail, out + j * ldo + 16 * (V - 1)) : _mm512_setzero_ps();
  }
  for (int64_t s = 0; s < nseg; ++s) {
    const float* xs[R];
#pragma GCC unroll 12
    for (int j = 0; j < R; ++j) xs[j] = x[j] + xoff[s];
    const float* wp = w + woff[s];
    for (int64_t k = 0, xk = 0; k < len; ++k, xk += xstep, wp += ldw) {
      __m512 b[V];
#pragma GCC unroll 4
      for (int v = 0; v < V - 1; ++v) b[v] = _mm512_loadu_ps(wp + 16 * v);
      b[V - 1] = _mm512_maskz_loadu_ps(tail, wp + 16 * (V - 1));
#pragma GCC unroll 12
      for (int j = 0; j < R; ++j) {
        const __m512 a = _mm512_set1_ps(xs[j][xk]);
#pragma GCC unroll 4
        for (int v = 0; v < V; ++v) c[j][v] = _mm512_fmadd_ps(a, b[v], c[j][v]);
      }
    }
  }
#pragma GCC unroll 12
  for (int j = 0; j < R; ++j) {
#pragma GCC unroll 4
    for (int v = 0; v < V - 1; ++v) _mm512_storeu_ps(out + j * ldo + 16 * v, c[j][v]);
    _mm512_mask_storeu_ps(out + j * ldo + 16 * (V - 1), tail, c[j][V - 1]);
  }
}

using TileFn = void (*)(const float* const*, const int64_t*, const int64_t*, int64_t, int64_t,
                        int64_t, const float*, int64_t, float*, int64_t, bool, __mmask16);

// A block of `width` output channels (1..64) as the micro-kernel sees it: v vectors of 16, the
// last one masked to the lanes the block has.
struct ChannelBlock {
  int v;
  __mmask16 tail;
};
ChannelBlock BlockOf(int64_t width) {
  const int v = static_cast<int>(std::min<int64_t>(kMaxV, CeilDiv(width, 16)));
  const int64_t last = std::min<int64_t>(16, width - 16 * (v - 1));
  return {v, static_cast<__mmask16>(last == 16 ? 0xFFFFu : (1u << last) - 1u)};
}
constexpr __mmask16 kFullTail = 0xFFFF;

// Tile<R, V> for R <= RowsFor(V); null for the shapes that would spill registers (never asked).
template <int R, int V>
constexpr TileFn TileOrNull() {
  if constexpr (R <= RowsFor(V)) {
    return Tile<R, V>;
  } else {
    return nullptr;
  }
}
template <int R>
struct TileRow {
  static constexpr TileFn v[kMaxV] = {TileOrNull<R, 1>(), TileOrNull<R, 2>(), TileOrNull<R, 3>(),
                                      TileOrNull<R, 4>()};
};
// r <= RowsFor(v).
TileFn TileFor(int r, int v) {
  static const TileFn* const table[kMaxR] = {
      TileRow<1>::v, TileRow<2>::v, TileRow<3>::v, TileRow<4>::v,  TileRow<5>::v,  TileRow<6>::v,
      TileRow<7>::v, TileRow<8>::v, TileRow<9>::v, TileRow<10>::v, TileRow<11>::v, TileRow<12>::v,
  };
  return table[r - 1][v - 1];
}

// The zero-padded input copy covers, for output rows oh of one image, padded rows
// y = oh * stride_h + kh * dilation_h (y = ih + pad_top) and columns x = ow * stride_w + kw *
// dilation_w; only the rows and columns some output pixel reads.
int64_t PaddedWidth(const Im2colConv2DParams& p) {
  return (p.out_w - 1) * p.stride_w + (p.k_w - 1) * p.dilation_w + 1;
}
int64_t PaddedRows(const Im2colConv2DParams& p, int64_t out_rows) {
  return (out_rows - 1) * p.stride_h + (p.k_h - 1) * p.dilation_h + 1;
}
// No output pixel reads padding (1x1 convolutions, VALID, ...): the input is read in place.
bool InPlace(const Im2colConv2DParams& p) {
  return p.pad_top == 0 && p.pad_left == 0 && PaddedRows(p, p.out_h) <= p.in_h &&
         PaddedWidth(p) <= p.in_w;
}
// Floats from one row of the (padded or in-place) input to the next.
int64_t RowFloats(const Im2colConv2DParams& p) {
  return (InPlace(p) ? p.in_w : PaddedWidth(p)) * p.in_c;
}

// A chunk: output rows [u0, u1) of the batch's row space u = n * out_h + oh, whose padded rows
// fit kCopyBudgetBytes together (at least one output row).
struct Chunk {
  int64_t u0, u1, bytes;
};
// Bytes the padded copy of chunk c grows by when output row c.u1 joins it.
int64_t ChunkRowBytes(const Im2colConv2DParams& p, const Chunk& c) {
  const int64_t row_bytes = PaddedWidth(p) * p.in_c * int64_t{sizeof(float)};
  return (c.u1 % p.out_h == 0 || c.u1 == c.u0 ? PaddedRows(p, 1) : p.stride_h) * row_bytes;
}
std::vector<Chunk> Chunks(const Im2colConv2DParams& p) {
  const int64_t units = p.batch * p.out_h;
  if (InPlace(p)) return {{0, units, 0}};
  std::vector<Chunk> out;
  for (int64_t u = 0; u < units;) {
    Chunk c{u, u, 0};
    while (c.u1 < units) {
      const int64_t add = ChunkRowBytes(p, c);
      if (c.u1 > c.u0 && c.bytes + add > kCopyBudgetBytes) break;
      c.bytes += add;
      ++c.u1;
    }
    out.push_back(c);
    u = c.u1;
  }
  return out;
}
// Output rows [u0, u1) as one chunk, whatever its size (0 bytes: read in place).
Chunk ChunkOf(const Im2colConv2DParams& p, int64_t u0, int64_t u1) {
  Chunk c{u0, u0, 0};
  for (; c.u1 < u1; ++c.u1) c.bytes += InPlace(p) ? 0 : ChunkRowBytes(p, c);
  return c;
}

// Depth segments: runs of the im2col row that are contiguous in the padded copy. Undilated, a
// kernel row's k_w * C values are one run; dilated, each tap's C values are. A pass handles
// per_pass segments, keeping their filter rows (len * 64 floats each) in L2 while it sweeps the
// task's pixels; the accumulators round-trip through the output between passes.
struct Segments {
  std::vector<int64_t> xoff, woff;  // offsets into the padded copy and into w (HWIO)
  int64_t len, per_pass;
};
Segments SegmentsOf(const Im2colConv2DParams& p) {
  const int64_t C = p.in_c, row = RowFloats(p);
  Segments sg;
  sg.len = p.dilation_w == 1 ? p.k_w * C : C;
  for (int64_t kh = 0; kh < p.k_h; ++kh) {
    for (int64_t kw = 0; kw < (p.dilation_w == 1 ? 1 : p.k_w); ++kw) {
      sg.xoff.push_back(kh * p.dilation_h * row + kw * p.dilation_w * C);
      sg.woff.push_back((kh * p.k_w + kw) * C * p.out_c);
    }
  }
  sg.per_pass =
      std::max<int64_t>(1, kSegGroupBytes / (sg.len * kMaxV * 16 * int64_t{sizeof(float)}));
  return sg;
}

// dst [rows, width] = columns [0, width) of src [rows, ld]: a channel block of the filter or of
// out_backprop, contiguous for the micro-kernel instead of width of every ld values.
void PackColumns(const float* src, int64_t ld, int64_t rows, int64_t width, float* dst) {
  for (int64_t i = 0; i < rows; ++i) {
    std::memcpy(dst + i * width, src + i * ld, sizeof(float) * width);
  }
}

// Pixel shards per hardware thread: the micro-kernel's tasks are small, so more of them.
constexpr int64_t kTasksPerThread = 4;
int64_t TargetTasks() { return iapdcnn::TargetTasks(kTasksPerThread); }

}  // namespace

bool Supported(const Im2colConv2DParams& p) {
  static const bool cpu = __builtin_cpu_supports("avx512f");
  // IAPDCNN_CONV_MICROKERNEL=0 selects the Eigen path instead (bench_conv.py compares the two).
  const char* env = std::getenv("IAPDCNN_CONV_MICROKERNEL");
  if (env != nullptr && std::strcmp(env, "0") == 0) return false;
  if (!(cpu && !p.nchw && p.groups == 1 && p.batch > 0 && p.out_h > 0 && p.out_w > 0 &&
        p.in_c > 0)) {
    return false;
  }
  // The padded copy holds every input row and column between an output row's first and last
  // taps: ((k_h - 1) d_h + 1) x ((out_w - 1) s_w + (k_w - 1) d_w + 1) x C floats for one output
  // row, which grows with dilation^2 while the real work (the im2col row, out_w x k_h x k_w x C)
  // does not. A dilated layer whose copy would be much larger than its im2col rows takes the
  // im2col path instead (bounded tiles), so scratch stays bounded by the work.
  const CheckedInt rows = (CheckedInt(p.k_h) - 1) * p.dilation_h + 1;
  const CheckedInt width =
      (CheckedInt(p.out_w) - 1) * p.stride_w + (CheckedInt(p.k_w) - 1) * p.dilation_w + 1;
  const CheckedInt copy = rows * width * p.in_c * int64_t{sizeof(float)};
  const CheckedInt im2col = CheckedInt(p.out_w) * p.k_h * p.k_w * p.in_c * int64_t{sizeof(float)};
  if (!copy.ok() || !im2col.ok()) return false;
  return copy.value() <= std::max(kCopyBudgetBytes, 4 * im2col.value());
}

int64_t SharedScratchBytes(const Im2colConv2DParams& p) {
  int64_t m = 0;
  for (const Chunk& c : Chunks(p)) m = std::max(m, c.bytes);
  return m;
}

int64_t TaskScratchBytes(const Im2colConv2DParams& p) {
  const Segments sg = SegmentsOf(p);
  return p.out_c > kMaxV * 16 ? sg.per_pass * sg.len * kMaxV * 16 * int64_t{sizeof(float)} : 0;
}

namespace {

// The chunk's padded rows, image by image, into *buf (zeros where they read padding); row_of[u -
// ch.u0] is output row u's first padded row.
void CopyPadded(const Im2colConv2DParams& p, const float* input, const Chunk& ch,
                std::vector<float>* buf, std::vector<const float*>* row_of, const ParallelFor& pf) {
  const int64_t C = p.in_c, wpad = PaddedWidth(p), row = RowFloats(p);
  const int64_t lo = p.pad_left, hi = std::min(wpad, p.pad_left + p.in_w);  // copied columns
  buf->resize(static_cast<size_t>(ch.bytes / int64_t{sizeof(float)}));
  struct CopyRow {
    int64_t n, y;  // image, padded row (y = ih + pad_top)
    float* dst;
  };
  std::vector<CopyRow> rows;
  float* dst = buf->data();
  for (int64_t u = ch.u0; u < ch.u1;) {
    const int64_t n = u / p.out_h, oh0 = u % p.out_h;
    const int64_t oh1 = std::min(p.out_h, oh0 + (ch.u1 - u));
    const int64_t y0 = oh0 * p.stride_h, ny = PaddedRows(p, oh1 - oh0);
    for (int64_t oh = oh0; oh < oh1; ++oh) {
      (*row_of)[u - ch.u0 + oh - oh0] = dst + (oh - oh0) * p.stride_h * row;
    }
    for (int64_t y = y0; y < y0 + ny; ++y, dst += row) rows.push_back({n, y, dst});
    u += oh1 - oh0;
  }
  pf(static_cast<int64_t>(rows.size()), row, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const CopyRow& r = rows[i];
      const int64_t ih = r.y - p.pad_top;
      if (ih < 0 || ih >= p.in_h || lo >= hi) {
        std::fill_n(r.dst, row, 0.0f);
        continue;
      }
      std::fill_n(r.dst, lo * C, 0.0f);
      std::memcpy(r.dst + lo * C, input + ((r.n * p.in_h + ih) * p.in_w + (lo - p.pad_left)) * C,
                  sizeof(float) * (hi - lo) * C);
      std::fill_n(r.dst + hi * C, (wpad - hi) * C, 0.0f);
    }
  });
}

// out [pixels, out_c] = the chunk's output rows, whose first input rows are row_of.
void Compute(const Im2colConv2DParams& p, const Segments& sg,
             const std::vector<const float*>& row_of, const float* w, float* out, int64_t pixels,
             const ParallelFor& pf) {
  const int64_t C = p.in_c, oc = p.out_c, len = sg.len, per_pass = sg.per_pass;
  const int64_t nseg = static_cast<int64_t>(sg.xoff.size());
  const int64_t oc_blocks = CeilDiv(oc, kMaxV * 16);
  // Tasks: (output-channel block, pixel group), channel-block major so that one thread's
  // consecutive tasks reuse the same filter columns.
  const int64_t groups = std::max<int64_t>(
      1, std::min(CeilDiv(pixels, kMinTaskPixels), CeilDiv(TargetTasks(), oc_blocks)));
  const int64_t group_px = CeilDiv(pixels, groups);
  pf(oc_blocks * groups, group_px * nseg * len * kMaxV * 16 * 2, [&](int64_t b, int64_t e) {
    const float* x[kMaxR];
    std::vector<float> wpack;
    std::vector<int64_t> wpoff;
    for (int64_t t = b; t < e; ++t) {
      const int64_t ob = t / groups, g = t % groups;
      const int64_t o0 = ob * kMaxV * 16, width = std::min<int64_t>(oc - o0, kMaxV * 16);
      const ChannelBlock blk = BlockOf(width);
      const int v = blk.v;
      const int64_t q0 = g * group_px, q1 = std::min(pixels, q0 + group_px);
      for (int64_t s0 = 0; s0 < nseg; s0 += per_pass) {
        const int64_t ns = std::min(per_pass, nseg - s0);
        // Wider layers: the pass's filter columns [o0, o0 + width) packed.
        const float* wb = w + o0;
        const int64_t* wo = sg.woff.data() + s0;
        int64_t ldw = oc;
        if (oc > width) {
          ldw = width;
          wpack.resize(static_cast<size_t>(ns * len * ldw));
          wpoff.resize(static_cast<size_t>(ns));
          for (int64_t s = 0; s < ns; ++s) {
            wpoff[s] = s * len * ldw;
            PackColumns(w + sg.woff[s0 + s] + o0, oc, len, ldw, wpack.data() + wpoff[s]);
          }
          wb = wpack.data();
          wo = wpoff.data();
        }
        // Pixel q = oh * out_w + ow, stepped without a division per pixel: with a depth of 9
        // (the stem's 3x3 x 1) two per pixel cost more than its tile's FMAs.
        int64_t oh = q0 / p.out_w, ow = q0 % p.out_w;
        for (int64_t q = q0; q < q1; q += RowsFor(v)) {
          const int r = static_cast<int>(std::min<int64_t>(RowsFor(v), q1 - q));
          for (int j = 0; j < r; ++j) {
            x[j] = row_of[oh] + ow * p.stride_w * C;
            if (++ow == p.out_w) ow = 0, ++oh;
          }
          TileFor(r, v)(x, sg.xoff.data() + s0, wo, ns, len, 1, wb, ldw, out + q * oc + o0, oc,
                        s0 > 0, blk.tail);
        }
      }
    }
  });
}

// row_of[u - ch.u0]: output row u's first (kh = 0) input row, padded (copied into *buf) or in
// place. Returns the base that row offsets are measured from.
const float* RowsOf(const Im2colConv2DParams& p, const float* input, const Chunk& ch,
                    std::vector<float>* buf, std::vector<const float*>* row_of,
                    const ParallelFor& pf) {
  row_of->resize(static_cast<size_t>(ch.u1 - ch.u0));
  if (!InPlace(p)) {
    CopyPadded(p, input, ch, buf, row_of, pf);
    return buf->data();
  }
  const int64_t row = RowFloats(p);
  for (int64_t u = ch.u0; u < ch.u1; ++u) {
    (*row_of)[u - ch.u0] = input + (u / p.out_h * p.in_h + u % p.out_h * p.stride_h) * row;
  }
  return input;
}

}  // namespace

void Forward(const Im2colConv2DParams& p, const float* input, const float* w, float* output,
             const ParallelFor& pf) {
  const Segments sg = SegmentsOf(p);
  std::vector<float> buf;
  std::vector<const float*> row_of;  // per output row of a chunk: the input row of its kh = 0
  for (const Chunk& ch : Chunks(p)) {
    RowsOf(p, input, ch, &buf, &row_of, pf);
    Compute(p, sg, row_of, w, output + ch.u0 * p.out_w * p.out_c, (ch.u1 - ch.u0) * p.out_w, pf);
  }
}

constexpr int64_t kFilterChunkPixels = 512;               // out_backprop rows one sweep keeps in L2
constexpr int64_t kFilterShardBytes = int64_t{16} << 20;  // all tasks' dW accumulators together
constexpr int64_t kMinShardPixels = 128;
constexpr int64_t kMaxSmallFilterBytes = int64_t{1} << 20;  // dW of BackpropFilterSmall

bool FilterSupported(const Im2colConv2DParams& p) {
  return Supported(p) && p.k_h == 1 && p.k_w == 1 && p.stride_h == 1 && p.stride_w == 1 &&
         p.pad_top == 0 && p.pad_bottom == 0 && p.pad_left == 0 && p.pad_right == 0;
}

namespace {
// A small dW (64 x 256 for ResNet's c2) is computed by pixel shards, each sweeping its pixels
// once for every output tile into its own dW (shard 0 into dW itself), summed at the end: one
// pass over the input and out_backprop in all. Splitting the output tiles instead had every task
// stream the whole input and out_backprop (0.93x TensorFlow on c2's 64 -> 256 layer against
// 1.3x). A large dW (c5: 4 MiB) splits its output tiles: no accumulators to sum.
int64_t FilterShards(const Im2colConv2DParams& p) {
  const int64_t pixels = p.batch * p.out_h * p.out_w;
  const int64_t dw_bytes = p.in_c * p.out_c * int64_t{sizeof(float)};
  const int64_t data_bytes = pixels * (p.in_c + p.out_c) * int64_t{sizeof(float)};
  const int64_t shards = std::min(TargetTasks(), pixels / kMinShardPixels);
  // Accumulators worth it only when small next to the data the tile split would re-read (c4's
  // 1 MiB dW at batch 8: 8 shards measured 0.64x TensorFlow, the tile split 1.07x).
  if (shards < 2 || dw_bytes * shards > kFilterShardBytes || 4 * dw_bytes * shards > data_bytes) {
    return 1;
  }
  return shards;
}
}  // namespace

int64_t FilterTaskScratchBytes(const Im2colConv2DParams& p) {
  return p.out_c > kMaxV * 16 ? kFilterChunkPixels * kMaxV * 16 * int64_t{sizeof(float)} : 0;
}

int64_t FilterSharedBytes(const Im2colConv2DParams& p) {
  return (FilterShards(p) - 1) * p.in_c * p.out_c * int64_t{sizeof(float)};
}

void BackpropFilterPointwise(const Im2colConv2DParams& p, const float* input,
                             const float* out_backprop, float* filter_backprop,
                             const ParallelFor& pf) {
  const int64_t C = p.in_c, oc = p.out_c, pixels = p.batch * p.out_h * p.out_w;
  const int64_t oc_blocks = CeilDiv(oc, kMaxV * 16), tiles = CeilDiv(C, kR);
  const int64_t shards = FilterShards(p);
  // Tile mode (one shard): tasks are (output-channel block, group of input-channel tiles),
  // disjoint rows of dW. Shard mode: tasks are pixel ranges, each over every tile.
  const int64_t per_group =
      shards > 1 ? tiles : CeilDiv(tiles, std::min(tiles, CeilDiv(TargetTasks(), oc_blocks)));
  const int64_t groups = CeilDiv(tiles, per_group);
  const int64_t shard_px = CeilDiv(pixels, shards);
  std::vector<float> acc(static_cast<size_t>((shards - 1) * C * oc));
  const int64_t zero = 0;
  const int64_t tasks = shards > 1 ? shards : oc_blocks * groups;
  pf(tasks, shard_px * per_group * kR * oc * 2 / (shards > 1 ? 1 : oc_blocks),
     [&](int64_t b, int64_t e) {
       const float* x[kR];
       std::vector<float> pack;
       for (int64_t t = b; t < e; ++t) {
         const int64_t sh = shards > 1 ? t : 0;
         const int64_t q0 = sh * shard_px, q1 = std::min(pixels, q0 + shard_px);
         float* dw = sh == 0 ? filter_backprop : acc.data() + (sh - 1) * C * oc;
         const int64_t ob0 = shards > 1 ? 0 : t / groups, ob1 = shards > 1 ? oc_blocks : ob0 + 1;
         const int64_t g = shards > 1 ? 0 : t % groups;
         const int64_t c0 = g * per_group * kR, c1 = std::min(C, c0 + per_group * kR);
         for (int64_t p0 = q0; p0 < q1; p0 += kFilterChunkPixels) {
           const int64_t n = std::min(kFilterChunkPixels, q1 - p0);
           for (int64_t ob = ob0; ob < ob1; ++ob) {
             const int64_t o0 = ob * kMaxV * 16, width = std::min<int64_t>(oc - o0, kMaxV * 16);
             const ChannelBlock blk = BlockOf(width);
             const int v = blk.v;
             const float* wb = out_backprop + p0 * oc + o0;
             int64_t ldw = oc;
             if (oc > width) {
               ldw = width;
               pack.resize(static_cast<size_t>(n * ldw));
               PackColumns(wb, oc, n, ldw, pack.data());
               wb = pack.data();
             }
             for (int64_t c = c0; c < c1; c += kR) {
               const int r = static_cast<int>(std::min<int64_t>(kR, c1 - c));
               for (int j = 0; j < r; ++j) x[j] = input + p0 * C + c + j;
               TileFor(r, v)(x, &zero, &zero, 1, n, C, wb, ldw, dw + c * oc + o0, oc, p0 > q0,
                             blk.tail);
             }
           }
         }
       }
     });
  if (shards > 1) {
    pf(C, oc * shards, [&](int64_t b, int64_t e) {
      for (int64_t sh = 1; sh < shards; ++sh) {
        const float* a = acc.data() + (sh - 1) * C * oc;
        for (int64_t i = b * oc; i < e * oc; ++i) filter_backprop[i] += a[i];
      }
    });
  }
}

// ---- the filter gradient of a small layer -------------------------------------------------------

namespace {
// Output rows a unit of the small filter gradient covers: about kFilterChunkPixels pixels, whose
// padded input rows (copied per unit) and out_backprop rows stay in L2 while every tile of dW
// sweeps them.
int64_t SmallFilterUnitRows(const Im2colConv2DParams& p) {
  return std::max<int64_t>(1, kFilterChunkPixels / p.out_w);
}
// The calls of the ParallelFor each accumulate into a dW of their own, summed at the end: at most
// this many, so that the accumulators stay bounded. One thread (TensorFlow's intra-op pool of 1)
// makes one call: one accumulator, written in place unless transposed.
int64_t SmallFilterMaxCalls(const Im2colConv2DParams& p) {
  return std::min(TargetTasks(), CeilDiv(p.batch * p.out_h, SmallFilterUnitRows(p)));
}
// Narrow layers (out_c < 64) compute dW^T [out_c, K]: its rows are output channels, broadcast
// from out_backprop, and its 16-wide vectors run along a kernel row's k_w * C contiguous input
// values (hence C * k_w a multiple of 16, undilated). dW [K, out_c] itself with out_c = 16 gives
// a 6 x 16 tile: 6 FMA chains, each FMA with its own broadcast; the transposed 8 x 48 tile of
// 16 -> 16 3x3 has 24 chains and 3 + 8 loads per 24 FMAs. small_resnet's 16 -> 16 3x3 filter
// gradient at batch 64, one thread, min of 100 calls: 0.53-0.71x TensorFlow untransposed (12 x 16
// tiles: 0.56-0.63x), 0.88-0.90x transposed.
bool SmallFilterTransposed(const Im2colConv2DParams& p) {
  return p.out_c < kMaxV * 16 && p.dilation_w == 1 && p.k_w * p.in_c % 16 == 0;
}
}  // namespace

bool FilterSmallSupported(const Im2colConv2DParams& p) {
  const int64_t dw_bytes = p.k_h * p.k_w * p.in_c * p.out_c * int64_t{sizeof(float)};
  return Supported(p) && dw_bytes <= kMaxSmallFilterBytes;
}

int64_t FilterSmallTaskScratchBytes(const Im2colConv2DParams& p) {
  // The largest padded copy of the unit_rows-row blocks BackpropFilterSmall copies. Not just the
  // first block: one that spans two images copies the second image's first row with all of its
  // k_h taps, so it is larger whenever unit_rows does not divide out_h.
  if (InPlace(p)) return 0;
  const int64_t units = p.batch * p.out_h, rows = SmallFilterUnitRows(p);
  int64_t m = 0;
  for (int64_t u0 = 0; u0 < units; u0 += rows) {
    m = std::max(m, ChunkOf(p, u0, std::min(units, u0 + rows)).bytes);
  }
  return m;
}

int64_t FilterSmallSharedBytes(const Im2colConv2DParams& p) {
  const int64_t extra = SmallFilterMaxCalls(p) - (SmallFilterTransposed(p) ? 0 : 1);
  return extra * p.k_h * p.k_w * p.in_c * p.out_c * int64_t{sizeof(float)};
}

void BackpropFilterSmall(const Im2colConv2DParams& p, const float* input, const float* out_backprop,
                         float* filter_backprop, const ParallelFor& pf) {
  const int64_t C = p.in_c, oc = p.out_c, K = p.k_h * p.k_w * C, row = RowFloats(p);
  const int64_t units = p.batch * p.out_h, unit_rows = SmallFilterUnitRows(p);
  const int64_t blocks = CeilDiv(units, unit_rows), calls = SmallFilterMaxCalls(p);
  const int64_t per_call = CeilDiv(blocks, calls);
  const bool transposed = SmallFilterTransposed(p);
  // Untransposed: row k = (kh * k_w + kw) * C + ci of dW reads the input at koff[k] from an output
  // pixel's first (kh = 0, kw = 0) input value.
  std::vector<int64_t> koff(static_cast<size_t>(K));
  for (int64_t k = 0; k < K; ++k) {
    const int64_t ci = k % C, kw = k / C % p.k_w, kh = k / C / p.k_w;
    koff[k] = kh * p.dilation_h * row + kw * p.dilation_w * C + ci;
  }
  // Transposed: a kernel row's run of L = k_w * C values in vector blocks of (nearly) equal width.
  const int64_t L = p.k_w * C, nv = L / 16;
  const int64_t vb = transposed ? CeilDiv(nv, CeilDiv(nv, kMaxV)) : 0;
  std::atomic<int64_t> next{0};
  std::vector<std::vector<float>> acc(static_cast<size_t>(calls));
  pf(CeilDiv(blocks, per_call), per_call * unit_rows * p.out_w * K * oc * 2,
     [&](int64_t b, int64_t e) {
       const int64_t slot = next.fetch_add(1);
       float* dw = filter_backprop;
       if (slot > 0 || transposed) {
         acc[slot].resize(static_cast<size_t>(K * oc));
         dw = acc[slot].data();
       }
       std::fill_n(dw, K * oc, 0.0f);
       std::vector<float> buf;
       std::vector<const float*> row_of;
       std::vector<int64_t> xoff, woff;
       const float* x[kMaxR];
       for (int64_t u0 = b * per_call * unit_rows; u0 < std::min(units, e * per_call * unit_rows);
            u0 += unit_rows) {
         const Chunk ch = ChunkOf(p, u0, std::min(units, u0 + unit_rows));
         const float* base = RowsOf(p, input, ch, &buf, &row_of, SerialParallelFor());
         // One depth segment per output row: its out_w pixels, stride_w * C apart in the input.
         const int64_t nseg = ch.u1 - ch.u0;
         xoff.resize(static_cast<size_t>(nseg));
         woff.resize(static_cast<size_t>(nseg));
         for (int64_t s = 0; s < nseg; ++s) {
           xoff[s] = row_of[s] - base;
           woff[s] = (ch.u0 + s) * p.out_w * oc;
         }
         if (transposed) {
           // dW^T [oc, K] rows co0..: out_backprop broadcasts, the input run as the vectors.
           for (int64_t kh = 0; kh < p.k_h; ++kh) {
             for (int64_t t0 = 0; t0 < nv; t0 += vb) {
               const int v = static_cast<int>(std::min(vb, nv - t0));
               for (int64_t co0 = 0; co0 < oc; co0 += RowsFor(v)) {
                 const int r = static_cast<int>(std::min<int64_t>(RowsFor(v), oc - co0));
                 for (int j = 0; j < r; ++j) x[j] = out_backprop + co0 + j;
                 TileFor(r, v)(x, woff.data(), xoff.data(), nseg, p.out_w, oc,
                               base + kh * p.dilation_h * row + 16 * t0, p.stride_w * C,
                               dw + co0 * K + kh * L + 16 * t0, K, true, kFullTail);
               }
             }
           }
           continue;
         }
         for (int64_t o0 = 0; o0 < oc; o0 += kMaxV * 16) {
           const ChannelBlock blk = BlockOf(std::min<int64_t>(oc - o0, kMaxV * 16));
           const int v = blk.v;
           for (int64_t k0 = 0; k0 < K; k0 += RowsFor(v)) {
             const int r = static_cast<int>(std::min<int64_t>(RowsFor(v), K - k0));
             for (int j = 0; j < r; ++j) x[j] = base + koff[k0 + j];
             TileFor(r, v)(x, xoff.data(), woff.data(), nseg, p.out_w, p.stride_w * C,
                           out_backprop + o0, oc, dw + k0 * oc + o0, oc, true, blk.tail);
           }
         }
       }
     });
  const int64_t used = next.load();
  if (transposed) {
    pf(K, oc * used, [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) {
        for (int64_t co = 0; co < oc; ++co) {
          float sum = 0.0f;
          for (int64_t s = 0; s < used; ++s) sum += acc[s][co * K + k];
          filter_backprop[k * oc + co] = sum;
        }
      }
    });
  } else if (used > 1) {
    pf(K, oc * used, [&](int64_t b, int64_t e) {
      for (int64_t s = 1; s < used; ++s) {
        const float* a = acc[s].data();
        for (int64_t i = b * oc; i < e * oc; ++i) filter_backprop[i] += a[i];
      }
    });
  }
}

}  // namespace conv_direct
}  // namespace iapdcnn
