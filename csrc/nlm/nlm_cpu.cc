// CPU cosine NLM (spec §1a). Work units are (image, channel, row strip): a whole plane per unit for
// batches, row strips when there are fewer planes than threads want. Per unit and per search
// offset d, one row-streaming pass computes the patch dot products <P_a, P_{a+d}> as a box filter
// of the product image g(.) g(. + d): vertical running sums of the products (O(1) per pixel,
// vectorised across columns, in L1), then the horizontal box, cos, the weight and both
// accumulations fused per row, so nothing of size H x W is written per offset.
// Weights are symmetric, so half the offsets are visited. Sums are in the image's dtype: float
// for float images, with |<P_a, P_b>| clamped to |P_a| |P_b| (Cauchy-Schwarz) so rounding can
// neither push |cos| past 1 nor leave a non-zero dot product on an all-zero patch (its norm is
// computed directly, hence exactly 0, and the clamp forces the dot product to exactly 0 as well);
// running sums restart every kRestartRows rows, which bounds their drift. Hot loops are compiled
// for AVX-512, AVX2 and baseline x86-64 (target_clones picks one at load time).
#if defined(__GNUC__) && !defined(__clang__)
// Float compares may then be if-converted, so the clamps in FastExp do not stop the weight loop
// from vectorising (the kernel raises no FP exceptions anyone observes).
#pragma GCC optimize("no-trapping-math")
#endif

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "common/checked.h"
#include "common/guard.h"
#include "common/reflect.h"
#include "nlm/nlm.h"
#include "nlm/nlm_impl.h"

#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__)
#define IAPDCNN_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define IAPDCNN_NLM_AVX512 1
#include <immintrin.h>
#else
#define IAPDCNN_CLONES
#endif
#define IAPDCNN_ALWAYS_INLINE inline __attribute__((always_inline))
// Lambdas are not inlined into the target_clones otherwise (a call per row and offset).
#define IAPDCNN_ALWAYS_INLINE_LAMBDA __attribute__((always_inline))

namespace iapdcnn {

namespace {

constexpr int64_t kDirectTapsMaxRadius = 3;      // horizontal box: direct taps up to 7 wide
constexpr int64_t kRestartRows = 32;             // running sums are recomputed directly this often
constexpr int64_t kMinStripRows = kRestartRows;  // strips: multiples of this, so below it the
                                                 // d-overlap rows would cost too much
constexpr int64_t kUnitsWanted = 16;
constexpr int kGroup = 4;  // offsets (same dy) whose num/den updates are summed in registers //
                           // split planes into strips until there are this many

// Everything one unit needs, sized once per task and reused across the units it handles.
template <typename T>
struct Scratch {
  std::vector<T> ext;         // reflect-padded plane, pad r + s
  std::vector<T> sq;          // vertical box sums of squares of one row (norm pass)
  std::vector<T> norm;        // |P_a| over rows [r0 - s, r1 + s), cols [-s, W + s)
  std::vector<T> v;           // vertical sums of the product image, cols [c0 - r, c1 + r)
  std::vector<T> pre;         // prefix sums of v (r > kDirectTapsMaxRadius)
  std::vector<T> w;           // weights of one row
  std::vector<T> num, den;    // sum_b w g(b) and sum_b w over the strip
  std::vector<int64_t> cols;  // reflected source column offsets
};

using nlm_impl::CosineOf;  // the weight's rules, shared with nlm_cuda.cu
using nlm_impl::WeightOf;
using nlm_impl::WeightScale;

// One row of weights w(a, a + d) for n pixels a: the horizontal box of width 2r+1 over v (the
// vertical sums, starting r columns left of the first a), then spec §1a's
// cos = <P_a, P_b> / (|P_a| |P_b| + eps) and w = exp(-(1 - cos) / h). kR >= 0: r = kR, direct
// taps; kR < 0: any r, prefix-sum difference.
template <typename T, int kR>
IAPDCNN_ALWAYS_INLINE void WeightRow(const T* __restrict v, const T* __restrict na,
                                     const T* __restrict nb, T* __restrict w, T* __restrict pre,
                                     int64_t n, int64_t r, T scale, T eps) {
  if constexpr (kR < 0) {
    pre[0] = T(0);
    for (int64_t j = 0; j < n + 2 * r; ++j) pre[j + 1] = pre[j] + v[j];
  }
  for (int64_t j = 0; j < n; ++j) {
    T dot;
    if constexpr (kR >= 0) {
      dot = v[j];
      for (int l = 1; l <= 2 * kR; ++l) dot += v[j + l];
    } else {
      dot = pre[j + 2 * r + 1] - pre[j];
    }
    w[j] = WeightOf(CosineOf(dot, na[j] * nb[j], eps), scale);
  }
}

#if IAPDCNN_NLM_AVX512
// WeightRow<float, kR> with AVX-512 intrinsics, the hot loop of the kernel. The same arithmetic
// (FastExp2's steps, the same clamps with NaNs passed through as there; bit-identical weights for
// the same cos), except the division dot / (q + eps): vdivps has a low throughput, so the
// quotient is rcp14's estimate y of 1 / (q + eps) (relative error < 2^-14) times dot, corrected
// once by the residual: c = c0 + y (dot - (q + eps) c0), relative error ~2^-28 before rounding,
// i.e. within about one ulp of the exact float quotient. Requires q + eps to be a normal float (eps
// >= FLT_MIN), which the caller checks. Not inlined: it is called from every clone, once per row.
// GCC 12's AVX-512 headers trip -Wmaybe-uninitialized (their _mm512_undefined_* placeholders).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
template <int kR, bool kClampT>
__attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma"), noinline)) void
WeightRowAvx512(const float* __restrict v, const float* __restrict na, const float* __restrict nb,
                float* __restrict w, int64_t n, float scale, float eps) {
  const __m512 vscale = _mm512_set1_ps(scale), veps = _mm512_set1_ps(eps);
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = n - j >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - j)) - 1);
    __m512 dot = _mm512_maskz_loadu_ps(m, v + j);
    for (int l = 1; l <= 2 * kR; ++l) dot = _mm512_add_ps(dot, _mm512_maskz_loadu_ps(m, v + j + l));
    const __m512 q =
        _mm512_mul_ps(_mm512_maskz_loadu_ps(m, na + j), _mm512_maskz_loadu_ps(m, nb + j));
    // Cauchy-Schwarz clamp to [-q, q] in one vrangeps (imm 0b0010: the smaller magnitude of dot
    // and q >= 0, with dot's sign): the same value as min/max, and a NaN dot stays NaN.
    dot = _mm512_range_ps(dot, q, 0x2);
    const __m512 d = _mm512_add_ps(q, veps);
    const __m512 y = _mm512_rcp14_ps(d);
    const __m512 c0 = _mm512_mul_ps(dot, y);
    const __m512 cos = _mm512_fmadd_ps(_mm512_fnmadd_ps(d, c0, dot), y, c0);
    // FastExp2((cos - 1) * scale) as in nlm_impl.h; n = round-to-nearest-even(t), as the 1.5 * 2^23
    // trick there, and 2^n p by vscalefps, exact here as p 2^n is a normal float.
    __m512 t = _mm512_mul_ps(_mm512_sub_ps(cos, one), vscale);
    // |cos| <= 1 (up to an ulp), so t lies in [-2 scale, 0]: the clamp to [-125, 126] is a
    // no-op unless scale (that is, 1 / h) is large, and is then skipped (identical results).
    if constexpr (kClampT) {
      t = _mm512_min_ps(_mm512_set1_ps(126.0f), _mm512_max_ps(_mm512_set1_ps(-125.0f), t));
    }
    const __m512 nf = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 f = _mm512_sub_ps(t, nf);
    __m512 p = _mm512_set1_ps(1.3400433e-3f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.6760373e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5503272e-2f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022107e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9314718e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0000001f));
    _mm512_mask_storeu_ps(w + j, m, _mm512_scalef_ps(p, nf));
  }
}
#pragma GCC diagnostic pop

// Whether WeightRowAvx512 may run: the CPU has it, and eps keeps q + eps a normal float.
bool UseAvx512(float eps) {
  static const bool cpu = __builtin_cpu_supports("x86-64-v4");
  return cpu && eps >= FLT_MIN;
}
#endif

// num[j] += sum_q w_q[j] g_q[j], den[j] += sum_q w_q[j] over G offsets in registers.
template <typename T, int G>
IAPDCNN_ALWAYS_INLINE void Accumulate(const T* const* w, const T* const* g, T* __restrict nu,
                                      T* __restrict de, int64_t n) {
  const T* __restrict w0 = w[0];
  const T* __restrict g0 = g[0];
  const T* __restrict w1 = w[G > 1 ? 1 : 0];
  const T* __restrict g1 = g[G > 1 ? 1 : 0];
  const T* __restrict w2 = w[G > 2 ? 2 : 0];
  const T* __restrict g2 = g[G > 2 ? 2 : 0];
  const T* __restrict w3 = w[G > 3 ? 3 : 0];
  const T* __restrict g3 = g[G > 3 ? 3 : 0];
  for (int64_t j = 0; j < n; ++j) {
    T sn = w0[j] * g0[j], sd = w0[j];
    if constexpr (G > 1) sn += w1[j] * g1[j], sd += w1[j];
    if constexpr (G > 2) sn += w2[j] * g2[j], sd += w2[j];
    if constexpr (G > 3) sn += w3[j] * g3[j], sd += w3[j];
    nu[j] += sn;
    de[j] += sd;
  }
}

template <typename T>
IAPDCNN_ALWAYS_INLINE void AccumulateGroup(int G, const T* const* w, const T* const* g, T* nu,
                                           T* de, int64_t n) {
  switch (G) {
    case 1:
      return Accumulate<T, 1>(w, g, nu, de, n);
    case 2:
      return Accumulate<T, 2>(w, g, nu, de, n);
    case 3:
      return Accumulate<T, 3>(w, g, nu, de, n);
    default:
      return Accumulate<T, 4>(w, g, nu, de, n);
  }
}
static_assert(kGroup == 4, "AccumulateGroup has cases for 1..4 offsets");

// num/den over output rows [r0, r1) of one plane (s->ext and s->norm filled by Prepare).
// w(a, b) = w(b, a), so only half the offsets are visited (fast NLM's symmetry): for an offset
// d > 0 the weight w(a, a + d) feeds pixel a (candidate a + d) and pixel a + d (candidate a).
// a runs over rows [r0 - dy, r1) and the columns where a or a + d lies in the image.
template <typename T, int kR>
IAPDCNN_ALWAYS_INLINE void StripImpl(const CosineNlmParams& p, Scratch<T>* s, int64_t r0,
                                     int64_t r1) {
  const int64_t H = p.height, W = p.width, r = p.patch_radius, sr = p.search_radius;
  (void)H;
  const int64_t R = r + sr, EW = W + 2 * R, NW = W + 2 * sr;
  const T* __restrict ext = s->ext.data();
  const T* __restrict norm = s->norm.data();
  T* __restrict num = s->num.data();
  T* __restrict den = s->den.data();
  const T scale = WeightScale<T>(p.h);
  const T eps = static_cast<T>(p.eps);
#if IAPDCNN_NLM_AVX512
  const bool avx512 = std::is_same_v<T, float> && UseAvx512(static_cast<float>(eps));
  (void)avx512;  // unused for double
  // t = (cos - 1) scale >= -2 scale - ulps never needs FastExp2's clamp at -125 when scale <= 62.
  const bool clamp_t = scale > T(62);
  (void)clamp_t;
#endif
  auto E = [&](int64_t i, int64_t j)
               IAPDCNN_ALWAYS_INLINE_LAMBDA { return ext + (i + R) * EW + (j + R); };  // ext(i, j)
  auto N = [&](int64_t i, int64_t j) IAPDCNN_ALWAYS_INLINE_LAMBDA {  // |P_(i,j)|, rows from r0 - s
    return norm + (i - r0 + sr) * NW + (j + sr);
  };
  // d = 0: the self weight, cos(a, a) = |P_a|^2 / (|P_a|^2 + eps).
  for (int64_t i = r0; i < r1; ++i) {
    const T* __restrict na = N(i, 0);
    const T* __restrict g = E(i, 0);
    T* __restrict nu = num + (i - r0) * W;
    T* __restrict de = den + (i - r0) * W;
    for (int64_t j = 0; j < W; ++j) {
      const T n2 = na[j] * na[j];
      const T w = WeightOf(n2 / (n2 + eps), scale);
      nu[j] = w * g[j];
      de[j] = w;
    }
  }
  const int64_t VS = W + 2 * sr + 2 * r, WS = W + 2 * sr;  // per-offset strides of v and w
  for (int64_t dy = 0; dy <= sr; ++dy) {
    // d > 0 in row-major order (its mirror -d is covered by symmetry): dx in [dx_lo, s].
    const int64_t dx_lo = dy == 0 ? 1 : -sr;
    for (int64_t g0 = dx_lo; g0 <= sr; g0 += kGroup) {
      const int G = static_cast<int>(std::min<int64_t>(kGroup, sr + 1 - g0));
      const int64_t i0 = r0 - dy;
      for (int64_t i = i0; i < r1; ++i) {
        // Restarts sit on a grid of b rows (i + dy) that strip starts also lie on, so a plane
        // gives bit-identical results whether or not it is cut into strips.
        const bool restart = i == i0 || (i + dy) % kRestartRows == 0;
        const T* wa[kGroup] = {};  // w_q(a, a + d_q) at image col j of pixel a
        const T* ga[kGroup] = {};  // g(a + d_q)
        const T* wb[kGroup] = {};  // the same weights at image col j' of pixel a + d_q
        const T* gb[kGroup] = {};  // g(a) for that pixel
        for (int q = 0; q < G; ++q) {
          const int64_t dx = g0 + q;
          // a runs over the columns [c0, c1) where a or a + d lies in the image.
          const int64_t c0 = std::min<int64_t>(0, -dx), c1 = std::max<int64_t>(W, W - dx);
          const int64_t cw = c1 - c0, vw = cw + 2 * r;
          T* __restrict v = s->v.data() + q * VS;
          T* w = s->w.data() + q * WS + sr;  // w[j] for a at image col j, j in [-s, W + s)
          if (restart) {                     // (re)start the vertical sums directly
            for (int64_t j = 0; j < vw; ++j) v[j] = T(0);
            for (int64_t k = -r; k <= r; ++k) {
              const T* __restrict a = E(i + k, c0 - r);
              const T* __restrict b = E(i + k + dy, c0 - r + dx);
              for (int64_t j = 0; j < vw; ++j) v[j] += a[j] * b[j];
            }
          } else {  // slide the vertical window down one row: O(1) per pixel in r
            const T* __restrict a_in = E(i + r, c0 - r);
            const T* __restrict b_in = E(i + r + dy, c0 - r + dx);
            const T* __restrict a_out = E(i - r - 1, c0 - r);
            const T* __restrict b_out = E(i - r - 1 + dy, c0 - r + dx);
            for (int64_t j = 0; j < vw; ++j) v[j] += a_in[j] * b_in[j] - a_out[j] * b_out[j];
          }
          bool row_done = false;
#if IAPDCNN_NLM_AVX512
          if constexpr (std::is_same_v<T, float> && kR >= 0) {
            if (avx512) {
              auto* row = clamp_t ? WeightRowAvx512<kR, true> : WeightRowAvx512<kR, false>;
              row(v, N(i, c0), N(i + dy, c0 + dx), w + c0, cw, scale, eps);
              row_done = true;
            }
          }
#endif
          if (!row_done) {
            WeightRow<T, kR>(v, N(i, c0), N(i + dy, c0 + dx), w + c0, s->pre.data(), cw, r, scale,
                             eps);
          }
          wa[q] = w;
          ga[q] = E(i + dy, dx);
          wb[q] = w - dx;
          gb[q] = E(i, -dx);
        }
        // One read-modify-write of num/den per row for the whole group of offsets.
        if (i >= r0) AccumulateGroup<T>(G, wa, ga, num + (i - r0) * W, den + (i - r0) * W, W);
        if (i + dy < r1) {
          AccumulateGroup<T>(G, wb, gb, num + (i + dy - r0) * W, den + (i + dy - r0) * W, W);
        }
      }
    }
  }
}

template <typename T>
IAPDCNN_ALWAYS_INLINE void StripDispatch(const CosineNlmParams& p, Scratch<T>* s, int64_t r0,
                                         int64_t r1) {
  switch (p.patch_radius) {
    case 0:
      return StripImpl<T, 0>(p, s, r0, r1);
    case 1:
      return StripImpl<T, 1>(p, s, r0, r1);
    case 2:
      return StripImpl<T, 2>(p, s, r0, r1);
    case 3:
      return StripImpl<T, 3>(p, s, r0, r1);
    default:
      return StripImpl<T, -1>(p, s, r0, r1);
  }
}
static_assert(kDirectTapsMaxRadius == 3, "StripDispatch has cases for r = 0..3");

IAPDCNN_CLONES void StripFloat(const CosineNlmParams& p, Scratch<float>* s, int64_t r0,
                               int64_t r1) {
  StripDispatch<float>(p, s, r0, r1);
}
IAPDCNN_CLONES void StripDouble(const CosineNlmParams& p, Scratch<double>* s, int64_t r0,
                                int64_t r1) {
  StripDispatch<double>(p, s, r0, r1);
}

// Fills s->ext (reflect pad r + s) from plane (n, c) of x and s->norm (patch norms for the rows
// strip [r0, r1) needs), and sizes the row buffers. The norms are direct sums of squares (no
// running sums), so an all-zero patch has norm exactly 0.
template <typename T>
void Prepare(const CosineNlmParams& p, const T* x, int64_t n, int64_t c, int64_t r0, int64_t r1,
             Scratch<T>* s) {
  const int64_t H = p.height, W = p.width, C = p.channels, r = p.patch_radius;
  const int64_t sr = p.search_radius, R = r + sr, EH = H + 2 * R, EW = W + 2 * R;
  const int64_t NH = r1 - r0 + 2 * sr, NW = W + 2 * sr;
  s->ext.resize(EH * EW);
  s->sq.resize(EW);
  s->norm.resize(NH * NW);
  s->v.resize(kGroup * (W + 2 * sr + 2 * r));
  s->w.resize(kGroup * (W + 2 * sr));
  s->pre.resize(W + 2 * sr + 2 * r + 1);
  s->num.resize((r1 - r0) * W);
  s->den.resize((r1 - r0) * W);
  const T* plane = x + n * H * W * C + c;
  s->cols.resize(EW);
  for (int64_t j = 0; j < EW; ++j) s->cols[j] = ReflectIndex(j - R, W) * C;
  // Only the padded rows this strip reads: image rows [r0 - R, r1 + R).
  const int64_t e0 = r0, e1 = std::min<int64_t>(EH, r1 + 2 * R);
  for (int64_t i = e0; i < e1; ++i) {
    const T* src = plane + ReflectIndex(i - R, H) * W * C;
    T* dst = s->ext.data() + i * EW;
    if (C == 1 && W > R) {  // the common case: the middle is a plain copy, only borders reflect
      for (int64_t j = 0; j < R; ++j) dst[j] = src[s->cols[j]];
      std::copy_n(src, W, dst + R);
      for (int64_t j = W + R; j < EW; ++j) dst[j] = src[s->cols[j]];
    } else {
      for (int64_t j = 0; j < EW; ++j) dst[j] = src[s->cols[j]];
    }
  }
  // Norms of the patches centred on rows [r0 - s, r1 + s), cols [-s, W + s): vertical then
  // horizontal box of squares, direct taps (once per unit, cheap next to the offsets).
  for (int64_t i = 0; i < NH; ++i) {
    T* row = s->sq.data();
    std::fill(row, row + EW, T(0));
    for (int64_t k = 0; k <= 2 * r; ++k) {
      const T* e = s->ext.data() + (r0 - sr + i + k - r + R) * EW;
      for (int64_t j = 0; j < EW; ++j) row[j] += e[j] * e[j];
    }
    for (int64_t j = 0; j < NW; ++j) {
      T acc = T(0);
      for (int64_t l = 0; l <= 2 * r; ++l) acc += row[j + l];
      s->norm[i * NW + j] = std::sqrt(acc);
    }
  }
}

// If the padded rows Prepare copied for strip [r0, r1) hold a NaN or Inf: zeroes them in s->ext
// and sets (*bad)[(i - r0) * W + j] for the strip's pixels whose window of padded rows
// [i, i + 2R] and columns [j, j + 2R] held one. Returns whether any value was non-finite.
template <typename T>
bool MaskNonFinite(const CosineNlmParams& p, int64_t r0, int64_t r1, Scratch<T>* s,
                   std::vector<uint8_t>* bad) {
  const int64_t H = p.height, W = p.width, R = p.patch_radius + p.search_radius;
  const int64_t EW = W + 2 * R, e0 = r0, e1 = std::min<int64_t>(H + 2 * R, r1 + 2 * R);
  T* ext = s->ext.data();
  bool any = false;
  for (int64_t i = e0 * EW; i < e1 * EW && !any; ++i) any = !std::isfinite(ext[i]);
  if (!any) return false;
  // prefix[(i - e0) * (EW + 1) + j]: non-finite count in padded rows [e0, i), columns [0, j).
  const int64_t rows = e1 - e0;
  std::vector<int64_t> prefix(static_cast<size_t>((rows + 1) * (EW + 1)), 0);
  for (int64_t i = 0; i < rows; ++i) {
    int64_t run = 0;
    for (int64_t j = 0; j < EW; ++j) {
      T& v = ext[(e0 + i) * EW + j];
      if (!std::isfinite(v)) {
        ++run;
        v = T(0);
      }
      prefix[(i + 1) * (EW + 1) + j + 1] = prefix[i * (EW + 1) + j + 1] + run;
    }
  }
  bad->assign(static_cast<size_t>((r1 - r0) * W), 0);
  for (int64_t i = r0; i < r1; ++i) {
    const int64_t a = i - e0, b = std::min(rows, a + 2 * R + 1);
    for (int64_t j = 0; j < W; ++j) {
      const int64_t c = j, d = j + 2 * R + 1;
      const int64_t cnt = prefix[b * (EW + 1) + d] - prefix[a * (EW + 1) + d] -
                          prefix[b * (EW + 1) + c] + prefix[a * (EW + 1) + c];
      (*bad)[(i - r0) * W + j] = cnt > 0;
    }
  }
  return true;
}

}  // namespace

template <typename T>
Status CosineNlmCpu(const CosineNlmParams& p, const T* x, T* out, const ParallelFor& pf_in) {
  return GuardKernel("cosine_nlm", pf_in, [&](const ParallelFor& pf) -> Status {
    const int64_t H = p.height, W = p.width, C = p.channels;
    const int64_t planes = p.batch * C;
    IAPDCNN_RETURN_IF_ERROR(CheckCosineNlmEpsFor<T>(p));
    if (planes == 0 || H == 0 || W == 0) return Status::OK();
    // Units: (plane, row strip). A batch gives one strip per plane; a few large planes are cut
    // into strips of >= kMinStripRows rows so every thread gets work (each strip recomputes the
    // d-overlap rows and its norms, a small fraction at that height).
    const int64_t want = (kUnitsWanted + planes - 1) / planes;
    const int64_t strips = std::max<int64_t>(1, std::min(want, H / kMinStripRows));
    const int64_t strip_rows = ((H + strips - 1) / strips + kMinStripRows - 1) / kMinStripRows *
                               kMinStripRows;  // a multiple of kRestartRows (see StripImpl)
    const int64_t k = (2 * p.search_radius + 1) * (2 * p.search_radius + 1);
    pf(planes * strips, strip_rows * W * k * 8, [&](int64_t b, int64_t e) {
      Scratch<T> s;
      std::vector<uint8_t> bad;
      for (int64_t u = b; u < e; ++u) {
        const int64_t q = u / strips, n = q / C, c = q % C;
        const int64_t r0 = (u % strips) * strip_rows, r1 = std::min(H, r0 + strip_rows);
        if (r0 >= r1) continue;
        Prepare(p, x, n, c, r0, r1, &s);
        // NaN policy (docs/nan_policy.md): NaN / Inf in, NaN out, exactly at the pixels whose
        // (2R+1)^2 reflected window (every patch of every candidate) holds one. They are zeroed in
        // the copy first: the running sums would otherwise carry a NaN (Inf - Inf) far down the
        // plane, past the pixels that read it.
        const bool dirty = MaskNonFinite(p, r0, r1, &s, &bad);
        if constexpr (sizeof(T) == sizeof(float)) {
          StripFloat(p, &s, r0, r1);
        } else {
          StripDouble(p, &s, r0, r1);
        }
        // den >= w(a, a) = exp(-(1 - cos(a, a)) / h) > 0, so the division is always defined.
        T* o = out + n * H * W * C + r0 * W * C + c;
        const T* __restrict nu = s.num.data();
        const T* __restrict de = s.den.data();
        if (C == 1) {  // contiguous, so the division vectorises
          for (int64_t i = 0; i < (r1 - r0) * W; ++i) o[i] = nu[i] / de[i];
        } else {
          for (int64_t i = 0; i < (r1 - r0) * W; ++i) o[i * C] = nu[i] / de[i];
        }
        if (dirty) {
          for (int64_t i = 0; i < (r1 - r0) * W; ++i) {
            if (bad[i]) o[i * C] = std::numeric_limits<T>::quiet_NaN();
          }
        }
      }
    });
    return Status::OK();
  });
}

template Status CosineNlmCpu<float>(const CosineNlmParams&, const float*, float*,
                                    const ParallelFor&);
template Status CosineNlmCpu<double>(const CosineNlmParams&, const double*, double*,
                                     const ParallelFor&);

}  // namespace iapdcnn
