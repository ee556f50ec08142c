// Tiling plans of the CPU convolution (conv_cpu.cc): how each kernel splits its work into
// ParallelFor tasks, which path it takes, and how many elements each buffer it allocates holds.
// The plan is the one source of buffer sizes: the kernels reserve what their plan says, and
// Im2colConv2DScratchBytesPerTask / Im2colConv2DSharedBytes (conv_plan.cc) add up the same
// fields. Buffer sizes are in elements of the compute type (ComputeBytes each).
#pragma once

#include <cstdint>

#include "conv/conv.h"

namespace iapdcnn {
namespace conv_cpu {

// Bytes of the compute type for a storage type of elem_bytes: double computes in double; float,
// half and bfloat16 in float. Packed: half / bfloat16, converted into float buffers.
constexpr int64_t ComputeBytes(int64_t elem_bytes) { return elem_bytes == 8 ? 8 : 4; }
constexpr bool Packed(int64_t elem_bytes) { return elem_bytes != ComputeBytes(elem_bytes); }

inline int64_t Pixels(const Im2colConv2DParams& p) { return p.out_h * p.out_w; }
inline int64_t OutImageSize(const Im2colConv2DParams& p) { return Pixels(p) * p.out_c; }
// The whole filter, [k_h * k_w * in_c / groups, out_c]: its copy in the compute type (half /
// bfloat16), or the flipped, transposed one of the stride-1 input gradient.
inline int64_t FilterElems(const Im2colConv2DParams& p) {
  return p.k_h * p.k_w * (p.in_c / p.groups) * p.out_c;
}
// Row space of the forward and grad-filter tiles: an image's pixels (NCHW), or the whole batch's
// (NHWC, where output rows are contiguous across images: larger GEMMs on small images).
inline int64_t RowSpace(const Im2colConv2DParams& p) {
  return p.nchw ? Pixels(p) : p.batch * Pixels(p);
}
inline int64_t RowSeqs(const Im2colConv2DParams& p) { return p.nchw ? p.batch : 1; }
// A 1x1, stride-1, unpadded convolution's im2col matrix is the input itself.
inline bool IsPointwise(const Im2colConv2DParams& p) {
  return p.k_h == 1 && p.k_w == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_top == 0 &&
         p.pad_bottom == 0 && p.pad_left == 0 && p.pad_right == 0;
}

// ---- paths --------------------------------------------------------------------------------------

// float32 NHWC forward on AVX-512: conv_direct's micro-kernel (conv_direct::Supported).
bool ForwardDirect(const Im2colConv2DParams& p, int64_t elem_bytes);

enum class FilterPath {
  kDirectPointwise,  // conv_direct::BackpropFilterPointwise (float32)
  kDirectSmall,      // conv_direct::BackpropFilterSmall (float32)
  kGemm,             // im2col + GEMM (BwdFilPlan)
};
FilterPath BackpropFilterPath(const Im2colConv2DParams& p, int64_t elem_bytes);

// Stride-1 gradient with respect to the input as a forward convolution (spec §2b, the adjoint of
// a stride-1 convolution is a convolution): dI = conv(dO, W') with W' the spatially flipped,
// in/out-transposed filter and padding k_eff - 1 - pad on each side. It uses the forward's
// GEMM (depth k_h * k_w * out_c instead of out_c) and writes dI directly: no col2im scatter of
// k_h * k_w values per pixel, no recomputed band overlaps. Fills q, the forward problem; false
// (keep GEMM + col2im) for strides > 1, a padding wider than the dilated kernel reach, or
// out_c / groups > kMaxTransposedDepth.
constexpr int64_t kMaxTransposedDepth = 128;  // largest out_c / groups for TransposedForward
bool TransposedForward(const Im2colConv2DParams& p, Im2colConv2DParams* q);

// ---- plans --------------------------------------------------------------------------------------

// Forward by im2col + GEMM: tasks are (row sequence, group, row tile, output-channel block).
struct FwdPlan {
  int64_t tile_rows = 0, tiles = 0, oc_block = 0, oc_blocks = 0;
  int64_t col_elems = 0;       // per task: the im2col tile (0: pointwise, read in place)
  int64_t out_tile_elems = 0;  // per task: the float output tile (half / bfloat16)
  int64_t TaskElems() const { return col_elems + out_tile_elems; }
};
FwdPlan PlanForward(const Im2colConv2DParams& p, int64_t elem_bytes);

// Stride-1, undilated NHWC forward without an im2col copy. The input rows of a band, zero-padded
// to width Wp = out_w + k_w - 1, are copied once; then for each kernel row kh the im2col matrix
// of the band's "virtual" output pixels r = oh * Wp + ow is a strided view of that copy (row r
// starts C values after row r - 1 and spans k_w * C: rows overlap), so the forward is k_h
// accumulated GEMMs of depth k_w * C reading the copy in place. Pixels with ow >= out_w are
// computed and dropped (k_w - 1 of every Wp). Saves the k_h * k_w * C-per-pixel im2col pass.
// Not for half / bfloat16 (ok is false).
struct RowViewPlan {
  bool ok = false;
  int64_t band_h = 0, bands = 0, wp = 0;
  int64_t pad_elems = 0;   // per task: the band's padded input rows
  int64_t tile_elems = 0;  // per task: the band's virtual output pixels
  int64_t TaskElems() const { return pad_elems + tile_elems; }
};
RowViewPlan PlanRowView(const Im2colConv2DParams& p, int64_t elem_bytes);

// Input gradient by GEMM + col2im: tasks are (image, group, input-row band, channel block).
struct BwdInPlan {
  int64_t bands = 0, band_h = 0, ch_block = 0, ch_blocks = 0, tile_rows = 0;
  int64_t col_elems = 0;       // per task: the GEMM's column tile, col2im's input
  int64_t wsub_elems = 0;      // per task: the channel block's filter rows (several blocks)
  int64_t out_tile_elems = 0;  // per task: the float output-gradient tile (half / bfloat16)
  int64_t band_elems = 0;      // per task: the float input-gradient band (half / bfloat16)
  int64_t TaskElems() const { return col_elems + wsub_elems + out_tile_elems + band_elems; }
};
BwdInPlan PlanBackpropInput(const Im2colConv2DParams& p, int64_t elem_bytes);

// Filter gradient by im2col + GEMM: tasks are (group, im2col column block, shard of the
// (row sequence, tile) sequence).
struct BwdFilPlan {
  int64_t k_block = 0, k_blocks = 0, shards = 0, tile_rows = 0, tiles_per_image = 0;
  int64_t col_elems = 0;       // per task: the im2col tile (0: pointwise, read in place)
  int64_t out_tile_elems = 0;  // per task: the float output-gradient tile (half / bfloat16)
  int64_t acc_elems = 0;       // per call: the shards' dW accumulators (0: dW itself)
  int64_t TaskElems() const { return col_elems + out_tile_elems; }
};
BwdFilPlan PlanBackpropFilter(const Im2colConv2DParams& p, int64_t elem_bytes);

}  // namespace conv_cpu
}  // namespace iapdcnn
