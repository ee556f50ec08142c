// CPU cosine NLM (SPEC 1a): one task per (image, channel) plane on the ParallelFor. Per plane and
// per search offset d, the patch dot products <P_a, P_{a+d}> of all pixels are a box filter of the
// product image g(.) g(. + d): vertical running sums (O(1) per pixel, vectorised across columns),
// then the horizontal box (2r+1 vectorised taps for small r, a prefix-sum difference otherwise).
// Running sums are kept in double so that all-zero patches stay (almost exactly) zero. Weights are
// symmetric, so half the offsets are visited; hot loops are compiled for AVX-512, AVX2 and
// baseline x86-64 (target_clones picks one at load time).
#if defined(__GNUC__) && !defined(__clang__)
// Float compares may then be if-converted, so the clamps in FastExp do not stop the weight loop
// from vectorising (the kernel raises no FP exceptions anyone observes).
#pragma GCC optimize("no-trapping-math")
#endif

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "common/reflect.h"
#include "nlm/nlm.h"
#include "nlm/nlm_impl.h"

#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__)
#define IAPDCNN_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define IAPDCNN_CLONES
#endif
#define IAPDCNN_ALWAYS_INLINE inline __attribute__((always_inline))

namespace iapdcnn {

namespace {

constexpr int64_t kDirectTapsMaxRadius = 3;  // horizontal box: direct taps up to 7 wide

std::string ShapeStr(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

// Everything one plane needs, sized once per task and reused across the planes it handles.
// Running sums are double; what the weight loop reads is A (float for float images), so that
// loop runs at full SIMD width.
template <typename A>
struct Scratch {
  std::vector<double> ext;    // reflect-padded plane, pad r + s
  std::vector<A> ext_a;       // the same in A (candidate values g(b))
  std::vector<double> sq;     // vertical box sums of squares (norm pass)
  std::vector<A> norm;        // |P_a| over rows/cols [-s, H+s)
  std::vector<double> v;      // vertical box sums of the product image, cols [-r, W+r)
  std::vector<double> d;      // patch dot products of one row
  std::vector<double> pre;    // prefix sums (large r)
  std::vector<A> w;           // weights of one row
  std::vector<int64_t> cols;  // reflected source column offsets
};

IAPDCNN_ALWAYS_INLINE float ExpOf(float x) { return nlm_impl::FastExp(x); }
IAPDCNN_ALWAYS_INLINE double ExpOf(double x) { return std::exp(x); }

// Horizontal box of width 2r+1 over v (cols [-r, W+r)) into d (cols [0, W)).
IAPDCNN_ALWAYS_INLINE void HorizontalBox(const double* __restrict v, double* __restrict d,
                                         double* __restrict pre, int64_t w, int64_t r) {
  if (r <= kDirectTapsMaxRadius) {
    for (int64_t j = 0; j < w; ++j) d[j] = v[j];
    for (int64_t l = 1; l <= 2 * r; ++l) {
      const double* vl = v + l;
      for (int64_t j = 0; j < w; ++j) d[j] += vl[j];
    }
    return;
  }
  pre[0] = 0.0;
  for (int64_t j = 0; j < w + 2 * r; ++j) pre[j + 1] = pre[j] + v[j];
  for (int64_t j = 0; j < w; ++j) d[j] = pre[j + 2 * r + 1] - pre[j];
}

// The whole per-plane computation. A is the accumulation type of the weights (float for float
// images: vectorised exp; double for double images: libm exp).
// w(a, b) = w(b, a), so only half the offsets are visited (fast NLM's symmetry): for an offset
// d > 0 the weight w(a, a + d) feeds pixel a (candidate a + d) and pixel a + d (candidate a).
// Rows/cols are extended so that every image pixel gets both halves: a runs over the union of
// the image and the image shifted by -d.
template <typename A>
IAPDCNN_ALWAYS_INLINE void PlaneImpl(const CosineNlmParams& p, Scratch<A>* s, A* __restrict num,
                                     A* __restrict den) {
  const int64_t H = p.height, W = p.width, r = p.patch_radius, sr = p.search_radius;
  const int64_t R = r + sr, EW = W + 2 * R, NW = W + 2 * sr;
  const double* __restrict ext = s->ext.data();
  double* __restrict v = s->v.data();
  double* __restrict d = s->d.data();
  A* __restrict wrow = s->w.data();
  const A* __restrict norm = s->norm.data();
  const A* __restrict ext_a = s->ext_a.data();
  const A inv_h = static_cast<A>(1.0 / p.h);
  const A eps = static_cast<A>(p.eps);
  auto E = [&](int64_t i, int64_t j) { return ext + (i + R) * EW + (j + R); };  // ext(i, j)
  auto G = [&](int64_t i, int64_t j) { return ext_a + (i + R) * EW + (j + R); };
  auto N = [&](int64_t i, int64_t j) { return norm + (i + sr) * NW + (j + sr); };  // |P_(i,j)|
  // d = 0: the self weight, cos(a, a) = |P_a|^2 / (|P_a|^2 + eps).
  for (int64_t i = 0; i < H; ++i) {
    const A* __restrict na = N(i, 0);
    const A* __restrict g = G(i, 0);
    A* __restrict nu = num + i * W;
    A* __restrict de = den + i * W;
    for (int64_t j = 0; j < W; ++j) {
      const A n2 = na[j] * na[j];
      const A w = ExpOf((n2 / (n2 + eps) - A(1)) * inv_h);
      nu[j] = w * g[j];
      de[j] = w;
    }
  }
  for (int64_t dy = 0; dy <= sr; ++dy) {
    for (int64_t dx = -sr; dx <= sr; ++dx) {
      if (dy == 0 && dx <= 0) continue;  // d > 0 in row-major order; -d is its mirror
      // a runs over rows [-dy, H) and cols [c0, c1): a or a + d lies in the image.
      const int64_t c0 = std::min<int64_t>(0, -dx), c1 = std::max<int64_t>(W, W - dx);
      const int64_t cw = c1 - c0, vw = cw + 2 * r;
      const int64_t i0 = -dy;
      for (int64_t j = 0; j < vw; ++j) v[j] = 0.0;
      for (int64_t k = -r; k <= r; ++k) {
        const double* a = E(i0 + k, c0 - r);
        const double* b = E(i0 + k + dy, c0 - r + dx);
        for (int64_t j = 0; j < vw; ++j) v[j] += a[j] * b[j];
      }
      for (int64_t i = i0; i < H; ++i) {
        if (i > i0) {  // slide the vertical window down one row: O(1) per pixel in r
          const double* a_in = E(i + r, c0 - r);
          const double* b_in = E(i + r + dy, c0 - r + dx);
          const double* a_out = E(i - r - 1, c0 - r);
          const double* b_out = E(i - r - 1 + dy, c0 - r + dx);
          for (int64_t j = 0; j < vw; ++j) v[j] += a_in[j] * b_in[j] - a_out[j] * b_out[j];
        }
        HorizontalBox(v, d, s->pre.data(), cw, r);
        {
          const A* __restrict na = N(i, c0);
          const A* __restrict nb = N(i + dy, c0 + dx);
          for (int64_t j = 0; j < cw; ++j) {
            // SPEC 1a: cos = <P_a, P_b> / (|P_a| |P_b| + eps), w = exp(-(1 - cos) / h).
            const A cos = static_cast<A>(d[j]) / (na[j] * nb[j] + eps);
            wrow[j] = ExpOf((cos - A(1)) * inv_h);
          }
        }
        if (i >= 0) {                         // pixel a = (i, j), candidate a + d
          const A* __restrict w = wrow - c0;  // w[j] for image col j
          const A* __restrict gb = G(i + dy, dx);
          A* __restrict nu = num + i * W;
          A* __restrict de = den + i * W;
          for (int64_t j = 0; j < W; ++j) {
            nu[j] += w[j] * gb[j];
            de[j] += w[j];
          }
        }
        if (i + dy < H) {  // pixel a + d, candidate a: image cols j' = j + dx
          const A* __restrict w = wrow - c0 - dx;  // w[j'] for image col j'
          const A* __restrict ga = G(i, -dx);
          A* __restrict nu = num + (i + dy) * W;
          A* __restrict de = den + (i + dy) * W;
          for (int64_t j = 0; j < W; ++j) {
            nu[j] += w[j] * ga[j];
            de[j] += w[j];
          }
        }
      }
    }
  }
}

IAPDCNN_CLONES void PlaneFloat(const CosineNlmParams& p, Scratch<float>* s, float* num,
                               float* den) {
  PlaneImpl<float>(p, s, num, den);
}
IAPDCNN_CLONES void PlaneDouble(const CosineNlmParams& p, Scratch<double>* s, double* num,
                                double* den) {
  PlaneImpl<double>(p, s, num, den);
}

// Fills s->ext (reflect pad r + s) from plane (n, c) of x and s->norm (patch norms).
template <typename T, typename A>
void Prepare(const CosineNlmParams& p, const T* x, int64_t n, int64_t c, Scratch<A>* s) {
  const int64_t H = p.height, W = p.width, C = p.channels, r = p.patch_radius;
  const int64_t sr = p.search_radius, R = r + sr, EH = H + 2 * R, EW = W + 2 * R;
  const int64_t NH = H + 2 * sr, NW = W + 2 * sr;
  s->ext.resize(EH * EW);
  s->ext_a.resize(EH * EW);
  s->sq.resize((NH)*EW);
  s->norm.resize(NH * NW);
  s->v.resize(W + 2 * sr + 2 * r);
  s->d.resize(W + 2 * sr);
  s->w.resize(W + 2 * sr);
  s->pre.resize(W + 2 * sr + 2 * r + 1);
  const T* plane = x + n * H * W * C + c;
  s->cols.resize(EW);
  for (int64_t j = 0; j < EW; ++j) s->cols[j] = ReflectIndex(j - R, W) * C;
  for (int64_t i = 0; i < EH; ++i) {
    const T* src = plane + ReflectIndex(i - R, H) * W * C;
    for (int64_t j = 0; j < EW; ++j) {
      const T g = src[s->cols[j]];
      s->ext[i * EW + j] = static_cast<double>(g);
      s->ext_a[i * EW + j] = static_cast<A>(g);
    }
  }
  // Norms of the patches centred on rows/cols [-s, H+s): separable box of squares (once per
  // plane, so the direct 2r+1 taps are cheap next to the (2s+1)^2 offsets).
  for (int64_t i = 0; i < NH; ++i) {
    double* row = s->sq.data() + i * EW;
    std::fill(row, row + EW, 0.0);
    for (int64_t k = 0; k <= 2 * r; ++k) {
      const double* e = s->ext.data() + (i + k) * EW;
      for (int64_t j = 0; j < EW; ++j) row[j] += e[j] * e[j];
    }
  }
  for (int64_t i = 0; i < NH; ++i) {
    const double* row = s->sq.data() + i * EW;
    for (int64_t j = 0; j < NW; ++j) {
      double acc = 0.0;
      for (int64_t l = 0; l <= 2 * r; ++l) acc += row[j + l];
      s->norm[i * NW + j] = static_cast<A>(std::sqrt(acc));
    }
  }
}

}  // namespace

Status ValidateCosineNlm(const std::vector<int64_t>& x_shape, int64_t patch_radius,
                         int64_t search_radius, double h, double eps, CosineNlmParams* p) {
  if (x_shape.size() != 4) {
    return Status::InvalidArgument(
        "cosine_nlm: x must be 4-D [batch, height, width, channels], got shape " +
        ShapeStr(x_shape));
  }
  if (patch_radius < 0) {
    return Status::InvalidArgument("cosine_nlm: patch_radius must be >= 0, got " +
                                   std::to_string(patch_radius));
  }
  if (search_radius < 0) {
    return Status::InvalidArgument("cosine_nlm: search_radius must be >= 0, got " +
                                   std::to_string(search_radius));
  }
  if (!(h > 0.0) || !std::isfinite(h)) {
    return Status::InvalidArgument("cosine_nlm: h must be a finite number > 0, got " +
                                   std::to_string(h));
  }
  if (!(eps > 0.0) || !std::isfinite(eps)) {
    return Status::InvalidArgument("cosine_nlm: eps must be a finite number > 0, got " +
                                   std::to_string(eps));
  }
  p->batch = x_shape[0];
  p->height = x_shape[1];
  p->width = x_shape[2];
  p->channels = x_shape[3];
  p->patch_radius = patch_radius;
  p->search_radius = search_radius;
  p->h = h;
  p->eps = eps;
  return Status::OK();
}

template <typename T>
Status CosineNlmCpu(const CosineNlmParams& p, const T* x, T* out, const ParallelFor& pf) {
  const int64_t H = p.height, W = p.width, C = p.channels;
  const int64_t planes = p.batch * C;
  if (planes == 0 || H == 0 || W == 0) return Status::OK();
  using A = T;
  const int64_t k = (2 * p.search_radius + 1) * (2 * p.search_radius + 1);
  pf(planes, H * W * k * 30, [&](int64_t b, int64_t e) {
    Scratch<A> s;
    std::vector<A> num(H * W), den(H * W);
    for (int64_t q = b; q < e; ++q) {
      const int64_t n = q / C, c = q % C;
      Prepare(p, x, n, c, &s);
      if constexpr (sizeof(A) == sizeof(float)) {
        PlaneFloat(p, &s, num.data(), den.data());
      } else {
        PlaneDouble(p, &s, num.data(), den.data());
      }
      // den >= w(a, a) = exp(-(1 - cos(a, a)) / h) > 0, so the division is always defined.
      T* o = out + n * H * W * C + c;
      for (int64_t i = 0; i < H * W; ++i) o[i * C] = static_cast<T>(num[i] / den[i]);
    }
  });
  return Status::OK();
}

template Status CosineNlmCpu<float>(const CosineNlmParams&, const float*, float*,
                                    const ParallelFor&);
template Status CosineNlmCpu<double>(const CosineNlmParams&, const double*, double*,
                                     const ParallelFor&);

}  // namespace iapdcnn
