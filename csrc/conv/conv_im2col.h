// im2col / col2im of the CPU convolution (conv_cpu.cc) over a channel range and a range of output
// rows, and the layouts they and the GEMM read: the input's strides, output tiles as GEMM
// operands. Header-only templates over the storage type T and the compute type C.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "conv/conv.h"
#include "conv/conv_gemm.h"
#include "conv/conv_impl.h"
#include "conv/conv_plan.h"

namespace iapdcnn {
namespace conv_cpu {

// ---- layouts ----------------------------------------------------------------------------------

struct Strides {
  int64_t n, h, w, c;
};
inline Strides InputStrides(const Im2colConv2DParams& p) {
  if (p.nchw) return {p.in_c * p.in_h * p.in_w, p.in_w, 1, p.in_h * p.in_w};
  return {p.in_h * p.in_w * p.in_c, p.in_w * p.in_c, p.in_c, 1};
}

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
        const int64_t ih = conv_impl::InputCoord(oh, p.stride_h, p.pad_top, kh, p.dilation_h);
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
        const int64_t ih = conv_impl::InputCoord(oh, p.stride_h, p.pad_top, kh, p.dilation_h);
        const int64_t iw = conv_impl::InputCoord(ow, p.stride_w, p.pad_left, kw, p.dilation_w);
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
      const int64_t ih = conv_impl::InputCoord(oh, p.stride_h, p.pad_top, kh, p.dilation_h);
      const int64_t iw = conv_impl::InputCoord(ow, p.stride_w, p.pad_left, kw, p.dilation_w);
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
      const int64_t ih = conv_impl::InputCoord(oh, p.stride_h, p.pad_top, kh, p.dilation_h);
      if (ih < h_lo || ih >= h_hi) continue;
      for (int64_t kw = 0; kw < p.k_w; ++kw) {
        const int64_t iw = conv_impl::InputCoord(ow, p.stride_w, p.pad_left, kw, p.dilation_w);
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

// The im2col matrix of channels [cb, cb + cn), rows [r0, r1), columns [k0, k1) of a pointwise
// convolution, read in place.
template <typename C>
Mat<C> PointwiseCols(const Im2colConv2DParams& p, const C* img, int64_t cb, int64_t r0,
                     int64_t k0) {
  if (p.nchw) return {img + (cb + k0) * Pixels(p) + r0, Pixels(p), true};
  return {img + r0 * p.in_c + cb + k0, p.in_c, false};
}

}  // namespace conv_cpu
}  // namespace iapdcnn
