"""The related systems' strategies (docs/seeds.md) against what a user has without them, over
seeds: the same ``train.py`` run (2 Horovod ranks, real Fashion-MNIST, ``small_resnet``) with one
flag changed at a time, in the same invocation.

- ``base``: He-normal initialisation, SGD with momentum, a gradient allreduce every step.
- ``cgmse`` (PDCNNO's CGMSE), ``kmeans`` (Dis-CNN's k-means initialisation), ``agwu`` (BPT-CNN's
  local SGD with accuracy-weighted merges): the claim is faster or better training than base.
- ``slow``: rank 1 is a machine about 2x slower (``--inject-fault 1:slow``: a busy wait in
  proportion to its batch, calibrated per seed to rank 1's own compute per step in ``base``);
  ``slow_balance`` adds ``--balance`` (LBRLA / IDPA), ``slow_agwu`` uses ``--sync agwu``
  instead. Each run reports every rank's step wall time, CPU time and idle time (the time
  spent waiting for the others): the fastest rank's idle share is what balancing should cut.
- ``seq``: one process, no launcher, the same global batch (2 x ``--batch``) and step count, on
  one core as each rank has: the one-node run that the "near-linear speed-up" of two nodes is
  measured against. ``seq_all``: the same process on all the machine's cores, what a user
  without a cluster runs (``MirroredStrategy``'s claim is measured against both).
- ``tfd``: ``--engine tf_distribute`` (TensorFlow's MultiWorkerMirroredStrategy, 2 workers).

Correctness first (closed forms, before any run): CGMSE needs fewer iterations than gradient
descent at its best fixed step on a quadratic; the balancer's batch sizes for given speeds; the
k-means centres of a worked example; AGWU's merge weights. Last stdout line: one JSON object
(means and spreads over seeds; every run's figures under ``runs``).

    python benchmarks/bench_seeds.py --seeds 0,1,2 --out runs/seeds --reuse
    python benchmarks/bench_seeds.py --quick        # smoke run (accuracies meaningless)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

import numpy as np

from bench_engines import TRAIN, _env, launcher

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLOW = ["--inject-fault", "1:slow"]
AGWU = ["--sync", "agwu", "--local-steps", "8"]
# name: (workers, engine, flags); "seq" runs one process with the global batch
RUNS = {
    "base": (2, "horovod", []),
    "cgmse": (2, "horovod", ["--optimizer", "cgmse"]),
    "kmeans": (2, "horovod", ["--init", "kmeans"]),
    "agwu": (2, "horovod", AGWU),
    "slow": (2, "horovod", SLOW),
    "slow_balance": (2, "horovod", SLOW + ["--balance", "--balance-every", "20"]),
    "slow_agwu": (2, "horovod", SLOW + AGWU),
    "seq": (1, "horovod", []),
    "seq_all": (1, "horovod", ["--threads", "0"]),
    "tfd": (2, "tf_distribute", []),
}


def check_correctness() -> dict:
    """The closed-form references of the four strategies; stops the benchmark on a mismatch."""
    import tensorflow as tf

    from iapdcnn.distributed.agwu import agwu_weights
    from iapdcnn.initializers import kmeans
    from iapdcnn.optimizers import CGMSE
    from iapdcnn.training.balance import batch_sizes

    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(30, 30)))
    lam = np.logspace(0, 2, 30)  # condition number 100
    a = ((q * lam) @ q.T).astype(np.float32)
    b = rng.normal(size=30).astype(np.float32)
    x_star = np.linalg.solve(a.astype(np.float64), b)

    def iterations(opt) -> int | None:
        x = tf.Variable(np.zeros(30, np.float32))
        for k in range(2000):
            with tf.GradientTape() as tape:
                f = 0.5 * tf.tensordot(x, tf.linalg.matvec(a, x), 1) - tf.tensordot(b, x, 1)
            opt.apply_gradients([(tape.gradient(f, x), x)])
            if np.linalg.norm(x.numpy() - x_star) <= 1e-4 * np.linalg.norm(x_star):
                return k + 1
        return None

    gd = iterations(tf.keras.optimizers.SGD(2 / (lam.max() + lam.min())))
    cg = iterations(CGMSE(10 / lam.max()))
    pts = np.array([[0, 0], [0, 1], [1, 0], [10, 10], [10, 11], [11, 10]], float)
    c, _ = kmeans(pts, np.array([[0.0, 0.0], [1.0, 1.0]]))
    got = {
        "cgmse_iterations": cg,
        "gd_iterations": gd,
        "balance_sizes_speeds_1_2_total_128": batch_sizes([1.0, 2.0], 128),
        "kmeans_centres": np.round(c, 6).tolist(),
        "agwu_weights_0.8_0.6_0.6": np.round(agwu_weights([0.8, 0.6, 0.6]), 6).tolist(),
    }
    ok = (
        gd is not None
        and cg is not None
        and cg < gd
        and got["balance_sizes_speeds_1_2_total_128"] == [43, 85]
        and np.allclose(c, [[1 / 3, 1 / 3], [31 / 3, 31 / 3]])
        and got["agwu_weights_0.8_0.6_0.6"] == [0.4, 0.3, 0.3]
    )
    if not ok:
        raise SystemExit(f"bench_seeds: a reference check failed: {got}")
    return got


def common(a, seed: int) -> list[str]:
    flags = f"--dataset {a.dataset} --width {a.width} --epochs {a.epochs}"
    flags += f" --steps-per-epoch {a.steps} --threads 1 --eval-every {a.eval_every}"
    flags += f" --eval-limit {a.eval_limit} --targets {a.targets} --no-progress --seed {seed}"
    return flags.split() + ["--reduction", "mean"]


def train(name: str, a, seed: int, slow_s: float) -> dict:
    """One run's report (reused from ``--out`` with ``--reuse``)."""
    out = os.path.join(a.out, f"{name}_s{seed}")
    path = os.path.join(out, "report.json")
    n, engine, flags = RUNS[name]
    flags = common(a, seed) + ["--batch-size", str(a.batch * (2 if n == 1 else 1))] + flags
    if "slow" in name:
        flags += ["--straggler-seconds", f"{slow_s:.4f}"]
    if not (a.reuse and os.path.exists(path)):
        head = [sys.executable] if n == 1 else launcher(engine, n)
        cmd = head + [TRAIN, "--engine", engine, *flags, "--out", out]
        p = subprocess.run(
            cmd, capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=a.timeout
        )
        if p.returncode != 0:
            tail = (p.stdout + p.stderr)[-4000:]
            raise SystemExit(f"bench_seeds: {' '.join(cmd)} exited {p.returncode}\n{tail}")
    with open(path) as f:
        return json.load(f)


def figures(rep: dict) -> dict:
    """What the summary needs from one report."""
    busy = rep["step_seconds_per_rank"]
    fastest = int(np.argmin(busy["cpu"]))
    # the share of its step time the fastest rank waited for the others (one process: none)
    idle = (
        busy["idle"][fastest] / max(busy["wall"][fastest], 1e-9) if len(busy["cpu"]) > 1 else None
    )
    out = {
        "test_accuracy": rep["test_accuracy"],
        "train_s": rep["train_s"],
        "images_per_s": rep["train_images_per_s"],
        "time_to_accuracy": rep["time_to_accuracy"],
        "allreduced_mb_per_rank": rep["stages"]["sync"]["allreduced_mb_per_rank"],
        "step_seconds_per_rank": busy,
        "fastest_rank_idle_share": idle,
    }
    if "balance" in rep["stages"]:
        out["balance_sizes"] = rep["stages"]["balance"]["sizes"]
    return out


def _ms(xs: list[float]) -> list[float]:
    """[mean, sample standard deviation] (spread 0 for one value)."""
    return [round(statistics.fmean(xs), 4), round(statistics.stdev(xs), 4) if len(xs) > 1 else 0.0]


def summarise(runs: dict[str, list[dict]], targets: list[str]) -> dict:
    out = {}
    base_ips = [r["images_per_s"] for r in runs["base"]]
    for name, rs in runs.items():
        row = {
            "test_accuracy": _ms([r["test_accuracy"] for r in rs]),
            "train_s": _ms([r["train_s"] for r in rs]),
            "images_per_s_ratio_to_base": _ms(
                [r["images_per_s"] / b for r, b in zip(rs, base_ips, strict=True)]
            ),
            "allreduced_mb_per_rank": _ms([r["allreduced_mb_per_rank"] for r in rs]),
        }
        idle = [r["fastest_rank_idle_share"] for r in rs]
        row["fastest_rank_idle_share"] = None if None in idle else _ms(idle)
        for t in targets:
            hits = [r["time_to_accuracy"].get(t) for r in rs]
            got = [h for h in hits if h is not None]
            row[f"s_to_{t}"] = _ms(got) if len(got) == len(hits) else None
            row[f"reached_{t}"] = f"{len(got)}/{len(hits)}"
        out[name] = row
    return out


# (numerator run, denominator run, figure): per-seed ratios the claims are judged by
RATIOS = {
    "speedup_2_ranks_over_seq": ("base", "seq", "images_per_s"),
    "speedup_2_ranks_over_seq_all": ("base", "seq_all", "images_per_s"),
    "tfd_images_per_s_over_horovod": ("tfd", "base", "images_per_s"),
    "tfd_images_per_s_over_seq_all": ("tfd", "seq_all", "images_per_s"),
    "slow_balance_train_s_over_slow": ("slow_balance", "slow", "train_s"),
    "slow_agwu_train_s_over_slow": ("slow_agwu", "slow", "train_s"),
    "slow_train_s_over_base": ("slow", "base", "train_s"),
    "agwu_allreduced_mb_over_base": ("agwu", "base", "allreduced_mb_per_rank"),
}


def ratios(runs: dict[str, list[dict]]) -> dict:
    """``RATIOS`` over the seeds, [mean, sd], for the runs that were made."""
    out = {}
    for key, (num, den, fig) in RATIOS.items():
        if num in runs and den in runs:
            pairs = zip(runs[num], runs[den], strict=True)
            out[key] = _ms([n[fig] / d[fig] for n, d in pairs])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: digits, a few steps")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--only", default=",".join(RUNS), help="comma-separated runs (base first)")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--steps", type=int, default=200, help="steps per epoch")
    p.add_argument("--batch", type=int, default=64, help="per-rank batch")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--eval-limit", type=int, default=5000)
    p.add_argument("--targets", default="0.80,0.85")
    p.add_argument("--out", default=None, help="keep each run's report here (default: temp)")
    p.add_argument("--reuse", action="store_true", help="reuse the reports found in --out")
    p.add_argument("--timeout", type=float, default=900, help="seconds per run")
    a = p.parse_args()
    if a.quick:
        a.dataset, a.epochs, a.steps, a.batch, a.width = "digits", 1, 20, 16, 4
        a.eval_every, a.eval_limit, a.seeds = 10, 360, "0"
    names = [n for n in a.only.split(",") if n]
    bad = [n for n in names if n not in RUNS]
    if bad or names[:1] != ["base"]:
        p.error(f"--only: runs are {', '.join(RUNS)}, base first; got {a.only!r}")
    seeds = [int(s) for s in a.seeds.split(",")]
    check = check_correctness()
    print(f"correctness: {check}", flush=True)
    tmp = None
    if a.out is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_seeds_")
        a.out = tmp.name
    runs: dict[str, list[dict]] = {n: [] for n in names}
    calib = {}
    for seed in seeds:  # seed-major, so that drift of the machine hits every run alike
        for name in names:
            rep = train(name, a, seed, calib.get(seed, 0.0))
            if name == "base":  # rank 1's compute per step: the slow rank's extra delay
                steps = a.epochs * a.steps
                calib[seed] = rep["step_seconds_per_rank"]["cpu"][1] / steps
            r = figures(rep)
            runs[name].append(r)
            tta = ", ".join(
                f"{k}: {v:.1f} s" if v else f"{k}: -" for k, v in r["time_to_accuracy"].items()
            )
            idle = r["fastest_rank_idle_share"]
            print(
                f"seed {seed} {name:13s} acc {r['test_accuracy']:.4f}  train {r['train_s']:6.1f} s"
                f"  {r['images_per_s']:6.0f} img/s  idle(fastest) "
                f"{'-' if idle is None else f'{idle:.2f}'}  {tta}",
                flush=True,
            )
    targets = [f"{float(t):.2f}" for t in a.targets.split(",")]
    summary = summarise(runs, targets)
    if tmp is not None:
        tmp.cleanup()
    print(
        json.dumps(
            {
                "bench": "seeds",
                "quick": a.quick,
                "seeds": seeds,
                "common": " ".join(common(a, 0)).replace("--seed 0", "--seed S"),
                "batch_per_rank": a.batch,
                "slow_seconds_per_step": {str(s): round(v, 4) for s, v in calib.items()},
                "correctness": check,
                "summary": summary,
                "ratios": ratios(runs),
                "runs": runs,
            }
        )
    )


if __name__ == "__main__":
    main()
