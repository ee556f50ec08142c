"""``prune`` and ``plan``: score filters, select them (alpha / ratio / FLOPs target) per channel
group, and rebuild a smaller model with the weights copied (spec §2a)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import criteria as crit
from .flops import count_flops
from .graph import ChannelGraph, prunable_kernel


@dataclass
class PruningPlan:
    """What ``prune`` removes: pruned output-channel indices per conv layer, predicted MACs."""

    graph: ChannelGraph
    removed: set[int]
    pruned: dict[str, np.ndarray] = field(default_factory=dict)
    flops_before: int = 0
    flops_after: int = 0

    @property
    def flops_reduction(self) -> float:
        return 1.0 - self.flops_after / self.flops_before if self.flops_before else 0.0


class _FlopsModel:
    """MACs of the model as a function of the removed classes, without rebuilding it: a layer's
    MACs scale with its kept input and output channel fractions (``ChannelGraph.flops_terms``)."""

    def __init__(self, graph: ChannelGraph) -> None:
        self.base = count_flops(graph.model)
        self.graph = graph
        self.terms = graph.flops_terms(self.base.per_layer)  # (macs, in_roots, out_roots)
        self.total = self.base.total

    def __call__(self, removed_mask: np.ndarray) -> float:
        total = 0.0
        for macs, rin, rout in self.terms:
            f = float(macs)
            if rin is not None and len(rin):
                f *= 1.0 - removed_mask[rin].mean()
            if rout is not None and len(rout):
                f *= 1.0 - removed_mask[rout].mean()
            total += f
        return total


def _check_options(alpha, ratio, target, round_to, min_channels, flops_mode) -> None:
    given = [
        n
        for n, v in (("alpha", alpha), ("ratio", ratio), ("target_flops_reduction", target))
        if v is not None
    ]
    if len(given) != 1:
        raise ValueError(
            f"give exactly one of alpha, ratio, target_flops_reduction; got {given or 'none'}"
        )
    if alpha is not None and not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(
            f"alpha must be a finite number >= 0 (filters with d_i < alpha are pruned), got {alpha}"
        )
    for name, r in ratio.items() if isinstance(ratio, dict) else [("", ratio)]:
        if r is not None and not (0.0 <= r < 1.0):
            raise ValueError(f"ratio{f'[{name!r}]' if name else ''} must be in [0, 1), got {r}")
    if target is not None and not (0.0 <= target < 1.0):
        raise ValueError(f"target_flops_reduction must be in [0, 1), got {target}")
    if int(round_to) != round_to or round_to < 1:
        raise ValueError(f"round_to must be an integer >= 1, got {round_to}")
    if int(min_channels) != min_channels or min_channels < 1:
        raise ValueError(f"min_channels must be an integer >= 1, got {min_channels}")
    if flops_mode not in ("uniform", "global"):
        raise ValueError(f"flops_mode must be 'uniform' or 'global', got {flops_mode!r}")


def score_layers(
    model: Any, layers: Iterable[str], criterion: str = "mdcv", data: Any = None, **kwargs: Any
) -> dict[str, np.ndarray]:
    """Scores (higher = keep) of the output channels of the named prunable layers (convs,
    grouped and separable convs, pointwise Dense).

    Returns:
      dict layer name -> float64 ``[filters]``.
    """
    layers = list(layers)
    if criterion in crit.WEIGHT_CRITERIA:
        fn = crit.WEIGHT_CRITERIA[criterion]
        return {n: fn(prunable_kernel(model.get_layer(n)), **kwargs) for n in layers}
    if criterion in crit.DATA_CRITERIA:
        if not layers:
            return {}
        if "feature_layers" not in kwargs:
            graph = ChannelGraph.build(model)
            kwargs["feature_layers"] = {n: graph.feature_layer(n) for n in layers}
        return crit.feature_scores(model, layers, data, criterion, **kwargs)
    raise ValueError(f"criterion must be one of {list(crit.CRITERIA)}, got {criterion!r}")


def _keep_count(m: int, n_prune: int, round_to: int, min_channels: int) -> int:
    keep = max(m - n_prune, min(min_channels, m))
    return min(m, int(math.ceil(keep / round_to) * round_to))


def _floor_counts(groups: list, round_to: int, min_channels: int) -> list[int]:
    """The most each group can lose: it keeps the smallest multiple of ``round_to`` (or all)
    that is at least ``min_channels``."""
    return [g.size - _keep_count(g.size, g.size, round_to, min_channels) for g in groups]


def _greedy_blocks(groups, norm, fm, select, goal, round_to, min_channels) -> list[int] | None:
    """Prune counts that reach ``fm(...) <= goal`` with every group keeping a multiple of
    ``round_to`` channels: one block at a time, always the block (a group's next lowest-scored
    channels down to its next multiple) with the lowest mean group-normalised score; the last
    block is, of those that reach the goal, the one that overshoots it least. A single threshold
    over the scores, rounded per group afterwards, moves in jumps of whole blocks in many groups
    at once and overshot a 30% target to 53%. None when the target cannot be reached."""
    orders = [np.argsort(s, kind="stable") for s in norm]
    floor = _floor_counts(groups, round_to, min_channels)
    counts = [0] * len(groups)

    def with_block(i: int, c: int) -> list[int]:
        return counts[:i] + [c] + counts[i + 1 :]

    while fm(select(counts)) > goal:
        blocks = []  # (mean score, group, new count)
        for i, g in enumerate(groups):
            keep = g.size - counts[i]
            nxt = g.size - (keep - 1) // round_to * round_to  # down to the next lower multiple
            if nxt <= floor[i]:
                blocks.append((float(np.mean(norm[i][orders[i][counts[i] : nxt]])), i, nxt))
        if not blocks:
            return None
        _, i, c = min(blocks)
        if fm(select(with_block(i, c))) <= goal:
            # the last block: of those that reach the goal, the one that overshoots it least
            flops = [(fm(select(with_block(j, cj))), -sc, j, cj) for sc, j, cj in blocks]
            _, _, i, c = max(f for f in flops if f[0] <= goal)
        counts[i] = c
    return counts


def plan(
    model: Any,
    criterion: str = "mdcv",
    *,
    alpha: float | None = None,
    ratio: float | dict[str, float] | None = None,
    target_flops_reduction: float | None = None,
    flops_mode: str = "uniform",
    data: Any = None,
    ignored_layers: Iterable[Any] = (),
    round_to: int = 1,
    min_channels: int = 1,
    prune_residual: bool = True,
    criterion_kwargs: dict[str, Any] | None = None,
) -> PruningPlan:
    """Decides which filters ``prune`` removes; see ``prune`` for the arguments."""
    _check_options(alpha, ratio, target_flops_reduction, round_to, min_channels, flops_mode)
    graph = ChannelGraph.build(model, ignored_layers)
    groups = graph.groups(prune_residual)
    if isinstance(ratio, dict) and set(ratio) - set(graph.convs):
        raise ValueError(
            f"ratio names layers that are not prunable conv layers: {sorted(set(ratio) - set(graph.convs))}"
        )
    layers = sorted({n for g in groups for n in g.layers})
    kwargs = dict(criterion_kwargs or {})
    if criterion in crit.DATA_CRITERIA:
        kwargs.setdefault("feature_layers", {n: graph.feature_layer(n) for n in layers})
    scores = score_layers(model, layers, criterion, data, **kwargs)
    # NaN policy (docs/nan_policy.md): filters are never chosen from NaN or Inf scores (NaN
    # sorts last in argsort, so a NaN filter would be kept and healthy ones removed).
    for n, sc in scores.items():
        if not np.all(np.isfinite(sc)):
            bad = np.flatnonzero(~np.isfinite(sc))
            raise ValueError(
                f"prune: criterion {criterion!r} gave non-finite scores to filters "
                f"{bad[:10].tolist()} of layer {n!r} (NaN or Inf weights or feature maps?)"
            )
    raw, norm = [], []
    for g in groups:
        cols = [scores[n][g.index[:, j]] for j, n in enumerate(g.layers)]
        raw.append(np.mean(cols, axis=0))
        # Group score = mean over its convs of the score relative to that conv's mean, so convs
        # of different scale weigh alike (for alpha, MDCV's rule, the raw d_i are averaged).
        norm.append(
            np.mean(
                [c / (scores[n].mean() or 1.0) for c, n in zip(cols, g.layers, strict=False)],
                axis=0,
            )
        )
    n_ids = len(graph.uf.parent)
    fm = _FlopsModel(graph)

    def select(counts: list[int]) -> np.ndarray:
        mask = np.zeros(n_ids, bool)
        for g, s, k in zip(groups, norm if alpha is None else raw, counts, strict=False):
            order = np.argsort(s, kind="stable")
            mask[g.roots[order[:k]]] = True
        return mask

    def counts_for_ratio(r: float | dict[str, float]) -> list[int]:
        out = []
        for g in groups:
            # Per-layer ratios: a group takes the largest ratio given for any of its convs.
            rg = max((r.get(n, 0.0) for n in g.layers), default=0.0) if isinstance(r, dict) else r
            n_prune = int(math.floor(rg * g.size + 1e-9))
            out.append(g.size - _keep_count(g.size, n_prune, round_to, min_channels))
        return out

    if alpha is not None:
        counts = []
        for g, s in zip(groups, raw, strict=False):
            below = int((s < alpha).sum())
            if below == g.size:
                raise ValueError(
                    f"alpha={alpha} would prune every filter of {', '.join(g.layers)} (largest "
                    f"score {s.max():.4g}); lower alpha"
                )
            counts.append(g.size - _keep_count(g.size, below, round_to, min_channels))
        mask = select(counts)
    elif ratio is not None:
        mask = select(counts_for_ratio(ratio))
    else:
        target = target_flops_reduction
        goal = fm.total * (1.0 - target)
        if flops_mode == "global" and round_to > 1:
            counts = _greedy_blocks(groups, norm, fm, select, goal, round_to, min_channels)
            if counts is None:
                raise ValueError(
                    f"target_flops_reduction={target} cannot be reached: at most "
                    f"{1.0 - fm(select(_floor_counts(groups, round_to, min_channels))) / fm.total:.3f}"
                    f" with min_channels={min_channels}, round_to={round_to} and the layers that "
                    "can be pruned"
                )
            mask = select(counts)
        else:
            if flops_mode == "uniform":
                candidates = lambda t: counts_for_ratio(t)  # noqa: E731
                hi = 1.0 - 1e-9
            else:
                all_norm = np.concatenate(norm) if norm else np.zeros(0)

                def candidates(t: float) -> list[int]:
                    thr = np.quantile(all_norm, t) if len(all_norm) else 0.0
                    return [
                        g.size - _keep_count(g.size, int((s < thr).sum()), round_to, min_channels)
                        for g, s in zip(groups, norm, strict=False)
                    ]

                hi = 1.0
            if fm(select(candidates(hi))) > goal + 1e-6 * fm.total:
                best = 1.0 - fm(select(candidates(hi))) / fm.total
                raise ValueError(
                    f"target_flops_reduction={target} cannot be reached: at most {best:.3f} with "
                    f"min_channels={min_channels}, round_to={round_to} and the layers that can be pruned"
                )
            lo = 0.0
            for _ in range(40):
                mid = 0.5 * (lo + hi)
                if fm(select(candidates(mid))) <= goal:
                    hi = mid
                else:
                    lo = mid
            mask = select(candidates(hi))
    removed = {int(i) for i in np.flatnonzero(mask)}
    pruned = {n: np.flatnonzero(~graph.kept(n, removed, "out")) for n in graph.convs}
    return PruningPlan(
        graph, removed, {n: p for n, p in pruned.items() if len(p)}, fm.total, int(round(fm(mask)))
    )


def prune(
    model: Any,
    criterion: str = "mdcv",
    *,
    alpha: float | None = None,
    ratio: float | dict[str, float] | None = None,
    target_flops_reduction: float | None = None,
    flops_mode: str = "uniform",
    data: Any = None,
    ignored_layers: Iterable[Any] = (),
    round_to: int = 1,
    min_channels: int = 1,
    prune_residual: bool = True,
    criterion_kwargs: dict[str, Any] | None = None,
    return_plan: bool = False,
) -> Any:
    """Physically removes filters: returns a NEW, smaller Keras model with the weights copied.

    A conv's bias, the BatchNorm and DepthwiseConv2D after it, and the input channels of the next
    Conv2D / Dense (through Flatten or global pooling) shrink with it. Channels tied through
    Add-like merges (ResNet's residual stages) are scored and pruned as one group; Concatenate
    maps channels through. Prunes Conv2D and its subclasses (iapdcnn's Im2colConv2D), grouped
    Conv2D (the same count from each group), SeparableConv2D and Dense on 4D tensors, through
    every layer kind keras.applications uses (``ChannelGraph``), in Sequential and functional
    models. Model inputs/outputs and the units of a Dense on flat features are never pruned; a
    layer the graph does not know keeps its channels, with an ``UnknownLayerWarning``.

    Args:
      model: built functional or Sequential Keras model.
      criterion: "mdcv" (default), "l1", "fpgm", "fmp", "fm_redundancy" or "random".
      alpha: prune filters whose score is below alpha (MDCV's rule: d_i < alpha; for
        fm_redundancy the score is 1 - |cos|, so alpha = 1 - Dis-CNN's threshold).
      ratio: prune this fraction of every group's filters, in [0, 1); or a dict of per-layer
        ratios (conv name -> ratio; unnamed convs are kept, a tied group takes its largest).
      target_flops_reduction: prune until the model's multiply-adds drop by this fraction; with
        ``flops_mode="uniform"`` one ratio for every group is searched, with "global" one
        threshold on the group-normalised scores.
      data: input sample for the data criteria (array, (x, y) or tf.data.Dataset).
      ignored_layers: conv layers (names or layers) whose filters are kept.
      round_to: each group keeps a multiple of this many channels (or all).
      min_channels: each group keeps at least this many channels.
      prune_residual: False leaves channels tied through merges alone.
      criterion_kwargs: extra arguments for the criterion (mdcv: shrinkage; fmp: a, the norm
        order; fmp/fm_redundancy: num_samples; random: seed).
      return_plan: also return the ``PruningPlan``.

    Returns:
      The pruned ``keras.Model`` (Sequential stays Sequential), or ``(model, plan)``.

    Raises:
      ValueError: bad options (naming the argument), a request that would prune every filter of a
        layer, or an unreachable FLOPs target.
    """
    p = plan(
        model,
        criterion,
        alpha=alpha,
        ratio=ratio,
        target_flops_reduction=target_flops_reduction,
        flops_mode=flops_mode,
        data=data,
        ignored_layers=ignored_layers,
        round_to=round_to,
        min_channels=min_channels,
        prune_residual=prune_residual,
        criterion_kwargs=criterion_kwargs,
    )
    new = p.graph.rebuild(p.removed)
    return (new, p) if return_plan else new


def plan_channels(model: Any, pruned: dict[str, Iterable[int]]) -> PruningPlan:
    """The plan that removes the given output channels (conv layer name -> indices), with
    everything tied to them (a channel tied through a merge goes from every conv of its group):
    a selection made before (``PruningPlan.pruned``, e.g. from a checkpoint) applied again."""
    graph = ChannelGraph.build(model)
    removed = set()
    for name, idx in pruned.items():
        if name not in graph.convs:
            raise ValueError(
                f"pruned names {name!r}, which is not a prunable conv layer of the model"
            )
        roots = graph.roots(graph.layer_out[name])
        for i in idx:
            r = int(roots[int(i)])
            if graph.uf.frozen[r]:
                raise ValueError(
                    f"channel {i} of {name!r} is tied to a model input/output or an unsupported layer"
                )
            removed.add(r)
    _check_not_all(graph, removed)
    cut = {n: np.flatnonzero(~graph.kept(n, removed, "out")) for n in graph.convs}
    return PruningPlan(graph, removed, {n: c for n, c in cut.items() if len(c)})


def prune_channels(model: Any, pruned: dict[str, Iterable[int]]) -> Any:
    """Removes the given output channels (see ``plan_channels``); returns the new model."""
    p = plan_channels(model, pruned)
    return p.graph.rebuild(p.removed)


def _check_not_all(graph: ChannelGraph, removed: set[int]) -> None:
    for name in graph.convs:
        if not graph.kept(name, removed, "out").any():
            raise ValueError(f"the request would prune every filter of {name!r}")


def variable_key(v: Any) -> str:
    """A model variable's name as optimizers spell it in their slots' names: ``layer/kernel``
    under tf_keras (slot ``m/layer/kernel``), ``model_layer_kernel`` under Keras 3 (slot
    ``model_layer_kernel_momentum``)."""
    if ":" in v.name:  # a tf.Variable (tf_keras): "layer/kernel:0"
        return v.name.split(":")[0]
    return v.path.replace("/", "_")  # a Keras 3 variable: name "kernel", path "layer/kernel"


def optimizer_slots(optimizer: Any, variables: list[Any]) -> dict[tuple[str, str], Any]:
    """The slot variables of ``optimizer`` (momentum, Adam's m and v, ...) by ``(slot name,
    variable_key(v))`` for the model ``variables`` it was built on. Its own step counter and
    learning rate are not slots."""
    keys = sorted({variable_key(v) for v in variables}, key=len, reverse=True)
    out = {}
    for o in optimizer.variables:
        name = o.name.split(":")[0]
        prefix, _, rest = name.partition("/")
        if rest in keys:  # tf_keras: <slot>/<variable>
            out[(prefix, rest)] = o
            continue
        for k in keys:  # Keras 3: <variable>_<slot>, the longest variable name that fits
            if name.startswith(k + "_"):
                out[(name[len(k) + 1 :], k)] = o
                break
    return out


def rebuild_with_optimizer(p: PruningPlan, optimizer: Any) -> tuple[Any, Any]:
    """Physical pruning in the middle of training: the smaller model of ``p`` and a fresh copy of
    ``optimizer`` built on it, whose slots (momentum, Adam's m and v, ...) are the old slots cut
    exactly as the weights are, and whose step count continues. Training the pair goes on as if
    the removed filters had never been there.

    Args:
      p: a plan of the model ``optimizer`` trains (``plan(model, ...)``).
      optimizer: a built Keras optimizer of that model (slots named ``<slot>/<variable>``).

    Returns:
      ``(new_model, new_optimizer)``.
    """
    graph = p.graph
    new = graph.rebuild(p.removed)
    new_opt = type(optimizer).from_config(optimizer.get_config())
    new_opt.build(new.trainable_variables)
    old_slots = optimizer_slots(optimizer, graph.model.trainable_variables)
    new_slots = optimizer_slots(new_opt, new.trainable_variables)
    prefixes = sorted({k[0] for k in old_slots})
    for layer in graph.model.layers:
        names = [variable_key(w) for w in layer.weights]
        for prefix in prefixes:
            if not any((prefix, n) in old_slots for n in names):
                continue
            # the layer's weights with each slotted one replaced by its slot, cut as weights are
            values = [
                np.asarray(old_slots[(prefix, n)]) if (prefix, n) in old_slots else np.asarray(w)
                for n, w in zip(names, layer.weights, strict=True)
            ]
            if layer.name in graph.handled:
                values = graph._slice(layer, values, p.removed)
            for n, val in zip(names, values, strict=True):
                if (prefix, n) in old_slots:
                    if (prefix, n) not in new_slots:
                        raise ValueError(f"optimizer slot {prefix} of {n} has no counterpart")
                    new_slots[(prefix, n)].assign(val)
    new_opt.iterations.assign(optimizer.iterations)
    return new, new_opt
