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


def law_mask(
    values: tf.Tensor,
    *,
    tau: float | None = None,
    kappa: float = 4.0,
    centre: Centre = "median",
    tau_floor: float = 1e-3,
    one_sided: bool = False,
    valid: tf.Tensor | None = None,
) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """The LAW rule of SPEC 3: ``LAW_i = 1 if |v_i - c| < tau else 0``.

    ``c`` is the mean (paper) or the median of the finite values. ``tau`` is absolute when given
    (paper), else relative: ``kappa * 1.4826 * MAD`` where MAD is the median of the deviations
    ``|v_i - c|`` from the chosen centre, floored at ``tau_floor * |c|`` (and 1e-12) so that
    identical values are always kept. A non-finite value always gets LAW = 0 and takes no part in
    the centre or the scale. ``one_sided`` rejects only values above the centre (the gradient-norm
    screen: a small gradient does no harm).

    K = 2 (SPEC 3 asks what happens): both deviations from the centre are equal (the median of
    two values is their mean), so the rule cannot single one out. With relative tau the MAD
    equals that common deviation and both are kept whenever ``kappa * 1.4826 > 1`` (any kappa >=
    0.68); with absolute tau both are kept if ``|v_1 - v_2| / 2 < tau``, else both are rejected
    (and a worker-level step is then skipped). The non-finite rule still drops a NaN worker.

    Args:
      values: ``[K]`` float tensor (losses or gradient norms).
      tau: absolute threshold, or None for the relative one.
      kappa: multiplier of the robust scale for the relative threshold.
      centre: "median" (default, robust) or "mean" (paper; one outlier drags it).
      tau_floor: relative floor of the threshold.
      one_sided: reject only values above the centre.
      valid: optional ``[K]`` bool pre-mask (already rejected entries).

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
        floor = tf.maximum(tau_floor * tf.abs(c), 1e-12)
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
    tau: float | None = None,
    kappa: float = 4.0,
    centre: Centre = "median",
    tau_floor: float = 0.25,
    grad_screen: bool = True,
    grad_kappa: float = 6.0,
    grad_floor: float = 1.0,
) -> tf.Tensor:
    """Worker-level LAW_k from the allgathered scalars (SPEC 3, across workers).

    First screen: ``law_mask`` on the workers' losses. Second screen (optional): the gradient
    norms of the workers that passed, one-sided relative rule with ``grad_kappa`` (catches e.g. a
    gradient scaled by -10 under an honest loss). A worker with a non-finite loss, norm, or
    ``finite == 0`` always gets 0.

    The floors matter at small K, where the MAD of 3 or 4 values is fragile (it can be the
    distance between two nearly equal values): a loss within ``tau_floor * |centre|`` of the
    centre, and a gradient norm below ``(1 + grad_floor) * median``, are always kept.

    Args:
      losses, grad_norms, finite: ``[K]`` tensors (finite as 0/1 floats).

    Returns:
      ``[K]`` float32 LAW_k in {0, 1}; identical on every rank given identical inputs.
    """
    losses = tf.cast(losses, tf.float32)
    norms = tf.cast(grad_norms, tf.float32)
    ok = tf.logical_and(tf.cast(finite, tf.float32) > 0.5, tf.math.is_finite(norms))
    law, _ = law_mask(losses, tau=tau, kappa=kappa, centre=centre, tau_floor=tau_floor, valid=ok)
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
