// CUDA Im2col + GEMM convolution (spec §2b), the device twin of conv_cpu.cc with the same
// semantics: im2col kernels write the column matrix of a chunk of images (bounded scratch), one
// cuBLAS strided-batched GEMM per chunk (groups are the batch), and col2im gathers (no atomics,
// deterministic). 1x1 / stride-1 / unpadded convolutions skip im2col: the input is the matrix.
// Index math (output sizes, input coordinates) comes from conv_impl.h, shared with the CPU path.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <type_traits>

#include "common/cublas_lazy.h"
#include "common/cuda_util.cuh"
#include "conv/conv.h"
#include "conv/conv_impl.h"

namespace iapdcnn {

namespace {

using conv_impl::InputCoord;
namespace cb = cublas;

constexpr int64_t kColBudgetBytes = 256 << 20;  // column matrix of one chunk of images

// Compute (accumulation) type: fp32 for float / half / bfloat16, fp64 for double.
template <typename T>
struct Traits {
  using C = float;
  static constexpr cb::ComputeType kCompute = cb::kCompute32F;
};
template <>
struct Traits<double> {
  using C = double;
  static constexpr cb::ComputeType kCompute = cb::kCompute64F;
};
template <typename X>
constexpr cb::DataType TypeOf() {
  if constexpr (std::is_same<X, double>::value) return cb::kR64F;
  if constexpr (std::is_same<X, __half>::value) return cb::kR16F;
  if constexpr (std::is_same<X, __nv_bfloat16>::value) return cb::kR16BF;
  return cb::kR32F;
}

bool IsPointwise(const Im2colConv2DParams& p) {
  return p.k_h == 1 && p.k_w == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_top == 0 &&
         p.pad_bottom == 0 && p.pad_left == 0 && p.pad_right == 0;
}

// The plain-data subset of the params a kernel needs (passed by value to the device).
struct Geo {
  int64_t in_h, in_w, in_c, k_h, k_w, out_c, sh, sw, pt, pl, dh, dw, groups, out_h, out_w;
  int64_t cg, og, kg, pix;  // in_c / groups, out_c / groups, k_h k_w cg, out_h out_w
};
Geo GeoOf(const Im2colConv2DParams& p) {
  Geo g{p.in_h,
        p.in_w,
        p.in_c,
        p.k_h,
        p.k_w,
        p.out_c,
        p.stride_h,
        p.stride_w,
        p.pad_top,
        p.pad_left,
        p.dilation_h,
        p.dilation_w,
        p.groups,
        p.out_h,
        p.out_w,
        0,
        0,
        0,
        0};
  g.cg = p.in_c / p.groups;
  g.og = p.out_c / p.groups;
  g.kg = p.k_h * p.k_w * g.cg;
  g.pix = p.out_h * p.out_w;
  return g;
}

// im2col column k = (kh * k_w + kw) * cg + ci (the HWIO filter's row order).
__device__ __forceinline__ void SplitK(const Geo& g, int64_t k, int64_t* kh, int64_t* kw,
                                       int64_t* ci) {
  *ci = k % g.cg;
  *kw = (k / g.cg) % g.k_w;
  *kh = k / g.cg / g.k_w;
}

// NHWC: col [groups][rows = nb * pix][kg] row-major, rows numbering the chunk's output pixels.
template <typename T>
__global__ void Im2colNhwcKernel(Geo g, const T* __restrict__ input, int64_t nb,
                                 T* __restrict__ col) {
  const int64_t rows = nb * g.pix, total = g.groups * rows * g.kg;
  IAPDCNN_GRID_STRIDE(idx, total) {
    const int64_t k = idx % g.kg, r = idx / g.kg % rows, grp = idx / g.kg / rows;
    int64_t kh, kw, ci;
    SplitK(g, k, &kh, &kw, &ci);
    const int64_t n = r / g.pix, oh = r % g.pix / g.out_w, ow = r % g.out_w;
    const int64_t ih = InputCoord(oh, g.sh, g.pt, kh, g.dh);
    const int64_t iw = InputCoord(ow, g.sw, g.pl, kw, g.dw);
    T v = T(0.0f);
    if (ih >= 0 && ih < g.in_h && iw >= 0 && iw < g.in_w) {
      v = input[((n * g.in_h + ih) * g.in_w + iw) * g.in_c + grp * g.cg + ci];
    }
    col[idx] = v;
  }
}

// NCHW: colT [nb][groups][kg][pix] row-major (reads and writes run along the pixels).
template <typename T>
__global__ void Im2colNchwKernel(Geo g, const T* __restrict__ input, int64_t nb,
                                 T* __restrict__ col) {
  const int64_t total = nb * g.groups * g.kg * g.pix;
  IAPDCNN_GRID_STRIDE(idx, total) {
    const int64_t pix = idx % g.pix, k = idx / g.pix % g.kg, ng = idx / g.pix / g.kg;
    const int64_t grp = ng % g.groups, n = ng / g.groups;
    int64_t kh, kw, ci;
    SplitK(g, k, &kh, &kw, &ci);
    const int64_t oh = pix / g.out_w, ow = pix % g.out_w;
    const int64_t ih = InputCoord(oh, g.sh, g.pt, kh, g.dh);
    const int64_t iw = InputCoord(ow, g.sw, g.pl, kw, g.dw);
    T v = T(0.0f);
    if (ih >= 0 && ih < g.in_h && iw >= 0 && iw < g.in_w) {
      v = input[((n * g.in_c + grp * g.cg + ci) * g.in_h + ih) * g.in_w + iw];
    }
    col[idx] = v;
  }
}

// col2im as a gather: every input element sums the column entries that read it (the adjoint of
// im2col), so threads own disjoint outputs. dcol layouts as written by the GEMMs below.
template <typename T, typename C, bool kNchw>
__global__ void Col2imKernel(Geo g, const C* __restrict__ dcol, int64_t nb,
                             T* __restrict__ in_backprop) {
  const int64_t total = nb * g.in_h * g.in_w * g.in_c, rows = nb * g.pix;
  IAPDCNN_GRID_STRIDE(idx, total) {
    int64_t n, c, ih, iw;
    if (kNchw) {
      iw = idx % g.in_w;
      ih = idx / g.in_w % g.in_h;
      c = idx / g.in_w / g.in_h % g.in_c;
      n = idx / g.in_w / g.in_h / g.in_c;
    } else {
      c = idx % g.in_c;
      iw = idx / g.in_c % g.in_w;
      ih = idx / g.in_c / g.in_w % g.in_h;
      n = idx / g.in_c / g.in_w / g.in_h;
    }
    const int64_t grp = c / g.cg, ci = c % g.cg;
    C acc = C(0);
    for (int64_t kh = 0; kh < g.k_h; ++kh) {
      const int64_t th = ih + g.pt - kh * g.dh;  // = oh * stride
      if (th < 0 || th % g.sh != 0 || th / g.sh >= g.out_h) continue;
      const int64_t oh = th / g.sh;
      for (int64_t kw = 0; kw < g.k_w; ++kw) {
        const int64_t tw = iw + g.pl - kw * g.dw;
        if (tw < 0 || tw % g.sw != 0 || tw / g.sw >= g.out_w) continue;
        const int64_t pix = oh * g.out_w + tw / g.sw;
        const int64_t k = (kh * g.k_w + kw) * g.cg + ci;
        acc += kNchw ? dcol[((n * g.groups + grp) * g.kg + k) * g.pix + pix]
                     : dcol[(grp * rows + n * g.pix + pix) * g.kg + k];
      }
    }
    in_backprop[idx] = static_cast<T>(acc);
  }
}

template <typename T, typename C>
__global__ void CastKernel(const C* __restrict__ src, int64_t n, T* __restrict__ dst) {
  IAPDCNN_GRID_STRIDE(i, n) { dst[i] = static_cast<T>(src[i]); }
}

// Images per chunk so that the chunk's column matrix fits kColBudgetBytes (at least one).
int64_t ChunkImages(const Im2colConv2DParams& p, const Geo& g, int64_t col_elem_bytes) {
  const int64_t per_image = std::max<int64_t>(1, g.pix * g.kg * g.groups * col_elem_bytes);
  return std::max<int64_t>(1, std::min<int64_t>(p.batch, kColBudgetBytes / per_image));
}

template <typename T>
Status LaunchIm2col(const Im2colConv2DParams& p, const Geo& g, const T* input_chunk, int64_t nb,
                    T* col, cudaStream_t stream) {
  const int64_t total = nb * g.groups * g.pix * g.kg;
  if (total == 0) return Status::OK();
  if (p.nchw) {
    Im2colNchwKernel<T>
        <<<cuda::Blocks(total), cuda::kThreads, 0, stream>>>(g, input_chunk, nb, col);
  } else {
    Im2colNhwcKernel<T>
        <<<cuda::Blocks(total), cuda::kThreads, 0, stream>>>(g, input_chunk, nb, col);
  }
  IAPDCNN_CUDA_CHECK_LAUNCH("im2col");
  return Status::OK();
}

}  // namespace

// ---- forward ------------------------------------------------------------------------------------

template <typename T>
Status Im2colConv2DCuda(const Im2colConv2DParams& p, const T* input, const T* filters, T* output,
                        cudaStream_t stream, GpuScratch* scratch) {
  using C = typename Traits<T>::C;
  const Geo g = GeoOf(p);
  if (p.batch == 0 || g.pix == 0 || p.out_c == 0) return Status::OK();
  const C one = 1, zero = 0;
  const bool pointwise = IsPointwise(p);
  const int64_t chunk = ChunkImages(p, g, sizeof(T));
  const int64_t in_img = p.in_h * p.in_w * p.in_c, out_img = g.pix * p.out_c;
  cuda::Scratch mem(scratch, stream);
  T* col = nullptr;
  if (!pointwise) {
    void* raw = nullptr;
    IAPDCNN_RETURN_IF_ERROR(mem.Get(chunk * g.groups * g.pix * g.kg * sizeof(T), &raw));
    col = static_cast<T*>(raw);
  }
  constexpr cb::DataType kT = TypeOf<T>();
  for (int64_t n0 = 0; n0 < p.batch; n0 += chunk) {
    const int64_t nb = std::min(chunk, p.batch - n0);
    const T* x = input + n0 * in_img;
    T* out = output + n0 * out_img;
    if (!pointwise) IAPDCNN_RETURN_IF_ERROR(LaunchIm2col<T>(p, g, x, nb, col, stream));
    if (!p.nchw) {
      // Row-major out [rows, out_c] = col_g [rows, kg] x W_g [kg, og], per group (column-major:
      // out^T = W_g^T col_g^T).
      const int64_t rows = nb * g.pix;
      const T* b = pointwise ? x : col;
      const int64_t ldb = pointwise ? p.in_c : g.kg, sb = pointwise ? g.cg : rows * g.kg;
      IAPDCNN_RETURN_IF_ERROR(cb::GemmStridedBatched(
          stream, cb::kN, cb::kN, g.og, rows, g.kg, &one, filters, kT, p.out_c, g.og, b, kT, ldb,
          sb, &zero, out, kT, p.out_c, g.og, g.groups, Traits<T>::kCompute));
    } else {
      // Per image and group, row-major out [og, pix] = W_g^T [og, kg] x colT [kg, pix]
      // (column-major: out^T = colT^T W_g), batched over the chunk's images.
      for (int64_t grp = 0; grp < g.groups; ++grp) {
        const T* a = pointwise ? x + grp * g.cg * g.pix : col + grp * g.kg * g.pix;
        const int64_t sa = pointwise ? p.in_c * g.pix : g.groups * g.kg * g.pix;
        IAPDCNN_RETURN_IF_ERROR(cb::GemmStridedBatched(
            stream, cb::kN, cb::kT, g.pix, g.og, g.kg, &one, a, kT, g.pix, sa, filters + grp * g.og,
            kT, p.out_c, 0, &zero, out + grp * g.og * g.pix, kT, g.pix, out_img, nb,
            Traits<T>::kCompute));
      }
    }
  }
  return Status::OK();
}

// ---- gradient with respect to the input ---------------------------------------------------------

template <typename T>
Status Im2colConv2DBackpropInputCuda(const Im2colConv2DParams& p, const T* filters,
                                     const T* out_backprop, T* in_backprop, cudaStream_t stream,
                                     GpuScratch* scratch) {
  using C = typename Traits<T>::C;
  const Geo g = GeoOf(p);
  const int64_t in_img = p.in_h * p.in_w * p.in_c, out_img = g.pix * p.out_c;
  if (p.batch == 0 || in_img == 0) return Status::OK();
  const C one = 1, zero = 0;
  // Pointwise: the GEMM writes dI directly (its accumulation is already fp32 / fp64).
  const bool pointwise = IsPointwise(p);
  // dcol is kept in the compute type, so half / bfloat16 sum the taps in fp32 like the CPU path.
  const int64_t chunk = ChunkImages(p, g, sizeof(C));
  cuda::Scratch mem(scratch, stream);
  C* dcol = nullptr;
  if (!pointwise) {
    void* raw = nullptr;
    IAPDCNN_RETURN_IF_ERROR(mem.Get(chunk * g.groups * g.pix * g.kg * sizeof(C), &raw));
    dcol = static_cast<C*>(raw);
  }
  constexpr cb::DataType kT = TypeOf<T>(), kC = TypeOf<C>();
  for (int64_t n0 = 0; n0 < p.batch; n0 += chunk) {
    const int64_t nb = std::min(chunk, p.batch - n0);
    const T* dy = out_backprop + n0 * out_img;
    T* dx = in_backprop + n0 * in_img;
    if (!p.nchw) {
      // Row-major dcol_g [rows, kg] = dO_g [rows, og] x W_g^T (column-major: W_g dO_g^T).
      const int64_t rows = nb * g.pix;
      void* c = pointwise ? static_cast<void*>(dx) : static_cast<void*>(dcol);
      const int64_t ldc = pointwise ? p.in_c : g.kg, sc = pointwise ? g.cg : rows * g.kg;
      IAPDCNN_RETURN_IF_ERROR(cb::GemmStridedBatched(
          stream, cb::kT, cb::kN, g.kg, rows, g.og, &one, filters, kT, p.out_c, g.og, dy, kT,
          p.out_c, g.og, &zero, c, pointwise ? kT : kC, ldc, sc, g.groups, Traits<T>::kCompute));
    } else {
      // Per image and group, row-major dcolT [kg, pix] = W_g [kg, og] x dO_g [og, pix].
      for (int64_t grp = 0; grp < g.groups; ++grp) {
        void* c = pointwise ? static_cast<void*>(dx + grp * g.cg * g.pix)
                            : static_cast<void*>(dcol + grp * g.kg * g.pix);
        const int64_t sc = pointwise ? in_img : g.groups * g.kg * g.pix;
        IAPDCNN_RETURN_IF_ERROR(cb::GemmStridedBatched(
            stream, cb::kN, cb::kN, g.pix, g.kg, g.og, &one, dy + grp * g.og * g.pix, kT, g.pix,
            out_img, filters + grp * g.og, kT, p.out_c, 0, &zero, c, pointwise ? kT : kC, g.pix, sc,
            nb, Traits<T>::kCompute));
      }
    }
    if (!pointwise) {
      const int64_t total = nb * in_img;
      if (p.nchw) {
        Col2imKernel<T, C, true>
            <<<cuda::Blocks(total), cuda::kThreads, 0, stream>>>(g, dcol, nb, dx);
      } else {
        Col2imKernel<T, C, false>
            <<<cuda::Blocks(total), cuda::kThreads, 0, stream>>>(g, dcol, nb, dx);
      }
      IAPDCNN_CUDA_CHECK_LAUNCH("col2im");
    }
  }
  return Status::OK();
}

// ---- gradient with respect to the filter --------------------------------------------------------

template <typename T>
Status Im2colConv2DBackpropFilterCuda(const Im2colConv2DParams& p, const T* input,
                                      const T* out_backprop, T* filter_backprop,
                                      cudaStream_t stream, GpuScratch* scratch) {
  using C = typename Traits<T>::C;
  constexpr bool kPacked = !std::is_same<T, C>::value;  // half / bfloat16: fp32 accumulator
  const Geo g = GeoOf(p);
  const int64_t fsize = g.kg * p.out_c;
  if (fsize == 0) return Status::OK();
  const int64_t in_img = p.in_h * p.in_w * p.in_c, out_img = g.pix * p.out_c;
  const bool pointwise = IsPointwise(p);
  const int64_t chunk = ChunkImages(p, g, sizeof(T));
  cuda::Carver plan;
  plan.Take<T>(pointwise ? 0 : chunk * g.groups * g.pix * g.kg);
  plan.Take<C>(kPacked ? fsize : 0);
  cuda::Scratch mem(scratch, stream);
  void* raw = nullptr;
  IAPDCNN_RETURN_IF_ERROR(mem.Get(plan.bytes(), &raw));
  cuda::Carver carve(static_cast<char*>(raw));
  T* col = carve.Take<T>(pointwise ? 0 : chunk * g.groups * g.pix * g.kg);
  C* acc = carve.Take<C>(kPacked ? fsize : 0);
  void* dw = kPacked ? static_cast<void*>(acc) : static_cast<void*>(filter_backprop);
  constexpr cb::DataType kT = TypeOf<T>(), kC = TypeOf<C>();
  const cb::DataType dw_type = kPacked ? kC : kT;
  const C one = 1, zero = 0;
  if (p.batch == 0 || g.pix == 0) {
    IAPDCNN_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(dw, 0, fsize * sizeof(C), stream));
  }
  bool first = true;  // the first GEMM overwrites dW, the rest accumulate
  for (int64_t n0 = 0; n0 < p.batch && g.pix > 0; n0 += chunk) {
    const int64_t nb = std::min(chunk, p.batch - n0);
    const T* x = input + n0 * in_img;
    const T* dy = out_backprop + n0 * out_img;
    if (!pointwise) IAPDCNN_RETURN_IF_ERROR(LaunchIm2col<T>(p, g, x, nb, col, stream));
    if (!p.nchw) {
      // Row-major dW_g [kg, og] (+)= col_g^T [kg, rows] x dO_g [rows, og] (column-major:
      // dW_g^T = dO_g^T col_g).
      const int64_t rows = nb * g.pix;
      const T* b = pointwise ? x : col;
      const int64_t ldb = pointwise ? p.in_c : g.kg, sb = pointwise ? g.cg : rows * g.kg;
      IAPDCNN_RETURN_IF_ERROR(cb::GemmStridedBatched(
          stream, cb::kN, cb::kT, g.og, g.kg, rows, &one, dy, kT, p.out_c, g.og, b, kT, ldb, sb,
          first ? &zero : &one, dw, dw_type, p.out_c, g.og, g.groups, Traits<T>::kCompute));
      first = false;
    } else {
      // Per image: row-major dW_g [kg, og] (+)= colT [kg, pix] x dO_g^T [pix, og], batched over
      // groups (images accumulate through beta, so they run one after the other).
      for (int64_t n = 0; n < nb; ++n) {
        const T* b = pointwise ? x + n * in_img : col + n * g.groups * g.kg * g.pix;
        const int64_t sb = pointwise ? g.cg * g.pix : g.kg * g.pix;
        IAPDCNN_RETURN_IF_ERROR(cb::GemmStridedBatched(
            stream, cb::kT, cb::kN, g.og, g.kg, g.pix, &one, dy + n * out_img, kT, g.pix,
            g.og * g.pix, b, kT, g.pix, sb, first ? &zero : &one, dw, dw_type, p.out_c, g.og,
            g.groups, Traits<T>::kCompute));
        first = false;
      }
    }
  }
  if constexpr (kPacked) {
    CastKernel<T, C>
        <<<cuda::Blocks(fsize), cuda::kThreads, 0, stream>>>(acc, fsize, filter_backprop);
    IAPDCNN_CUDA_CHECK_LAUNCH("cast dW");
  }
  return Status::OK();
}

#define IAPDCNN_INSTANTIATE_CONV_CUDA(T)                                                           \
  template Status Im2colConv2DCuda<T>(const Im2colConv2DParams&, const T*, const T*, T*,           \
                                      cudaStream_t, GpuScratch*);                                  \
  template Status Im2colConv2DBackpropInputCuda<T>(const Im2colConv2DParams&, const T*, const T*,  \
                                                   T*, cudaStream_t, GpuScratch*);                 \
  template Status Im2colConv2DBackpropFilterCuda<T>(const Im2colConv2DParams&, const T*, const T*, \
                                                    T*, cudaStream_t, GpuScratch*);
IAPDCNN_INSTANTIATE_CONV_CUDA(float)
IAPDCNN_INSTANTIATE_CONV_CUDA(double)
IAPDCNN_INSTANTIATE_CONV_CUDA(__half)
IAPDCNN_INSTANTIATE_CONV_CUDA(__nv_bfloat16)
#undef IAPDCNN_INSTANTIATE_CONV_CUDA

}  // namespace iapdcnn
