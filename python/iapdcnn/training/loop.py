"""The training loop: one ``Trainer`` per run holds the model, optimizer, reduction and data of
this rank. A step is the package's own way in for custom loops, as a user would write it:
``DistributedGradientTape`` reduces the gradients (LSG by default), ``apply_unless_skipped``
applies them unless every worker was rejected. Epochs shard a seeded permutation by rank, so a
resumed run sees exactly the batches an uninterrupted one would."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import tensorflow as tf

from iapdcnn.distributed import (
    DistributedGradientTape,
    apply_unless_skipped,
    loss_standard_error,
    lsg_loss,
    sample_law,
    worker_table,
)

from . import build, checkpoint
from .config import TrainConfig, config_dict
from .errors import ConfigError
from .faults import FaultInjector
from .output import RunLog

STEP_STATS = ("workers_kept", "samples_kept", "skipped", "loss", "loss_min", "loss_max")


def new_epoch_acc() -> dict[str, float]:
    """The sums an epoch's record is made of. ``correct``/``seen`` are this rank's since the last
    elastic commit, ``*_all`` those of every rank before it (0 without ``--elastic``)."""
    keys = ("n", "kept", "samples", "skipped", "loss_sum", "correct", "seen", "epoch_s")
    return dict.fromkeys(keys + ("correct_all", "seen_all"), 0.0)


class Trainer:
    """One rank's part of a run.

    Args:
      cfg: the checked configuration.
      hvd: ``horovod.tensorflow``, initialised.
      arrays: ``(x_train, y_train, x_test, y_test)`` (whole splits).
      prep: what preparing the data did (``features.prepare``'s info), or None. Its seconds
        start the training clock: time to accuracy counts the features' cost.
    """

    def __init__(
        self, cfg: TrainConfig, hvd: Any, arrays: tuple[np.ndarray, ...], prep: dict | None = None
    ) -> None:
        from iapdcnn.pruning import count_flops

        self.cfg, self.hvd = cfg, hvd
        self.rank, self.size = hvd.rank(), hvd.size()
        self.xtr, self.ytr, self.xte, self.yte = arrays
        self.faults = FaultInjector(
            cfg.inject_fault, self.rank, self.size, cfg.seed, cfg.straggler_seconds, cfg.batch_size
        )
        steps = len(self.xtr) // (self.size * cfg.batch_size)
        if steps < 1:
            raise ConfigError(
                f"--batch-size {cfg.batch_size} x {self.size} ranks exceeds the "
                f"{len(self.xtr)} training examples"
            )
        self.steps = min(steps, cfg.steps_per_epoch or steps)
        num_classes = int(max(self.ytr.max(), self.yte.max())) + 1
        t0 = time.perf_counter()
        self.model = build.build_model(cfg, self.xtr.shape[1:], num_classes, (self.xtr, self.ytr))
        # preparation a method needs is on its clock: --init kmeans clusters patches here
        init_s = time.perf_counter() - t0 if cfg.init == "kmeans" else 0.0
        self.flops_before = count_flops(self.model).total
        self.schedule = build.build_schedule(cfg, self.size, self.steps)
        self.opt = build.build_optimizer(cfg, self.schedule)
        self.opt.build(self.model.trainable_variables)
        self.reduction = build.build_reduction(cfg, self.faults.corrupts_gradients)
        self.per_sample = tf.keras.losses.SparseCategoricalCrossentropy(
            reduction=tf.keras.losses.Reduction.NONE
        )
        self.log = RunLog(cfg.out, self.rank == 0, not cfg.no_progress, cfg.log_every, cfg.step_log)
        self.ckpt_path = os.path.join(cfg.out, checkpoint.CKPT)
        self.ckpt_identity = checkpoint.identity(cfg, self.xtr.shape[1:], num_classes)
        self.start_epoch, self.history, self.evals = 0, [], []
        self.pruner = None
        self.prune_step = build.prune_step(cfg, self.steps)
        self.pruned: dict[str, list[int]] = {}  # early pruning's cut: layer -> removed filters
        self.prep = prep
        self.images = 0
        self.train_time = init_s + (float(prep.get("seconds", 0.0)) if prep else 0.0)
        self.balancer = None
        if cfg.balance:
            from .balance import Balancer

            even = 2 if build.odd_batch_crashes(cfg) else 1
            self.balancer = Balancer(
                self.size, self.rank, cfg.batch_size, cfg.balance_every, hvd, multiple=even
            )
        self._round = [0.0, 0]  # --sync agwu: correct predictions and samples this round
        self.merges, self.comm_bytes = 0, 0  # AGWU merges; bytes allreduced per rank (either mode)
        self.step_s = [0.0, 0.0]  # this rank's wall and CPU seconds in training steps (busy_time)
        self.step_macs = self.flops_before  # per image, of the model the steps train
        self.train_macs = 0.0  # forward multiply-adds of all training images so far
        self.acc = new_epoch_acc()  # the running epoch's sums (elastic.py commits them)
        self.elastic = None  # --elastic: the elastic.ElasticState that drives this trainer
        self._compile()

    def _agwu_merge(self) -> None:
        """``--sync agwu``: merges the ranks' copies, weighted by their accuracy this round
        (``distributed.agwu``). A no-op in step mode or with no local step since the last one."""
        if self.cfg.sync != "agwu" or not self._round[1]:
            return
        from iapdcnn.distributed.agwu import merge_models, nbytes

        variables = list(self.model.variables) + list(self.opt.variables)
        w0, c0 = time.perf_counter(), time.process_time()
        res = merge_models(variables, self._round[0] / self._round[1])
        self.step_s[0] += time.perf_counter() - w0  # a merge is training time (busy_time)
        self.step_s[1] += time.process_time() - c0
        if not res["merged"]:
            self.log.say("agwu: every rank's copy is non-finite or scored 0; nothing merged")
        self.merges += 1
        self.comm_bytes += nbytes([v for v in variables if v.dtype.is_floating])
        self._round = [0.0, 0]

    def _compile(self) -> None:
        """Fresh step functions for the current model (after a cut, the old traces hold the old
        variables)."""
        from iapdcnn.distributed.agwu import nbytes

        self._train_step = tf.function(self._step, reduce_retracing=True)
        self.grad_bytes = nbytes(self.model.trainable_variables)  # one step's gradients
        self._eval_step = tf.function(self._eval, reduce_retracing=True)

    # ------------------------------------------------------------------------- state

    def restore_or_broadcast(self, broadcast: bool = True) -> None:
        """Resumes from ``--out``'s checkpoint under ``--resume``, then makes every rank hold
        rank 0's model and optimizer state (unless not ``broadcast``: under ``--elastic`` the
        state's first sync does that, once every rank has joined)."""
        if self.cfg.resume and os.path.exists(self.ckpt_path):
            pruned = checkpoint.read_meta(self.ckpt_path, self.ckpt_identity).get("pruned")
            if pruned:  # the run was cut early: cut the fresh model the same way first
                try:
                    self._cut(pruned)
                except (ValueError, KeyError, IndexError) as e:
                    raise checkpoint.CheckpointError(
                        f"--resume: {self.ckpt_path}: its pruned filters do not fit the model "
                        f"({type(e).__name__}: {e})"
                    ) from None
            meta = checkpoint.load(self.ckpt_path, self.model, self.opt, self.ckpt_identity)
            self.start_epoch, self.history = meta["epoch"] + 1, meta["history"]
            self.evals, self.train_time = meta.get("evals", []), meta.get("train_s", 0.0)
            self.train_macs = meta.get("train_macs", 0.0)
            if meta["size"] != self.size:
                self.log.say(
                    f"note: checkpoint was written with {meta['size']} ranks, now {self.size}: "
                    "the batches differ, so the continuation is not exact"
                )
            self.log.say(f"resumed from {self.ckpt_path} after epoch {meta['epoch'] + 1}")
        elif self.cfg.resume:
            self.log.say(f"--resume: no checkpoint at {self.ckpt_path}, starting from scratch")
        if broadcast:
            self.hvd.broadcast_variables(self.model.variables, root_rank=0)
            self.hvd.broadcast_variables(self.opt.variables, root_rank=0)
        if self.cfg.prune > 0 and self.prune_step is None:
            self.pruner = build.build_pruner(self.cfg, self.steps)
            self.model.optimizer = self.opt  # the callback reads the step from it, as under fit
            self.pruner.set_model(self.model)
            self.pruner.on_train_begin()

    def describe(self) -> str:
        c = self.cfg
        return (
            f"iapdcnn train: {c.dataset} {self.xtr.shape[1:]} x{len(self.xtr)}, model "
            f"{self.model.name} ({self.model.count_params()} params, "
            f"{self.flops_before / 1e6:.1f} MFLOPs), ranks={self.size}, "
            f"reduction={c.reduction}, {self.steps} steps/epoch x {c.batch_size}/rank"
        )

    def _plan(self, pruning: Any, kw: dict) -> Any:
        return pruning.plan(
            self.model,
            self.cfg.prune_criterion,
            target_flops_reduction=self.cfg.prune,
            round_to=self.cfg.prune_round_to,
            # one threshold over all groups: with channels rounded to multiples of 8 the uniform
            # ratio's steps are coarse (16 -> 8 filters cut 62% for a 30% target)
            flops_mode="global",
            **kw,
        )

    def _cut(self, pruned: dict[str, list[int]] | None = None) -> None:
        """Early pruning: cuts the model physically (the filters ``pruned`` names, or a new
        selection for the ``--prune`` FLOPs target, rank 0's on every rank) and goes on with the
        smaller model and an optimizer whose slots are cut alike."""
        from iapdcnn import pruning

        if pruned is None:
            kw = {}
            if self.cfg.prune_criterion in ("fmp", "fm_redundancy"):
                kw["data"] = self.xtr[:256]
            try:
                p = self._plan(pruning, kw)
            except ValueError as e:  # e.g. a target that the rounding cannot reach
                raise SystemExit(
                    f"train.py: --prune {self.cfg.prune} with --prune-round-to "
                    f"{self.cfg.prune_round_to}: {e}"
                ) from None
            p = pruning.broadcast_plan(p)
        else:
            p = pruning.plan_channels(self.model, pruned)
        self.model, self.opt = pruning.rebuild_with_optimizer(p, self.opt)
        self.pruned = {k: [int(i) for i in v] for k, v in p.pruned.items()}
        self.step_macs = self.flops_now()
        self._compile()

    # ------------------------------------------------------------------------- steps

    def _step(self, x, y):
        cfg, model = self.cfg, self.model
        with tf.GradientTape() as tape:
            probs = model(x, training=True)
            losses = self.per_sample(y, probs)
            if cfg.sample_law:
                law = sample_law(losses, kappa=cfg.sample_kappa)
                loss = lsg_loss(losses, law, cfg.normalise)
                kept = tf.reduce_sum(law)
            else:
                loss = tf.reduce_mean(losses)
                kept = tf.cast(tf.shape(losses)[0], tf.float32)
            total = loss + tf.add_n(model.losses) if model.losses else loss
        variables = model.trainable_variables
        tape = DistributedGradientTape(tape, self.reduction)
        grads = tape.gradient(
            total, variables, loss=loss, samples=kept, loss_se=loss_standard_error(losses)
        )
        if hasattr(self.opt, "observe_loss"):  # CGMSE's secant correction: the reduced loss
            self.opt.observe_loss(tape.stats["loss"])
        apply_unless_skipped(self.opt, zip(grads, variables, strict=True), tape.stats)
        out = {k: tape.stats[k] for k in STEP_STATS}
        out["correct"] = self._correct(y, probs)
        if self.cfg.step_log or self.cfg.evict_after:  # --evict-after reads the LAW weights
            out["workers"] = worker_table(tape.stats)
        return {k: v for k, v in out.items() if v is not None}

    @staticmethod
    def _correct(y, probs):
        hit = tf.equal(tf.argmax(probs, -1), tf.cast(y, tf.int64))
        return tf.reduce_sum(tf.cast(hit, tf.float32))

    def _eval(self, x, y):
        probs = self.model(x, training=False)
        return tf.reduce_sum(self.per_sample(y, probs)), self._correct(y, probs)

    def evaluate(self) -> tuple[float, float]:
        """Test loss and accuracy over the first ``--eval-limit`` test images, split by rank."""
        n = min(len(self.xte), self.cfg.eval_limit or len(self.xte))
        xs, ys = self.xte[self.rank : n : self.size], self.yte[self.rank : n : self.size]
        loss_sum = correct = 0.0
        for i in range(0, len(xs), 256):
            l_, c_ = self._eval_step(xs[i : i + 256], ys[i : i + 256])
            loss_sum, correct = loss_sum + float(l_), correct + float(c_)
        tot = self.hvd.allreduce(
            tf.constant([loss_sum, correct, float(len(xs))], tf.float64),
            op=self.hvd.Sum,
            name="eval_sums",
        ).numpy()
        return tot[0] / max(tot[2], 1), tot[1] / max(tot[2], 1)

    def sync_non_trainable(self) -> None:
        """BatchNorm statistics are rank-local: replace them by their median across ranks
        (robust to one faulty rank of three or more), so every rank evaluates and checkpoints
        the same model."""
        vs = self.model.non_trainable_variables
        if self.size == 1 or not vs:
            return
        flat = tf.concat([tf.reshape(tf.cast(v, tf.float32), [-1]) for v in vs], 0)
        table = self.hvd.allgather(flat[None], name="sync_non_trainable").numpy()
        med = np.median(table, axis=0)
        start = 0
        for v in vs:
            n = int(np.prod(v.shape))
            v.assign(med[start : start + n].reshape(v.shape).astype(v.dtype.as_numpy_dtype))
            start += n

    # ------------------------------------------------------------------------- epochs

    def _record_eval(self, epoch: float, step: int) -> tuple[float, float]:
        """Evaluates (BatchNorm statistics agreed first) and keeps the point of the
        time-to-accuracy curve: training seconds so far (evaluation excluded) -> accuracy."""
        self.sync_non_trainable()
        val_loss, val_acc = self.evaluate()
        point = {"epoch": round(epoch, 4), "step": step, "train_s": self.train_time}
        self.evals.append({**point, "val_loss": val_loss, "val_acc": val_acc})
        return val_loss, val_acc

    def train_epoch(self, epoch: int, start: int = 0, after_step: Any = None) -> dict[str, Any]:
        """One epoch; returns its record (also appended to ``history`` and written out).
        ``--elastic`` continues an epoch from step ``start`` (its sums so far in ``acc``) and
        calls ``after_step(epoch, i, stats, workers)`` after each step (commits, eviction)."""
        cfg, size, bs = self.cfg, self.size, self.cfg.batch_size
        perm = np.random.default_rng([cfg.seed, epoch]).permutation(len(self.xtr))
        if start == 0:
            self.acc = new_epoch_acc()
        a = self.acc
        self.log.begin_epoch(self.steps)
        if self.pruner is not None:
            self.pruner.on_epoch_begin(epoch)
        t0 = time.perf_counter()
        for i in range(start, self.steps):
            gstep = epoch * self.steps + i
            if gstep == self.prune_step and not self.pruned:
                self._agwu_merge()  # the copies agree before rank 0's plan cuts them all
                self._cut()
                self.log.say(f"step {gstep}: pruned to {self.flops_now() / 1e6:.1f} MFLOPs")
            bal = self.balancer
            if bal is None:
                lo = (i * size + self.rank) * bs
                if lo + bs <= len(perm):
                    idx = perm[lo : lo + bs]
                else:  # more ranks than the epoch was sized for (--elastic): wrap around
                    idx = perm.take(range(lo, lo + bs), mode="wrap")
            else:  # this rank's slice of the global batch, sized by its speed
                first = i * size * bs + bal.offset  # (wraps as above under --elastic)
                idx = perm.take(range(first, first + bal.sizes[self.rank]), mode="wrap")
                self.reduction.weight.assign(bal.weight)
            w0, c0 = time.perf_counter(), time.process_time()
            x, y, factor = self.faults.batch(self.xtr[idx], self.ytr[idx], gstep)
            if self.faults.corrupts_gradients:
                self.reduction.factor.assign(factor)
            res = self._train_step(x, y)
            cpu = time.process_time() - c0
            self.step_s[0] += time.perf_counter() - w0
            self.step_s[1] += cpu
            a["seen"] += len(idx)
            if bal is not None:
                bal.record(cpu, len(idx))
                if bal.maybe_update(gstep):
                    self.log.say(f"step {gstep}: balanced batches {bal.sizes}")
            self.train_macs += self.step_macs * bs * size
            self.images += bs * size
            if cfg.sync == "step":  # one allreduce of the gradients per step
                self.comm_bytes += self.grad_bytes
            workers = res.pop("workers", None)
            workers = None if workers is None else {k: v.numpy() for k, v in workers.items()}
            st = {k: float(v) for k, v in res.items()}
            a["n"] += 1
            a["kept"] += st["workers_kept"]
            a["samples"] += st["samples_kept"]
            a["skipped"] += st["skipped"]
            a["correct"] += st["correct"]
            a["loss_sum"] += 0.0 if st["skipped"] else st["loss"]
            self.log.step(i, gstep, st, workers)
            if self.pruner is not None:
                self.pruner.on_train_batch_end(i)
            eval_now = cfg.eval_every and (gstep + 1) % cfg.eval_every == 0 and i + 1 < self.steps
            if cfg.sync == "agwu":
                self._round[0] += st["correct"]
                self._round[1] += bs
                # merge every --local-steps, and on the clock before anything reads the model
                if (gstep + 1) % cfg.local_steps == 0 or eval_now or i + 1 == self.steps:
                    self._agwu_merge()
            if eval_now:
                dt = time.perf_counter() - t0  # the clock stops while evaluating
                a["epoch_s"], self.train_time = a["epoch_s"] + dt, self.train_time + dt
                self._record_eval(epoch + (i + 1) / self.steps, gstep + 1)
                t0 = time.perf_counter()
            if after_step is not None:
                dt = time.perf_counter() - t0  # the clock so far, so that a commit holds it
                a["epoch_s"], self.train_time = a["epoch_s"] + dt, self.train_time + dt
                after_step(epoch, i, st, workers)
                t0 = time.perf_counter()
        dt = time.perf_counter() - t0
        a["epoch_s"], self.train_time = a["epoch_s"] + dt, self.train_time + dt
        epoch_time, n, skipped = a["epoch_s"], a["n"], a["skipped"]
        if self.pruner is not None:
            self.pruner.on_epoch_end(epoch)
        # correct/seen: this rank's since the last commit, plus the committed sums of all ranks
        tot = self.hvd.allreduce(
            tf.constant([a["correct"], a["seen"]]), op=self.hvd.Sum, name="train_acc"
        )
        tot = tot + tf.constant([a["correct_all"], a["seen_all"]])
        train_acc = float(tot[0] / tf.maximum(tot[1], 1.0))
        val_loss, val_acc = self._record_eval(epoch + 1, (epoch + 1) * self.steps)
        rec = {
            "epoch": epoch + 1,
            "loss": a["loss_sum"] / (n - skipped) if n > skipped else float("nan"),
            "acc": train_acc,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "workers_kept_mean": a["kept"] / n,
            "samples_kept_mean": a["samples"] / n,
            "skipped_steps": int(skipped),
            "lr": float(self.schedule(self.opt.iterations)),
            "epoch_s": epoch_time,
            "train_s": self.train_time,
            "images_per_s": self.steps * bs * size / epoch_time,
            "mflops": self.flops_now() / 1e6,
        }
        self.history.append(rec)
        marks = {}
        if self.prune_step is not None and self.pruned:
            marks["pruned"] = self.prune_step / self.steps
        self.log.end_epoch(rec, self.history, cfg.epochs, size, self.evals, marks)
        if self.rank == 0:
            meta = {
                "epoch": epoch,
                "history": self.history,
                "evals": self.evals,
                "train_s": self.train_time,
                "train_macs": self.train_macs,
                "size": size,
                "pruned": self.pruned,
            }
            checkpoint.save(self.ckpt_path, self.model, self.opt, meta, self.ckpt_identity)
        return rec

    def flops_now(self) -> int:
        """Multiply-adds of one image through the current model (masks not counted)."""
        from iapdcnn.pruning import count_flops

        return count_flops(self.model).total

    def time_to_accuracy(self) -> dict[str, float | None]:
        """Training seconds until the test accuracy first reached each of ``--targets``."""
        out = {}
        for t in self.cfg.targets:
            hit = [e["train_s"] for e in self.evals if e["val_acc"] >= t]
            out[f"{t:.2f}"] = min(hit) if hit else None
        return out

    def stages(self, flops_after: int) -> dict[str, dict[str, Any]]:
        """What each IA-PDCNNOA stage did in this run (its measured effect across runs is
        ``benchmarks/bench_pipeline.py``'s)."""
        cfg = self.cfg
        out: dict[str, dict[str, Any]] = {
            "features": {"on": cfg.features or self.prep is not None},
            "conv": {"op": cfg.conv},
            "pruning": {"on": cfg.prune > 0},
            "reduction": {
                "name": cfg.reduction,
                "workers_kept_mean": float(np.mean([h["workers_kept_mean"] for h in self.history]))
                if self.history
                else None,
                "skipped_steps": int(sum(h["skipped_steps"] for h in self.history)),
            },
        }
        if self.balancer is not None:
            out["balance"] = {"sizes": self.balancer.sizes, "updates": self.balancer.updates}
        out["sync"] = {
            "mode": cfg.sync,
            "allreduced_mb_per_rank": round(self.comm_bytes / 2**20, 3),
        }
        if cfg.sync == "agwu":
            out["sync"].update(local_steps=cfg.local_steps, merges=self.merges)
        if cfg.features:
            out["features"].update(form="in the model, every step", epsilon=cfg.fci_epsilon)
        elif self.prep is not None:
            keep = ("cache", "seconds", "compute_seconds", "train_in", "train_kept", "dropped")
            out["features"].update(
                form=f"computed once: {cfg.features_mode}",
                fci_drop=cfg.fci_drop,
                **{k: self.prep[k] for k in keep if k in self.prep},
            )
        if cfg.prune > 0:
            out["pruning"].update(
                mode=cfg.prune_mode,
                criterion=cfg.prune_criterion,
                at_step=self.prune_step,
                flops_saved=1.0 - flops_after / self.flops_before,
                train_flops_saved=1.0 - self.train_macs / (self.flops_before * max(self.images, 1)),
            )
        return out

    def busy_time(self) -> dict[str, list[float]]:
        """Each rank's seconds in training steps and AGWU merges: ``wall``, ``cpu`` (the process's CPU time, so
        compute) and ``idle`` = wall - cpu, the time it waited for the others in the collectives
        (meaningful with ``--threads 1``, where compute cannot exceed the wall clock; on a GPU
        the CPU time is not the compute). One allgather; every rank calls it."""
        t = self.hvd.allgather(tf.constant([self.step_s], tf.float64), name="iapdcnn_busy")
        wall, cpu = t.numpy().T
        return {
            "wall": [round(float(v), 3) for v in wall],
            "cpu": [round(float(v), 3) for v in cpu],
            "idle": [round(float(v), 3) for v in wall - cpu],
        }

    def finish(self) -> dict[str, Any]:
        """Strips the pruned filters physically, evaluates once more and writes the report."""
        from iapdcnn.pruning import count_flops, strip

        if self.pruner is not None:
            self.pruner.on_train_end()
            self.model = strip(self.model)  # fewer filters, the same function as the masked one
            self._eval_step = tf.function(self._eval, reduce_retracing=True)
        flops_after = count_flops(self.model).total
        val_loss, val_acc = self.evaluate()
        cfg = self.cfg
        report = {
            "dataset": cfg.dataset,
            "ranks": self.size,
            "reduction": cfg.reduction,
            "epochs": cfg.epochs,
            "test_loss": val_loss,
            "test_accuracy": val_acc,
            "train_images_per_s": self.images / self.train_time if self.train_time else None,
            "flops_before": self.flops_before,
            "flops_after": flops_after,
            "flops_saved": 1.0 - flops_after / self.flops_before if self.flops_before else 0.0,
            "faults": [str(f) for f in cfg.inject_fault],
            "train_s": self.train_time,
            "step_seconds_per_rank": self.busy_time(),
            # forward + backward ~ 3 forwards, 2 FLOPs a multiply-add (masked filters count)
            "train_flops": 6.0 * self.train_macs,
            "time_to_accuracy": self.time_to_accuracy(),
            "stages": self.stages(flops_after),
            "config": config_dict(cfg),
            "history": self.history,
            "evals": self.evals,
        }
        if self.elastic is not None:
            report["elastic"] = self.elastic.summary()
        self.log.finish(report)
        return report
