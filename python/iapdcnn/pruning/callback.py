"""Soft pruning during training, in TF-MOT's style: ``MDCVPruning`` is the callback (TF-MOT's
``prune_low_magnitude`` + ``UpdatePruningStep`` in one), ``strip`` the ``strip_pruning``.

On a polynomial schedule (TF-MOT's ``PolynomialDecay``, in FLOPs instead of sparsity) the callback
selects filters with ``plan`` and zeroes them, together with the BN gamma/beta they feed, so the
masked model already computes what the pruned one will. While the target ramps up, the zeroed
filters may grow back between updates (soft filter pruning; ``hard=True`` re-zeroes them after
every batch). From ``end_step`` on the final mask is held after every batch, so the rest of
training fine-tunes the network that ``strip(model)`` will then cut out physically.

Under Horovod every rank runs the callback (as it runs Horovod's own callbacks) and masks the
filters rank 0 selected: criteria that read local data (``fmp``, ``fm_redundancy``) would
otherwise pick different filters on different ranks, and the ranks' models would drift apart.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import tensorflow as tf

from .. import world
from .._keras import keras
from .core import plan, plan_channels
from .graph import ChannelGraph


class MDCVPruning(keras.callbacks.Callback):
    """Masks filters towards a FLOPs target during ``fit``.

    Args:
      target_flops_reduction: final fraction of multiply-adds removed, in [0, 1).
      begin_step, end_step: optimizer steps over which the target ramps up (end_step=None: the
        end of the first epoch of fit, when known, else begin_step + 1000).
      frequency: steps between mask updates.
      initial_flops_reduction: reduction at begin_step.
      power: exponent of the polynomial ramp (3, as TF-MOT's PolynomialDecay).
      hard: re-apply the current mask after every batch during the ramp too (no regrowth).
      sync_ranks: broadcast rank 0's selection to every rank at each update. None (default):
        when Horovod (``horovod.tensorflow``) is initialised with more than one rank. Every rank
        must then run the callback at the same steps.
      criterion, data, ignored_layers, round_to, min_channels, prune_residual, flops_mode,
        criterion_kwargs: as for ``iapdcnn.pruning.prune``.
    """

    def __init__(
        self,
        target_flops_reduction: float,
        begin_step: int = 0,
        end_step: int | None = None,
        frequency: int = 100,
        initial_flops_reduction: float = 0.0,
        power: float = 3.0,
        hard: bool = False,
        sync_ranks: bool | None = None,
        criterion: str = "mdcv",
        data: Any = None,
        ignored_layers: Iterable[Any] = (),
        round_to: int = 1,
        min_channels: int = 1,
        prune_residual: bool = True,
        flops_mode: str = "uniform",
        criterion_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
    ) -> None:
        super().__init__()
        if not 0.0 <= target_flops_reduction < 1.0:
            raise ValueError(
                f"target_flops_reduction must be in [0, 1), got {target_flops_reduction}"
            )
        if frequency < 1:
            raise ValueError(f"frequency must be >= 1, got {frequency}")
        if end_step is not None and end_step <= begin_step:
            raise ValueError(f"end_step must be > begin_step, got {end_step} <= {begin_step}")
        self.target = float(target_flops_reduction)
        self.initial = float(initial_flops_reduction)
        self.begin_step, self.end_step = int(begin_step), end_step
        self.frequency, self.power, self.hard = int(frequency), float(power), bool(hard)
        self.plan_kwargs = dict(
            criterion=criterion,
            data=data,
            ignored_layers=tuple(ignored_layers),
            round_to=round_to,
            min_channels=min_channels,
            prune_residual=prune_residual,
            flops_mode=flops_mode,
            criterion_kwargs=criterion_kwargs,
        )
        if sync_ranks is not None and not isinstance(sync_ranks, bool):
            raise ValueError(f"sync_ranks must be True, False or None, got {sync_ranks!r}")
        self.sync_ranks = sync_ranks
        self.verbose = verbose
        self.current_plan = None
        self._hold = None  # tf.function re-zeroing the current plan's masked weights
        self.history: list[tuple[int, float]] = []  # (step, reduction) at each update

    def set_model(self, model: Any) -> None:
        if model is not getattr(self, "model", None):
            self._hold = None  # the masked variables belong to the model
        super().set_model(model)

    def reduction_at(self, step: int) -> float:
        """The scheduled FLOPs reduction at optimizer step ``step``."""
        end = self._end()
        if step < self.begin_step:
            return 0.0
        frac = min(1.0, (step - self.begin_step) / max(1, end - self.begin_step))
        return self.target + (self.initial - self.target) * (1.0 - frac) ** self.power

    def _end(self) -> int:
        if self.end_step is not None:
            return int(self.end_step)
        steps = (self.params or {}).get("steps")
        return self.begin_step + (int(steps) if steps else 1000)

    def _update(self, step: int) -> None:
        r = self.reduction_at(step)
        if r <= 0.0:
            return
        self._apply(
            broadcast_plan(
                plan(self.model, target_flops_reduction=r, **self.plan_kwargs), self.sync_ranks
            )
        )
        self.history.append((step, self.current_plan.flops_reduction))
        if self.verbose:
            print(f"MDCVPruning: step {step}, FLOPs -{self.current_plan.flops_reduction:.1%}")

    def _apply(self, p: Any) -> None:
        """Makes ``p`` the current selection and zeroes its filters."""
        self.current_plan = p
        masks = p.graph.masks(p.removed)
        if self._hold is None:
            # The masks live in variables and one tf.function zeroes with them: holding the mask
            # after every batch is one graph call (numpy round trips per variable cost ~5 ms a
            # batch on the small ResNet; this is well under 1 ms), traced once for the run. The
            # list of masked variables depends on the model only, not on the selection.
            # tf.where, not w * 0, so the zeros are exact even for a non-finite weight.
            self._masks = [(v, tf.Variable(m > 0, trainable=False)) for v, m in masks]
            self._hold = tf.function(
                lambda: [v.assign(tf.where(k, v, tf.zeros_like(v))) for v, k in self._masks]
            )
        else:
            for (_, k), (_, m) in zip(self._masks, masks, strict=True):
                k.assign(m > 0)
        self._hold()
        self.model._iapdcnn_pruned = dict(self.current_plan.pruned)

    def get_state(self) -> dict[str, Any]:
        """What the callback has decided so far, as plain Python (for ``set_state``): the
        updates made (step, FLOPs reduction) and the filters masked now (layer -> indices)."""
        p = self.current_plan
        pruned = None if p is None else {k: [int(i) for i in v] for k, v in p.pruned.items()}
        return {"history": [tuple(h) for h in self.history], "pruned": pruned}

    def set_state(self, state: dict[str, Any]) -> None:
        """Goes back (or forward) to a ``get_state`` of the same schedule on this model: the same
        filters are masked and zeroed, and later updates follow as they would have. (Elastic
        training's rollback and a joining rank; ``train.py --elastic``.)"""
        self.history = [tuple(h) for h in state["history"]]
        if state["pruned"]:
            self._apply(plan_channels(self.model, state["pruned"]))
            return
        self.current_plan = None
        if self._hold is not None:  # no selection yet at that point: nothing is held
            for _, k in self._masks:
                k.assign(tf.ones_like(k))
        if hasattr(self.model, "_iapdcnn_pruned"):
            del self.model._iapdcnn_pruned

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        step = int(self.model.optimizer.iterations.numpy())
        in_window = self.begin_step <= step <= self._end()
        if in_window and (step - self.begin_step) % self.frequency == 0:
            self._update(step)
        elif self._hold is not None and (self.hard or self._final()):
            self._hold()

    def _final(self) -> bool:
        """Whether the current mask is the schedule's last (selected at or after end_step)."""
        return bool(self.history) and self.history[-1][0] >= self._end()

    def on_train_end(self, logs: dict | None = None) -> None:
        step = int(self.model.optimizer.iterations.numpy())
        # A mask already at the final target stays as it is: re-selecting here could pick other
        # filters than the ones the network has been fine-tuned without.
        if self._hold is not None and (self._final() or step < self._end()):
            self._hold()
        elif self.reduction_at(step) > 0:
            self._update(step)


def broadcast_plan(p: Any, sync: bool | None = None) -> Any:
    """The plan with rank 0's selection on every rank (see the module docstring). ``sync``:
    False returns ``p``; None broadcasts when Horovod runs with more than one rank; True
    also requires Horovod to be initialised."""
    if sync is False:
        return p
    ready = world.horovod() is not None
    if not ready and sync:
        raise RuntimeError(
            "MDCVPruning(sync_ranks=True) needs horovod.tensorflow imported and initialised "
            "(hvd.init())"
        )
    if not ready or world.rank_size()[1] < 2:
        return p
    removed, pruned, before, after = world.broadcast_object(
        (sorted(p.removed), p.pruned, p.flops_before, p.flops_after),
        name="iapdcnn_mdcv_pruning_plan",
    )
    return dataclasses.replace(
        p, removed=set(removed), pruned=pruned, flops_before=before, flops_after=after
    )


def strip(model: Any) -> Any:
    """Makes soft pruning physical: returns a new, smaller model without the masked channels.

    Uses the mask the ``MDCVPruning`` callback left on the model; without one (e.g. after
    save/load) removes the channels whose filters, biases and following BN gamma/beta are all
    exactly zero. The result computes what the masked model computes.
    """
    pruned = getattr(model, "_iapdcnn_pruned", None)
    if pruned:
        p = plan_channels(model, pruned)
        graph, removed = p.graph, p.removed
    else:
        graph = ChannelGraph.build(model)
        removed = graph.dead_roots()
    for name in graph.convs:
        if not graph.kept(name, removed, "out").any():
            raise ValueError(f"strip: every filter of {name!r} is masked; nothing would be left")
    return graph.rebuild(removed)


strip_pruning = strip
