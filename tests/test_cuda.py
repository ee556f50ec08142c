"""CUDA kernels (csrc/*/*_cuda.cu) through iapdcnn._C on CuPy or PyTorch CUDA arrays: every op
(MDCV too) equals the CPU path (itself tested against the NumPy references), and on NaN / Inf
input follows docs/nan_policy.md exactly as the references do. GPU tests skip, saying why,
where there is no CUDA build, no GPU, or neither CuPy nor PyTorch with CUDA; the dispatch tests
at the end run everywhere: each _C function is bound once and dispatches by device on its first
array argument."""

import numpy as np
import pytest

from iapdcnn import _C, reference


def _find_backend() -> tuple[str | None, str]:
    if not getattr(_C, "with_cuda", False):
        return None, "iapdcnn._C was built without CUDA (IAPDCNN_WITH_CUDA=OFF or no nvcc)"
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            return "cupy", ""
    except Exception:  # noqa: BLE001 - any import / driver failure means "not usable"
        pass
    try:
        import torch

        if torch.cuda.is_available():
            return "torch", ""
    except Exception:  # noqa: BLE001
        pass
    return None, "no CUDA GPU usable through CuPy or PyTorch on this machine"


BACKEND, WHY = _find_backend()
gpu = pytest.mark.skipif(BACKEND is None, reason=WHY)


def dev(a: np.ndarray):
    """NumPy -> a CUDA array of the available backend."""
    a = np.ascontiguousarray(a)
    if BACKEND == "cupy":
        import cupy

        return cupy.asarray(a)
    import torch

    return torch.from_numpy(a).cuda()


def host(buf) -> np.ndarray:
    """A CudaBuffer (or a tuple of them) -> NumPy, through the backend's zero-copy wrapper."""
    if isinstance(buf, tuple):
        return tuple(host(b) for b in buf)
    assert isinstance(buf, _C.CudaBuffer)
    if BACKEND == "cupy":
        import cupy

        return cupy.asnumpy(cupy.asarray(buf))
    import torch

    return torch.as_tensor(buf, device="cuda").cpu().numpy()


TOL = {np.float16: 2e-2, np.float32: 2e-4, np.float64: 1e-10}


@gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("shape", "r", "s"), [((2, 17, 19, 3), 2, 5), ((1, 5, 4, 1), 1, 3)])
def test_cosine_nlm(rng, dtype, shape, r, s):
    x = rng.uniform(size=shape).astype(dtype)
    x[0, :3, :3, 0] = 0  # an all-zero patch: cos = 0 there
    want = _C.cosine_nlm(x, r, s, 0.2, 1e-8)
    got = host(_C.cosine_nlm(dev(x), r, s, 0.2, 1e-8))
    assert got.dtype == dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=TOL[dtype], rtol=TOL[dtype])


@gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("laplacian", [4, 8])
@pytest.mark.parametrize("mode", ["masked", "binary", "magnitude"])
@pytest.mark.parametrize("relative", [True, False])
def test_marr_hildreth(rng, dtype, laplacian, mode, relative):
    x = rng.uniform(size=(2, 23, 17, 2)).astype(dtype)
    t = 0.2 if relative else 0.5
    want = _C.marr_hildreth(x, laplacian, t, relative, mode)
    got = host(_C.marr_hildreth(dev(x), laplacian, t, relative, mode))
    # Same double arithmetic; a fused multiply-add may still move a value sitting exactly on the
    # threshold, so allow a vanishing fraction of differing pixels.
    bad = ~np.isclose(got, want, atol=1e-6, rtol=1e-6)
    assert bad.mean() <= 1e-3, f"{bad.sum()} of {bad.size} pixels differ"


@gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fci_pairwise(rng, dtype):
    x = rng.normal(size=(9, 49)).astype(dtype)
    y = (rng.normal(size=(7, 49)) * 3 + 1).astype(dtype)
    y[0] = 2.0  # a constant block
    want = _C.fci(x, y)
    got = host(_C.fci(dev(x), dev(y)))
    np.testing.assert_allclose(got, want, atol=TOL[dtype])


@gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fci_blocks(rng, dtype):
    n, positions, length, k = 13, 5, 16, 3
    x = rng.uniform(size=(n, positions, length)).astype(dtype)
    labels = rng.integers(0, k, size=n).astype(np.int64)
    labels[-1] = k - 1
    counts, sums = _C.fci_class_stats(x, labels, k)
    got_counts, got_sums = host(_C.fci_class_stats(dev(x), dev(labels), k))
    np.testing.assert_array_equal(got_counts, counts)
    np.testing.assert_array_equal(got_sums, sums)  # same summation order: bitwise equal
    protos = (sums / np.maximum(counts, 1)[:, None, None]).astype(dtype)
    want = _C.fci_prototype(x, labels, protos)
    got = host(_C.fci_prototype(dev(x), dev(labels), dev(protos)))
    np.testing.assert_allclose(got, want, atol=TOL[dtype])
    want = _C.fci_within_class(x, labels, k)
    got = host(_C.fci_within_class(dev(x), dev(labels), k))
    np.testing.assert_allclose(got, want, atol=TOL[dtype])


@gpu
def test_fci_bad_label_is_a_clear_error(rng):
    x = rng.uniform(size=(4, 2, 3))
    labels = np.array([0, 1, 5, 0], dtype=np.int64)
    with pytest.raises(ValueError, match=r"labels\[2\] = 5"):
        _C.fci_within_class(dev(x), dev(labels), 2)


CONV_CASES = [
    # (input NHWC shape, filter shape, strides, padding, dilations, groups)
    ((2, 9, 11, 4), (3, 3, 4, 6), 1, "SAME", 1, 1),
    ((2, 9, 11, 4), (3, 3, 2, 6), 2, "VALID", 1, 2),
    ((1, 12, 10, 3), (7, 7, 3, 8), 2, [[0, 0], [3, 2], [1, 3], [0, 0]], 1, 1),
    ((2, 10, 10, 4), (3, 2, 4, 5), 1, "SAME", 2, 1),
    ((3, 6, 7, 8), (1, 1, 8, 16), 1, "VALID", 1, 1),  # pointwise: no im2col
    ((3, 6, 7, 8), (1, 1, 4, 6), 1, "VALID", 1, 2),  # grouped pointwise
    ((2, 8, 8, 8), (1, 1, 8, 4), 2, "VALID", 1, 1),  # strided 1x1 (ResNet downsampling)
]


@gpu
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_im2col_conv2d(rng, dtype, data_format, case):
    shape, fshape, strides, padding, dilations, groups = CONV_CASES[case]
    x = rng.normal(size=shape).astype(dtype)
    w = (rng.normal(size=fshape) / np.sqrt(np.prod(fshape[:3]))).astype(dtype)
    if data_format == "NCHW":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        if not isinstance(padding, str):
            padding = [padding[0], padding[3], padding[1], padding[2]]
    kw = dict(
        strides=strides,
        padding=padding,
        data_format=data_format,
        dilations=dilations,
        groups=groups,
    )
    tol = TOL[dtype] * (10 if dtype == np.float16 else 1)
    want = _C.im2col_conv2d(x, w, **kw)
    got = host(_C.im2col_conv2d(dev(x), dev(w), **kw))
    assert got.dtype == dtype and got.shape == want.shape
    np.testing.assert_allclose(got.astype(np.float64), want, atol=tol, rtol=tol)
    dy = rng.normal(size=want.shape).astype(dtype)
    want = _C.im2col_conv2d_backprop_input(list(x.shape), w, dy, **kw)
    got = host(_C.im2col_conv2d_backprop_input(list(x.shape), dev(w), dev(dy), **kw))
    np.testing.assert_allclose(got.astype(np.float64), want, atol=tol, rtol=tol)
    want = _C.im2col_conv2d_backprop_filter(x, list(w.shape), dy, **kw)
    got = host(_C.im2col_conv2d_backprop_filter(dev(x), list(w.shape), dev(dy), **kw))
    # dW sums over batch * pixels terms: scale the tolerance with its magnitude.
    np.testing.assert_allclose(
        got.astype(np.float64), want, atol=tol * max(1.0, np.abs(want).max()), rtol=tol
    )


MDCV_SHAPES = [
    (3, 3, 4, 16),  # n = 16 <= d = 36: the Woodbury solve in Gram space
    (1, 1, 8, 40),  # d = 8 < n = 40: the dual, d x d covariance
    (2, 2, 3, 2),  # the fewest filters that have a covariance
    (3, 3, 64, 96),  # a real layer's size
]


@gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", MDCV_SHAPES)
@pytest.mark.parametrize("shrinkage", [-1.0, 0.0, 0.3, 1.0])
def test_mdcv_distances(rng, dtype, shape, shrinkage):
    # Both paths centre and solve in float64; the Gram products sum in different orders, so
    # float64 agrees to round-off, float32 to its output rounding.
    w = rng.normal(size=shape).astype(dtype)
    w[0, 0, 0, :] = 0.5  # a coordinate all filters share: exactly their mean on both paths
    want_d, want_c, want_l = _C.mdcv_distances(w, shrinkage)
    got_d, got_c, got_l = _C.mdcv_distances(dev(w), shrinkage)
    got_d, got_c = host(got_d), host(got_c)
    assert got_d.dtype == dtype and got_d.shape == want_d.shape and got_c.shape == want_c.shape
    rtol = 1e-5 if dtype == np.float32 else 1e-8
    np.testing.assert_allclose(got_d, want_d, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(got_c, want_c, rtol=rtol, atol=rtol)
    np.testing.assert_array_equal(got_c[0, 0, 0], want_c[0, 0, 0])  # the shared coordinate: exact
    assert got_l == pytest.approx(want_l, rel=1e-9, abs=1e-15)


@gpu
def test_mdcv_special_layers_and_errors_as_the_cpu(rng):
    # All filters equal: every distance 0, no 0 / 0.
    w = np.tile(rng.normal(size=(3, 3, 2, 1)), (1, 1, 1, 6))
    got = host(_C.mdcv_distances(dev(w))[0])
    np.testing.assert_array_equal(got, np.zeros(6))
    # A non-finite weight: the same error, naming the first one in memory order.
    w = rng.normal(size=(3, 3, 2, 5))
    w[1, 2, 0, 3], w[2, 0, 1, 1] = np.nan, np.inf
    with pytest.raises(ValueError) as cpu:
        _C.mdcv_distances(w)
    with pytest.raises(ValueError) as gpu_err:
        _C.mdcv_distances(dev(w))
    assert str(gpu_err.value) == str(cpu.value) and "in filter 3" in str(cpu.value)
    # Weights whose covariance overflows float64.
    w = rng.normal(size=(1, 1, 3, 4)) * 1e200
    with pytest.raises(ValueError, match="covariance overflows float64"):
        _C.mdcv_distances(dev(w))
    with pytest.raises(TypeError, match="must be float32 or float64"):
        _C.mdcv_distances(dev(np.ones((1, 1, 2, 3), np.int64)))


# ---- NaN policy (docs/nan_policy.md): the GPU result against the NumPy references -------------


def same_as_reference(got, want, tol: float, what: str) -> None:
    """got == want: NaN and Inf at the same places (Inf with the same sign), the rest within tol
    (relative to the largest finite value)."""
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    assert got.shape == want.shape, what
    nan_got, nan_want = np.isnan(got), np.isnan(want)
    assert np.array_equal(nan_got, nan_want), (
        f"{what}: NaN where the reference has none at {np.argwhere(nan_got & ~nan_want)[:3]}, "
        f"none where it has one at {np.argwhere(nan_want & ~nan_got)[:3]}"
    )
    assert np.array_equal(got[np.isinf(got)], want[np.isinf(got)]), f"{what}: Inf differs"
    assert np.array_equal(np.isinf(got), np.isinf(want)), f"{what}: Inf positions differ"
    fin = np.isfinite(want)
    assert fin.any(), f"{what}: the case checks no finite value"
    scale = max(1.0, float(np.abs(want[fin]).max()))
    np.testing.assert_allclose(got[fin], want[fin], rtol=tol, atol=tol * scale, err_msg=what)


def poison(x: np.ndarray, rng, nan: int = 2, inf: int = 1) -> np.ndarray:
    """x with NaN, +Inf and -Inf written at distinct random positions."""
    x = x.copy()
    idx = rng.choice(x.size, size=nan + 2 * inf, replace=False)
    x.flat[idx[:nan]] = np.nan
    x.flat[idx[nan : nan + inf]] = np.inf
    x.flat[idx[nan + inf :]] = -np.inf
    return x


@gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("r", "s"), [(1, 2), (2, 3), (0, 1)])
def test_cosine_nlm_nan_policy(rng, dtype, r, s):
    # NaN exactly where the reflected (2R+1)^2 window holds a NaN or Inf, the rest as usual.
    x = poison(rng.uniform(size=(2, 19, 23, 2)), rng).astype(dtype)
    want = reference.cosine_nlm(x.astype(np.float64), r, s, 0.2, 1e-8)
    assert np.isnan(want).any() and np.isfinite(want).any()
    got = host(_C.cosine_nlm(dev(x), r, s, 0.2, 1e-8))
    same_as_reference(got, want, TOL[dtype], f"cosine_nlm r={r} s={s}")


@gpu
def test_cosine_nlm_tiny_h_averages_instead_of_nan(rng):
    # All weights but the largest underflow for h = 1e-13 (and every one does on all-zero
    # patches): floored, so the output is a weighted average of the image, never 0 / 0. And a
    # subnormal h must not make 1 / h infinite.
    x = rng.uniform(size=(1, 9, 8, 1))
    x[0, :4, :4, 0] = 0.0
    for dtype in (np.float32, np.float64):
        xd = x.astype(dtype)
        for h in (1e-13, 1e-300, 5e-324):
            got = host(_C.cosine_nlm(dev(xd), 1, 2, h, 1e-8))
            assert np.isfinite(got).all(), f"{dtype} h={h}: {np.isnan(got).sum()} NaN pixels"
            assert got.min() >= xd.min() - 1e-6 and got.max() <= xd.max() + 1e-6


@gpu
def test_cosine_nlm_eps_underflow_is_an_error():
    x = np.ones((1, 5, 5, 1), np.float32)
    with pytest.raises(ValueError, match="eps = 1e-50 underflows"):
        _C.cosine_nlm(dev(x), 1, 1, 0.1, 1e-50)


@gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("laplacian", [4, 8])
@pytest.mark.parametrize("mode", ["masked", "binary", "magnitude"])
@pytest.mark.parametrize("relative", [True, False])
def test_marr_hildreth_nan_policy(rng, dtype, laplacian, mode, relative):
    # Integer images (no threshold ties decided by rounding), NaN / +-Inf at a few pixels: NaN
    # where a decision reads a non-finite value; the relative threshold over finite magnitudes
    # only (an Inf magnitude must not make the whole plane edge-free).
    x = poison(rng.integers(0, 4, size=(2, 17, 15, 2)).astype(np.float64), rng).astype(dtype)
    t = 0.2 if relative else 1.5
    want = reference.marr_hildreth(x.astype(np.float64), laplacian, t, relative, mode)
    assert np.isnan(want).any() and (np.nan_to_num(want) != 0).any()
    got = host(_C.marr_hildreth(dev(x), laplacian, t, relative, mode))
    same_as_reference(got, want, TOL[dtype], f"marr_hildreth {laplacian} {mode} {relative}")


@gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fci_nan_policy(rng, dtype):
    # A block with a NaN or Inf has no FCI: NaN for every pair with it, never the 0.5 of
    # identical blocks (constant blocks keep theirs).
    x = rng.normal(size=(6, 16))
    y = rng.normal(size=(5, 16))
    x[1, 3], x[2, 0], y[0, 7] = np.nan, np.inf, -np.inf
    x[3], y[1] = 2.0, 2.0  # identical constant blocks: 0.5
    x[4, :] = np.inf  # an all-Inf block: constant, yet no FCI
    x, y = x.astype(dtype), y.astype(dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        want = reference.fci(x.astype(np.float64), y.astype(np.float64))
    got = host(_C.fci(dev(x), dev(y)))
    same_as_reference(got, want, TOL[dtype], "fci")
    assert np.isnan(got[[1, 2, 4]]).all() and np.isnan(got[:, 0]).all() and got[3, 1] == 0.5

    n, positions, length, k = 7, 3, 4, 2
    xb = rng.uniform(size=(n, positions, length))
    xb[2, 1, 0], xb[5, 0, 3] = np.nan, np.inf
    xb = xb.astype(dtype)
    labels = np.array([0, 1, 0, 1, 1, 0, 0], np.int64)
    protos = rng.uniform(size=(k, positions, length)).astype(dtype)
    protos[1, 2, 1] = np.nan
    with np.errstate(invalid="ignore", over="ignore"):
        want_p = reference.fci_prototype(xb.astype(np.float64), labels, protos.astype(np.float64))
        want_w = reference.fci_within_class(xb.astype(np.float64), labels)
        want_s = reference.fci_class_stats(xb.astype(np.float64), labels, k)
    got_p = host(_C.fci_prototype(dev(xb), dev(labels), dev(protos)))
    got_w = host(_C.fci_within_class(dev(xb), dev(labels), k))
    got_c, got_s = host(_C.fci_class_stats(dev(xb), dev(labels), k))
    same_as_reference(got_p, want_p, TOL[dtype], "fci_prototype")
    same_as_reference(got_w, want_w, TOL[dtype], "fci_within_class")
    same_as_reference(got_c, want_s[0], 0, "fci_class_stats counts")
    same_as_reference(got_s, want_s[1], 1e-12, "fci_class_stats sums")


@gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", [0, 1, 3])
def test_im2col_conv2d_nan_policy(rng, dtype, case):
    # NaN in, NaN out exactly in the outputs whose receptive field (for the gradients: whose
    # summands) holds it, as tf.nn.conv2d; padding zeros never meet a NaN weight's product.
    shape, fshape, strides, padding, dilations, groups = CONV_CASES[case]
    kw = dict(strides=strides, padding=padding, dilations=dilations, groups=groups)
    x0 = rng.normal(size=shape)
    x = poison(x0, rng, nan=1, inf=1)
    w = rng.normal(size=fshape) / np.sqrt(np.prod(fshape[:3]))
    dy_shape = reference.im2col_conv2d(x, w, **kw).shape
    dy = rng.normal(size=dy_shape)
    w_bad = w.copy()
    w_bad.flat[rng.integers(w.size)] = np.nan
    with np.errstate(invalid="ignore", over="ignore"):
        want = reference.im2col_conv2d(x, w, **kw)
        want_w = reference.im2col_conv2d(x0, w_bad, **kw)
        want_dx = reference.im2col_conv2d_backprop_input(x.shape, w_bad, dy, **kw)
        want_dw = reference.im2col_conv2d_backprop_filter(x, w.shape, dy, **kw)
    xd, wd, dyd = (a.astype(dtype) for a in (x, w, dy))
    tol = TOL[dtype]
    got = host(_C.im2col_conv2d(dev(xd), dev(wd), **kw))
    same_as_reference(got, want, tol, "forward, NaN / Inf input")
    wd_bad = w_bad.astype(dtype)
    got = host(_C.im2col_conv2d(dev(x0.astype(dtype)), dev(wd_bad), **kw))
    same_as_reference(got, want_w, tol, "forward, NaN weight")
    got = host(_C.im2col_conv2d_backprop_input(list(x.shape), dev(wd_bad), dev(dyd), **kw))
    same_as_reference(got, want_dx, tol, "grad input, NaN weight")
    got = host(_C.im2col_conv2d_backprop_filter(dev(xd), list(w.shape), dev(dyd), **kw))
    same_as_reference(got, want_dw, tol * 10, "grad filter, NaN / Inf input")


@gpu
def test_output_wraps_without_copy(rng):
    x = rng.uniform(size=(1, 6, 6, 1)).astype(np.float32)
    buf = _C.marr_hildreth(dev(x))
    cai = buf.__cuda_array_interface__
    assert cai["shape"] == (1, 6, 6, 1) and cai["typestr"] == "<f4" and cai["version"] == 3
    assert buf.shape == (1, 6, 6, 1) and buf.dtype == "float32"


# ---- dispatch: runs everywhere (zero-size arrays never touch the device) ----------------------


class FakeCudaArray:
    """The smallest __cuda_array_interface__ producer: an empty array at address 0."""

    def __init__(self, shape: tuple[int, ...], typestr: str = "<f8") -> None:
        self.__cuda_array_interface__ = {
            "shape": shape,
            "typestr": typestr,
            "data": (0, False),
            "strides": None,
            "version": 3,
        }


def test_cuda_array_selects_the_cuda_path():
    x = FakeCudaArray((0, 5))
    if getattr(_C, "with_cuda", False):
        out = _C.fci(x, FakeCudaArray((3, 5)))
        assert isinstance(out, _C.CudaBuffer) and out.shape == (0, 3)
    else:
        with pytest.raises(TypeError, match="built without CUDA"):
            _C.fci(x, FakeCudaArray((3, 5)))


@pytest.mark.skipif(not getattr(_C, "with_cuda", False), reason="needs a CUDA build of _C")
def test_mixed_host_and_device_arguments_are_a_clear_error():
    with pytest.raises(TypeError, match="y must be a CUDA array like the first argument"):
        _C.fci(FakeCudaArray((0, 5)), np.zeros((3, 5)))
    with pytest.raises(TypeError, match="must be float16, float32 or float64"):
        _C.im2col_conv2d(FakeCudaArray((0, 4, 4, 1), "<i8"), FakeCudaArray((1, 1, 1, 1), "<i8"))


def _driver_loads() -> bool:
    import ctypes

    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


@pytest.mark.skipif(
    not getattr(_C, "with_cuda", False) or _driver_loads(),
    reason="needs a CUDA build of _C on a machine without a CUDA driver",
)
def test_without_a_driver_the_error_names_the_function():
    # A CUDA build where no driver is: the first device call fails, with the function's name.
    with pytest.raises(RuntimeError, match=r"iapdcnn\._C: fci: cudaMallocAsync of an output"):
        _C.fci(FakeCudaArray((2, 5)), FakeCudaArray((3, 5)))
    with pytest.raises(RuntimeError, match="mdcv_distances: cudaMallocAsync"):
        _C.mdcv_distances(FakeCudaArray((1, 1, 2, 3)))


def test_numpy_input_still_takes_the_cpu_path(rng):
    x = rng.uniform(size=(3, 4))
    assert isinstance(_C.fci(x, x), np.ndarray)


FUNCTIONS = [
    "cosine_nlm",
    "marr_hildreth",
    "mdcv_distances",
    "fci",
    "fci_class_stats",
    "fci_prototype",
    "fci_within_class",
    "im2col_conv2d",
    "im2col_conv2d_backprop_input",
    "im2col_conv2d_backprop_filter",
]


@pytest.mark.parametrize("name", FUNCTIONS)
def test_one_binding_per_function(name):
    # One m.def per function, dispatching by device itself: pybind11 would list overloads.
    doc = getattr(_C, name).__doc__
    assert "Overloaded function" not in doc and doc.count(f"{name}(") == 1, doc


def test_a_cuda_array_after_a_host_first_argument_is_named():
    x = np.zeros((0, 5))
    with pytest.raises(TypeError, match="fci: y is a CUDA array but the first argument is not"):
        _C.fci(x, FakeCudaArray((3, 5)))
    with pytest.raises(TypeError, match="labels is a CUDA array but the first argument is not"):
        _C.fci_within_class(np.zeros((2, 1, 3)), FakeCudaArray((2,), "<i8"), 2)
    with pytest.raises(TypeError, match="filters is a CUDA array but the first argument is not"):
        _C.im2col_conv2d(np.zeros((1, 4, 4, 1)), FakeCudaArray((1, 1, 1, 1)))


def test_mdcv_dispatches_to_its_cuda_path():
    # An empty layer is refused by the shared argument rules before the device is touched.
    x = FakeCudaArray((0, 3, 1, 2))
    if getattr(_C, "with_cuda", False):
        with pytest.raises(ValueError, match="mdcv_distances: filters has an empty dimension"):
            _C.mdcv_distances(x)
    else:
        with pytest.raises(TypeError, match="built without CUDA"):
            _C.mdcv_distances(x)


def test_host_dtype_rule(rng):
    x = rng.uniform(size=(1, 6, 8, 2)).astype(np.float32)
    assert _C.cosine_nlm(x).dtype == np.float32
    # a strided float32 view is still float32 (NumPy makes it contiguous), not promoted
    assert _C.cosine_nlm(x[:, :, ::2]).dtype == np.float32
    assert _C.marr_hildreth(x.astype(np.float16)).dtype == np.float64
    assert _C.cosine_nlm(x.tolist()).dtype == np.float64
    a = rng.uniform(size=(3, 4))
    assert _C.fci(a.astype(np.float32), a.astype(np.float32)).dtype == np.float32
    assert _C.fci(a.astype(np.float32), a).dtype == np.float64


def test_a_non_numeric_argument_is_named():
    with pytest.raises(TypeError, match="cosine_nlm: x must be a numeric array"):
        _C.cosine_nlm(object())
    with pytest.raises(TypeError, match="fci: y must be a numeric array"):
        _C.fci(np.zeros((2, 3)), ["a", "b"])
