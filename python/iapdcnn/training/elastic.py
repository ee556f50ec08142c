"""``train.py --elastic``: the trainer under Horovod's elastic mode (Gloo), so that a job survives
a rank that dies, takes back a rank that returns, and can remove a rank that LSG keeps
rejecting (docs/elastic.md).

``ElasticState`` is a ``horovod.common.elastic.State``. A commit (every ``--commit-every`` steps
and at every epoch's end) copies into this process's memory the model and optimizer variables
(the optimizer's step counter, so the learning-rate schedule's position, is one of them), the
data position (epoch, step in the epoch; the epoch's permutation is a function of ``--seed`` and
the epoch), the running epoch's sums, the history, the early-pruning cut and the eviction
bookkeeping. When a collective fails (a peer died) every survivor rolls back to its last
commit; Horovod re-forms the ring with the ranks that are left (or with the ones that came back)
and ``sync`` hands rank 0's state to all, a fresh process included. The trainer then follows the
new size: its rank and shard of every global batch, the learning rate's world-size factor (the
per-rank batch stays ``--batch-size``, so the global batch and its linearly scaled rate shrink
and grow with the ranks), its fault injector and a new reduction (LSG's per-worker reputation
is per rank number, which a reset reassigns, so it starts afresh).

Eviction (``--evict-after M``): every rank sees every step's LAW weights (they come from the
allgathered table), so they agree on which rank has been rejected for M consecutive steps (of
the steps LSG did not skip). That rank's host is written to the blacklist that the
host-discovery script (``scripts/elastic_discover.sh``) leaves out, the state is saved on every
rank, and the rank exits with status ``EVICTED_EXIT``; the others roll back to that save (no step
lost) and go on without it. An eviction that would leave fewer than ``--min-ranks`` ranks
(horovodrun's ``--min-np``, where the driver would wait for hosts) is reported and not made.

The other modes (``--balance``, ``--sync agwu``, soft pruning, the features) and what of them
a commit holds: docs/elastic.md."""

from __future__ import annotations

import copy
import dataclasses
import os
import socket
import sys
from typing import Any

from horovod.common.elastic import State
from horovod.common.exceptions import HorovodInternalError, HostsUpdatedInterrupt

EVICTED_EXIT = 4  # an evicted rank's exit status (a crash fault's is 3)
# the Trainer attributes a commit holds (besides the variables)
TRAINER_FIELDS = (
    "history",
    "evals",
    "train_time",
    "train_macs",
    "images",
    "comm_bytes",
    "acc",
    "pruned",
    "step_macs",
    "steps",
    "merges",  # --sync agwu: merges so far, and the running round's (correct, samples)
    "_round",
)


def host_name() -> str:
    """The host this rank runs on as the elastic driver names it (the discovery script's)."""
    return os.environ.get("HOROVOD_HOSTNAME") or socket.gethostname()


def blacklist_path(out: str) -> str:
    """Where evicted hosts are written, one a line: ``$IAPDCNN_ELASTIC_BLACKLIST`` (what
    ``scripts/elastic_discover.sh`` reads), else ``--out``/evicted_hosts."""
    return os.environ.get("IAPDCNN_ELASTIC_BLACKLIST") or os.path.join(out, "evicted_hosts")


def is_collective_failure(e: BaseException) -> bool:
    """Whether ``e`` is a Horovod collective that failed because the ring broke (a peer died or
    left): Horovod's own error, or the TensorFlow error of a Horovod op, in a ``tf.function``
    or eagerly."""
    if isinstance(e, HorovodInternalError):
        return True
    import tensorflow as tf

    if isinstance(e, tf.errors.OpError | RuntimeError):
        msg = str(e)
        return "Horovod" in msg or "gloo" in msg.lower()
    return False


class Eviction:
    """Consecutive LSG rejections per host, who has been evicted, and who was spared because
    evicting would have left fewer than ``--min-ranks`` ranks (pure bookkeeping)."""

    def __init__(self, after: int | None) -> None:
        self.after = after
        self.streak: dict[str, int] = {}
        self.evicted: list[dict[str, Any]] = []
        self.spared: list[dict[str, Any]] = []

    def observe(self, law: Any, hosts: list[str]) -> list[int]:
        """One step's LAW weights (``law[r]`` of rank ``r`` on ``hosts[r]``); returns the ranks
        rejected for ``after`` consecutive steps (never every rank: then nobody is to blame)."""
        if not self.after:
            return []
        for r, w in enumerate(law):
            h = hosts[r]
            self.streak[h] = self.streak.get(h, 0) + 1 if not w > 0 else 0
        spared = {rec["host"] for rec in self.spared}
        out = [
            r
            for r in range(len(law))
            if self.streak[hosts[r]] >= self.after and hosts[r] not in spared
        ]
        return out if len(out) < len(law) else []

    def record(self, rank: int, host: str, step: int, spared: bool = False) -> dict[str, Any]:
        rec = {"host": host, "rank": rank, "step": step, "rejected_steps": self.streak.pop(host)}
        (self.spared if spared else self.evicted).append(rec)
        return rec

    def state(self) -> dict[str, Any]:
        return {"streak": dict(self.streak), "evicted": list(self.evicted), "spared": self.spared}

    def load(self, d: dict[str, Any]) -> None:
        self.streak, self.evicted = dict(d["streak"]), list(d["evicted"])
        self.spared = list(d["spared"])


class ElasticState(State):
    """The trainer's state under ``--elastic``: commit, restore, sync (see the module's text)."""

    def __init__(self, trainer: Any) -> None:
        from horovod.tensorflow.functions import broadcast_object

        hvd = trainer.hvd
        super().__init__(bcast_object=broadcast_object, get_rank=hvd.rank)
        self.trainer, self.hvd, self.cfg = trainer, hvd, trainer.cfg
        self.epoch, self.step = trainer.start_epoch, 0
        self.step_ids: list[int] = []  # every global step trained, in order (after rollbacks)
        self.commits = 0
        self.resets: list[dict[str, Any]] = []
        self.eviction = Eviction(self.cfg.evict_after)
        self.hosts: list[str] = []
        self.fault_hosts: list[str] | None = None  # --inject-fault's ranks' hosts at the start
        self.fresh = True  # no state of this run yet: a process that has never synced
        self.save()

    # ------------------------------------------------------------------ what a commit holds

    def _meta(self) -> dict[str, Any]:
        t = self.trainer
        return {
            "epoch": self.epoch,
            "step": self.step,
            "step_ids": list(self.step_ids),
            "commits": self.commits,
            "resets": list(self.resets),
            "eviction": self.eviction.state(),
            "fault_hosts": self.fault_hosts,
            # --prune-mode soft: the callback's updates so far and the filters it masks now
            "pruner": None if t.pruner is None else t.pruner.get_state(),
            **{k: copy.deepcopy(getattr(t, k)) for k in TRAINER_FIELDS},
        }

    def _set_meta(self, m: dict[str, Any]) -> None:
        t = self.trainer
        self.epoch, self.step, self.step_ids = m["epoch"], m["step"], list(m["step_ids"])
        self.commits, self.resets = m["commits"], list(m["resets"])
        self.eviction.load(m["eviction"])
        self.fault_hosts = m["fault_hosts"]
        for k in TRAINER_FIELDS:
            setattr(t, k, copy.deepcopy(m[k]))
        if t.pruner is not None and m["pruner"] != t.pruner.get_state():
            t.pruner.set_state(m["pruner"])  # masks (and zeroes) the committed filters

    @property
    def steps_done(self) -> int:
        return len(self.step_ids)

    def save(self) -> None:
        t = self.trainer
        self._saved = copy.deepcopy(self._meta())
        # the objects too: a pruning cut between two commits makes new ones; a rollback to
        # before it takes the uncut model back
        self._saved_objects = (t.model, t.opt)
        self._saved_values = [
            [v.numpy() for v in t.model.variables],
            [v.numpy() for v in t.opt.variables],
        ]

    def restore(self) -> None:
        t = self.trainer
        t.model, t.opt = self._saved_objects
        # the soft-pruning masks first: going back to them zeroes filters, which the committed
        # values then overwrite with exactly what they were
        self._set_meta(copy.deepcopy(self._saved))
        for vs, values in zip(
            (t.model.variables, t.opt.variables), self._saved_values, strict=True
        ):
            for v, x in zip(vs, values, strict=True):
                v.assign(x)

    def _fold_counts(self) -> None:
        """Adds every rank's correct/seen since the last commit to the committed sums (a
        collective: every rank commits at the same step)."""
        import tensorflow as tf

        a = self.trainer.acc
        tot = self.hvd.allreduce(
            tf.constant([a["correct"], a["seen"]], tf.float64), op=self.hvd.Sum, name="elastic_fold"
        ).numpy()
        a["correct_all"] += float(tot[0])
        a["seen_all"] += float(tot[1])
        a["correct"] = a["seen"] = 0.0

    def commit(self, why: str = "") -> None:
        self._fold_counts()
        self.commits += 1
        self.save()
        self.say(
            f"elastic: commit {self.commits} at step {self.steps_done} (epoch {self.epoch}, "
            f"step {self.step}/{self.trainer.steps}) with {self.hvd.size()} ranks"
            + (f" [{why}]" if why else "")
        )
        self.check_host_updates()

    def sync(self) -> None:
        """Makes every rank hold the state of the lowest rank that has one (rank 0 unless a
        fresh process took rank 0), then follows the current world size."""
        from horovod.tensorflow.functions import allgather_object, broadcast_object

        t, hvd = self.trainer, self.hvd
        info = allgather_object((self.fresh, host_name()))
        self.hosts = [h for _, h in info]
        root = next((r for r, (fresh, _) in enumerate(info) if not fresh), 0)
        meta = broadcast_object(self._meta() if hvd.rank() == root else None, root_rank=root)
        if meta["pruned"] and meta["pruned"] != t.pruned:
            if t.pruned:
                raise RuntimeError("elastic: ranks hold different pruning cuts")
            t._cut(meta["pruned"])  # a fresh process: cut its model as the run's was cut
        self._set_meta(meta)
        self._follow_size()
        hvd.broadcast_variables(t.model.variables, root_rank=root)
        hvd.broadcast_variables(t.opt.variables, root_rank=root)
        self.fresh = False
        self._write_pid()
        self.save()

    def _write_pid(self) -> None:
        """``--out``/elastic_pids/HOST holds this rank's process id and rank (for operators, and
        for scripts/elastic_demo.sh and the tests, which kill a worker by its host)."""
        d = os.path.join(self.cfg.out, "elastic_pids")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, host_name()), "w") as f:
            f.write(f"{os.getpid()} {self.hvd.rank()}\n")

    def _follow_size(self) -> None:
        """Rank, size and everything that depends on them, after a (re)start."""
        from . import build
        from .faults import FaultInjector
        from .output import RunLog

        t, cfg, hvd = self.trainer, self.cfg, self.hvd
        t.rank, t.size = hvd.rank(), hvd.size()
        # an injected fault belongs to the host that held its rank at the start (a bad node):
        # it follows that host through renumbering, and leaves with it
        if self.fault_hosts is None:
            n = len(self.hosts)
            self.fault_hosts = [self.hosts[f.rank] if f.rank < n else "" for f in cfg.inject_fault]
        faults = [
            dataclasses.replace(f, rank=self.hosts.index(h))
            for f, h in zip(cfg.inject_fault, self.fault_hosts, strict=True)
            if h in self.hosts
        ]
        t.faults = FaultInjector(
            faults, t.rank, t.size, cfg.seed, cfg.straggler_seconds, cfg.batch_size
        )
        t.reduction = build.build_reduction(cfg, t.faults.corrupts_gradients)
        t.schedule.world_size = t.size  # the warm-up's target lr * size (a Python number:
        t.schedule.total_steps = cfg.epochs * t.steps  # the step function is retraced below)
        t.schedule.warmup_steps = float(cfg.warmup_epochs * t.steps)
        t.prune_step = build.prune_step(cfg, t.steps)
        if cfg.balance:  # the shares are re-measured for the new ranks, from an even split
            from .balance import Balancer

            updates = t.balancer.updates
            t.balancer = Balancer(t.size, t.rank, cfg.batch_size, cfg.balance_every, hvd)
            t.balancer.updates = updates
        if t.pruner is not None:  # a fresh process sized its schedule by the size it met
            pruner = build.build_pruner(cfg, t.steps)
            if _schedule(pruner) != _schedule(t.pruner):
                pruner.set_model(t.model)
                pruner.set_state(t.pruner.get_state())
                t.pruner = pruner
        if t.log.chief != (t.rank == 0):  # rank 0 moved: its RunLog writes --out now
            t.log = RunLog(cfg.out, t.rank == 0, not cfg.no_progress, cfg.log_every, cfg.step_log)
        t._compile()

    # ------------------------------------------------------------------ the step hook

    def say(self, msg: str) -> None:
        if self.hvd.rank() == 0:
            print(msg, flush=True)

    def after_step(self, epoch: int, i: int, st: dict[str, float], workers: dict | None) -> None:
        """``Trainer.train_epoch``'s hook: the data position, eviction, the commits."""
        t = self.trainer
        gstep = epoch * t.steps + i
        self.epoch, self.step = epoch, i + 1
        self.step_ids.append(gstep)
        if self.cfg.evict_after and workers is not None and not st["skipped"]:
            victims = self.eviction.observe(workers["law"], self.hosts)
            if victims:
                self._evict(victims, gstep)
        # by the global step: under --sync agwu (--commit-every a multiple of --local-steps)
        # every commit then comes right after a merge, when all ranks hold the same model
        if (gstep + 1) % self.cfg.commit_every == 0:
            self.commit()

    def _evict(self, victims: list[int], gstep: int) -> None:
        rank, hosts = self.hvd.rank(), self.hosts
        reporter = min(r for r in range(len(hosts)) if r not in victims)
        left = len(hosts) - len(victims)
        if left < self.cfg.min_ranks:  # Horovod would wait for hosts that never come: keep it
            for r in victims:
                rec = self.eviction.record(r, hosts[r], gstep, spared=True)
                if rank == reporter:
                    print(
                        f"elastic: not evicting rank {r} (host {hosts[r]}): LSG rejected it for "
                        f"{rec['rejected_steps']} consecutive steps, up to step {gstep}, but "
                        f"{left} ranks would be left, fewer than --min-ranks "
                        f"{self.cfg.min_ranks}; it stays, its gradients still screened",
                        flush=True,
                    )
            return
        recs = [self.eviction.record(r, hosts[r], gstep) for r in victims]
        for rec in recs:
            if rank == reporter:
                print(
                    f"elastic: evicting rank {rec['rank']} (host {rec['host']}): LSG rejected it "
                    f"for {rec['rejected_steps']} consecutive steps, up to step {gstep}",
                    flush=True,
                )
        if rank == reporter:
            path = blacklist_path(self.cfg.out)
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with open(path, "a") as f:
                f.writelines(rec["host"] + "\n" for rec in recs)
        # every rank saves here: the survivors roll back to exactly this step when the evicted
        # rank's exit breaks their next collective
        self._fold_counts()
        self.save()
        if rank in victims:
            print(f"elastic: rank {rank} (host {hosts[rank]}) evicted, exiting", flush=True)
            sys.stdout.flush()
            os._exit(EVICTED_EXIT)

    def note_reset(self, cause: str, size_before: int, lost: int) -> None:
        self.resets.append(
            {
                "cause": cause,
                "at_step": self.steps_done,
                "lost_steps": lost,
                "size_before": size_before,
                "size_after": self.hvd.size(),
            }
        )

    def summary(self) -> dict[str, Any]:
        """The report's ``elastic`` section."""
        t = self.trainer
        expected = list(range(t.start_epoch * t.steps, self.cfg.epochs * t.steps))
        return {
            "commit_every": self.cfg.commit_every,
            "commits": self.commits,
            "steps_done": self.steps_done,
            "optimizer_steps": int(t.opt.iterations.numpy()),
            "steps_expected": len(expected),
            "steps_in_order": self.step_ids == expected,
            "resets": self.resets,
            "evicted": self.eviction.evicted,
            "spared": self.eviction.spared,
            "final_ranks": self.hvd.size(),
        }


def _schedule(pruner: Any) -> tuple[int, Any, int]:
    return pruner.begin_step, pruner.end_step, pruner.frequency


def _run(state: ElasticState, func: Any) -> Any:
    """``hvd.elastic.run``'s retry loop, with the cause of each reset kept: on a failed
    collective every rank rolls back to its last commit; on a changed host list (raised at a
    commit) the state is already committed. Then Horovod is re-initialised with the ranks there
    are now, and ``sync`` starts the next try."""
    from horovod.common.elastic import notification_manager

    hvd = state.hvd
    notification_manager.init()
    notification_manager.register_listener(state)
    try:
        while True:
            try:
                state.sync()
                return func(state)
            except HostsUpdatedInterrupt:
                cause, lost = "the host list changed", 0
            except Exception as e:
                if not is_collective_failure(e):
                    raise
                live = state.steps_done
                state.restore()
                cause, lost = "a collective failed (a rank is gone)", live - state.steps_done
            size_before = hvd.size()
            hvd.shutdown()
            hvd.init()
            state.on_reset()
            state.note_reset(cause, size_before, lost)
            peak = state.cfg.lr * hvd.size()
            state.say(
                f"elastic: reset after {cause}: {size_before} -> {hvd.size()} ranks, rolled back "
                f"{lost} steps to step {state.steps_done} (epoch {state.epoch}, step "
                f"{state.step}); lr peak now {peak:g} (--lr x {hvd.size()}), "
                f"{state.cfg.batch_size}/rank"
            )
    finally:
        notification_manager.remove_listener(state)


def run_elastic(trainer: Any) -> dict:
    """Trains to the end under ``--elastic``; returns the report (with its ``elastic`` section)."""
    state = ElasticState(trainer)
    trainer.elastic = state
    cfg = trainer.cfg

    def train(state: ElasticState) -> dict:
        t = state.trainer
        state.say(
            f"elastic: {t.size} ranks on {', '.join(state.hosts)}; from epoch {state.epoch} "
            f"step {state.step}, step {state.steps_done} of the run; commit every "
            f"{cfg.commit_every} steps"
        )
        t.log.say(t.describe())
        while state.epoch < cfg.epochs:
            t.train_epoch(state.epoch, state.step, state.after_step)
            state.epoch, state.step = state.epoch + 1, 0
            state.commit("end of epoch")
        return t.finish()

    return _run(state, train)
