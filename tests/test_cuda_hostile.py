"""Hostile input for the CUDA paths of ``iapdcnn._C`` (issue 19): the extreme sizes, strides,
dilations, paddings, radii, dtypes and NaN / Inf fills of tests/test_hostile_ops.py, on CUDA
arrays (CuPy or PyTorch, as tests/test_cuda.py picks them). Every case runs on the device and on
the CPU path of ``_C``, which test_hostile_ops.py holds to the NumPy references, and must give
the same answer (NaN and Inf at the same places, the rest within the dtype's tolerance) or the
same kind of clear error. What only the device refuses must be refused clearly: a dtype the CUDA
kernels do not take, labels that are not int64, a non-contiguous CUDA array, device memory.

Then what the GPU can take that the CPU suite cannot afford: tensors past 2^31 elements through
the kernels' 64-bit index math (each checked on planes at both ends against the CPU path of the
same image), strides far larger than the image, kernels larger than the input, one-pixel images,
zero-size batches, huge dilations. MDCV has no CUDA kernel yet and is out of scope here.

Cases run in subprocesses, many per process (this file is also the worker: ``python
test_cuda_hostile.py`` reads a JSON list of cases on stdin), so a crash or a sticky CUDA error
fails the test and names the case instead of killing the run. Without a CUDA build of ``_C``, a
GPU, and CuPy or PyTorch, every test skips with the reason."""

from __future__ import annotations

import json
import os
import sys

import numpy as np

from iapdcnn import _C
from test_cuda import BACKEND, WHY, dev, host
from test_hostile_ops import ARG_NAMES, ERROR_TYPES, _array, _labels

# ---- the worker ---------------------------------------------------------------------------------

DEVICE_DTYPES = {"im2col_conv2d": ("float16", "float32", "float64")}
FLOAT_DTYPES = ("float32", "float64")
TOL = {"float16": 1e-1, "float32": 2e-4, "float64": 1e-9}


def _backend():
    if BACKEND == "cupy":
        import cupy

        return cupy
    import torch

    return torch


def _wrap(buf):
    """A CudaBuffer as a CuPy array / torch tensor, no copy."""
    if BACKEND == "cupy":
        return _backend().asarray(buf)
    return _backend().as_tensor(buf, device="cuda")


def _to_np(a) -> np.ndarray:
    if BACKEND == "cupy":
        return _backend().asnumpy(a)
    return a.cpu().numpy()


def _noncontig(a: np.ndarray):
    """a on the device as a view with every other element of the last axis: not C-contiguous
    when that axis has more than one element."""
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    big[..., ::2] = a
    return dev(big)[..., ::2]


def _is_contiguous(d) -> bool:
    return bool(d.flags.c_contiguous) if BACKEND == "cupy" else bool(d.is_contiguous())


def _free_bytes() -> int:
    if BACKEND == "cupy":
        return int(_backend().cuda.runtime.memGetInfo()[0])
    return int(_backend().cuda.mem_get_info()[0])


def _agree(got, want, tol: float, what: str) -> str | None:
    """None when got == want: same shape, NaN and Inf at the same places (Inf of the same sign),
    the rest within tol (relative, and absolute relative to the largest finite value)."""
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    if got.shape != want.shape:
        return f"{what}: shape {got.shape} on the GPU, {want.shape} on the CPU"
    if not np.array_equal(np.isnan(got), np.isnan(want)):
        where = np.argwhere(np.isnan(got) != np.isnan(want))[:3].tolist()
        return f"{what}: NaN positions differ at {where}"
    if not np.array_equal(np.isinf(got), np.isinf(want)):
        return f"{what}: Inf positions differ"
    if not np.array_equal(got[np.isinf(got)], want[np.isinf(want)]):
        return f"{what}: Inf signs differ"
    fin = np.isfinite(want)
    if fin.any():
        scale = max(1.0, float(np.abs(want[fin]).max()))
        if not np.allclose(got[fin], want[fin], rtol=tol, atol=tol * scale):
            err = float(np.abs(got[fin] - want[fin]).max())
            return f"{what}: max difference {err:g} (tolerance {tol:g}, scale {scale:g})"
    return None


def _within_bounds(got, want, x, what: str) -> str | None:
    """For a tiny NLM h, where float rounding decides which weights survive: NaN where the CPU has
    it, and every finite value a weighted average of the image (within its range)."""
    got = np.asarray(got, np.float64)
    if got.shape != want.shape or not np.array_equal(np.isnan(got), np.isnan(want)):
        return f"{what}: shape or NaN positions differ from the CPU path"
    fin = np.isfinite(x)
    lo, hi = (float(x[fin].min()), float(x[fin].max())) if fin.any() else (0.0, 0.0)
    ok = got[np.isfinite(want)]
    if ok.size and (ok.min() < lo - 1e-5 or ok.max() > hi + 1e-5):
        return f"{what}: a weighted average outside the image's range [{lo}, {hi}]"
    return None


class Outcome:
    """A call's result (NumPy, or a tuple of them) or its exception."""

    def __init__(self, fn):
        self.value, self.error = None, None
        try:
            self.value = fn()
        except Exception as e:  # noqa: BLE001 - judged below
            self.error = e

    def describe(self) -> str:
        return f"{type(self.error).__name__}: {str(self.error)[:300]}"


def _clear(op: str, err: BaseException) -> bool:
    """A clear error: an expected type whose message names the op or one of its arguments."""
    msg = str(err)
    names = ARG_NAMES[op] + [op, op.split("_")[0]]
    return type(err).__name__ in ERROR_TYPES and any(n in msg for n in names)


def _judge(op, cpu: Outcome, gpu: Outcome, compare, device_refusal: str | None) -> str | None:
    """None when the GPU outcome is right; else what is wrong."""
    if device_refusal is not None:  # the device must refuse, clearly, whatever the CPU did
        if gpu.error is None:
            return f"the GPU accepted {device_refusal}"
        if not _clear(op, gpu.error) and device_refusal != "a non-contiguous CUDA array":
            return f"unclear GPU error for {device_refusal}: {gpu.describe()}"
        if device_refusal == "a non-contiguous CUDA array" and "C-contiguous" not in str(gpu.error):
            return f"a non-contiguous CUDA array not refused as such: {gpu.describe()}"
        return None
    if cpu.error is None and gpu.error is None:
        return compare(cpu.value, gpu.value)
    if cpu.error is not None and gpu.error is not None:
        if type(cpu.error) is not type(gpu.error) and not isinstance(cpu.error, MemoryError):
            return f"the CPU raised {cpu.describe()}, the GPU {gpu.describe()}"
        if not _clear(op, gpu.error):
            return f"unclear GPU error: {gpu.describe()}"
        return None
    if gpu.error is not None:
        if isinstance(gpu.error, MemoryError) and _clear(op, gpu.error):
            return None  # out of device memory where the host had enough: said clearly
        return f"the GPU refused what the CPU computed: {gpu.describe()}"
    if isinstance(cpu.error, MemoryError):
        return None  # the device had the memory the host did not
    return f"the GPU computed what the CPU refused ({cpu.describe()})"


def _to_dev(case, arrays: dict[str, np.ndarray]) -> tuple[dict, str | None]:
    """The arrays on the device (the first one non-contiguous when the case says so), and what
    the CUDA path refuses by rule in this case, before any computing: a non-contiguous array, a
    dtype its kernels do not take, labels that are not int64 (device arrays are not cast)."""
    out = {}
    for i, (k, a) in enumerate(arrays.items()):
        out[k] = _noncontig(a) if i == 0 and case.get("dev_noncontig") else dev(a)
    first_name, first = next(iter(arrays.items()))
    if not _is_contiguous(out[first_name]):
        return out, "a non-contiguous CUDA array"
    if str(first.dtype) not in DEVICE_DTYPES.get(case["op"], FLOAT_DTYPES):
        return out, f"a {first.dtype} CUDA array"
    if "labels" in arrays and arrays["labels"].dtype != np.int64:
        return out, f"{arrays['labels'].dtype} labels on the device"
    return out, None


def _host(buf):
    """host(), with zero-size results read from the CudaBuffer's shape and dtype."""
    if isinstance(buf, tuple):
        return tuple(_host(b) for b in buf)
    if isinstance(buf, _C.CudaBuffer) and 0 in buf.shape:
        return np.empty(buf.shape, buf.dtype)
    return host(buf)


def _run_conv(case) -> list[str]:
    a = case["args"]
    x, f = _array(a["input"]), _array(a["filters"])
    kw = {k: a[k] for k in ("strides", "padding", "data_format", "dilations") if k in a}
    kw["groups"] = a.get("groups", 1)
    d, refusal = _to_dev(case, {"input": x, "filters": f})
    tol = TOL.get(str(x.dtype), 1e-9)

    def close(what):
        return lambda c, g: _agree(g, c, tol, what)

    cpu = Outcome(lambda: _C.im2col_conv2d(x, f, **kw))
    gpu = Outcome(lambda: _host(_C.im2col_conv2d(d["input"], d["filters"], **kw)))
    problem = _judge("im2col_conv2d", cpu, gpu, close("forward"), refusal)
    if problem or refusal or cpu.error is not None or gpu.error is not None:
        return [problem] if problem else []
    # both gradients, wherever the forward pass ran on both
    dy = np.random.default_rng(1).uniform(-1, 1, size=cpu.value.shape).astype(x.dtype)
    dyd = dev(dy)
    problems = []
    cpu = Outcome(lambda: _C.im2col_conv2d_backprop_input(list(x.shape), f, dy, **kw))
    gpu = Outcome(
        lambda: _host(_C.im2col_conv2d_backprop_input(list(x.shape), d["filters"], dyd, **kw))
    )
    problems.append(_judge("im2col_conv2d", cpu, gpu, close("grad input"), None))
    cpu = Outcome(lambda: _C.im2col_conv2d_backprop_filter(x, list(f.shape), dy, **kw))
    gpu = Outcome(
        lambda: _host(_C.im2col_conv2d_backprop_filter(d["input"], list(f.shape), dyd, **kw))
    )
    problems.append(_judge("im2col_conv2d", cpu, gpu, close("grad filter"), None))
    return [p for p in problems if p]


def _run_image(case) -> list[str]:
    op = case["op"]
    a = dict(case["args"])
    x = _array(a.pop("x"))
    d, refusal = _to_dev(case, {"x": x})
    tol = TOL.get(str(x.dtype), 1e-9)
    if op == "cosine_nlm" and a.get("h", 0.1) < 1e-2:
        compare = lambda c, g: _within_bounds(g, c, x, op)  # noqa: E731
    else:
        compare = lambda c, g: _agree(g, c, tol, op)  # noqa: E731
    cpu = Outcome(lambda: getattr(_C, op)(x, **a))
    gpu = Outcome(lambda: _host(getattr(_C, op)(d["x"], **a)))
    problem = _judge(op, cpu, gpu, compare, refusal)
    return [problem] if problem else []


def _run_fci(case) -> list[str]:
    op = case["op"]
    a = case["args"]
    arrays = {"x": _array(a["x"])}
    if op == "fci":
        arrays["y"] = _array(a["y"])
    else:
        arrays["labels"] = _labels(a["labels"])
        if op == "fci_prototype":
            arrays["prototypes"] = _array(a["prototypes"])
    d, refusal = _to_dev(case, arrays)
    third = () if op in ("fci", "fci_prototype") else (a["num_classes"],)
    tol = TOL.get(str(arrays["x"].dtype), 1e-9)

    def compare(c, g):
        if op == "fci_class_stats":
            return _agree(g[0], c[0], 0, "counts") or _agree(g[1], c[1], 1e-12, "sums")
        return _agree(g, c, tol, op)

    fn = getattr(_C, op)
    cpu = Outcome(lambda: fn(*arrays.values(), *third))
    gpu = Outcome(lambda: _host(fn(*d.values(), *third)))
    problem = _judge(op, cpu, gpu, compare, refusal)
    return [problem] if problem else []


# ---- past 2^31 elements: one case per process, inputs tiled on the device from a few images ----

BIG_PLANES, BIG_HW = 2051, 1024  # 2051 * 1024^2 = 2^31 + 3 * 2^20 elements per [N, H, W, 1]


def _tiled(base: np.ndarray, n: int):
    """[n, ...] on the device whose item i is base[i % len(base)] (one gather, no host copy)."""
    b = dev(base)
    if BACKEND == "cupy":
        cp = _backend()
        return b[cp.arange(n) % len(base)]
    torch = _backend()
    return b[torch.arange(n, device="cuda") % len(base)]


def _ends(n: int, k: int) -> list[int]:
    """Item indices at both ends: the first k and the last k (past 2^31 elements)."""
    return list(range(k)) + list(range(n - k, n))


def _run_big(case) -> list[str]:
    kind = case["kind"]
    need = int(case["gib"] * 2**30)
    if _free_bytes() < need:
        return [f"SKIP: needs {case['gib']} GiB of free device memory, {_free_bytes() / 2**30:.0f}"]
    rng = np.random.default_rng(0)
    k, n, hw = 3, BIG_PLANES, BIG_HW
    if kind in ("marr_hildreth", "cosine_nlm"):
        base = rng.integers(0, 4, size=(k, hw, hw, 1)).astype(np.float32)
        args = {"laplacian": 8, "threshold": 0.2} if kind == "marr_hildreth" else {}
        if kind == "cosine_nlm":
            args = {"patch_radius": 1, "search_radius": 1, "h": 0.3}
        fn = getattr(_C, kind)
        out = _wrap(fn(_tiled(base, n), **args))
        want = fn(base, **args)
        problems = []
        for i in _ends(n, k):
            problems.append(_agree(_to_np(out[i]), want[i % k], 2e-4, f"{kind} plane {i}"))
        return [p for p in problems if p]
    if kind == "conv":
        # 3x3 SAME convolution of [2051, 1024, 1024, 1]. Sparse 0/1 data and small integer
        # weights: every sum is an integer below 2^24, exact in float32 in any order, so the
        # filter gradient (2^31 input elements) must equal the per-image ones weighted by how
        # often each image repeats, and one chunk of images lost or counted twice shows.
        base = (rng.random(size=(k, hw, hw, 1)) < 0.01).astype(np.float32)
        w = rng.integers(-2, 3, size=(3, 3, 1, 2)).astype(np.float32)
        dyb = (rng.random(size=(k, hw, hw, 2)) < 0.01).astype(np.float32)
        xd, wd, dyd = _tiled(base, n), dev(w), _tiled(dyb, n)
        problems = []
        out = _wrap(_C.im2col_conv2d(xd, wd, padding="SAME"))
        want = _C.im2col_conv2d(base, w, padding="SAME")
        for i in _ends(n, k):
            problems.append(_agree(_to_np(out[i]), want[i % k], 2e-4, f"forward image {i}"))
        del out
        dx = _wrap(_C.im2col_conv2d_backprop_input([n, hw, hw, 1], wd, dyd, padding="SAME"))
        want = _C.im2col_conv2d_backprop_input([k, hw, hw, 1], w, dyb, padding="SAME")
        for i in _ends(n, k):
            problems.append(_agree(_to_np(dx[i]), want[i % k], 2e-4, f"grad input image {i}"))
        del dx
        dw = host(_C.im2col_conv2d_backprop_filter(xd, [3, 3, 1, 2], dyd, padding="SAME"))
        counts = np.bincount(np.arange(n) % k, minlength=k)
        want = sum(
            c * _C.im2col_conv2d_backprop_filter(
                base[i : i + 1].astype(np.float64), [3, 3, 1, 2], dyb[i : i + 1].astype(np.float64),
                padding="SAME",
            )
            for i, c in enumerate(counts)
        )  # fmt: skip
        problems.append(_agree(dw, want, 1e-7, "grad filter over 2^31 input elements"))
        return [p for p in problems if p]
    if kind == "gemm_past_int32":
        # one image of more than 2^31 pixels through a 1x1 convolution: one GEMM dimension past
        # cuBLAS's 32-bit int. A correct result or a clear error (naming the op) are both fine.
        side = 46341  # 46341^2 > 2^31
        row = rng.uniform(-1, 1, size=(1, 1, side, 1)).astype(np.float32)
        w = np.array([[[[2.0, -1.0]]]], np.float32)
        x = _tiled(row, side).reshape(1, side, side, 1)
        out = Outcome(lambda: _C.im2col_conv2d(x, dev(w)))
        if out.error is not None:
            if _clear("im2col_conv2d", out.error):
                return []
            return [f"unclear error past cuBLAS's 32-bit limit: {out.describe()}"]
        o = _wrap(out.value)
        want = row[0, 0, :, :] @ w[0, 0]
        return [
            p for p in (_agree(_to_np(o[0, r]), want, 2e-4, f"row {r}") for r in (0, side - 1)) if p
        ]
    if kind == "fci":
        # fci of 50000 x 50000 blocks: an output of 2.5e9 elements
        m = 50000
        x = rng.normal(size=(m, 8)).astype(np.float32)
        xd = dev(x)
        out = _wrap(_C.fci(xd, xd))
        rows = [0, 1, m - 2, m - 1]
        want = _C.fci(x[rows], x)
        return [p for p in (_agree(_to_np(out[rows]), want, 2e-4, "fci rows"),) if p]
    raise ValueError(f"unknown big case {kind}")


def _worker() -> None:
    cases = json.load(sys.stdin)
    for i, case in enumerate(cases):
        print(f"START {i}", flush=True)
        op = case["op"]
        try:
            if op == "big":
                problems = _run_big(case)
            elif op == "im2col_conv2d":
                problems = _run_conv(case)
            elif op in ("cosine_nlm", "marr_hildreth"):
                problems = _run_image(case)
            else:
                problems = _run_fci(case)
            res = {"problems": problems}
        except Exception as e:  # noqa: BLE001 - a harness error is a failure too, with its text
            res = {"problems": [f"the harness raised {type(e).__name__}: {str(e)[:400]}"]}
        print("RESULT " + json.dumps({"i": i, **res}), flush=True)


if __name__ == "__main__":
    _worker()
    sys.exit(0)

# ---- the tests ----------------------------------------------------------------------------------

import pytest  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from hvdrun import run_case_worker  # noqa: E402
from test_hostile_ops import conv_case, fci_case, marr_case, nlm_case  # noqa: E402

pytestmark = pytest.mark.skipif(BACKEND is None, reason=WHY)

SETTINGS = settings(
    max_examples=int(os.environ.get("IAPDCNN_CUDA_HOSTILE_EXAMPLES", "2")),
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
BATCH = 50  # cases per subprocess


def run_cases(cases: list[dict], timeout: float = 150.0) -> list[str]:
    """Runs cases in one subprocess; fails on a crash, a hang or a problem; returns the SKIP
    notes of cases that could not run here (not enough device memory)."""
    results = run_case_worker(__file__, cases, timeout)
    problems, skips = [], []
    for i, case in enumerate(cases):
        for p in results[i]["problems"]:
            (skips if p.startswith("SKIP: ") else problems).append(f"{p} in {json.dumps(case)}")
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:10])
    return skips


def _on_device(case: dict, noncontig: bool) -> dict:
    return {**case, "impl": "cuda", "dev_noncontig": noncontig}


@pytest.mark.parametrize(
    "strategy",
    [conv_case, nlm_case, marr_case, fci_case],
    ids=["conv", "cosine_nlm", "marr_hildreth", "fci"],
)
def test_hostile_cases_on_the_device(strategy):
    # test_hostile_ops.py's strategies (impl and must_* are the CPU suite's; here the CPU path of
    # _C is the oracle), a tenth of the cases with a non-contiguous first CUDA array
    @SETTINGS
    @given(st.lists(st.tuples(strategy(), st.integers(0, 9)), min_size=BATCH, max_size=BATCH))
    def run(drawn):
        run_cases([_on_device(case, r == 0) for case, r in drawn])

    run()


F32 = {"dtype": "float32"}
F64 = {"dtype": "float64"}


def _conv(x, f, **kw):
    return {"op": "im2col_conv2d", "args": {"input": x, "filters": f, **kw}}


def _img(op, x, **kw):
    return {"op": op, "args": {"x": x, **kw}}


def test_the_issues_examples_on_the_device():
    # test_hostile_ops.test_the_issues_examples' _C cases (MDCV aside)
    P = 2**31 - 1
    one = {"shape": [1, 1, 1, 1], **F32}
    five = {"shape": [1, 5, 5, 1], **F32}
    k16 = {"shape": [3, 3, 1, 16], **F32}
    big_pad = [[0, 0], [P, P], [P, P], [0, 0]]
    cases = [
        _conv(one, one, padding=big_pad),
        _conv(five, k16, padding="SAME", dilations=2**40),
        _conv(five, k16, padding="SAME", dilations=2**62),
        _conv(five, k16, padding="SAME", dilations=4096),
        _conv(five, k16, padding="SAME", dilations=P),
        _img("cosine_nlm", five, patch_radius=2, search_radius=10**6),
        _img("cosine_nlm", {**five, **F64}, h=1e-13),
        _img("cosine_nlm", five, h=1e-50),
        _img("cosine_nlm", {"shape": [2, 5, 0, 1]}, patch_radius=1, search_radius=0),
        {"op": "fci_class_stats", "args": {"x": {"shape": [2, 1, 3]},
         "labels": {"values": [0, 1], "dtype": "float64"}, "num_classes": 2}},
        {"op": "fci_class_stats", "args": {"x": {"shape": [1, 3, 3]},
         "labels": {"values": [0]}, "num_classes": 2**40}},
        {"op": "fci_class_stats", "args": {"x": {"shape": [4, 2, 1], "fill": "nan"},
         "labels": {"values": [2, 1, 1, 1]}, "num_classes": 2**40}},
        {"op": "fci", "args": {"x": {"shape": [3, 5], "fill": "nan"},
                               "y": {"shape": [2, 5], "fill": "inf"}}},
        _img("marr_hildreth", {"shape": [1, 7, 7, 1], "fill": "nan", **F32}, laplacian=4,
             threshold=0.1, relative=True, mode="binary"),
    ]  # fmt: skip
    run_cases(cases)


def test_device_extremes():
    # what the GPU takes that the CPU suite does not try: strides far larger than the image,
    # kernels larger than the input, one-pixel and one-row images, zero-size batches, huge
    # dilations, radii past the image (reflected more than once), non-contiguous CUDA arrays
    img = {"shape": [2, 5, 6, 3], **F32, "seed": 3}
    k3 = {"shape": [3, 3, 3, 4], **F32, "seed": 4}
    px = {"shape": [2, 1, 1, 3], **F32}
    cases = []
    for s in (7, 2**20, 2**31 - 1, 2**40):
        for pad in ("SAME", "VALID"):
            cases.append(_conv(img, k3, strides=s, padding=pad))
            cases.append(_conv({**img, "dtype": "float64"}, {**k3, **F64}, strides=[s, 1],
                               padding=pad))  # fmt: skip
    nchw = {"shape": [2, 3, 5, 6], **F32}
    cases.append(_conv(nchw, k3, strides=2**20, padding="SAME", data_format="NCHW"))
    k7 = {"shape": [7, 7, 3, 2], **F32}
    for pad in (
        "SAME",
        "VALID",
        [[0, 0], [3, 3], [3, 3], [0, 0]],
        [[0, 0], [0, 0], [9, 0], [0, 0]],
    ):
        cases.append(_conv(img, k7, padding=pad))
        cases.append(_conv(px, k7, padding=pad))
    for d in (3, 2**20, 2**40):
        cases.append(_conv(img, k3, padding="SAME", dilations=d))
        cases.append(_conv(img, k3, padding="VALID", dilations=d))
    depthwise = {"shape": [3, 3, 1, 3], **F32}
    cases.append(_conv(px, depthwise, padding="SAME", groups=3))
    cases.append(_conv({**img, "dtype": "float16"}, {**k3, "dtype": "float16"}, padding="SAME"))
    for n_h_w in ([0, 5, 6], [2, 0, 6], [2, 5, 0], [0, 0, 0]):
        x = {"shape": [*n_h_w, 3], **F32}
        cases.append(_conv(x, k3, padding="SAME"))
        cases.append(_conv(x, k3, padding="VALID"))
        cases.append(_img("cosine_nlm", {"shape": [*n_h_w, 1], **F32}))
        cases.append(_img("marr_hildreth", {"shape": [*n_h_w, 2], **F64}))
    for shape in ([2, 1, 1, 1], [1, 1, 9, 2], [1, 9, 1, 1], [1, 2, 3, 1]):
        for dtype in ("float32", "float64"):
            x = {"shape": shape, "dtype": dtype, "fill": "int"}
            for r, s in ((0, 0), (1, 1), (2, 5), (4, 9)):
                cases.append(_img("cosine_nlm", x, patch_radius=r, search_radius=s, h=0.3))
            for lap in (4, 8):
                for mode in ("masked", "binary", "magnitude"):
                    cases.append(_img("marr_hildreth", x, laplacian=lap, threshold=0.2,
                                      relative=True, mode=mode))  # fmt: skip
    for op, x in (
        ("cosine_nlm", {"shape": [1, 6, 6, 2]}),
        ("marr_hildreth", {"shape": [1, 6, 6, 2]}),
    ):
        cases.append({**_img(op, {**x, **F32}), "dev_noncontig": True})
    cases.append({**_conv(img, k3, padding="SAME"), "dev_noncontig": True})
    cases.append(_img("cosine_nlm", {"shape": [1, 5, 5, 1], "dtype": "int32"}))
    cases.append(_conv({**img, "dtype": "int32"}, {**k3, "dtype": "int32"}, padding="SAME"))
    fx = {"shape": [0, 4], **F32}
    cases.append({"op": "fci", "args": {"x": fx, "y": {"shape": [3, 4], **F32}}})
    cases.append({"op": "fci", "args": {"x": {"shape": [3, 4], **F32}, "y": fx}})
    blocks = {"shape": [4, 2, 3], **F64}
    for labels in ({"values": [0, 1, 1, 0]}, {"values": [0, 1, 1, 0], "dtype": "int32"}):
        for op in ("fci_class_stats", "fci_within_class"):
            cases.append({"op": op, "args": {"x": blocks, "labels": labels, "num_classes": 2}})
    cases.append({"op": "fci_within_class", "args": {"x": {"shape": [0, 2, 3], **F64},
                  "labels": {"values": []}, "num_classes": 2}})  # fmt: skip
    cases.append({"op": "fci", "args": {"x": {"shape": [3, 4], **F32},
                  "y": {"shape": [2, 4], **F32}}, "dev_noncontig": True})  # fmt: skip
    run_cases(cases)


BIG = [
    # (kind, GiB of device memory it needs, about)
    ("marr_hildreth", 56),
    ("cosine_nlm", 44),
    ("conv", 46),
    ("fci", 12),
]


@pytest.mark.parametrize(("kind", "gib"), BIG, ids=[k for k, _ in BIG])
def test_past_2_31_elements(kind, gib):
    skips = run_cases([{"op": "big", "kind": kind, "gib": gib}], timeout=240.0)
    if skips:
        pytest.skip(skips[0])


def test_a_gemm_dimension_past_int32():
    skips = run_cases([{"op": "big", "kind": "gemm_past_int32", "gib": 30}], timeout=240.0)
    if skips:
        pytest.skip(skips[0])
