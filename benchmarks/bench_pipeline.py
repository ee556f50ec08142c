"""Time to accuracy of the IA-PDCNNOA pipeline against the plain Keras + Horovod it replaces, the
way MLPerf Training measures it: wall-clock training time until the test accuracy first reaches
a target, on the real Fashion-MNIST, under `horovodrun -np 2`, with the same model, data, seeds
and step budget for every run. Evaluation runs every --eval-every steps with the clock stopped;
preparation that a method needs (computing features) is added to its clock.

Runs: `keras_fit` (what a user has: model.fit with horovod.tensorflow.keras.DistributedOptimizer;
`keras_fit_mwms` the same under TensorFlow's MultiWorkerMirroredStrategy instead of Horovod),
`baseline` (iapdcnn's trainer with Keras's Conv2D and Horovod's Average: the same loop as every
stage below, so a stage's effect is measured against it), each stage of the paper added alone, in
the form that won here and in the paper's form, and the `pipeline` (the main job's defaults).

Correctness: every accuracy is measured on the real test split (all 10,000 images by default),
split between the ranks and summed, with the model every rank holds; a run whose accuracy is not
finite fails the benchmark. Last stdout line: one JSON object.

    python benchmarks/bench_pipeline.py                  # full: 3 seeds, every run
    python benchmarks/bench_pipeline.py --quick          # smoke run (accuracies meaningless)
    python benchmarks/bench_pipeline.py --runs baseline,pipeline --seeds 0
    python benchmarks/bench_pipeline.py --out runs/bench --reuse --seeds 0,1,2  # in pieces
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TRAIN = os.path.join(ROOT, "train.py")

# name -> (trainer flags on top of the common ones, what it is). keras_fit* are this file's worker
# (their flags are the worker's).
PRUNE = ["--prune", "0.5", "--prune-mode", "early"]  # the main job's cut: half the FLOPs
PLAIN = ["--conv", "keras", "--reduction", "mean"]
TFD = ["--engine", "tf_distribute"]
RUNS: dict[str, tuple[list[str], str]] = {
    "keras_fit": ([], "plain Keras model.fit + Horovod DistributedOptimizer (Average)"),
    "keras_fit_mwms": (
        ["--fit-engine", "mwms"],
        "plain Keras model.fit under MultiWorkerMirroredStrategy (TensorFlow's own, no Horovod; "
        "started by python -m iapdcnn.tfrun)",
    ),
    "baseline": (PLAIN, "iapdcnn loop, Conv2D, Average"),
    "im2col": (["--conv", "im2col", "--reduction", "mean"], "+ Im2col convolution"),
    "lsg": (["--conv", "keras", "--reduction", "lsg"], "+ LSG reduction"),
    "prune_early": (PLAIN + PRUNE, "+ MDCV pruning, cut physically after warm-up (half the FLOPs)"),
    "prune_soft": (
        PLAIN + ["--prune", "0.5", "--prune-mode", "soft"],
        "+ MDCV pruning, soft masks then strip (paper / TF-MOT form), the same ratio",
    ),
    "features_paper": (
        PLAIN + ["--features"],
        "+ MHO-PFES inside the model, every step (paper form)",
    ),
    "features_channels": (
        PLAIN + ["--features-mode", "channels"],
        "+ MHO-PFES computed once (cold cache, its time counted), edges as extra channels",
    ),
    "fci_drop": (
        PLAIN + ["--fci-drop", "0.2"],
        "+ FCI data pruning: the 20% most prototypical training images of each class dropped",
    ),
    "engine_tfd": (
        PLAIN + TFD,
        "+ tf.distribute's collectives (MultiWorkerMirroredStrategy, python -m iapdcnn.tfrun) "
        "instead of Horovod's over Gloo: the same steps, another engine",
    ),
    "pipeline": (
        PLAIN + PRUNE + TFD,
        "the main job's configuration: the stages that won here (pruning cut early) on the "
        "engine that won (tf.distribute)",
    ),
    "pipeline_im2col": (
        ["--conv", "im2col", "--reduction", "mean"] + PRUNE + TFD,
        "candidate: the main job's configuration with the Im2col convolution",
    ),
    "pipeline_lsg": (
        ["--conv", "keras", "--reduction", "lsg"] + PRUNE + TFD,
        "the main job's configuration with LSG instead of Average (for a job that needs it)",
    ),
    # candidates tried for the main job (one seed unless said otherwise); not in the default --runs
    "prune_30": (PLAIN + ["--prune", "0.3", "--prune-mode", "early"], "candidate: a 30% cut"),
    "prune_fci": (
        PLAIN + ["--prune", "0.3", "--prune-mode", "early", "--fci-drop", "0.2"],
        "candidate: a 30% cut + FCI data pruning (20%)",
    ),
    "prune_im2col": (
        ["--conv", "im2col", "--reduction", "mean", "--prune", "0.3", "--prune-mode", "early"],
        "candidate: a 30% cut + Im2col convolution",
    ),
    "prune_r16": (
        PLAIN + ["--prune", "0.4", "--prune-mode", "early", "--prune-round-to", "16"],
        "candidate: a 40% cut in multiples of 16 channels (AVX-512's 16 floats)",
    ),
    "prune_at05": (
        PLAIN + PRUNE + ["--prune-at", "0.05"],
        "candidate: the main job's cut made after 5% of the steps instead of 10%",
    ),
    "prune_fci10": (
        PLAIN + PRUNE + ["--fci-drop", "0.1"],
        "candidate: the main job's cut + FCI data pruning (10%)",
    ),
    "pipeline_im2col_lsg": (
        ["--conv", "im2col", "--reduction", "lsg", "--prune", "0.3", "--prune-mode", "early"],
        "the earlier main job: im2col + LSG (two rounds) + a 30% cut",
    ),
}
CANDIDATES = (
    "pipeline_im2col",
    "pipeline_lsg",
    "prune_r16",
    "prune_at05",
    "prune_fci10",
    "prune_30",
    "prune_fci",
    "prune_im2col",
    "pipeline_im2col_lsg",
)
STAGES = (
    "engine_tfd",
    "im2col",
    "lsg",
    "prune_early",
    "prune_soft",
    "features_paper",
    "features_channels",
    "fci_drop",
)


def _hvd_cmd(np_: int) -> list[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    return [exe, "-np", str(np_), "-H", f"localhost:{np_}", "--gloo", sys.executable]


def _launch_cmd(np_: int, args: list[str]) -> list[str]:
    """``horovodrun -np N`` for the Horovod engine; the tf.distribute engine's own launcher
    (``python -m iapdcnn.tfrun -np N``) for a run with ``--engine tf_distribute`` or the fit
    worker's ``--fit-engine mwms``."""
    if "tf_distribute" in args or "mwms" in args:
        return [sys.executable, "-m", "iapdcnn.tfrun", "-np", str(np_), sys.executable]
    return _hvd_cmd(np_)


def _env() -> dict[str, str]:
    import iapdcnn  # the ranks import the iapdcnn this process imports

    parent = os.path.dirname(os.path.dirname(os.path.abspath(iapdcnn.__file__)))
    # the trainer and Horovod's Keras API are tf_keras (Keras 2): what a Horovod user runs
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1", TF_USE_LEGACY_KERAS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (parent, env.get("PYTHONPATH", "")) if p)
    return env


def common_flags(a) -> list[str]:
    return [
        "--dataset",
        "fashion_mnist",
        "--width",
        str(a.width),
        "--epochs",
        str(a.epochs),
        "--batch-size",
        str(a.batch),
        "--threads",
        str(a.threads),
        "--eval-every",
        str(a.eval_every),
        "--eval-limit",
        str(a.eval_limit),
        "--lr-schedule",
        a.lr_schedule,
        "--no-progress",
        "--targets",
        ",".join(str(t) for t in a.targets),
    ] + (["--steps-per-epoch", str(a.steps)] if a.steps else [])


# ------------------------------------------------------------------------------ keras_fit worker


def worker_fit(a) -> None:
    """Plain Keras on the same model, schedule and step budget as the trainer, fed the way a
    Keras user feeds it (tf.data over this worker's shard), reduced by Horovod's
    DistributedOptimizer (``--fit-engine horovod``) or by TensorFlow's
    MultiWorkerMirroredStrategy (``mwms``: the model and optimizer built in its scope, each
    worker's shard given by ``distribute_datasets_from_function``); the same clock (evaluation
    off it) through a callback."""
    import iapdcnn

    iapdcnn.use_tf_keras()
    import numpy as np
    import tensorflow as tf

    from iapdcnn import models
    from iapdcnn.training import TrainConfig
    from iapdcnn.training.build import build_schedule, load_arrays

    tf.config.threading.set_intra_op_parallelism_threads(a.threads)
    tf.config.threading.set_inter_op_parallelism_threads(a.threads)
    mwms = a.fit_engine == "mwms"
    if mwms:
        from iapdcnn.distributed.tf_distribute import StrategyCollectives

        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        comm = StrategyCollectives(strategy)  # the evaluation's sums
        rank, size = comm.rank(), comm.size()
    else:
        import horovod.tensorflow.keras as hvd

        hvd.init()
        comm, rank, size = hvd, hvd.rank(), hvd.size()
    tf.keras.utils.set_random_seed(a.seed)
    cfg = TrainConfig(epochs=a.epochs, batch_size=a.batch, lr_schedule=a.lr_schedule, seed=a.seed)
    xtr, ytr, xte, yte = load_arrays(cfg)
    steps = min(len(xtr) // (size * a.batch), a.steps or 10**9)

    # under MWMS the variables are made in its scope (mirrored, initial values from worker 0)
    with strategy.scope() if mwms else contextlib.nullcontext():
        model = models.small_resnet(xtr.shape[1:], 10, width=a.width)
        opt = tf.keras.optimizers.SGD(build_schedule(cfg, size, steps), momentum=cfg.momentum)
        model.compile(
            opt if mwms else hvd.DistributedOptimizer(opt),
            "sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
    n_eval = min(len(xte), a.eval_limit)
    xe, ye = xte[rank:n_eval:size], yte[rank:n_eval:size]

    class Clock(tf.keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.train_s, self.step, self.evals = 0.0, 0, []

        def on_train_begin(self, logs=None):
            self.t0 = time.perf_counter()

        def evaluate(self):
            self.train_s += time.perf_counter() - self.t0
            hits = 0
            for i in range(0, len(xe), 256):  # this worker's slice, with the model it holds
                probs = self.model(xe[i : i + 256], training=False)
                hits += int(np.sum(np.argmax(probs, -1) == ye[i : i + 256]))
            sums = tf.constant([hits, len(ye)], tf.float64)
            tot = comm.allreduce(sums, op=comm.Sum, name="eval").numpy()
            self.evals.append(
                {"step": self.step, "train_s": self.train_s, "val_acc": tot[0] / tot[1]}
            )
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.step += 1
            if self.step % a.eval_every == 0 or self.step % steps == 0:
                self.evaluate()

    clock = Clock()

    def shard(ctx=None):
        # what a Keras user writes: this worker's shard, shuffled every epoch, batched, prefetched
        return (
            tf.data.Dataset.from_tensor_slices((xtr[rank::size], ytr[rank::size]))
            .shuffle(len(xtr) // size, seed=a.seed, reshuffle_each_iteration=True)
            .batch(a.batch, drop_remainder=True)
            .repeat()
            .prefetch(tf.data.AUTOTUNE)
        )

    if mwms:
        ds = strategy.distribute_datasets_from_function(shard)
        callbacks = [clock]
    else:
        ds = shard()
        callbacks = [hvd.callbacks.BroadcastGlobalVariablesCallback(0), clock]
    t_all = time.perf_counter()
    model.fit(ds, epochs=a.epochs, steps_per_epoch=steps, verbose=0, callbacks=callbacks)
    wall = time.perf_counter() - t_all
    if rank == 0:
        final = clock.evals[-1]["val_acc"]
        print(
            json.dumps(
                {
                    "test_accuracy": final,
                    "train_s": clock.train_s,
                    "evals": clock.evals,
                    "train_images_per_s": steps * a.epochs * size * a.batch / clock.train_s,
                    "wall_s": wall,
                }
            ),
            flush=True,
        )


# ------------------------------------------------------------------------------ driver


def run_one(name: str, a, seed: int, out: str) -> dict:
    """One run of ``a.np`` ranks (``_launch_cmd``); returns its report (time to accuracy from its evals)."""
    fit = name.startswith("keras_fit")
    if fit:
        args = [__file__, "--worker", "fit", *RUNS[name][0], "--seed", str(seed)]
        args += ["--width", str(a.width)]
        args += ["--epochs", str(a.epochs), "--batch", str(a.batch), "--threads", str(a.threads)]
        args += ["--eval-every", str(a.eval_every), "--eval-limit", str(a.eval_limit)]
        args += ["--lr-schedule", a.lr_schedule] + (["--steps", str(a.steps)] if a.steps else [])
    else:
        args = [TRAIN, *common_flags(a), *RUNS[name][0], "--seed", str(seed), "--out", out]
        if "--features-mode" in args or "--fci-drop" in args:  # a cold cache of its own
            shutil.rmtree(os.path.join(out, "cache"), ignore_errors=True)
            args += ["--features-cache", os.path.join(out, "cache")]
    p = subprocess.run(
        _launch_cmd(a.np, args) + args,
        capture_output=True,
        text=True,
        timeout=a.timeout,
        env=_env(),
    )
    if p.returncode != 0:
        raise RuntimeError(f"{name} seed {seed} failed:\n{(p.stdout + p.stderr)[-4000:]}")
    if fit:
        line = [ln for ln in p.stdout.splitlines() if "{" in ln][-1]
        rep = json.loads(line[line.index("{") :])
    else:
        with open(os.path.join(out, "report.json")) as f:
            rep = json.load(f)
    rep["time_to"] = {
        f"{t:.2f}": next((e["train_s"] for e in rep["evals"] if e["val_acc"] >= t), None)
        for t in a.targets
    }
    return rep


def _run_key(a, name: str) -> dict:
    """The settings a saved run must share with this invocation to be reused: the benchmark's
    and the run's own flags."""
    keys = ("np", "width", "epochs", "steps", "batch", "threads", "eval_every", "eval_limit")
    key = {k: getattr(a, k) for k in keys} | {"lr_schedule": a.lr_schedule, "quick": a.quick}
    return key | {"flags": RUNS[name][0]}


def _mean_sd(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def summarise(reports: dict[str, list[dict]], targets: list[float]) -> dict:
    out: dict = {}
    for name, reps in reports.items():
        acc = _mean_sd([r["test_accuracy"] for r in reps])
        row = {
            "final_acc": round(acc[0], 4),
            "final_acc_sd": round(acc[1], 4),
            "per_seed_acc": [round(r["test_accuracy"], 4) for r in reps],
            "images_per_s": round(statistics.fmean(r["train_images_per_s"] for r in reps), 1),
            "train_s": round(statistics.fmean(r["train_s"] for r in reps), 1),
        }
        if all("train_flops" in r for r in reps):
            row["train_tflop"] = round(statistics.fmean(r["train_flops"] for r in reps) / 1e12, 4)
        if all("flops_saved" in r for r in reps):
            row["flops_saved"] = round(statistics.fmean(r["flops_saved"] for r in reps), 3)
        for t in targets:
            key = f"{t:.2f}"
            hits = [r["time_to"][key] for r in reps]
            reached = [h for h in hits if h is not None]
            row[f"reached_{key}"] = f"{len(reached)}/{len(hits)}"
            # the mean only when every seed reached it (a run that never gets there has no time)
            if len(reached) == len(hits):
                m, sd = _mean_sd(reached)
                row[f"s_to_{key}"], row[f"s_to_{key}_sd"] = round(m, 1), round(sd, 1)
            else:
                row[f"s_to_{key}"] = None
        out[name] = row
    return out


def plot(reports: dict[str, list[dict]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for name, reps in reports.items():
        for i, r in enumerate(reps):
            ev = r["evals"]
            ax.plot(
                [e["train_s"] for e in ev],
                [e["val_acc"] for e in ev],
                color=f"C{list(reports).index(name)}",
                alpha=0.9 if i == 0 else 0.35,
                label=name if i == 0 else None,
            )
    ax.set_xlabel("training wall time, s (evaluation excluded)")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0.8, 0.94)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Fashion-MNIST, horovodrun -np 2, one line per run and seed")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: few steps, small eval")
    p.add_argument("--worker", choices=("fit",), help=argparse.SUPPRESS)
    p.add_argument(
        "--fit-engine", choices=("horovod", "mwms"), default="horovod", help=argparse.SUPPRESS
    )
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument(
        "--runs",
        default=",".join(r for r in RUNS if r not in CANDIDATES),
        help="comma-separated, of: " + ", ".join(RUNS),
    )
    p.add_argument("--np", type=int, default=2)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--steps", type=int, default=None, help="steps per epoch (default: all)")
    p.add_argument("--batch", type=int, default=64, help="per rank")
    p.add_argument("--threads", type=int, default=1, help="TF threads per rank")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--eval-limit", type=int, default=10000)
    p.add_argument("--lr-schedule", default="cosine")
    p.add_argument("--targets", default="0.88,0.90,0.91")
    p.add_argument("--timeout", type=int, default=3600, help="seconds per run")
    p.add_argument("--out", default=None, help="folder for the runs and the plot")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="reuse the runs already measured in --out with the same settings (so a full "
        "benchmark can be measured in pieces: e.g. one seed at a time)",
    )
    a = p.parse_args()
    a.targets = [float(t) for t in a.targets.split(",") if t]
    if a.worker == "fit":
        return worker_fit(a)
    if a.quick:
        a.epochs, a.steps, a.eval_every, a.eval_limit = 2, a.steps or 12, 6, 500
        a.seeds = a.seeds if a.seeds != "0,1,2" else "0"
    runs = [r for r in a.runs.split(",") if r]
    bad = [r for r in runs if r not in RUNS]
    if bad:
        p.error(f"--runs: unknown {bad}; choose from {', '.join(RUNS)}")
    seeds = [int(s) for s in a.seeds.split(",") if s]
    out = a.out or tempfile.mkdtemp(prefix="bench_pipeline_")
    os.makedirs(out, exist_ok=True)
    print(f"bench_pipeline: np={a.np}, runs={runs}, seeds={seeds}, out={out}", flush=True)

    reports: dict[str, list[dict]] = {r: [] for r in runs}
    for seed in seeds:  # seed-major: machine noise falls on every run alike
        for name in runs:
            run_dir = os.path.join(out, f"{name}_s{seed}")
            saved = os.path.join(run_dir, "bench_run.json")
            # a row with another row's flags (pipeline = prune_early) is that row's run, not a
            # second training of the same configuration
            twin = next((r for r in runs[: runs.index(name)] if RUNS[r][0] == RUNS[name][0]), None)
            if twin is not None:
                rep = reports[twin][-1]
            elif a.reuse and os.path.exists(saved):
                with open(saved) as f:
                    rep = json.load(f)
                if rep.get("bench_args") != _run_key(a, name):
                    raise SystemExit(
                        f"--reuse: {saved} was measured with other settings "
                        f"({rep.get('bench_args')} here {_run_key(a, name)}); use another --out"
                    )
            else:
                rep = run_one(name, a, seed, run_dir)
                rep["bench_args"] = _run_key(a, name)
                os.makedirs(run_dir, exist_ok=True)
                with open(saved + ".tmp", "w") as f:
                    json.dump(rep, f)
                os.replace(saved + ".tmp", saved)
            reports[name].append(rep)
            print(
                f"seed {seed} {name:15s} acc={rep['test_accuracy']:.4f} "
                f"train_s={rep['train_s']:.1f} img/s={rep['train_images_per_s']:.0f} "
                f"time_to={rep['time_to']}",
                flush=True,
            )
    table = summarise(reports, a.targets)
    png = os.path.join(out, "time_to_accuracy.png")
    plot(reports, png)
    result: dict = {"quick": a.quick, "np": a.np, "seeds": seeds, "epochs": a.epochs, "runs": table}
    key = "0.90"
    ref_name = "baseline" if "baseline" in table else None
    if ref_name and "pipeline" in table:
        ref, pipe = table[ref_name], table["pipeline"]
        result[f"baseline_s_to_{key}"] = ref.get(f"s_to_{key}")
        result[f"pipeline_s_to_{key}"] = pipe.get(f"s_to_{key}")
        if ref.get(f"s_to_{key}") and pipe.get(f"s_to_{key}"):
            result[f"ratio_to_{key}"] = round(pipe[f"s_to_{key}"] / ref[f"s_to_{key}"], 3)
        result["final_acc"] = {n: r["final_acc"] for n, r in table.items()}
        result["final_acc_delta_pts"] = round(100 * (pipe["final_acc"] - ref["final_acc"]), 2)
    for user in ("keras_fit", "keras_fit_mwms"):  # what a Keras user has, on either engine
        kf = table.get(user, {}).get(f"s_to_{key}")
        if kf and "pipeline" in table and table["pipeline"].get(f"s_to_{key}"):
            result[f"ratio_to_{key}_vs_{user}"] = round(table["pipeline"][f"s_to_{key}"] / kf, 3)
    if ref_name:
        effects = {}
        for s in STAGES:
            if s in table:
                r, b = table[s], table[ref_name]
                t_s, t_b = r.get(f"s_to_{key}"), b.get(f"s_to_{key}")
                effects[s] = {
                    "acc_delta_pts": round(100 * (r["final_acc"] - b["final_acc"]), 2),
                    f"time_ratio_to_{key}": round(t_s / t_b, 3) if t_s and t_b else None,
                    "throughput_ratio": round(r["images_per_s"] / b["images_per_s"], 3),
                }
        result["stage_effects"] = effects
    result["plot"] = png
    result["targets_met"] = {
        "pipeline <= 0.8x baseline to 0.90": bool(
            result.get(f"ratio_to_{key}") and result[f"ratio_to_{key}"] <= 0.8
        ),
        "pipeline final acc >= baseline - 0.3 pt": bool(
            "final_acc_delta_pts" in result and result["final_acc_delta_pts"] >= -0.3
        ),
    }
    if not all(math.isfinite(r["final_acc"]) for r in table.values()):
        raise SystemExit("a run ended with a non-finite accuracy")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
