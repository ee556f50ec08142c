"""GPU benchmark of the CUDA Im2col + cuBLAS convolution (csrc/conv/conv_cuda.cu, spec §2b) against
cuDNN through PyTorch on ResNet-50's distinct convolution shapes at batch 32, fp32 (TF32 off on
both sides: true fp32) and fp16, all in NHWC memory (channels_last for cuDNN): the forward pass
(torch.nn.functional.conv2d) and both gradients (torch.nn.grad.conv2d_input / conv2d_weight,
which run cuDNN's backward-data and backward-filter). Each result is checked against cuDNN's
first; timings are interleaved CUDA-event means. Ratio = cuDNN time / our time (>= 0.7 in the
fp32 forward geomean is issue 19's target).

Then feature throughput: EdgeFeatures (what iapdcnn.layers.EdgeFeatures computes: cosine NLM with
the default r=2, s=5, h=0.1, then Marr-Hildreth edges, float32) in images/s at 224x224 on the GPU,
against the CPU path of iapdcnn._C in the same run and OpenCV's nearest equivalent when cv2 is
importable (fastNlMeansDenoising at the same windows, then a Laplacian zero-crossing masked by the
Sobel magnitude); and cosine NLM, Marr-Hildreth and FCI alone at 28x28 as the speed-up over the
CPU path; and MDCV's distances of every ResNet-50 kernel (the CUDA path's Gram product on the GPU,
its small solve on the host) against the CPU path. Needs PyTorch with CUDA, not TensorFlow.

Last stdout line: one JSON object with the figures (or {"skipped": why}).

Usage: python benchmarks/bench_conv_gpu.py [--quick] [--batch 32] [--reps 20] [--target-ms 25]
           [--time-budget 140] [--no-features | --features-only]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np

from bench_images import images
from iapdcnn import _C
from resnet50_shapes import RESNET50

OPS = ("forward", "backprop_input", "backprop_filter")


def _event_ms(torch, fn, reps: int) -> float:
    """Mean milliseconds of fn() over reps, timed with CUDA events on the current stream."""
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    stop.record()
    stop.synchronize()
    return start.elapsed_time(stop) / reps


def _geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def _rel_err(got, want) -> float:
    """Largest absolute difference relative to the largest magnitude of want."""
    got, want = got.float(), want.float()
    return ((got - want).abs().max() / want.abs().max().clamp_min(1e-6)).item()


def _time_pair(torch, ours, theirs, max_reps: int, target_ms: float) -> tuple[float, float]:
    """(our ms, cuDNN ms): best of 3 interleaved rounds, reps per round chosen so that a round
    takes about target_ms (at least 3, at most max_reps)."""
    for _ in range(2):  # warm-up: cuDNN autotuning, pool growth
        ours()
        theirs()
    torch.cuda.synchronize()
    one = max(_event_ms(torch, ours, 1), _event_ms(torch, theirs, 1), 1e-3)
    reps = int(min(max_reps, max(3, math.ceil(target_ms / one))))
    t_ours, t_theirs = [], []
    for _ in range(3):
        t_ours.append(_event_ms(torch, ours, reps))
        t_theirs.append(_event_ms(torch, theirs, reps))
    return min(t_ours), min(t_theirs)


def bench_conv(
    torch, batch: int, max_reps: int, target_ms: float, quick: bool, time_budget: float
) -> dict:
    F = torch.nn.functional
    grad = torch.nn.grad
    torch.backends.cudnn.benchmark = True  # cuDNN at its best: autotuned algorithms
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    shapes = RESNET50[:4] if quick else RESNET50
    t_start = time.perf_counter()
    results: dict[str, dict] = {}
    truncated = False
    # half of the time budget per dtype (what fp32 leaves unused goes to fp16)
    for share, dtype, tol in ((0.5, torch.float32, 1e-3), (1.0, torch.float16, 2e-2)):
        name_dt = str(dtype).removeprefix("torch.")
        ratios: dict[str, list[float]] = {op: [] for op in OPS}
        per_shape: dict[str, dict] = {}
        for name, hw, cin, k, cout, stride in shapes:
            if time.perf_counter() - t_start > share * time_budget:
                truncated = True
                break
            gen = torch.Generator(device="cuda").manual_seed(0)
            x = torch.randn(batch, cin, hw, hw, device="cuda", dtype=dtype, generator=gen)
            x = x.contiguous(memory_format=torch.channels_last)
            w = torch.randn(cout, cin, k, k, device="cuda", generator=gen) / math.sqrt(cin * k * k)
            w = w.to(dtype).contiguous(memory_format=torch.channels_last)
            pad = k // 2
            out_hw = (hw + 2 * pad - k) // stride + 1
            dy = torch.randn(batch, cout, out_hw, out_hw, device="cuda", dtype=dtype, generator=gen)
            dy = dy.contiguous(memory_format=torch.channels_last)
            # channels_last memory is NHWC: these permutes are contiguous views, no copies
            x_nhwc, dy_nhwc = x.permute(0, 2, 3, 1), dy.permute(0, 2, 3, 1)
            w_hwio = w.permute(2, 3, 1, 0).contiguous()
            kw = {"strides": stride, "padding": [[0, 0], [pad, pad], [pad, pad], [0, 0]]}
            in_sizes, f_sizes = list(x_nhwc.shape), list(w_hwio.shape)

            def fwd_ours(x_nhwc=x_nhwc, w_hwio=w_hwio, kw=kw):
                return _C.im2col_conv2d(x_nhwc, w_hwio, **kw)

            def fwd_cudnn(x=x, w=w, stride=stride, pad=pad):
                return F.conv2d(x, w, stride=stride, padding=pad)

            def dx_ours(w_hwio=w_hwio, dy_nhwc=dy_nhwc, kw=kw, in_sizes=in_sizes):
                return _C.im2col_conv2d_backprop_input(in_sizes, w_hwio, dy_nhwc, **kw)

            def dx_cudnn(x=x, w=w, dy=dy, stride=stride, pad=pad):
                return grad.conv2d_input(x.shape, w, dy, stride=stride, padding=pad)

            def dw_ours(x_nhwc=x_nhwc, dy_nhwc=dy_nhwc, kw=kw, f_sizes=f_sizes):
                return _C.im2col_conv2d_backprop_filter(x_nhwc, f_sizes, dy_nhwc, **kw)

            def dw_cudnn(x=x, w=w, dy=dy, stride=stride, pad=pad):
                return grad.conv2d_weight(x, w.shape, dy, stride=stride, padding=pad)

            pairs = {
                # (ours, cuDNN, cuDNN's result in our layout)
                "forward": (fwd_ours, fwd_cudnn, lambda t: t.permute(0, 2, 3, 1)),
                "backprop_input": (dx_ours, dx_cudnn, lambda t: t.permute(0, 2, 3, 1)),
                "backprop_filter": (dw_ours, dw_cudnn, lambda t: t.permute(2, 3, 1, 0)),
            }
            entry = {}
            for op, (ours, theirs, to_ours) in pairs.items():
                got = torch.as_tensor(ours(), device="cuda")
                want = to_ours(theirs())
                assert got.shape == want.shape, f"{name} {name_dt} {op}: {got.shape} {want.shape}"
                err = _rel_err(got, want)
                assert err < tol, f"{name} {name_dt} {op}: relative error {err:.2e} > {tol}"
                del got, want
                t_ours, t_cudnn = _time_pair(torch, ours, theirs, max_reps, target_ms)
                ratio = t_cudnn / t_ours
                ratios[op].append(ratio)
                entry[op] = {"ours_ms": t_ours, "cudnn_ms": t_cudnn, "ratio": ratio, "err": err}
                print(
                    f"{name_dt:8s} {name:22s} {op:16s} ours {t_ours:8.3f} ms  cudnn "
                    f"{t_cudnn:8.3f} ms  ratio {ratio:5.2f}  max rel err {err:.1e}",
                    flush=True,
                )
            per_shape[name] = entry
            del x, w, dy, x_nhwc, dy_nhwc, w_hwio, pairs
        res = {f"{op}_geomean_ratio": _geomean(ratios[op]) for op in OPS}
        res["shapes_done"] = len(per_shape)
        res["shapes"] = per_shape
        results[name_dt] = res
        print(
            f"{name_dt}: geomean ratio (cuDNN time / ours) "
            + ", ".join(f"{op} {res[f'{op}_geomean_ratio']:.3f}" for op in OPS),
            flush=True,
        )
    results["truncated"] = truncated
    return results


# ---- features ------------------------------------------------------------------------------------


def _edge_features(x):
    """EdgeFeatures' computation with its defaults (the layer: cosine_nlm, then marr_hildreth)."""
    nlm, mh = _C.defaults["cosine_nlm"], _C.defaults["marr_hildreth"]
    d = _C.cosine_nlm(x, nlm["patch_radius"], nlm["search_radius"], nlm["h"], nlm["eps"])
    return _C.marr_hildreth(d, mh["laplacian"], mh["threshold"], mh["relative"], mh["mode"])


def _opencv_edges(cv2, n_images):
    """OpenCV's nearest equivalent per 8-bit image: fastNlMeansDenoising with a 5x5 template and
    an 11x11 search window, a 4-neighbour Laplacian's sign changes, kept where the Sobel magnitude
    exceeds 0.1 of its maximum."""

    def run():
        for im in n_images:
            d = cv2.fastNlMeansDenoising(im, None, 10.0, 5, 11).astype(np.float32)
            lap = cv2.Laplacian(d, cv2.CV_32F, ksize=1)
            gx = cv2.Sobel(d, cv2.CV_32F, 1, 0, ksize=3)
            gy = cv2.Sobel(d, cv2.CV_32F, 0, 1, ksize=3)
            mag = cv2.magnitude(gx, gy)
            cross = (lap * np.roll(lap, 1, axis=1)) < 0
            _ = d * (cross & (mag > 0.1 * mag.max()))
        return len(n_images)

    return run


def bench_edge_features_224(torch, quick: bool) -> dict:
    n_gpu, n_cpu, n_cv = (32, 4, 4) if quick else (256, 16, 16)
    x = images(n_gpu, 224)
    xd = torch.from_numpy(x).cuda()
    # correctness first: GPU == the CPU path of _C on the same images (thresholded output: a
    # vanishing fraction of pixels sitting on a decision may flip)
    got = torch.as_tensor(_edge_features(xd[:n_cpu]), device="cuda").cpu().numpy()
    want = _edge_features(x[:n_cpu])
    bad = ~np.isclose(got, want, atol=1e-5, rtol=1e-5)
    assert bad.mean() <= 1e-3, f"EdgeFeatures 224: {bad.sum()} of {bad.size} pixels differ"
    _edge_features(xd)
    torch.cuda.synchronize()
    gpu_ms = min(_event_ms(torch, lambda: _edge_features(xd), 1 if quick else 2) for _ in range(3))
    nlm_ms = _event_ms(torch, lambda: _C.cosine_nlm(xd), 1)
    mh_ms = _event_ms(torch, lambda: _C.marr_hildreth(xd), 3)
    cpu_s = []
    for _ in range(2):
        t = time.perf_counter()
        _edge_features(x[:n_cpu])
        cpu_s.append(time.perf_counter() - t)
    out = {
        "gpu_batch": n_gpu,
        "gpu_images_per_s": n_gpu / (gpu_ms / 1e3),
        "gpu_cosine_nlm_images_per_s": n_gpu / (nlm_ms / 1e3),
        "gpu_marr_hildreth_images_per_s": n_gpu / (mh_ms / 1e3),
        "cpu_images_per_s": n_cpu / min(cpu_s),
        "agreement": float(1 - bad.mean()),
    }
    out["speedup_vs_cpu"] = out["gpu_images_per_s"] / out["cpu_images_per_s"]
    try:
        import cv2
    except ImportError:
        cv2 = None
    if cv2 is not None:
        u8 = [np.ascontiguousarray(np.round(im[:, :, 0] * 255).astype(np.uint8)) for im in x[:n_cv]]
        run = _opencv_edges(cv2, u8)
        run()  # warm-up
        best = min(_timed(run) for _ in range(2))
        out["opencv_images_per_s"] = n_cv / best
        out["opencv_threads"] = cv2.getNumThreads()
        out["speedup_vs_opencv"] = out["gpu_images_per_s"] / out["opencv_images_per_s"]
    print(
        f"EdgeFeatures 224x224: GPU {out['gpu_images_per_s']:.0f} images/s (batch {n_gpu}), "
        f"CPU path {out['cpu_images_per_s']:.1f} images/s ({out['speedup_vs_cpu']:.1f}x)"
        + (
            f", OpenCV {out['opencv_images_per_s']:.1f} images/s ({out['speedup_vs_opencv']:.1f}x)"
            if "opencv_images_per_s" in out
            else ", OpenCV not installed"
        ),
        flush=True,
    )
    return out


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_features(torch, quick: bool) -> dict:
    """GPU speed-up over the CPU path of _C at 28x28, same inputs, outputs checked equal first."""
    rng = np.random.default_rng(0)
    n = 64 if quick else 512
    x = rng.uniform(size=(n, 28, 28, 1)).astype(np.float32)
    xd = torch.from_numpy(x).cuda()
    blocks = rng.uniform(size=(n, 49, 16)).astype(np.float64)
    labels = rng.integers(0, 10, size=n).astype(np.int64)
    bd, ld = torch.from_numpy(blocks).cuda(), torch.from_numpy(labels).cuda()
    cases = {
        "cosine_nlm": (lambda: _C.cosine_nlm(x), lambda: _C.cosine_nlm(xd), 2e-4),
        "marr_hildreth": (lambda: _C.marr_hildreth(x), lambda: _C.marr_hildreth(xd), 1e-5),
        "fci_within_class": (
            lambda: _C.fci_within_class(blocks, labels, 10),
            lambda: _C.fci_within_class(bd, ld, 10),
            1e-10,
        ),
    }
    out = {}
    for name, (cpu, gpu, tol) in cases.items():
        got = torch.as_tensor(gpu(), device="cuda").cpu().numpy()
        want = cpu()
        bad = ~np.isclose(got, want, atol=tol, rtol=tol)
        assert bad.mean() <= 1e-3, f"{name}: {bad.sum()} of {bad.size} values differ"
        t_cpu = _timed(cpu)
        gpu()
        torch.cuda.synchronize()
        t_gpu = _event_ms(torch, gpu, 5) / 1e3
        out[name] = {
            "images_or_samples": n,
            "gpu_per_s": n / t_gpu,
            "speedup_vs_cpu": t_cpu / t_gpu,
        }
        print(f"{name:18s} GPU {n / t_gpu:12.0f} /s   {t_cpu / t_gpu:7.1f}x the CPU path")
    return out


def bench_mdcv(torch, quick: bool) -> dict:
    """MDCV distances of ResNet-50's conv kernels (float32, Ledoit-Wolf): the CUDA path (check,
    centring and the float64 Gram product on the GPU, the k x k solve on the host) against the CPU
    path of _C, distances checked equal first. Each call synchronises (the solve is on the host),
    so wall-clock time is the measure."""
    rng = np.random.default_rng(0)
    per_layer = {}
    for name, _hw, cin, k, cout, _stride in RESNET50[:4] if quick else RESNET50:
        w = (rng.normal(size=(k, k, cin, cout)) / math.sqrt(k * k * cin)).astype(np.float32)
        wd = torch.from_numpy(w).cuda()
        want = _C.mdcv_distances(w)[0]
        got = torch.as_tensor(_C.mdcv_distances(wd)[0], device="cuda").cpu().numpy()
        err = float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-30))
        assert err < 1e-4, f"mdcv {name}: relative error {err:.2e}"
        t_cpu = min(_timed(lambda w=w: _C.mdcv_distances(w)) for _ in range(2))
        t_gpu = min(_timed(lambda wd=wd: _C.mdcv_distances(wd)) for _ in range(3))
        per_layer[name] = {"cpu_ms": 1e3 * t_cpu, "gpu_ms": 1e3 * t_gpu, "speedup": t_cpu / t_gpu}
        print(f"mdcv {name:22s} CPU {1e3 * t_cpu:8.2f} ms  GPU {1e3 * t_gpu:8.2f} ms", flush=True)
    speedups = [v["speedup"] for v in per_layer.values()]
    return {"speedup_geomean": _geomean(speedups), "layers": per_layer}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 shapes, fewer reps, small features")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--reps", type=int, default=20, help="most timed calls per round")
    ap.add_argument("--target-ms", type=float, default=25.0, help="aimed length of a round")
    ap.add_argument(
        "--time-budget",
        type=float,
        default=140.0,
        help="seconds for the conv part: shapes left when it is spent are not run (the JSON "
        "says so, truncated: true)",
    )
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--no-features", action="store_true", help="the convolutions only")
    mode.add_argument("--features-only", action="store_true", help="the feature ops only")
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        torch = None
    if torch is None or not (getattr(_C, "with_cuda", False) and torch.cuda.is_available()):
        print(json.dumps({"skipped": "needs PyTorch, a CUDA build of iapdcnn._C and a CUDA GPU"}))
        return
    result: dict = {"device": torch.cuda.get_device_name(), "batch": args.batch}
    if not args.features_only:
        reps = 5 if args.quick else args.reps
        conv = bench_conv(torch, args.batch, reps, args.target_ms, args.quick, args.time_budget)
        for dt, short in (("float32", "fp32"), ("float16", "fp16")):
            for op in OPS:
                result[f"{short}_{op}_geomean_ratio"] = conv[dt][f"{op}_geomean_ratio"]
        result["target_fp32"] = 0.7
        result["meets_target_fp32"] = result["fp32_forward_geomean_ratio"] >= 0.7
        result["shapes"] = len(RESNET50[:4] if args.quick else RESNET50)
        result["truncated"] = conv.pop("truncated")
        result["conv"] = conv
    if not args.no_features:
        edge = bench_edge_features_224(torch, args.quick)
        for k, v in edge.items():
            result[f"edge_224_{k}"] = v
        result["features"] = bench_features(torch, args.quick)
        mdcv = bench_mdcv(torch, args.quick)
        result["mdcv_speedup_vs_cpu_geomean"] = mdcv["speedup_geomean"]
        result["mdcv"] = mdcv["layers"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
