"""LAW weights (SPEC 3) in plain TensorFlow, with no Horovod: the per-sample LAW inside one
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
    """The LAW rule of SPEC 3: ``LAW_i = 1 if |v_i - c| < tau else 0``.

    ``c`` is the mean (paper) or the median of the finite values. ``tau`` is absolute when given
    (paper), else relative: ``kappa * 1.4826 * MAD`` where MAD is the median of the deviations
    ``|v_i - c|`` from the chosen centre, floored at ``scale_floor`` when that is given and > 0,
    else at ``tau_floor * |c|`` (and always at 1e-12, so that identical values are kept). A
    non-finite value always gets LAW = 0 and takes no part in the centre or the scale.
    ``one_sided`` rejects only values above the centre (the gradient-norm screen: a small
    gradient does no harm).

    K = 2 (SPEC 3 asks what happens): both deviations from the centre are equal (the median of
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
    """Per-sample LAW inside one worker's batch (SPEC 3, first formula).

    The paper's centre is the batch mean, kept as the default here; see ``law_mask`` for tau.

    Args:
      losses: ``[B]`` per-sample losses LAD_i.

    Returns:
      ``[B]`` float32 weights in {0, 1}; non-finite losses get 0.
    """
    law, _ = law_mask(losses, tau=tau, kappa=kappa, centre=centre, tau_floor=tau_floor)
    return law


def lsg_loss(losses: tf.Tensor, law: tf.Tensor, normalise: Normalise = "batch") -> tf.Tensor:
    """The LSG objective whose gradient is ``(1/B) sum_i LAW_i dJ_i/dtheta`` (SPEC 3, paper) or,
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
    """Worker-level LAW_k from the allgathered scalars (SPEC 3, across workers).

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
