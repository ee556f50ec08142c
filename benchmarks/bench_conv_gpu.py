"""GPU benchmark of the CUDA Im2col + cuBLAS convolution (csrc/conv/conv_cuda.cu, spec §2b) against
cuDNN (torch.nn.functional.conv2d) on ResNet-50's distinct convolution shapes at batch 32, fp32
(TF32 off on both sides: true fp32) and fp16, both in NHWC memory (channels_last for cuDNN).
Correctness is checked first; timings are interleaved CUDA-event means. Ratio = cuDNN time / our
time (>= 0.7 is the issue's fp32 target). Then GPU feature throughput (cosine NLM, Marr-Hildreth,
FCI) as the speed-up over the CPU path of iapdcnn._C in the same run.
Last stdout line: one JSON object with the figures.

Usage: python benchmarks/bench_conv_gpu.py [--quick] [--batch 32] [--reps 20] [--no-features]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np

from iapdcnn import _C
from resnet50_shapes import RESNET50


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


def bench_conv(torch, batch: int, reps: int, quick: bool) -> dict:
    F = torch.nn.functional
    torch.backends.cudnn.benchmark = True  # cuDNN at its best: autotuned algorithms
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    shapes = RESNET50[:4] if quick else RESNET50
    results: dict[str, dict] = {}
    for dtype, tol in ((torch.float32, 1e-3), (torch.float16, 2e-2)):
        name_dt = str(dtype).removeprefix("torch.")
        ratios = []
        per_shape = {}
        for name, hw, cin, k, cout, stride in shapes:
            x = torch.randn(batch, cin, hw, hw, device="cuda", dtype=dtype)
            x = x.contiguous(memory_format=torch.channels_last)
            w = (torch.randn(cout, cin, k, k, device="cuda") / math.sqrt(cin * k * k)).to(dtype)
            w = w.contiguous(memory_format=torch.channels_last)
            pad = k // 2
            x_nhwc = x.permute(0, 2, 3, 1)  # channels_last memory: already contiguous NHWC
            w_hwio = w.permute(2, 3, 1, 0).contiguous()
            padding = [[0, 0], [pad, pad], [pad, pad], [0, 0]]

            def ours(x_nhwc=x_nhwc, w_hwio=w_hwio, stride=stride, padding=padding):
                return _C.im2col_conv2d(x_nhwc, w_hwio, strides=stride, padding=padding)

            def cudnn(x=x, w=w, stride=stride, pad=pad):
                return F.conv2d(x, w, stride=stride, padding=pad)

            got = torch.as_tensor(ours(), device="cuda").float()
            want = cudnn().permute(0, 2, 3, 1).float()
            err = ((got - want).abs().max() / want.abs().max().clamp_min(1e-6)).item()
            assert err < tol, f"{name} {name_dt}: relative error {err:.2e} > {tol}"
            for _ in range(3):  # warm-up (cuDNN autotuning, pool growth)
                ours()
                cudnn()
            torch.cuda.synchronize()
            t_ours, t_cudnn = [], []
            for _ in range(3):  # interleaved rounds
                t_ours.append(_event_ms(torch, ours, reps))
                t_cudnn.append(_event_ms(torch, cudnn, reps))
            ratio = min(t_cudnn) / min(t_ours)
            ratios.append(ratio)
            per_shape[name] = {"ours_ms": min(t_ours), "cudnn_ms": min(t_cudnn), "ratio": ratio}
            print(
                f"{name_dt:8s} {name:22s} ours {min(t_ours):8.3f} ms  cudnn {min(t_cudnn):8.3f} ms"
                f"  ratio {ratio:5.2f}  max rel err {err:.1e}"
            )
            del x, w, x_nhwc, w_hwio
        results[name_dt] = {"forward_geomean_ratio": _geomean(ratios), "shapes": per_shape}
        print(f"{name_dt}: forward geomean ratio (cuDNN time / ours) {_geomean(ratios):.3f}")
    return results


def bench_features(torch, quick: bool) -> dict:
    """GPU speed-up over the CPU path of _C, same inputs, outputs checked equal first."""
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
        t = time.perf_counter()
        cpu()
        t_cpu = time.perf_counter() - t
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 shapes, fewer reps, small features")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--no-features", action="store_true")
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        torch = None
    if torch is None or not (getattr(_C, "with_cuda", False) and torch.cuda.is_available()):
        print(json.dumps({"skipped": "needs PyTorch, a CUDA build of iapdcnn._C and a CUDA GPU"}))
        return
    reps = 5 if args.quick else args.reps
    conv = bench_conv(torch, args.batch, reps, args.quick)
    feats = {} if args.no_features else bench_features(torch, args.quick)
    print(
        json.dumps(
            {
                "device": torch.cuda.get_device_name(),
                "batch": args.batch,
                "fp32_forward_geomean_ratio": conv["float32"]["forward_geomean_ratio"],
                "fp16_forward_geomean_ratio": conv["float16"]["forward_geomean_ratio"],
                "target_fp32": 0.7,
                "conv": conv,
                "features": feats,
            }
        )
    )


if __name__ == "__main__":
    main()
