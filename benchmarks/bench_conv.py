"""Benchmark of the Im2col + GEMM convolution (SPEC 2b) against TensorFlow's own Conv2D (oneDNN)
on ResNet-50's distinct convolution shapes at batch 8 and 1: forward, gradient w.r.t. input and
w.r.t. filter, interleaved in one process. Ratio = TF time / our time (> 1: we are faster).
Ratios are medians of per-pair ratios of interleaved runs. Last stdout line: one JSON object
with the figures, including the shapes whose ratio is under 0.6, the 3x3 layers' fraction of the
SGEMM rate, and (microkernel_vs_eigen_3x3) our float32 forward's AVX-512 micro-kernel against
the Eigen GEMM path it replaced, interleaved in the same run.

Usage: python benchmarks/bench_conv.py [--quick] [--batches 8 1] [--reps N]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from iapdcnn import _C  # noqa: E402
from iapdcnn.ops import im2col_conv2d  # noqa: E402
from iapdcnn.ops.conv import load_ops  # noqa: E402
from resnet50_shapes import RESNET50  # noqa: E402


def _timeit(fn, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _pair(f_tf, f_ours, warmup: int, reps: int) -> tuple[float, float, float, float, float]:
    """Interleaved runs (order alternates, so drift hits both equally): the median times, the
    median of the per-pair ratios TF / ours, the ratio of the median process CPU times, and our
    best (minimum) time, the statistic the SGEMM rate is measured with.
    Each pair runs back to back, so load from other processes on these shared cores mostly hits
    both members of a pair; the median of the pair ratios is more robust than the ratio of the
    medians. The CPU-time ratio (a diagnostic, not the reported ratio) ignores time spent
    descheduled, but counts the thread pool's spinning."""
    for _ in range(warmup):
        f_tf()
        f_ours()
    a, b, ca, cb = [], [], [], []
    for r in range(reps):
        order = [(f_tf, a, ca), (f_ours, b, cb)]
        for f, wall, cpu in order if r % 2 == 0 else order[::-1]:
            c = time.process_time()
            wall.append(_timeit(f, 1)[0])
            cpu.append(time.process_time() - c)
    pair_ratio = float(np.median(np.asarray(a) / np.asarray(b)))
    cpu_ratio = float(np.median(ca) / max(np.median(cb), 1e-9))
    return float(np.median(a)), float(np.median(b)), pair_ratio, cpu_ratio, float(np.min(b))


def _functions(lib, x, w, dy, xs, ws, st, attrs) -> dict:
    """kind -> (TensorFlow's op, ours), each a tf.function of no arguments."""
    pad = "SAME"
    return {
        "fwd": (
            tf.function(lambda: tf.nn.conv2d(x, w, st, pad)),
            tf.function(lambda: im2col_conv2d(x, w, st, pad)),
        ),
        "bwd_input": (
            tf.function(
                lambda: tf.raw_ops.Conv2DBackpropInput(
                    input_sizes=xs, filter=w, out_backprop=dy, strides=st, padding=pad
                )
            ),
            tf.function(
                lambda: lib.iapdcnn_im2col_conv2d_backprop_input(
                    input_sizes=xs, filters=w, out_backprop=dy, **attrs
                )
            ),
        ),
        "bwd_filter": (
            tf.function(
                lambda: tf.raw_ops.Conv2DBackpropFilter(
                    input=x, filter_sizes=ws, out_backprop=dy, strides=st, padding=pad
                )
            ),
            tf.function(
                lambda: lib.iapdcnn_im2col_conv2d_backprop_filter(
                    input=x, filter_sizes=ws, out_backprop=dy, **attrs
                )
            ),
        ),
    }


def _eigen_path(f):
    """f run with the float32 forward's micro-kernel switched off (IAPDCNN_CONV_MICROKERNEL=0):
    the Eigen GEMM path it replaces."""

    def run():
        os.environ["IAPDCNN_CONV_MICROKERNEL"] = "0"
        try:
            return f().numpy()
        finally:
            del os.environ["IAPDCNN_CONV_MICROKERNEL"]

    return run


def sgemm_rate(reps: int) -> float:
    """This machine's SGEMM rate (GFLOP/s) through TensorFlow's matmul, all threads."""
    n = 2048
    a = tf.random.normal([n, n])
    b = tf.random.normal([n, n])
    mm = tf.function(lambda: tf.linalg.matmul(a, b))
    mm()
    ts = _timeit(lambda: mm().numpy(), reps)
    return 2 * n**3 / min(ts) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats (noisy, still valid)")
    ap.add_argument("--batches", type=int, nargs="+", default=[8, 1])
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--only", default="", help="substring filter on shape names")
    args = ap.parse_args()
    reps = args.reps or (5 if args.quick else 9)
    warmup = 1 if args.quick else 2
    threads = os.cpu_count() or 1
    lib = load_ops()
    rng = np.random.default_rng(0)

    peak = sgemm_rate(5)
    print(f"SGEMM rate (tf.linalg.matmul 2048^3): {peak:.1f} GFLOP/s on {threads} threads")

    ratios = {"fwd": [], "bwd_input": [], "bwd_filter": []}
    cpu_ratios = {k: [] for k in ratios}
    rates_3x3, best_rates_3x3 = [], []  # GF/s from our median and our best time
    micro_vs_eigen = []  # 3x3 forward: Eigen-path time / micro-kernel time (> 1: the kernel wins)
    sgemm_runs = [peak]
    worst = (math.inf, "")
    under = []  # shapes below 0.6, for the closing note
    for batch in args.batches:
        for name, hw, cin, k, cout, s in RESNET50:
            if args.only and args.only not in name:
                continue
            x = tf.constant(rng.normal(size=(batch, hw, hw, cin)).astype(np.float32))
            w = tf.constant(
                (rng.normal(size=(k, k, cin, cout)) / math.sqrt(k * k * cin)).astype(np.float32)
            )
            oh = -(-hw // s)
            dy = tf.constant(rng.normal(size=(batch, oh, oh, cout)).astype(np.float32))
            xs = tf.constant([batch, hw, hw, cin])
            ws = tf.constant([k, k, cin, cout])
            st = [1, s, s, 1]
            attrs = dict(
                strides=st, padding="SAME", data_format="NHWC", dilations=[1, 1, 1, 1], groups=1
            )
            fns = _functions(lib, x, w, dy, xs, ws, st, attrs)
            flops = 2.0 * batch * oh * oh * k * k * cin * cout
            line = [f"b{batch} {name:22s}"]
            for kind, (f_tf, f_ours) in fns.items():
                a, b = f_tf().numpy(), f_ours().numpy()  # correctness first
                scale = max(1.0, float(np.abs(a).max()))
                err = float(np.abs(a - b).max()) / scale
                assert err < 1e-4, f"{name} b{batch} {kind}: ours differs from TF by {err:.2e}"
                t_tf, t_ours, ratio, cpu_ratio, best_ours = _pair(
                    lambda f=f_tf: f().numpy(), lambda f=f_ours: f().numpy(), warmup, reps
                )
                ratios[kind].append(ratio)
                cpu_ratios[kind].append(cpu_ratio)
                if ratio < worst[0]:
                    worst = (ratio, f"b{batch} {name} {kind}")
                if ratio < 0.6:
                    under.append(f"b{batch} {name} {kind}: {ratio:.2f}")
                gf = flops / t_ours / 1e9
                if k == 3 and kind == "fwd" and batch == max(args.batches):
                    rates_3x3.append(gf)
                    best_rates_3x3.append(flops / best_ours / 1e9)
                    # SGEMM again right after each 3x3 layer: same moment, same load.
                    sgemm_runs.append(sgemm_rate(5))
                    # The hand-written micro-kernel against the Eigen GEMM path it replaces
                    # (same op, switched off by its environment variable), interleaved.
                    eig = _eigen_path(f_ours)
                    assert np.abs(eig() - b).max() / scale < 1e-4, f"{name}: Eigen path differs"
                    micro_vs_eigen.append(_pair(eig, lambda f=f_ours: f().numpy(), warmup, reps)[2])
                line.append(
                    f"{kind} {ratio:5.2f}x cpu {cpu_ratio:4.2f}x"
                    f" ({gf:6.1f} vs {flops / t_tf / 1e9:6.1f} GF/s)"
                )
            print("  ".join(line), flush=True)

    # The SGEMM rate again: other processes on these shared cores only ever lower it, so the
    # higher of the two measurements is the better estimate of the machine's rate.
    sgemm_runs.append(sgemm_rate(5))
    peak = max(sgemm_runs)

    # Scratch: largest per-task buffer + shared buffers, every shape at batch 64 (float32).
    extra = 0
    for _, hw, cin, k, cout, s in RESNET50:
        per_task, shared = _C.im2col_conv2d_scratch_bytes(
            (64, hw, hw, cin), (k, k, cin, cout), s, "SAME"
        )
        extra = max(extra, per_task + shared)

    def geo(v):
        return float(math.exp(np.mean(np.log(v)))) if v else float("nan")

    result = {
        "fwd_geomean_ratio": round(geo(ratios["fwd"]), 3),
        "bwd_input_geomean_ratio": round(geo(ratios["bwd_input"]), 3),
        "bwd_filter_geomean_ratio": round(geo(ratios["bwd_filter"]), 3),
        "worst_ratio": round(worst[0], 3),
        "worst_case": worst[1],
        "under_0.6": under,
        # Like against like: the 3x3 layers' best-of-reps rate over SGEMM's best-of-reps rate,
        # the highest SGEMM measured in the run (load only ever lowers it). The median-based
        # fraction (our median time over the same SGEMM peak) is the conservative figure.
        "peak_fraction_3x3": round(geo(best_rates_3x3) / peak, 3) if best_rates_3x3 else None,
        "peak_fraction_3x3_median": round(geo(rates_3x3) / peak, 3) if rates_3x3 else None,
        "peak_fraction_3x3_per_layer": [round(r / peak, 3) for r in best_rates_3x3],
        "microkernel_vs_eigen_3x3": round(geo(micro_vs_eigen), 3) if micro_vs_eigen else None,
        "microkernel_vs_eigen_3x3_per_layer": [round(r, 3) for r in micro_vs_eigen],
        "cpu_time_geomean_ratios": {k: round(geo(v), 3) for k, v in cpu_ratios.items()},
        "sgemm_gflops": round(peak, 1),
        "peak_extra_mib": round(extra / 2**20, 2),
        "batches": args.batches,
        "reps": reps,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
