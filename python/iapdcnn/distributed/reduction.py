"""Gradient reductions over horovod.tensorflow collectives (spec §3): LSG (one allreduce of
every finite worker's gradient with a table of per-worker scalars riding along; a second
allreduce of LAW_k * g_k only on a step where LSG rejects a finite worker; its direction screen
adds two scalars to that table and no collective), Horovod's plain Average,
Dis-CNN's two-group weighting, and the coordinate median / trimmed mean (allgather of the
gradients, K times the traffic). Every reduction returns the reduced gradients and the step's
statistics; ``make_reduction(name, **options)`` picks one by name. The gathering reductions
also gather a fingerprint of each rank's gradient list and raise on every rank when the lists
differ, where the allreduce would otherwise block forever (``gradient_fingerprint``)."""

from __future__ import annotations

import zlib
from typing import Any

import tensorflow as tf

from .law import direction_law, loo_cosine, masked_median, reputation_update, worker_law

REDUCTIONS = ("mean", "lsg", "dis_cnn", "median", "trimmed_mean")
DIRECTIONS = ("reputation", "off")
ROUNDS = ("one", "two")

Stats = dict[str, tf.Tensor]

# Columns of the ``[K, 5]`` per-worker table that screening reductions put in ``stats["table"]``;
# LSG's direction screen appends DIRECTION_COLUMNS (the previous step's ``g_k . A`` and ``|A|^2``).
TABLE_COLUMNS = ("loss", "norm", "finite", "samples", "loss_se")
DIRECTION_COLUMNS = ("dot", "agg_sq")
# What every gathering reduction also sends, last, in the same allgather: the gradient list's
# fingerprint (``gradient_fingerprint``). Ranks whose lists differ would block forever in the
# grouped allreduce that follows (or silently mix coordinates in the gather path), so every rank
# compares the gathered fingerprints first and raises; the columns are then dropped from
# ``stats["table"]``.
FINGERPRINT_COLUMNS = ("n_grads", "n_elems", "dtype", "layout")


def worker_table(stats: Stats) -> dict[str, tf.Tensor] | None:
    """The per-worker ``[K]`` columns of a step (``TABLE_COLUMNS``, with the direction screen
    ``DIRECTION_COLUMNS``, ``reputation`` and ``dir_z``, plus ``law``, the weight each worker
    got), or None for a reduction that gathers no table (``mean``)."""
    if "table" not in stats:
        return None
    names = TABLE_COLUMNS + DIRECTION_COLUMNS
    width = stats["table"].shape[1]
    cols = {name: stats["table"][:, i] for i, name in enumerate(names[:width])}
    for k in ("reputation", "dir_z"):
        if k in stats:
            cols[k] = stats[k]
    cols["law"] = stats["weights"]
    return cols


def _hvd() -> Any:
    """The collectives: ``horovod.tensorflow``, or the engine registered with
    ``world.use_engine`` (``tf_distribute``'s, under the same names)."""
    from iapdcnn import world

    if world.engine() is not None:
        return world.engine()
    import horovod.tensorflow as hvd

    return hvd


def dense_gradients(grads: list, variables: list | None) -> list[tf.Tensor]:
    """``grads`` as dense tensors: ``IndexedSlices`` densified, None as zeros of its variable."""
    out = []
    for i, g in enumerate(grads):
        if g is None:
            if variables is None:
                raise ValueError(f"gradient {i} is None and no variables were given to shape it")
            g = tf.zeros_like(variables[i])
        elif isinstance(g, tf.IndexedSlices):
            g = tf.convert_to_tensor(g)
        out.append(g)
    return out


class ShapeKeyedState:
    """Variables shaped like the gradients that persist from step to step (LSG's reference, a
    fault's ring buffer), plus an int64 counter of updates. They are made outside any graph the
    first time gradients of a given list of shapes come by, and made anew for new shapes (a
    physical pruning cut): the counter of a new set starts at 0, which callers read as "no
    state yet".

    Args:
      name: prefix of the variable names.
      slots: None for one variable per gradient, or n for ``[n, *shape]`` (a ring buffer).
    """

    def __init__(self, name: str, slots: int | None = None) -> None:
        self.name, self.slots = name, slots
        self._sets: dict[tuple, tuple[list[tf.Variable], tf.Variable]] = {}

    def get(self, grads: list[tf.Tensor]) -> tuple[list[tf.Variable], tf.Variable]:
        key = tuple((tuple(g.shape.as_list()), g.dtype.name) for g in grads)
        if any(d is None for shape, _ in key for d in shape):
            raise ValueError(f"{self.name}: gradients need static shapes, got {key}")
        if key not in self._sets:
            lead = [] if self.slots is None else [self.slots]
            with tf.init_scope():
                tensors = [
                    tf.Variable(
                        tf.zeros(lead + list(shape), dtype),
                        trainable=False,
                        name=f"{self.name}_{i}",
                    )
                    for i, (shape, dtype) in enumerate(key)
                ]
                count = tf.Variable(0, dtype=tf.int64, trainable=False, name=f"{self.name}_n")
            self._sets[key] = (tensors, count)
        return self._sets[key]


def gradient_fingerprint(grads: list[tf.Tensor]) -> tuple[tf.Tensor, str]:
    """``[n_grads, n_elems, dtype, layout]`` (``FINGERPRINT_COLUMNS``) of a gradient list as a
    float32 ``[4]`` tensor, and the same in words for error messages. ``dtype`` is the TF
    DataType code when the list has one dtype, else -1; ``layout`` is a 24-bit CRC of every
    gradient's static shape and dtype in order. Every value is an integer below 2^24 (exact in
    float32) except ``n_elems`` of models above 16.7M parameters, which ``layout`` covers."""
    dtypes = [g.dtype for g in grads]
    code = dtypes[0].as_datatype_enum if dtypes and len(set(dtypes)) == 1 else -1
    spec = [(g.shape.as_list(), g.dtype.name) for g in grads]
    layout = zlib.crc32(repr(spec).encode()) & 0xFFFFFF
    if all(g.shape.is_fully_defined() for g in grads):
        n_elems = tf.constant(float(sum(g.shape.num_elements() for g in grads)))
        elems_text = str(sum(g.shape.num_elements() for g in grads))
    else:  # shapes known only at run time
        n_elems = tf.cast(tf.add_n([tf.size(g, tf.int64) for g in grads] or [0]), tf.float32)
        elems_text = "a run-time number of"
    fp = tf.stack([float(len(grads)), n_elems, float(code), float(layout)])
    names = sorted({d.name for d in dtypes})
    text = f"{len(grads)} gradients, {elems_text} elements, dtype {'/'.join(names) or 'none'}"
    return fp, text


def _check_fingerprints(who: str, rank: int, gathered: tf.Tensor, own: tf.Tensor, text: str):
    """An assertion (op in graphs, raised at once eagerly) that every row of the gathered
    ``[K, 4]`` fingerprints equals this rank's ``own``. If one rank differs, every rank sees a
    row unlike its own, so all of them raise, before any allreduce is entered."""
    same = tf.reduce_all(tf.equal(gathered, own[None, :]))
    msg = (
        f"{who}: the ranks handed in different gradient lists, which cannot be reduced together "
        f"(an allreduce would block forever, a gather would mix coordinates); rank {rank} has "
        f"{text}. [{', '.join(FINGERPRINT_COLUMNS)}] of every rank:"
    )
    if tf.executing_eagerly():
        if not bool(same):
            rows = "; ".join(str([int(v) for v in row]) for row in gathered.numpy())
            raise tf.errors.InvalidArgumentError(None, None, f"{msg} {rows}")
        return None
    return tf.debugging.Assert(same, [msg, gathered], summarize=4096)


def _finite_norm(grads: list[tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
    """Global L2 norm (float32) and whether every gradient entry is finite."""
    norm = tf.linalg.global_norm([tf.cast(g, tf.float32) for g in grads])
    return norm, tf.math.is_finite(norm)


class Reduction:
    """Base class. ``__call__(grads, loss, samples=None, variables=None, loss_se=None)`` returns
    ``(reduced_grads, stats)``; ``loss_se`` is the standard error of the local loss
    (``law.loss_standard_error`` of the per-sample losses), which LSG uses to tell sampling
    noise from a fault. Stats values are scalar tensors:

    - ``workers`` (K), ``workers_kept`` (sum of LAW_k > 0), ``samples_kept`` (samples of the kept
      workers), ``skipped`` (1.0 when every worker was rejected: the gradients are then all
      zeros and the optimizer step must be skipped, see ``apply_unless_skipped``),
    - ``loss`` (mean of the kept workers' losses), ``loss_min`` / ``loss_max`` (finite losses).
    """

    name = "base"

    def __init__(self, process_set: Any = None) -> None:
        self.process_set = process_set

    def _ps(self) -> dict:
        return {} if self.process_set is None else {"process_set": self.process_set}

    def size(self) -> int:
        hvd = _hvd()
        return hvd.size() if self.process_set is None else self.process_set.size()

    def rank(self) -> int:
        hvd = _hvd()
        return hvd.rank() if self.process_set is None else self.process_set.rank()

    def __call__(
        self, grads, loss, samples=None, variables=None, loss_se=None
    ) -> tuple[list, Stats]:
        grads = dense_gradients(list(grads), variables)
        loss = tf.cast(tf.reshape(loss, []), tf.float32)
        if samples is None:
            samples = tf.constant(0.0)
        samples = tf.cast(tf.reshape(samples, []), tf.float32)
        loss_se = tf.constant(0.0) if loss_se is None else loss_se
        loss_se = tf.cast(tf.reshape(loss_se, []), tf.float32)
        return self._reduce(grads, loss, samples, loss_se)

    def _reduce(self, grads, loss, samples, loss_se):  # pragma: no cover - abstract
        raise NotImplementedError

    def _worker_row(self, grads, loss, samples, loss_se, extra=()):
        """This worker's ``[loss, grad_norm, finite, samples, loss_se, *extra, *fingerprint]``
        row, its finite flag, its fingerprint and the fingerprint in words."""
        norm, ok = _finite_norm(grads)
        ok = tf.logical_and(ok, tf.math.is_finite(loss))
        fp, text = gradient_fingerprint(grads)
        row = tf.stack([loss, norm, tf.cast(ok, tf.float32), samples, loss_se, *extra])
        return tf.concat([row, fp], 0), ok, fp, text

    def _checked_table(self, full, fp, text) -> tf.Tensor:
        """The ``[K, C]`` table without its fingerprint columns, once every rank's fingerprint
        has been compared with this rank's: nothing that uses it runs on a mismatch."""
        f = len(FINGERPRINT_COLUMNS)
        check = _check_fingerprints(type(self).__name__, self.rank(), full[:, -f:], fp, text)
        with tf.control_dependencies([check] if check is not None else []):
            return tf.identity(full[:, :-f])

    def _gather_scalars(self, grads, loss, samples, loss_se, extra=()) -> tf.Tensor:
        """One allgather of ``[loss, grad_norm, finite, samples, loss_se, *extra]``
        (``TABLE_COLUMNS``, then e.g. ``DIRECTION_COLUMNS``) per worker -> ``[K, 5 + n]``
        (loss_se: the standard error of the worker's loss, 0 when unknown). The row also
        carries the gradients' fingerprint (``FINGERPRINT_COLUMNS``): the returned table
        depends on every rank's matching this one's, so nothing that uses it (the allreduce
        included) runs on a mismatch; the error names what each rank handed in."""
        row, _, fp, text = self._worker_row(grads, loss, samples, loss_se, extra)
        full = _hvd().allgather(row[None, :], name="iapdcnn_worker_scalars", **self._ps())
        return self._checked_table(full, fp, text)

    def _masked_sum(self, grads, weight: tf.Tensor) -> list[tf.Tensor]:
        """One grouped allreduce(Sum) of ``weight * g``. A worker with weight 0 sends exact
        zeros (one ``tf.cond`` for the whole list), so a NaN gradient never reaches the sum; the
        others make one scaling pass over their gradients, and nothing is done after the
        allreduce."""
        hvd = _hvd()
        masked = tf.cond(
            weight > 0,
            lambda: [g * tf.cast(weight, g.dtype) for g in grads],
            lambda: [tf.zeros_like(g) for g in grads],
        )
        return hvd.grouped_allreduce(masked, op=hvd.Sum, name="iapdcnn_lsg", **self._ps())

    @staticmethod
    def _stats(table: tf.Tensor, law: tf.Tensor) -> Stats:
        loss, ok, samples = table[:, 0], table[:, 2] > 0.5, table[:, 3]
        fin = tf.logical_and(ok, tf.math.is_finite(loss))
        kept = law > 0
        big = tf.constant(float("inf"))
        return {
            "workers": tf.cast(tf.shape(table)[0], tf.float32),
            "workers_kept": tf.reduce_sum(tf.cast(kept, tf.float32)),
            "samples_kept": tf.reduce_sum(tf.where(kept, samples, 0.0)),
            "skipped": tf.cast(tf.logical_not(tf.reduce_any(kept)), tf.float32),
            "loss": tf.math.divide_no_nan(
                tf.reduce_sum(tf.where(kept, loss, 0.0)), tf.reduce_sum(tf.cast(kept, tf.float32))
            ),
            "loss_min": tf.reduce_min(tf.where(fin, loss, big)),
            "loss_max": tf.reduce_max(tf.where(fin, loss, -big)),
        }


class MeanReduction(Reduction):
    """Horovod's Average: one grouped allreduce; the loss rides along in the same group. No
    screening at all: one NaN worker makes every rank's gradient NaN."""

    name = "mean"

    def _reduce(self, grads, loss, samples, loss_se):
        hvd = _hvd()
        k = float(self.size())
        out = hvd.grouped_allreduce(
            list(grads) + [tf.stack([loss, samples])],
            op=hvd.Average,
            name="iapdcnn_mean",
            **self._ps(),
        )
        avg = out[-1]
        stats = {
            "workers": tf.constant(k),
            "workers_kept": tf.constant(k),
            "samples_kept": avg[1] * k,
            "skipped": tf.constant(0.0),
            "loss": avg[0],
            "loss_min": avg[0],
            "loss_max": avg[0],
        }
        return out[:-1], stats


class _DirectionState:
    """LSG's direction-screen state, ``[K]`` scalars and a few more, identical on every rank (it
    is updated from the shared table only), except ``dot`` and ``agg_sq``: this rank's
    ``g_k . A`` and ``|A|^2`` of the previous step, sent in the next step's row."""

    KEYS = ("num", "s1", "s2", "var_num", "var_s1")

    def __init__(self, k: int) -> None:
        with tf.init_scope():

            def var(shape, name):
                return tf.Variable(tf.zeros(shape), trainable=False, name=f"iapdcnn_dir_{name}")

            self.num, self.s1, self.s2 = var([k], "num"), var([k], "s1"), var([k], "s2")
            self.var_num, self.var_s1 = var([], "var_num"), var([], "var_s1")
            self.prev_norm, self.prev_weight = var([k], "prev_norm"), var([k], "prev_weight")
            self.has_prev = var([], "has_prev")  # 1.0 once a step's aggregate is known
            self.dot, self.agg_sq = var([], "dot"), var([], "agg_sq")

    def reputation(self) -> dict[str, tf.Tensor]:
        return {k: getattr(self, k).read_value() for k in self.KEYS}


class LSGReduction(Reduction):
    """LSG (spec §3): LAW_k from every worker's scalars (``law.worker_law``), then
    ``sum_k LAW_k g_k / sum_k LAW_k`` (normalise="kept") or ``/ K`` (normalise="batch").

    Departures from the paper (spec §3's engineering rules): the defaults are the relative
    threshold, the median centre and "kept" normalisation (paper: absolute tau, mean, 1/B); a
    non-finite worker always gets LAW = 0; an all-rejected step returns zeros with
    ``stats["skipped"] == 1`` instead of NaN; the gradient-norm screen and the direction screen
    are additions.

    The direction screen (``direction="reputation"``, default) catches gradients corrupted after
    the backward pass under a normal loss (sign flips, random directions), which the norm screen
    lets through below 4x the median norm. After the allreduce each worker computes ``g_k . A``
    and ``|A|^2`` locally (two passes over its gradients, no communication); they ride in the
    NEXT step's row (two more scalars, no other collective), where every rank turns them
    into each worker's cosine to the aggregate of the others (``law.loo_cosine``), averages
    those over about ``1 / (1 - dir_decay)`` steps (``law.reputation_update``) and rejects a
    worker whose average lies ``dir_kappa`` standard errors below the median
    (``law.direction_law``). The evidence is one step old, so a fault's first step is never
    caught this way. Chosen by measurement over centred clipping (Karimireddy, He and Jaggi,
    2021): a worker sending -1x its gradient was 1.12x the median distance from the aggregate,
    healthy workers up to 2.15x (K = 4, batch 32), so a clip radius that spares the healthy
    workers never touches it; a one-step cosine does not separate it either (see
    ``law.direction_law``). The state is not checkpointed: after a resume the reputations start
    anew. It lives in the reduction object, so make that once, outside the step, and pass it to
    ``DistributedGradientTape`` / ``DistributedOptimizer``; a reduction made inside a traced
    step function (a tape given the name "lsg" there) cannot keep it and screens on loss and
    norm only. ``direction="off"`` is the loss and norm screens alone, as before.

    Args:
      tau: absolute loss threshold, or None for ``kappa * 1.4826 * MAD`` (default), floored at
        ``se_kappa`` standard errors when the workers send them (``loss_se=``; see
        ``law.worker_law`` for why and for the measurements behind the defaults).
      kappa: relative-threshold multiplier.
      se_kappa: floor of the relative threshold in median standard errors of the losses.
      centre: "median" (default) or "mean" (paper).
      normalise: "kept" (default) or "batch".
      grad_screen: second, one-sided screen on gradient norms (default on).
      grad_kappa: its multiplier.
      tau_floor: relative floor of the loss threshold (``tau_floor * |centre|``) when no
        standard errors are known.
      grad_floor: norms below ``(1 + grad_floor) * median norm`` always pass the norm screen.
      direction: "reputation" (default) or "off" (``DIRECTIONS``).
      dir_decay: decay of the reputation's average, in (0, 1).
      dir_kappa: the direction screen's margin in standard errors.
      rounds: "one" (default) or "two" (``ROUNDS``), see above.
    """

    name = "lsg"

    def __init__(
        self,
        tau=None,
        kappa=4.0,
        centre="median",
        normalise="kept",
        grad_screen=True,
        grad_kappa=6.0,
        tau_floor=1.0,
        grad_floor=3.0,
        se_kappa=8.0,
        direction="reputation",
        dir_decay=0.95,
        dir_kappa=5.0,
        rounds="one",
        process_set=None,
    ) -> None:
        super().__init__(process_set)
        from .law import _check

        _check(centre, normalise, kappa)
        if tau is not None and tau < 0:
            raise ValueError(f"tau must be >= 0 or None, got {tau}")
        for name, val in (
            ("grad_kappa", grad_kappa),
            ("se_kappa", se_kappa),
            ("dir_kappa", dir_kappa),
        ):
            if not val > 0:
                raise ValueError(f"{name} must be > 0, got {val}")
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
        if not 0 < dir_decay < 1:
            raise ValueError(f"dir_decay must be in (0, 1), got {dir_decay}")
        if rounds not in ROUNDS:
            raise ValueError(f"rounds must be one of {', '.join(ROUNDS)}, got {rounds!r}")
        self.rounds = rounds
        self.tau, self.kappa, self.centre, self.normalise = tau, kappa, centre, normalise
        self.grad_screen, self.grad_kappa, self.tau_floor = grad_screen, grad_kappa, tau_floor
        self.grad_floor, self.se_kappa = grad_floor, se_kappa
        self.direction, self.dir_decay, self.dir_kappa = direction, dir_decay, dir_kappa
        self._dir_states: dict[int, _DirectionState] = {}
        # a reduction made inside a traced step (e.g. a DistributedGradientTape given a name
        # there) is made anew by every trace and cannot keep state across steps
        self._can_keep_state = tf.executing_eagerly()

    def weights(self, table: tf.Tensor) -> tf.Tensor:
        return worker_law(
            table[:, 0],
            table[:, 1],
            table[:, 2],
            loss_se=table[:, 4],
            tau=self.tau,
            kappa=self.kappa,
            se_kappa=self.se_kappa,
            centre=self.centre,
            tau_floor=self.tau_floor,
            grad_screen=self.grad_screen,
            grad_kappa=self.grad_kappa,
            grad_floor=self.grad_floor,
        )

    def _denominator(self, law: tf.Tensor) -> tf.Tensor:
        if self.normalise == "kept":
            return tf.reduce_sum(law)
        return tf.cast(tf.shape(law)[0], tf.float32)

    def _reduce(self, grads, loss, samples, loss_se):
        st = None
        if self.direction != "off" and self._can_keep_state:
            k = self.size()
            if k not in self._dir_states:  # per world size: an elastic job may change it
                self._dir_states[k] = _DirectionState(k)
            st = self._dir_states[k]
        extra = [st.dot.read_value(), st.agg_sq.read_value()] if st is not None else []
        one_round = self.rounds == "one" and all(g.dtype in _FLAT_DTYPES for g in grads)
        if one_round:  # the scalars and every finite worker's g_k in one allreduce
            table, flat, total = self._sum_with_table(grads, loss, samples, loss_se, extra)
        else:
            table = self._gather_scalars(grads, loss, samples, loss_se, extra)
        law = self.weights(table)
        info = None
        if st is not None:  # the previous step's evidence; agg_sq from rank 0's row
            cos = loo_cosine(table[:, 5], st.prev_norm, st.prev_weight, table[0, 6])
            cos = tf.where(st.has_prev > 0, cos, tf.fill([self.size()], float("nan")))
            rep = reputation_update(st.reputation(), cos, st.prev_weight > 0, self.dir_decay)
            dlaw, info = direction_law(rep, valid=table[:, 2] > 0.5, kappa=self.dir_kappa)
            law = law * dlaw
        denom = self._denominator(law)
        weight = tf.math.divide_no_nan(law, denom)
        if one_round:
            mine = tf.gather(weight, self.rank())
            # the sum already holds exactly the kept workers when LAW_k == finite_k for all k
            # (the clean step); otherwise a second allreduce of LAW_k g_k, on every rank alike
            # since the table is the same everywhere
            out_flat = tf.cond(
                tf.reduce_all(tf.equal(law, table[:, 2])),
                lambda: tf.math.divide_no_nan(total, denom),
                lambda: self._flat_masked_sum(flat, mine),
            )
            out = _unflatten(out_flat, grads)
        else:
            out = self._masked_sum(grads, tf.gather(weight, self.rank()))
        stats = self._stats(table, law)
        stats.update(weights=law, table=table)
        if st is None:
            return out, stats
        # this rank's g_k . A and |A|^2 for the next step (local passes, no collective). No
        # control dependency holds the outputs back: the assignments are stateful, so the step
        # function runs them anyway, next to the optimizer's update.
        if one_round:
            dot = tf.reduce_sum(flat * out_flat)
            agg_sq = tf.reduce_sum(tf.square(out_flat))
        else:
            dot = tf.add_n(
                [tf.reduce_sum(tf.cast(g * o, tf.float32)) for g, o in zip(grads, out, strict=True)]
            )
            agg_sq = tf.add_n([tf.reduce_sum(tf.cast(tf.square(o), tf.float32)) for o in out])
        skipped = tf.reduce_sum(law) <= 0
        for key in _DirectionState.KEYS:
            getattr(st, key).assign(rep[key])
        st.prev_norm.assign(table[:, 1])
        st.prev_weight.assign(weight)
        st.has_prev.assign(tf.where(skipped, 0.0, 1.0))
        st.dot.assign(dot)
        st.agg_sq.assign(agg_sq)
        stats.update(reputation=info["reputation"], dir_z=info["z"])
        return out, stats

    def _sum_with_table(self, grads, loss, samples, loss_se, extra):
        """One allreduce(Sum) of ``[finite_k * g_k, this worker's row in a [K, C] table of
        zeros]`` (flattened, float32): the summed tail is every worker's row, the head
        ``sum_k finite_k g_k``. Returns ``(table, flat g_k, that sum)``. A non-finite worker
        sends zeros (selected, not multiplied, so no NaN spreads); ranks whose totals differ
        fail in Horovod's shape check, and the same total laid out differently fails the
        fingerprint check before anything uses the result."""
        row, ok, fp, text = self._worker_row(grads, loss, samples, loss_se, extra)
        flat = tf.concat([tf.reshape(tf.cast(g, tf.float32), [-1]) for g in grads], 0)
        k, c = self.size(), row.shape[0]
        mine = tf.equal(tf.range(k), self.rank())[:, None]
        table = tf.where(mine, row[None, :], tf.zeros([k, c]))
        sent = tf.cond(ok, lambda: flat, lambda: tf.zeros_like(flat))
        hvd = _hvd()
        summed = hvd.allreduce(
            tf.concat([sent, tf.reshape(table, [-1])], 0),
            op=hvd.Sum,
            name="iapdcnn_lsg_one",
            **self._ps(),
        )
        n = tf.size(flat)
        return self._checked_table(tf.reshape(summed[n:], [k, c]), fp, text), flat, summed[:n]

    def _flat_masked_sum(self, flat, weight):
        hvd = _hvd()
        masked = tf.cond(weight > 0, lambda: flat * weight, lambda: tf.zeros_like(flat))
        return hvd.allreduce(masked, op=hvd.Sum, name="iapdcnn_lsg_retry", **self._ps())


_FLAT_DTYPES = (tf.float16, tf.bfloat16, tf.float32)


def _unflatten(flat: tf.Tensor, like: list[tf.Tensor]) -> list[tf.Tensor]:
    """``flat`` (float32) cut back into tensors shaped and typed like ``like``."""
    if all(g.shape.is_fully_defined() for g in like):
        sizes, shapes = [g.shape.num_elements() for g in like], [g.shape for g in like]
    else:
        sizes, shapes = tf.stack([tf.size(g) for g in like]), [tf.shape(g) for g in like]
    parts = tf.split(flat, sizes)
    out = [tf.reshape(p, s) for p, s in zip(parts, shapes, strict=True)]
    return [
        o if g.dtype == tf.float32 else tf.cast(o, g.dtype) for o, g in zip(out, like, strict=True)
    ]


class DisCNNReduction(LSGReduction):
    """Dis-CNN's two groups: weight 0.55 for a worker whose loss is <= b, 0.45 above it (paper's
    experimental values), then ``sum_k w_k g_k / sum_k w_k``. ``b`` is absolute, or None for the
    median of the workers' losses. Non-finite workers get 0 (spec §3's rule for every reduction)."""

    name = "dis_cnn"

    def __init__(self, b=None, low=0.55, high=0.45, process_set=None) -> None:
        # two rounds: its weights are not 0/1, so the unweighted sum is never the answer
        super().__init__(normalise="kept", direction="off", rounds="two", process_set=process_set)
        self.b, self.low, self.high = b, low, high

    def weights(self, table):
        loss = table[:, 0]
        ok = tf.logical_and(table[:, 2] > 0.5, tf.math.is_finite(loss))
        b = masked_median(loss, ok) if self.b is None else tf.constant(float(self.b))
        w = tf.where(loss <= b, self.low, self.high)
        return tf.where(ok, w, 0.0)


class _GatherReduction(Reduction):
    """Allgather of every worker's flattened gradient (plus its scalars) in one call."""

    def _reduce(self, grads, loss, samples, loss_se):
        hvd = _hvd()
        norm, ok = _finite_norm(grads)
        ok = tf.logical_and(ok, tf.math.is_finite(loss))
        dtype = grads[0].dtype
        flat = tf.concat([tf.reshape(g, [-1]) for g in grads], 0)
        scalars = tf.cast(tf.stack([loss, norm, tf.cast(ok, tf.float32), samples]), dtype)
        # The fingerprint rides bit-exactly in the gradients' dtype: ranks with another total
        # size already fail in Horovod's allgather; the same total split differently (another
        # count, shapes or order) would gather fine and mix coordinates silently.
        fp, text = gradient_fingerprint(grads)
        packed = _pack_f32(fp, dtype)
        head = 4 + int(packed.shape[0])
        table_all = hvd.allgather(
            tf.concat([scalars, packed, flat], 0)[None, :],
            name=f"iapdcnn_{self.name}",
            **self._ps(),
        )
        gathered = _unpack_f32(table_all[:, 4:head], dtype, len(FINGERPRINT_COLUMNS))
        check = _check_fingerprints(type(self).__name__, self.rank(), gathered, fp, text)
        with tf.control_dependencies([check] if check is not None else []):
            table_all = tf.identity(table_all)
        table = tf.cast(table_all[:, :4], tf.float32)
        valid = table[:, 2] > 0.5
        rows = table_all[:, head:]
        # Non-finite workers sort to the end (+inf) and are outside [0, n).
        rows = tf.where(valid[:, None], rows, tf.constant(float("inf"), dtype))
        rows = tf.sort(rows, axis=0)
        n = tf.reduce_sum(tf.cast(valid, tf.int32))
        red = self._combine(rows, n)
        red = tf.where(n > 0, red, tf.zeros_like(red))
        out, start = [], 0
        for g in grads:
            size = g.shape.num_elements()  # gradients of variables: static shapes
            out.append(tf.reshape(red[start : start + size], tf.shape(g)))
            start += size
        return out, self._stats(table, tf.cast(valid, tf.float32))

    def _mean_rows(self, rows, lo, hi):
        idx = tf.range(tf.shape(rows)[0])[:, None]
        take = tf.logical_and(idx >= lo, idx < hi)
        total = tf.reduce_sum(tf.where(take, rows, tf.zeros_like(rows)), axis=0)
        return total / tf.cast(tf.maximum(hi - lo, 1), rows.dtype)


def _pack_f32(x: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """float32 ``[n]`` -> values of ``dtype`` that carry its bits exactly (two per value for
    16-bit types, a bitcast for 32-bit ones, a cast for float64)."""
    if dtype.size == 4:
        return tf.bitcast(x, dtype)
    if dtype.size == 2:
        return tf.reshape(tf.bitcast(x, dtype), [-1])
    return tf.cast(x, dtype)


def _unpack_f32(x: tf.Tensor, dtype: tf.DType, n: int) -> tf.Tensor:
    """``_pack_f32``'s inverse for a gathered ``[K, packed]`` block -> float32 ``[K, n]``."""
    if dtype.size == 4:
        return tf.bitcast(x, tf.float32)
    if dtype.size == 2:
        return tf.bitcast(tf.reshape(x, [-1, n, 2]), tf.float32)
    return tf.cast(x, tf.float32)


class MedianReduction(_GatherReduction):
    """Coordinate-wise median over the finite workers."""

    name = "median"

    def _combine(self, rows, n):
        return self._mean_rows(rows, tf.maximum((n - 1) // 2, 0), n // 2 + 1)


class TrimmedMeanReduction(_GatherReduction):
    """Coordinate-wise mean after dropping the ``floor(trim * n)`` smallest and largest values
    of the n finite workers (at least one value is always kept)."""

    name = "trimmed_mean"

    def __init__(self, trim=0.25, process_set=None) -> None:
        super().__init__(process_set)
        if not 0 <= trim < 0.5:
            raise ValueError(f"trim must be in [0, 0.5), got {trim}")
        self.trim = trim

    def _combine(self, rows, n):
        t = tf.cast(tf.floor(self.trim * tf.cast(n, tf.float32)), tf.int32)
        t = tf.minimum(t, (n - 1) // 2)
        return self._mean_rows(rows, t, n - t)


def make_reduction(name: str = "lsg", **options: Any) -> Reduction:
    """A reduction by name: one of ``REDUCTIONS``. Options go to its constructor.

    Raises:
      ValueError: unknown name or option.
    """
    classes = {
        "mean": MeanReduction,
        "lsg": LSGReduction,
        "dis_cnn": DisCNNReduction,
        "median": MedianReduction,
        "trimmed_mean": TrimmedMeanReduction,
    }
    if isinstance(name, Reduction):
        return name
    if name not in classes:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}; got {name!r}")
    try:
        return classes[name](**options)
    except TypeError as e:
        raise ValueError(f"bad option for reduction {name!r}: {e}") from None


def apply_unless_skipped(optimizer, grads_and_vars, stats: Stats) -> None:
    """``optimizer.apply_gradients`` unless ``stats["skipped"]``: a step where every worker was
    rejected changes nothing (no momentum update, no iteration count)."""
    grads_and_vars = list(grads_and_vars)
    variables = [v for _, v in grads_and_vars]
    if hasattr(optimizer, "build"):
        with tf.init_scope():
            optimizer.build(variables)

    def apply():
        optimizer.apply_gradients(grads_and_vars)
        return tf.constant(True)

    return tf.cond(stats["skipped"] > 0, lambda: tf.constant(False), apply)
