// CPU Im2col + GEMM convolution (spec §2b). The paper's "map" is a tile of output pixels (forward,
// grad-input) or a block of im2col columns (grad-filter) handed to one task of the ParallelFor;
// each task packs its tile with im2col into a bounded buffer and multiplies it with Eigen's GEMM.
// The float32 NHWC forward (and pointwise filter gradient) on AVX-512 CPUs is conv_direct_cpu.cc's
// micro-kernel instead.
//
// The pieces: conv_gemm.h (the GEMM), conv_im2col.h (im2col / col2im and the layouts),
// conv_plan.{h,cc} (the tiling plans, which path runs, every buffer's size, the scratch sizes),
// conv.cc (the argument rules). This file holds the kernels that put them together.
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "common/finite.h"
#include "common/guard.h"
#include "conv/conv.h"
#include "conv/conv_direct.h"
#include "conv/conv_gemm.h"
#include "conv/conv_im2col.h"
#include "conv/conv_plan.h"

namespace iapdcnn {

namespace {

using namespace conv_cpu;  // NOLINT(build/namespaces): this file is conv_cpu's kernels

template <typename T, typename C>
std::vector<C> ToCompute(const T* x, int64_t n, const ParallelFor& pf) {
  std::vector<C> out(static_cast<size_t>(n));
  pf(n, 2, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) out[i] = static_cast<C>(x[i]);
  });
  return out;
}

// W' [k_h, k_w, out_c / groups, in_c] of TransposedForward, in the compute type:
// W'[kh, kw, o, g * cg + c] = W[k_h - 1 - kh, k_w - 1 - kw, c, g * og + o].
template <typename T, typename C>
std::vector<C> FlippedTransposedFilter(const Im2colConv2DParams& p, const T* w,
                                       const ParallelFor& pf) {
  const int64_t cg = p.in_c / p.groups, og = p.out_c / p.groups, taps = p.k_h * p.k_w;
  std::vector<C> out(static_cast<size_t>(FilterElems(p)));
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

// ---- forward ------------------------------------------------------------------------------------

// The forward of PlanRowView (see there); C is the element type of input, filter and output.
template <typename C>
void RowViewForward(const Im2colConv2DParams& p, const RowViewPlan& v, const C* input, const C* w,
                    C* output, const ParallelFor& pf) {
  const int64_t ci = p.in_c, oc = p.out_c, kwc = p.k_w * ci, wp = v.wp;
  pf(p.batch * v.bands, v.band_h * wp * p.k_h * kwc * oc / 4 + 1, [&](int64_t b, int64_t e) {
    std::vector<C> pad, tile;
    pad.reserve(static_cast<size_t>(v.pad_elems));
    tile.reserve(static_cast<size_t>(v.tile_elems));
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
    if (ForwardDirect(p, sizeof(T))) return conv_direct::Forward(p, input, w, output, pf);
  }
  if constexpr (!kPacked) {
    const RowViewPlan v = PlanRowView(p, sizeof(T));
    if (v.ok) return RowViewForward<C>(p, v, input, w, output, pf);
  }
  const FwdPlan f = PlanForward(p, sizeof(T));
  const int64_t RS = RowSpace(p);
  const int64_t tasks = RowSeqs(p) * p.groups * f.tiles * f.oc_blocks;
  pf(tasks, f.tile_rows * K * f.oc_block / 4 + 1, [&](int64_t begin, int64_t end) {
    std::vector<C> col, otile;
    col.reserve(static_cast<size_t>(f.col_elems));
    otile.reserve(static_cast<size_t>(f.out_tile_elems));
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
      const std::vector<C> w = ToCompute<T, C>(filters, FilterElems(p), pf);
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
      // NaN policy: the transposed forward multiplies dy's zero padding by every weight, so a
      // NaN / Inf weight would reach input pixels none of whose summands holds it (tf.nn and the
      // reference leave them finite); col2im below sums only the real products.
      if (AllFinite(wt.data(), static_cast<int64_t>(wt.size()))) {
        ForwardCore<T, C>(q, out_backprop, wt.data(), in_backprop, pf);
        return Status::OK();
      }
    }
    const int64_t P = Pixels(p);
    const int64_t cg = p.in_c / p.groups, og = p.out_c / p.groups;
    const int64_t taps = p.k_h * p.k_w;
    const Strides is = InputStrides(p);
    std::vector<C> wbuf;
    const C* w = nullptr;
    if constexpr (kPacked) {
      wbuf = ToCompute<T, C>(filters, FilterElems(p), pf);
      w = wbuf.data();
    } else {
      w = filters;
    }
    const BwdInPlan b = PlanBackpropInput(p, sizeof(T));
    const int64_t tasks = p.batch * p.groups * b.bands * b.ch_blocks;
    const int64_t rows_per_band =
        std::min(P, (CeilDiv(b.band_h, p.stride_h) + p.k_h * p.dilation_h) * p.out_w);
    pf(tasks, rows_per_band * taps * b.ch_block * og / 4 + 1, [&](int64_t begin, int64_t end) {
      std::vector<C> dcol, wsub, dotile, band;
      dcol.reserve(static_cast<size_t>(b.col_elems));
      wsub.reserve(static_cast<size_t>(b.wsub_elems));
      dotile.reserve(static_cast<size_t>(b.out_tile_elems));
      band.reserve(static_cast<size_t>(b.band_elems));
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
      switch (BackpropFilterPath(p, sizeof(T))) {
        case FilterPath::kDirectPointwise:
          conv_direct::BackpropFilterPointwise(p, input, out_backprop, filter_backprop, pf);
          return Status::OK();
        case FilterPath::kDirectSmall:
          conv_direct::BackpropFilterSmall(p, input, out_backprop, filter_backprop, pf);
          return Status::OK();
        case FilterPath::kGemm:
          break;
      }
    }
    const int64_t cg = p.in_c / p.groups, og = p.out_c / p.groups;
    const int64_t K = p.k_h * p.k_w * cg;
    const Strides is = InputStrides(p);
    const bool pointwise = IsPointwise(p) && !kPacked;
    const BwdFilPlan f = PlanBackpropFilter(p, sizeof(T));
    const int64_t RS = RowSpace(p);
    // Accumulators: dW itself, or one float/double [K, out_c] per shard.
    const bool direct = !kPacked && f.shards == 1;
    std::vector<C> acc(direct ? 0 : static_cast<size_t>(f.acc_elems));
    const int64_t work = RowSeqs(p) * f.tiles_per_image;
    const int64_t per_shard = CeilDiv(std::max<int64_t>(1, work), f.shards);
    const int64_t tasks = p.groups * f.k_blocks * f.shards;
    pf(tasks, std::max<int64_t>(1, per_shard * f.tile_rows) * f.k_block * og / 4 + 1,
       [&](int64_t begin, int64_t end) {
         std::vector<C> col, dotile;
         col.reserve(static_cast<size_t>(f.col_elems));
         dotile.reserve(static_cast<size_t>(f.out_tile_elems));
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
