"""The Horovod engine against TensorFlow's own tf.distribute (``--engine tf_distribute``:
MultiWorkerMirroredStrategy, one process per worker, ring collectives over gRPC) for the same
trainer: the same model, data, seed and step budget, 2 workers on this machine, with Horovod's
Average (``--reduction mean``) and with LSG. Reports each engine's training throughput, the
ratio tf_distribute / Horovod, and the final test accuracy.

Correctness first: a short deterministic run (``--deterministic``, LSG, one worker sending NaN
gradients) under each engine must end with the same test loss and accuracy and the same LSG
decisions (the collectives sum two workers in the same order, so the runs agree to round-off);
otherwise the benchmark stops. Last stdout line: one JSON object.

    python benchmarks/bench_engines.py            # real Fashion-MNIST, 2 epochs x 200 steps
    python benchmarks/bench_engines.py --quick    # smoke run (accuracies meaningless)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TRAIN = os.path.join(ROOT, "train.py")
ENGINES = ("horovod", "tf_distribute")
REDUCTIONS = ("mean", "lsg")


def _env() -> dict[str, str]:
    import iapdcnn  # the workers import the iapdcnn this process imports

    parent = os.path.dirname(os.path.dirname(os.path.abspath(iapdcnn.__file__)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1", TF_USE_LEGACY_KERAS="1")
    env.pop("TF_CONFIG", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (parent, env.get("PYTHONPATH", "")) if p)
    return env


def launcher(engine: str, n: int) -> list[str]:
    """What starts ``n`` local workers of ``engine``, up to the Python interpreter."""
    if engine == "horovod":
        exe = os.path.join(os.path.dirname(sys.executable), "horovodrun")
        return [exe, "-np", str(n), "-H", f"localhost:{n}", "--gloo", sys.executable]
    return [sys.executable, "-m", "iapdcnn.tfrun", "-np", str(n), sys.executable]


def train(engine: str, flags: list[str], out: str, n: int, timeout: float) -> dict:
    """One ``train.py`` run; its report."""
    cmd = launcher(engine, n) + [TRAIN, "--engine", engine, *flags, "--out", out]
    p = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=timeout)
    if p.returncode != 0:
        tail = (p.stdout + p.stderr)[-4000:]
        raise SystemExit(f"bench_engines: {' '.join(cmd)} exited {p.returncode}\n{tail}")
    with open(os.path.join(out, "report.json")) as f:
        return json.load(f)


def common(a) -> list[str]:
    return [
        "--dataset",
        a.dataset,
        "--width",
        str(a.width),
        "--epochs",
        str(a.epochs),
        "--steps-per-epoch",
        str(a.steps),
        "--batch-size",
        str(a.batch),
        "--threads",
        "1",
        "--seed",
        str(a.seed),
        "--eval-limit",
        str(a.eval_limit),
        "--no-progress",
    ]


def check_correctness(a, tmp: str) -> dict:
    """Both engines, a short deterministic LSG run with a NaN worker: the same result."""
    flags = common(a)
    flags[flags.index("--epochs") + 1] = "1"
    flags[flags.index("--steps-per-epoch") + 1] = str(min(a.steps, 8))
    flags += ["--deterministic", "--reduction", "lsg", "--inject-fault", "1:nan:3"]
    reps = {
        e: train(e, flags, os.path.join(tmp, f"check_{e}"), a.workers, a.timeout) for e in ENGINES
    }
    h, t = reps["horovod"], reps["tf_distribute"]
    got = {
        "test_loss": [h["test_loss"], t["test_loss"]],
        "test_accuracy": [h["test_accuracy"], t["test_accuracy"]],
        "workers_kept_mean": [
            h["history"][0]["workers_kept_mean"],
            t["history"][0]["workers_kept_mean"],
        ],
    }
    ok = (
        abs(h["test_loss"] - t["test_loss"]) <= 1e-4 * max(1.0, abs(h["test_loss"]))
        and abs(h["test_accuracy"] - t["test_accuracy"]) <= 1.0 / a.eval_limit + 1e-9
        and got["workers_kept_mean"][0] == got["workers_kept_mean"][1]
        and got["workers_kept_mean"][0] < a.workers  # the NaN worker was rejected
    )
    if not ok:
        raise SystemExit(f"bench_engines: the engines disagree on the same run: {got}")
    return got


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: digits, a few steps")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--steps", type=int, default=200, help="steps per epoch")
    p.add_argument("--batch", type=int, default=64, help="per-worker batch")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-limit", type=int, default=10000)
    p.add_argument("--timeout", type=float, default=900, help="seconds per run")
    a = p.parse_args()
    if a.quick:
        a.dataset, a.epochs, a.steps, a.batch, a.width, a.eval_limit = "digits", 1, 20, 32, 8, 360
    with tempfile.TemporaryDirectory(prefix="bench_engines_") as tmp:
        check = check_correctness(a, tmp)
        print(f"correctness: the same run under both engines: {check}", flush=True)
        runs: dict[str, dict] = {}
        for red in REDUCTIONS:  # interleaved, so that drift of the machine hits both engines
            for eng in ENGINES:
                rep = train(
                    eng,
                    common(a) + ["--reduction", red],
                    os.path.join(tmp, f"{eng}_{red}"),
                    a.workers,
                    a.timeout,
                )
                runs[f"{eng}/{red}"] = {
                    "images_per_s": rep["train_images_per_s"],
                    "train_s": rep["train_s"],
                    "test_accuracy": rep["test_accuracy"],
                    "workers_kept_mean": rep["stages"]["reduction"]["workers_kept_mean"],
                }
                r = runs[f"{eng}/{red}"]
                print(
                    f"{eng:14s} {red:5s} {r['images_per_s']:8.0f} img/s  "
                    f"train {r['train_s']:6.1f} s  test acc {r['test_accuracy']:.4f}",
                    flush=True,
                )
    ratio = {
        red: runs[f"tf_distribute/{red}"]["images_per_s"] / runs[f"horovod/{red}"]["images_per_s"]
        for red in REDUCTIONS
    }
    print(
        json.dumps(
            {
                "bench": "engines",
                "quick": a.quick,
                "dataset": a.dataset,
                "workers": a.workers,
                "epochs": a.epochs,
                "steps_per_epoch": a.steps,
                "batch_per_worker": a.batch,
                "width": a.width,
                "seed": a.seed,
                "correctness": check,
                "runs": runs,
                "throughput_ratio_tf_distribute_over_horovod": ratio,
                "final_accuracy": {k: v["test_accuracy"] for k, v in runs.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
