// The CPU convolution's plans (conv_plan.h) and its scratch sizes, read from the same plans.
#include "conv/conv_plan.h"

#include <algorithm>

#include "conv/conv_direct.h"
#include "conv/conv_impl.h"

namespace iapdcnn {
namespace conv_cpu {

namespace {

constexpr int64_t kColBudgetBytes = 4 << 20;  // one im2col tile: bounded per task
constexpr int64_t kMinTileRows = 32;          // below this GEMM efficiency drops
constexpr int64_t kMinSplitRows = 128;        // fewer rows per task: split output channels first
constexpr int64_t kMinFilterTileRows = 256;   // grad-filter: fewer rows per tile, no split
constexpr int64_t kMinOcBlock = 64;           // narrowest output-channel block of that split

// GEMM tiles per hardware thread: enough to balance the pool, few enough to keep GEMMs large.
constexpr int64_t kTasksPerThread = 2;
int64_t TargetTasks() { return iapdcnn::TargetTasks(kTasksPerThread); }

constexpr int64_t kRowViewTargetRows = 2048;  // GEMM rows per band (Eigen's sweet spot here)
constexpr int64_t kRowViewMinRows = 192;      // fewer: every band repacks the filter for GEMM

}  // namespace

bool ForwardDirect(const Im2colConv2DParams& p, int64_t elem_bytes) {
  return elem_bytes == 4 && conv_direct::Supported(p);
}

FilterPath BackpropFilterPath(const Im2colConv2DParams& p, int64_t elem_bytes) {
  if (elem_bytes == 4 && conv_direct::FilterSupported(p)) return FilterPath::kDirectPointwise;
  if (elem_bytes == 4 && conv_direct::FilterSmallSupported(p)) return FilterPath::kDirectSmall;
  return FilterPath::kGemm;
}

bool TransposedForward(const Im2colConv2DParams& p, Im2colConv2DParams* q) {
  if (p.stride_h != 1 || p.stride_w != 1 || p.out_h <= 0 || p.out_w <= 0) return false;
  // GEMM + col2im scatters k_h * k_w * cn values per pixel for 2 * og * k_h * k_w * cn flops:
  // costly only when og is small. With og >= 256 (ResNet-50's c4/c5) GEMM + col2im measured
  // faster here (c5 3x3 batch 1: 1.3x vs 0.7x TF), as it needs no transposed filter copy.
  if (p.out_c / p.groups > kMaxTransposedDepth) return false;
  const int64_t rh = conv_impl::EffectiveKernel(p.k_h, p.dilation_h) - 1;
  const int64_t rw = conv_impl::EffectiveKernel(p.k_w, p.dilation_w) - 1;
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

FwdPlan PlanForward(const Im2colConv2DParams& p, int64_t elem_bytes) {
  const int64_t cbytes = ComputeBytes(elem_bytes);
  const bool packed = Packed(elem_bytes);
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
  f.col_elems = IsPointwise(p) && !packed ? 0 : f.tile_rows * K;
  f.out_tile_elems = packed ? f.tile_rows * f.oc_block : 0;
  return f;
}

BwdInPlan PlanBackpropInput(const Im2colConv2DParams& p, int64_t elem_bytes) {
  const int64_t cbytes = ComputeBytes(elem_bytes);
  const bool packed = Packed(elem_bytes);
  const int64_t cg = p.in_c / p.groups;
  const int64_t images = std::max<int64_t>(1, p.batch * p.groups);
  BwdInPlan b;
  // Threads own disjoint input-row bands, so col2im needs no atomics; a band recomputes the
  // output rows it shares with its neighbour, so bands stay >= 2 dilated kernels tall.
  const int64_t kh_eff = conv_impl::EffectiveKernel(p.k_h, p.dilation_h);
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
  const int64_t taps = p.k_h * p.k_w, og = p.out_c / p.groups;
  b.col_elems = b.tile_rows * taps * b.ch_block;
  b.wsub_elems = b.ch_blocks > 1 ? taps * b.ch_block * og : 0;
  b.out_tile_elems = packed ? b.tile_rows * og : 0;
  b.band_elems = packed ? b.band_h * p.in_w * b.ch_block : 0;
  return b;
}

BwdFilPlan PlanBackpropFilter(const Im2colConv2DParams& p, int64_t elem_bytes) {
  const int64_t cbytes = ComputeBytes(elem_bytes);
  const bool packed = Packed(elem_bytes);
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
  const int64_t og = p.out_c / p.groups;
  f.col_elems = IsPointwise(p) && !packed ? 0 : f.tile_rows * f.k_block;
  f.out_tile_elems = packed ? f.tile_rows * og : 0;
  f.acc_elems = f.shards > 1 || packed ? f.shards * K * p.out_c : 0;
  return f;
}

RowViewPlan PlanRowView(const Im2colConv2DParams& p, int64_t elem_bytes) {
  const int64_t cbytes = ComputeBytes(elem_bytes);
  RowViewPlan v;
  if (Packed(elem_bytes) || p.nchw || p.groups != 1 || p.stride_h != 1 || p.stride_w != 1 ||
      p.dilation_h != 1 || p.dilation_w != 1 || p.k_w < 2 || p.out_h <= 0 || p.out_w <= 0 ||
      p.batch <= 0) {
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
  v.pad_elems = (bh + p.k_h - 1) * v.wp * p.in_c;
  v.tile_elems = bh * v.wp * p.out_c;
  v.ok = true;
  return v;
}

namespace {
// The forward's per-task scratch for p (also run as the stride-1 gradient w.r.t. the input).
int64_t ForwardTaskBytes(const Im2colConv2DParams& p, int64_t elem_bytes) {
  if (ForwardDirect(p, elem_bytes)) return conv_direct::TaskScratchBytes(p);
  const RowViewPlan v = PlanRowView(p, elem_bytes);
  if (v.ok) return v.TaskElems() * ComputeBytes(elem_bytes);
  return PlanForward(p, elem_bytes).TaskElems() * ComputeBytes(elem_bytes);
}
int64_t ForwardSharedBytes(const Im2colConv2DParams& p, int64_t elem_bytes) {
  return ForwardDirect(p, elem_bytes) ? conv_direct::SharedScratchBytes(p) : 0;
}
}  // namespace

}  // namespace conv_cpu

int64_t Im2colConv2DScratchBytesPerTask(const Im2colConv2DParams& p, int64_t elem_bytes) {
  using namespace conv_cpu;
  const int64_t cb = ComputeBytes(elem_bytes);
  const int64_t fwd = ForwardTaskBytes(p, elem_bytes);
  Im2colConv2DParams q;
  const int64_t bin = TransposedForward(p, &q) ? ForwardTaskBytes(q, elem_bytes)
                                               : PlanBackpropInput(p, elem_bytes).TaskElems() * cb;
  int64_t bfil = 0;
  switch (BackpropFilterPath(p, elem_bytes)) {
    case FilterPath::kDirectPointwise:
      bfil = conv_direct::FilterTaskScratchBytes(p);
      break;
    case FilterPath::kDirectSmall:
      bfil = conv_direct::FilterSmallTaskScratchBytes(p);
      break;
    case FilterPath::kGemm:
      bfil = PlanBackpropFilter(p, elem_bytes).TaskElems() * cb;
      break;
  }
  return std::max({fwd, bin, bfil});
}

int64_t Im2colConv2DSharedBytes(const Im2colConv2DParams& p, int64_t elem_bytes) {
  using namespace conv_cpu;
  const int64_t cb = ComputeBytes(elem_bytes);
  int64_t shared = 0;  // the filter gradient's accumulators
  switch (BackpropFilterPath(p, elem_bytes)) {
    case FilterPath::kDirectPointwise:
      shared = conv_direct::FilterSharedBytes(p);
      break;
    case FilterPath::kDirectSmall:
      shared = conv_direct::FilterSmallSharedBytes(p);
      break;
    case FilterPath::kGemm:
      shared = PlanBackpropFilter(p, elem_bytes).acc_elems * cb;
      break;
  }
  shared = std::max(shared, ForwardSharedBytes(p, elem_bytes));
  // The filter in the compute type: flipped and transposed for the stride-1 input gradient, or
  // converted (half / bfloat16) for the forward and the GEMM + col2im input gradient.
  Im2colConv2DParams q;
  if (TransposedForward(p, &q)) {
    shared = std::max(shared, FilterElems(p) * cb + ForwardSharedBytes(q, elem_bytes));
  } else if (Packed(elem_bytes)) {
    shared = std::max(shared, FilterElems(p) * cb);
  }
  return shared;
}

}  // namespace iapdcnn
