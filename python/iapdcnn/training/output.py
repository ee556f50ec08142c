"""What a run shows and leaves behind, all from rank 0: console lines, the progress bar,
TensorBoard scalars, ``steps.jsonl`` (``--step-log``), ``metrics.json``, ``curves.png`` and
``report.json`` in ``--out``. The other ranks get a ``RunLog`` that does nothing."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import numpy as np

from iapdcnn._io import atomic_json, atomic_write

STEP_SCALARS = ("loss", "workers_kept", "samples_kept", "skipped")


def save_curves(
    path: str,
    history: list[dict],
    evals: list[dict] | None = None,
    marks: dict[str, float] | None = None,
) -> None:
    """Loss and accuracy per epoch (train and test) and, from ``evals``, test accuracy against
    training seconds (the time-to-accuracy curve), as a PNG. ``marks``: label -> epoch of an
    event drawn as a vertical line (e.g. the physical prune)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.5))
    for key, axis in (("loss", ax[0]), ("acc", ax[1])):
        axis.plot(ep, [h[key] for h in history], "o-", label=f"train {key}")
        axis.plot(ep, [h["val_" + key] for h in history], "s-", label=f"test {key}")
        for label, at in (marks or {}).items():
            axis.axvline(at, color="grey", ls="--", lw=1, label=label)
        axis.set_xlabel("epoch")
        axis.set_title(key)
        axis.legend(fontsize=8)
    if evals:
        ax[2].plot([e["train_s"] for e in evals], [e["val_acc"] for e in evals], ".-")
        ax[2].set_ylim(max(0.0, min(e["val_acc"] for e in evals[len(evals) // 3 :]) - 0.02), None)
    ax[2].set_xlabel("training seconds (evaluation excluded)")
    ax[2].set_title("test accuracy over time")
    ax[2].grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=90))
    plt.close(fig)


class RunLog:
    """Rank 0's outputs of one run in ``out``; every method is a no-op on other ranks.

    Args:
      out: the output folder (created).
      chief: whether this is rank 0.
      progress: show a tqdm bar per epoch when stdout is a terminal (under ``horovodrun`` or
        into a file it is not: one line per epoch, no bar fragments).
      log_every: TensorBoard step-scalar interval.
      step_log: write ``steps.jsonl``.
    """

    def __init__(self, out: str, chief: bool, progress: bool, log_every: int, step_log: bool):
        import tensorflow as tf

        self.out, self.chief, self.log_every = out, chief, log_every
        self.progress = progress and sys.stdout.isatty()
        os.makedirs(out, exist_ok=True)
        self._tb = tf.summary.create_file_writer(os.path.join(out, "tb")) if chief else None
        self._steps = None
        if chief and step_log:
            self._steps = open(os.path.join(out, "steps.jsonl"), "a")  # noqa: SIM115 - whole run
        self._bar = None

    def say(self, msg: str) -> None:
        if self.chief:
            print(msg, flush=True)

    def begin_epoch(self, steps: int) -> None:
        if self.chief and self.progress:
            from tqdm import tqdm

            self._bar = tqdm(total=steps, leave=False, unit="step", dynamic_ncols=True)

    def step(self, i: int, gstep: int, st: dict[str, float], workers: dict | None) -> None:
        """Step ``i`` of the epoch (global ``gstep``): scalars ``st``, and per-worker columns
        (``distributed.worker_table``) for ``--step-log``."""
        if not self.chief:
            return
        if st["skipped"]:
            self.say(
                f"step {gstep}: skipped, every worker rejected (finite losses "
                f"{st['loss_min']:.4g}..{st['loss_max']:.4g})"
            )
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{st['loss']:.4f}", kept=st["workers_kept"], refresh=False)
        if gstep % self.log_every == 0:
            import tensorflow as tf

            with self._tb.as_default(step=gstep):
                for k in STEP_SCALARS:
                    tf.summary.scalar(f"step/{k}", st[k])
        if self._steps is not None and workers is not None:
            # Strict JSON: a faulty worker's NaN/inf scalars are written as null.
            rec = {
                k: [float(u) if np.isfinite(u) else None for u in np.round(v, 5)]
                for k, v in workers.items()
            }
            self._steps.write(json.dumps({"step": gstep, **rec}, allow_nan=False) + "\n")

    def end_epoch(
        self,
        rec: dict[str, Any],
        history: list[dict],
        epochs: int,
        size: int,
        evals: list[dict] | None = None,
        marks: dict[str, float] | None = None,
    ) -> None:
        """The epoch's line, TensorBoard scalars, ``metrics.json`` and ``curves.png``."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.say(
            f"epoch {rec['epoch']}/{epochs}: loss {rec['loss']:.4f} acc {rec['acc']:.4f} "
            f"val_loss {rec['val_loss']:.4f} val_acc {rec['val_acc']:.4f} workers_kept "
            f"{rec['workers_kept_mean']:.2f}/{size} skipped {rec['skipped_steps']} "
            f"{rec['images_per_s']:.0f} img/s, {rec['train_s']:.0f} s"
        )
        if not self.chief:
            return
        import tensorflow as tf

        with self._tb.as_default(step=rec["epoch"]):
            for k, v in rec.items():
                if k != "epoch":
                    tf.summary.scalar(f"epoch/{k}", v)
        self._tb.flush()
        atomic_json(os.path.join(self.out, "metrics.json"), history)
        save_curves(os.path.join(self.out, "curves.png"), history, evals, marks)

    def finish(self, report: dict[str, Any]) -> None:
        """``report.json`` and the closing line."""
        if self._steps is not None:
            self._steps.close()
            self._steps = None
        if not self.chief:
            return
        atomic_json(os.path.join(self.out, "report.json"), report)
        for stage, what in report.get("stages", {}).items():
            print(f"  {stage}: {json.dumps(what)}", flush=True)
        tta = {
            k: (None if v is None else round(v, 1)) for k, v in report["time_to_accuracy"].items()
        }
        print(f"  training seconds to test accuracy: {json.dumps(tta)}", flush=True)
        ips = report["train_images_per_s"]
        print(
            f"ranks={report['ranks']} reduction={report['reduction']} "
            f"test_accuracy={report['test_accuracy']:.4f} "
            f"train_images/s={ips if ips is None else round(ips)} "
            f"flops_saved={report['flops_saved']:.1%} report={self.out}/report.json "
            f"plot={self.out}/curves.png",
            flush=True,
        )
