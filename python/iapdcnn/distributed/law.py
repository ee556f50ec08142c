"""LAW weights (spec §3) in plain TensorFlow, with no Horovod: the per-sample LAW inside one
worker's batch, and the worker-level LAW every rank computes from the allgathered scalars. The
reductions in ``reduction.py`` and the NumPy oracle ``iapdcnn.reference.lsg`` share these rules."""

from __future__ import annotations

from typing import Literal

import tensorflow as tf

Centre = Literal["mean", "median"]
Normalise = Literal["kept", "batch"]

MAD_TO_SIGMA = 1.4826  # MAD -> standard deviation for Gaussian data


def _check(centre: str, normalise: str | None = None, kappa: float | None = None) -> None:
    if centre not in ("mean", "median"):
        raise ValueError(f"centre must be 'mean' or 'median', got {centre!r}")
    if normalise is not None and normalise not in ("kept", "batch"):
        raise ValueError(f"normalise must be 'kept' or 'batch', got {normalise!r}")
    if kappa is not None and not kappa > 0:
        raise ValueError(f"kappa must be > 0, got {kappa!r}")


def masked_median(x: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
    """Median of ``x[valid]`` (mean of the two middle values for an even count); 0 if none.

    Args:
      x: ``[K]`` float tensor.
      valid: ``[K]`` bool tensor.

    Returns:
      Scalar tensor of x's dtype.
    """
    x = tf.convert_to_tensor(x)
    s = tf.sort(tf.where(valid, x, tf.constant(float("inf"), x.dtype)))
    n = tf.reduce_sum(tf.cast(valid, tf.int32))
    lo = tf.maximum((n - 1) // 2, 0)
    hi = tf.maximum(n // 2, 0)
    med = 0.5 * (tf.gather(s, lo) + tf.gather(s, tf.minimum(hi, tf.size(s) - 1)))
    return tf.where(n > 0, med, tf.zeros([], x.dtype))


def masked_mean(x: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
    """Mean of ``x[valid]``; 0 if none. Returns a scalar tensor."""
    x = tf.convert_to_tensor(x)
    v = tf.cast(valid, x.dtype)
    return tf.math.divide_no_nan(
        tf.reduce_sum(tf.where(valid, x, tf.zeros_like(x))), tf.reduce_sum(v)
    )


def loss_standard_error(losses: tf.Tensor) -> tf.Tensor:
    """Standard error of a batch's mean loss, ``std(LAD_i) / sqrt(B)`` over the finite per-sample
    losses: how far a healthy worker's batch loss can stray from the population loss by sampling
    alone. It is NaN when a loss is non-finite; the worker is then rejected anyway.

    Args:
      losses: ``[B]`` per-sample losses.

    Returns:
      Scalar float32 tensor.
    """
    v = tf.cast(tf.reshape(losses, [-1]), tf.float32)
    n = tf.cast(tf.size(v), tf.float32)
    mean = tf.reduce_mean(v)
    var = tf.reduce_sum(tf.square(v - mean)) / tf.maximum(n - 1.0, 1.0)
    return tf.sqrt(var / tf.maximum(n, 1.0))


def law_mask(
    values: tf.Tensor,
    *,
    tau: float | None = None,
    kappa: float = 4.0,
    centre: Centre = "median",
    tau_floor: float = 1e-3,
    one_sided: bool = False,
    valid: tf.Tensor | None = None,
    scale_floor: tf.Tensor | None = None,
) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """The LAW rule of spec §3: ``LAW_i = 1 if |v_i - c| < tau else 0``.

    ``c`` is the mean (paper) or the median of the finite values. ``tau`` is absolute when given
    (paper), else relative: ``kappa * 1.4826 * MAD`` where MAD is the median of the deviations
    ``|v_i - c|`` from the chosen centre, floored at ``scale_floor`` when that is given and > 0,
    else at ``tau_floor * |c|`` (and always at 1e-12, so that identical values are kept). A
    non-finite value always gets LAW = 0 and takes no part in the centre or the scale.
    ``one_sided`` rejects only values above the centre (the gradient-norm screen: a small
    gradient does no harm).

    K = 2 (spec §3 asks what happens): both deviations from the centre are equal (the median of
    two values is their mean), so the rule cannot single one out. With relative tau the MAD
    equals that common deviation and both are kept whenever ``kappa * 1.4826 > 1`` (any kappa >=
    0.68; a floor only raises tau); with absolute tau both are kept if ``|v_1 - v_2| / 2 < tau``,
    else both are rejected (and a worker-level step is then skipped). The non-finite rule still
    drops a NaN worker.

    Args:
      values: ``[K]`` float tensor (losses or gradient norms).
      tau: absolute threshold, or None for the relative one.
      kappa: multiplier of the robust scale for the relative threshold.
      centre: "median" (default, robust) or "mean" (paper; one outlier drags it).
      tau_floor: relative floor of the threshold, used when ``scale_floor`` is absent or 0.
      one_sided: reject only values above the centre.
      valid: optional ``[K]`` bool pre-mask (already rejected entries).
      scale_floor: optional scalar absolute floor of the relative threshold.

    Returns:
      ``(law [K] float32 in {0, 1}, info)`` with info keys "centre", "tau" (scalars).
    """
    _check(centre, kappa=kappa)
    if tau is not None and not tau >= 0:
        raise ValueError(f"tau must be >= 0 (absolute) or None (relative), got {tau!r}")
    v = tf.cast(tf.convert_to_tensor(values), tf.float32)
    finite = tf.math.is_finite(v)
    if valid is not None:
        finite = tf.logical_and(finite, tf.cast(valid, tf.bool))
    c = masked_median(v, finite) if centre == "median" else masked_mean(v, finite)
    signed = v - c
    dev = signed if one_sided else tf.abs(signed)
    absdev = tf.where(finite, tf.abs(signed), tf.zeros_like(v))
    if tau is None:
        floor = tau_floor * tf.abs(c)
        if scale_floor is not None:
            sf = tf.cast(scale_floor, tf.float32)
            floor = tf.where(sf > 0, sf, floor)
        floor = tf.maximum(floor, 1e-12)
        t = tf.maximum(kappa * MAD_TO_SIGMA * masked_median(absdev, finite), floor)
    else:
        t = tf.constant(float(tau), tf.float32)
    keep = tf.logical_and(finite, tf.where(finite, dev, tf.zeros_like(v)) < t)
    return tf.cast(keep, tf.float32), {"centre": c, "tau": t}


def sample_law(
    losses: tf.Tensor,
    *,
    tau: float | None = None,
    kappa: float = 4.0,
    centre: Centre = "mean",
    tau_floor: float = 1e-3,
) -> tf.Tensor:
    """Per-sample LAW inside one worker's batch (spec §3, first formula).

    The paper's centre is the batch mean, kept as the default here; see ``law_mask`` for tau.

    Args:
      losses: ``[B]`` per-sample losses LAD_i.

    Returns:
      ``[B]`` float32 weights in {0, 1}; non-finite losses get 0.
    """
    law, _ = law_mask(losses, tau=tau, kappa=kappa, centre=centre, tau_floor=tau_floor)
    return law


def lsg_loss(losses: tf.Tensor, law: tf.Tensor, normalise: Normalise = "batch") -> tf.Tensor:
    """The LSG objective whose gradient is ``(1/B) sum_i LAW_i dJ_i/dtheta`` (spec §3, paper) or,
    with ``normalise="kept"``, that sum divided by ``sum_i LAW_i``. Rejected (and non-finite)
    samples contribute exactly zero; if every sample is rejected the loss is 0.

    Args:
      losses: ``[B]`` per-sample losses.
      law: ``[B]`` weights from ``sample_law``.
      normalise: "batch" (paper) or "kept".

    Returns:
      Scalar loss tensor of the losses' dtype.
    """
    _check("mean", normalise)
    losses = tf.convert_to_tensor(losses)
    law = tf.cast(law, losses.dtype)
    kept = law > 0
    total = tf.reduce_sum(tf.where(kept, law * losses, tf.zeros_like(losses)))
    denom = tf.reduce_sum(law) if normalise == "kept" else tf.cast(tf.size(losses), losses.dtype)
    return tf.math.divide_no_nan(total, denom)


def worker_law(
    losses: tf.Tensor,
    grad_norms: tf.Tensor,
    finite: tf.Tensor,
    *,
    loss_se: tf.Tensor | None = None,
    tau: float | None = None,
    kappa: float = 4.0,
    se_kappa: float = 8.0,
    centre: Centre = "median",
    tau_floor: float = 1.0,
    grad_screen: bool = True,
    grad_kappa: float = 6.0,
    grad_floor: float = 3.0,
) -> tf.Tensor:
    """Worker-level LAW_k from the allgathered scalars (spec §3, across workers).

    First screen: ``law_mask`` on the workers' losses. Second screen (optional): the gradient
    norms of the workers that passed, one-sided relative rule with ``grad_kappa`` (catches e.g. a
    gradient scaled by -10 under an honest loss). A worker with a non-finite loss, norm, or
    ``finite == 0`` always gets 0.

    Why the floors (measured, Fashion-MNIST, small ResNet, K = 4, batch 32, 400 steps): the MAD
    of 3 or 4 values is often the gap between two nearly equal losses, so ``kappa * 1.4826 *
    MAD`` alone rejected a healthy worker on 9% of the steps of a clean run, always the one with
    the hardest batch; that bias cost 3 points of test accuracy against Horovod's Average. A
    healthy worker's loss differs from the others' only by sampling noise, whose size each worker
    measures itself: the standard error ``loss_se`` of its batch mean (``loss_standard_error``).
    So the loss threshold is never below ``se_kappa`` times the median standard error of the
    workers. Per-sample cross-entropy is skewed, so at B = 32 healthy batch means reach 5.7 such
    standard errors from the median (1,600 worker-steps); a shuffled-label worker sat 13-40
    away and a corrupted-input worker 6-14 away after the first 50 steps: ``se_kappa = 8``.
    Without standard errors (``loss_se`` None or 0, e.g. the Keras path, which sees only the
    mean loss) the floor is ``tau_floor * |centre|``: healthy losses reached 1.95x the median
    (99.9%: 1.37x) in the same run, so the default 1.0 still rejects ~0.5% of healthy steps.
    Gradient norms below ``(1 + grad_floor) * median`` always pass: healthy norms reached 2.3x
    the median, a worker scaling its gradient by -10 about 10x.

    Args:
      losses, grad_norms, finite: ``[K]`` tensors (finite as 0/1 floats).
      loss_se: optional ``[K]`` standard errors of the losses (0 = unknown).
      tau: absolute loss threshold, or None for the relative one.
      kappa: multiplier of 1.4826 * MAD of the losses.
      se_kappa: multiplier of the median standard error (the loss threshold's floor).
      centre: "median" or "mean" (paper).
      tau_floor: relative floor ``tau_floor * |centre|`` used when no standard errors are known.
      grad_screen, grad_kappa, grad_floor: the gradient-norm screen and its parameters.

    Returns:
      ``[K]`` float32 LAW_k in {0, 1}; identical on every rank given identical inputs.
    """
    if not se_kappa > 0:
        raise ValueError(f"se_kappa must be > 0, got {se_kappa!r}")
    losses = tf.cast(losses, tf.float32)
    norms = tf.cast(grad_norms, tf.float32)
    ok = tf.logical_and(tf.cast(finite, tf.float32) > 0.5, tf.math.is_finite(norms))
    scale_floor = None
    if loss_se is not None:
        se = tf.cast(loss_se, tf.float32)
        has_se = tf.logical_and(ok, tf.logical_and(tf.math.is_finite(se), se > 0))
        scale_floor = se_kappa * masked_median(se, has_se)  # 0 when none is known
    law, _ = law_mask(
        losses,
        tau=tau,
        kappa=kappa,
        centre=centre,
        tau_floor=tau_floor,
        valid=ok,
        scale_floor=scale_floor,
    )
    if grad_screen:
        g, _ = law_mask(
            norms,
            kappa=grad_kappa,
            centre="median",
            tau_floor=grad_floor,
            one_sided=True,
            valid=law > 0,
        )
        law = law * g
    return law


# ----------------------------------------------------------------------------- direction screen
# spec §3, faults whose loss looks normal. The rule, its statistic and the measurements behind the
# defaults are described in ``direction_law``; the NumPy oracle is ``reference.lsg``.

CHI2_1_MEDIAN = 0.454936  # median of chi-square(1): median squared deviation -> variance


def loo_cosine(
    dots: tf.Tensor, norms: tf.Tensor, weights: tf.Tensor, agg_sq: tf.Tensor
) -> tf.Tensor:
    """Each worker's cosine to the aggregate of the OTHER workers, from scalars alone.

    With ``A = sum_j a_j g_j`` (the step's reduced gradient), worker k's own part removed is
    ``A - a_k g_k``; its dot with ``g_k`` is ``dots_k - a_k |g_k|^2`` and its squared norm is
    ``|A|^2 - 2 a_k dots_k + a_k^2 |g_k|^2``. A worker left out (a_k = 0) is compared with A.

    Args:
      dots: ``[K]`` ``g_k . A`` (each worker computes its own after the allreduce).
      norms: ``[K]`` ``|g_k|``.
      weights: ``[K]`` ``a_k``, the factor each worker's gradient entered A with.
      agg_sq: scalar ``|A|^2``.

    Returns:
      ``[K]`` float32 cosines; NaN where undefined (a zero vector, a non-finite input).
    """
    d, n, a = (tf.cast(t, tf.float32) for t in (dots, norms, weights))
    agg_sq = tf.cast(agg_sq, tf.float32)
    dot = d - a * n * n
    rest_sq = tf.maximum(agg_sq - 2.0 * a * d + a * a * n * n, 0.0)
    den = n * tf.sqrt(rest_sq)
    nan = tf.fill(tf.shape(d), float("nan"))
    return tf.where(den > 1e-30, dot / tf.maximum(den, 1e-30), nan)


def reputation_update(
    state: dict[str, tf.Tensor], cos: tf.Tensor, kept: tf.Tensor, decay: float
) -> dict[str, tf.Tensor]:
    """One step of each worker's direction reputation: a bias-corrected exponential average of
    its leave-one-out cosines (``loo_cosine``), and of the workers' spread around the step's
    median cosine (pooled over workers and time).

    Args:
      state: ``num``, ``s1``, ``s2`` (``[K]``: the weighted sum of cosines, of the weights, of
        the squared weights) and ``var_num``, ``var_s1`` (scalars: the spread's average).
      cos: ``[K]`` this step's cosines; a non-finite one is no evidence (that worker's entries
        stay as they are).
      kept: ``[K]`` bool, the workers whose gradient was in the aggregate: the spread is
        measured on them, at least 2 with a finite cosine (else it stays as it is).
      decay: the average's decay in (0, 1).

    Returns:
      The new state (same keys).
    """
    c = tf.cast(cos, tf.float32)
    has = tf.math.is_finite(c)
    c0 = tf.where(has, c, 0.0)
    out = {
        "num": tf.where(has, decay * state["num"] + (1.0 - decay) * c0, state["num"]),
        "s1": tf.where(has, decay * state["s1"] + (1.0 - decay), state["s1"]),
        "s2": tf.where(has, decay**2 * state["s2"] + (1.0 - decay) ** 2, state["s2"]),
    }
    use = tf.logical_and(has, tf.cast(kept, tf.bool))
    med = masked_median(c0, use)
    var = masked_median(tf.square(c0 - med), use) / CHI2_1_MEDIAN
    ok = tf.reduce_sum(tf.cast(use, tf.int32)) >= 2
    out["var_num"] = tf.where(ok, decay * state["var_num"] + (1.0 - decay) * var, state["var_num"])
    out["var_s1"] = tf.where(ok, decay * state["var_s1"] + (1.0 - decay), state["var_s1"])
    return out


def direction_law(
    state: dict[str, tf.Tensor], valid: tf.Tensor | None = None, kappa: float = 5.0
) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """The direction screen: worker k is rejected when its reputation (the average of its
    leave-one-out cosines, ``reputation_update``) lies more than ``kappa`` standard errors below
    the median reputation: ``r_k < median(r) - kappa * sigma / sqrt(n_k)``, with ``sigma^2`` the
    pooled variance of one step's cosines around their median and ``n_k = s1_k^2 / s2_k`` the
    effective number of steps in worker k's average. A worker without a reputation yet passes.
    Below the median by a positive margin: fewer than half the workers can be rejected; with
    fewer than 3 workers that have a reputation, none is.

    Why a reputation and not one step's cosine (measured, Fashion-MNIST, small ResNet, K = 4,
    batch 32, 400 steps): a healthy worker's cosine to the others' aggregate has median 0.34
    over the first 20 steps and 0.08 after step 250, and 10% of healthy steps are below -0.13
    late: gradient noise dominates one small batch, so one step cannot tell a sign-flipped
    worker (median -0.27 over steps 100-250) from a healthy one. Averaged over time (decay
    0.95, about 40 steps) the healthy workers of a clean run stayed within 3.5 standard errors
    of the median (1,600 worker-steps), a sign-flipped worker was a median 11 below.

    Args:
      state: from ``reputation_update``.
      valid: optional ``[K]`` bool: the workers that take part in the median.
      kappa: the margin in standard errors.

    Returns:
      ``(law [K] float32 in {0, 1}, info)`` with info keys "reputation" ([K]) and "z" ([K], the
      standardised distance below the median, 0 without a reputation).
    """
    if not kappa > 0:
        raise ValueError(f"dir_kappa must be > 0, got {kappa!r}")
    s1, s2 = state["s1"], state["s2"]
    has = s1 > 0
    if valid is not None:
        has = tf.logical_and(has, tf.cast(valid, tf.bool))
    r = tf.where(s1 > 0, tf.math.divide_no_nan(state["num"], s1), 0.0)
    neff = tf.where(s1 > 0, tf.math.divide_no_nan(s1 * s1, s2), 1.0)
    var = tf.math.divide_no_nan(state["var_num"], state["var_s1"])
    se = tf.sqrt(var / neff)
    # A minority needs a majority to be told from: with fewer than 3 workers that have a
    # reputation nobody is rejected. (With K = 2 both leave-one-out cosines are the same number,
    # cos(g_1, g_2), so the spread is 0 and round-off alone made z = +-5: a healthy worker was
    # rejected at step 412 of a clean run and, with the spread frozen, never came back.)
    enough = tf.reduce_sum(tf.cast(has, tf.int32)) >= 3
    z = tf.where(
        tf.logical_and(enough, tf.logical_and(s1 > 0, se > 1e-6)),
        (r - masked_median(r, has)) / tf.maximum(se, 1e-6),
        0.0,
    )
    keep = tf.logical_not(tf.logical_and(s1 > 0, z < -kappa))
    return tf.cast(keep, tf.float32), {"reputation": r, "z": z}
