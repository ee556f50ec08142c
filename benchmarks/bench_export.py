"""Benchmark of export for serving (issue 18): FLOPs (``count_flops``) and measured inference
latency of the exported small ResNet, unpruned and pruned with MDCV.

The model is built with iapdcnn's Im2colConv2D (as ``--conv im2col`` trains it), pruned with
``iapdcnn.pruning.prune`` as the main job's early cut does (MDCV, ``--target`` 0.3 fewer
multiply-adds, multiples of ``--round-to`` 8 filters, ``flops_mode="global"``), and both models are exported with ``iapdcnn.layers.to_builtin`` (Keras Conv2D). First
the correctness check: each exported model gives its source model's outputs. Then the latency of
one ``tf.function`` call of each exported model, at batch 1 and at ``--batch``, interleaved over
``--rounds`` rounds (median; wall and CPU time). Weights are the initial ones: FLOPs and latency
depend only on the kept channel counts (accuracy after pruning is bench_pruning.py's). Last stdout
line: one JSON object.

    flock /tmp/iapdcnn-bench.lock python benchmarks/bench_export.py
    python benchmarks/bench_export.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Measured with tf_keras (Keras 2), as the trainer runs; TF_USE_LEGACY_KERAS=0 runs it on Keras 3.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from iapdcnn import pruning  # noqa: E402
from iapdcnn.layers import to_builtin  # noqa: E402
from iapdcnn.models import small_resnet  # noqa: E402


def check_correctness(models: dict, x: np.ndarray) -> float:
    """Each exported model gives its source's outputs; returns the largest difference."""
    worst = 0.0
    for source, exported in models.values():
        want = source(x, training=False).numpy()
        got = exported(x, training=False).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        worst = max(worst, float(np.abs(got - want).max()))
    return worst


def latencies(models: dict, x: np.ndarray, batches: list[int], calls: int, rounds: int) -> dict:
    """Median seconds per call (wall, CPU) of each exported model at each batch size."""
    fns = {}
    for name, (_, exported) in models.items():
        for b in batches:
            spec = tf.TensorSpec([b, *x.shape[1:]], tf.float32)
            fn = tf.function(lambda t, m=exported: m(t, training=False), input_signature=[spec])
            fn(x[:b]).numpy()  # trace
            fns[(name, b)] = fn
    times: dict = {(k, c): [] for k in fns for c in ("wall", "cpu")}
    for _ in range(rounds):
        for b in batches:
            xb = tf.constant(x[:b])
            for name in models:
                fn = fns[(name, b)]
                w, c = time.perf_counter(), time.process_time()
                for _ in range(calls):
                    fn(xb).numpy()
                times[((name, b), "wall")].append((time.perf_counter() - w) / calls)
                times[((name, b), "cpu")].append((time.process_time() - c) / calls)
    return {key: statistics.median(v) for key, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=16, help="small_resnet width (the main job's)")
    p.add_argument("--size", type=int, default=28, help="input height and width (Fashion-MNIST)")
    p.add_argument("--target", type=float, default=0.3, help="target FLOPs reduction")
    p.add_argument("--flops-mode", choices=("global", "uniform"), default="global")
    p.add_argument("--round-to", type=int, default=8, help="keep multiples of this many filters")
    p.add_argument("--batch", type=int, default=64, help="the larger batch timed (and batch 1)")
    p.add_argument("--calls", type=int, default=20, help="calls per timed run")
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds (median)")
    p.add_argument("--threads", type=int, default=1, help="TensorFlow intra-op threads")
    p.add_argument("--quick", action="store_true", help="a fast smoke run")
    args = p.parse_args()
    if args.quick:
        args.calls, args.rounds = 3, 2
    if args.threads < 1:
        raise SystemExit(f"--threads must be >= 1, got {args.threads}")
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    rng = np.random.default_rng(0)
    tf.keras.utils.set_random_seed(0)

    model = small_resnet((args.size, args.size, 1), width=args.width, conv="im2col")
    pruned = pruning.prune(
        model,
        "mdcv",
        target_flops_reduction=args.target,
        round_to=args.round_to,
        flops_mode=args.flops_mode,
    )
    models = {"unpruned": (model, to_builtin(model)), "pruned": (pruned, to_builtin(pruned))}
    x = rng.uniform(size=(args.batch, args.size, args.size, 1)).astype(np.float32)
    worst = check_correctness(models, x)
    print(f"correctness: exported == source (max |diff| {worst:.2e})")

    flops = {k: pruning.count_flops(m[1]).total for k, m in models.items()}
    params = {k: int(m[1].count_params()) for k, m in models.items()}
    batches = [1, args.batch]
    t = latencies(models, x, batches, args.calls, args.rounds)
    print(
        f"{'model':<10}{'MACs':>14}{'params':>10}" + "".join(f"{f'ms b={b}':>12}" for b in batches)
    )
    for k in models:
        row = "".join(f"{1e3 * t[((k, b), 'wall')]:>12.3f}" for b in batches)
        print(f"{k:<10}{flops[k]:>14,}{params[k]:>10,}{row}")
    result = {
        "bench": "export",
        "keras": "keras3" if os.environ.get("TF_USE_LEGACY_KERAS") == "0" else "tf_keras",
        "width": args.width,
        "threads": args.threads,
        "target_flops_reduction": args.target,
        "flops_mode": args.flops_mode,
        "flops_before": flops["unpruned"],
        "flops_after": flops["pruned"],
        "flops_ratio": flops["pruned"] / flops["unpruned"],
        "params_ratio": params["pruned"] / params["unpruned"],
        "max_abs_diff_exported": worst,
    }
    for b in batches:
        for c in ("wall", "cpu"):
            before, after = t[(("unpruned", b), c)], t[(("pruned", b), c)]
            if c == "wall":
                result[f"latency_ms_before_b{b}"] = 1e3 * before
                result[f"latency_ms_after_b{b}"] = 1e3 * after
            result[f"latency_ratio_{c}_b{b}"] = after / before
    print(json.dumps(result))


if __name__ == "__main__":
    main()
