"""NumPy oracle for spec §3 (IM-BGDS): per-sample LAW, the LSG combination, the worker-level LAW
and the alternative reductions (mean, Dis-CNN two-group weighting, coordinate median, trimmed
mean) over a stack of K workers' flattened gradients."""

from __future__ import annotations

import numpy as np

MAD_TO_SIGMA = 1.4826


def law(
    values,
    tau=None,
    kappa=4.0,
    centre="median",
    tau_floor=1e-3,
    one_sided=False,
    valid=None,
    scale_floor=None,
):
    """LAW_i = 1 if |v_i - c| < tau else 0, non-finite -> 0 (see iapdcnn.distributed.law_mask)."""
    v = np.asarray(values, np.float64)
    ok = np.isfinite(v) if valid is None else np.isfinite(v) & np.asarray(valid, bool)
    if not ok.any():
        return np.zeros(v.shape, np.float32)
    c = np.median(v[ok]) if centre == "median" else np.mean(v[ok])
    dev = (v - c) if one_sided else np.abs(v - c)
    if tau is None:
        mad = np.median(np.abs(v[ok] - c))
        floor = scale_floor if scale_floor is not None and scale_floor > 0 else tau_floor * abs(c)
        tau = max(kappa * MAD_TO_SIGMA * mad, floor, 1e-12)
    out = np.zeros(v.shape, np.float32)
    out[ok] = (dev[ok] < tau).astype(np.float32)
    return out


def lsg_loss(losses, weights, normalise="batch"):
    """sum_i LAW_i LAD_i / (B or sum LAW_i); 0 when nothing is kept."""
    losses = np.asarray(losses, np.float64)
    w = np.asarray(weights, np.float64)
    total = np.sum(w[w > 0] * losses[w > 0])
    denom = w.sum() if normalise == "kept" else losses.size
    return 0.0 if denom == 0 else total / denom


def worker_law(
    losses,
    norms,
    finite,
    loss_se=None,
    tau=None,
    kappa=4.0,
    se_kappa=8.0,
    centre="median",
    tau_floor=1.0,
    grad_screen=True,
    grad_kappa=6.0,
    grad_floor=3.0,
):
    """Worker-level LAW_k: loss screen (threshold floored at se_kappa x the median standard error
    of the losses when known, else tau_floor x |centre|), then the one-sided gradient-norm
    screen."""
    ok = (np.asarray(finite) > 0.5) & np.isfinite(np.asarray(norms, np.float64))
    scale_floor = None
    if loss_se is not None:
        se = np.asarray(loss_se, np.float64)
        has = ok & np.isfinite(se) & (se > 0)
        scale_floor = se_kappa * np.median(se[has]) if has.any() else 0.0
    w = law(losses, tau, kappa, centre, tau_floor, valid=ok, scale_floor=scale_floor)
    if grad_screen:
        w = w * law(norms, None, grad_kappa, "median", grad_floor, one_sided=True, valid=w > 0)
    return w


def combine(grads, weights, normalise="kept"):
    """sum_k w_k g_k / (sum_k w_k or K); rows with w_k = 0 never contribute (even NaN rows).

    Args:
      grads: ``[K, P]``; weights: ``[K]``.

    Returns:
      ``([P] combined, skipped)``; zeros and skipped=True when every weight is 0.
    """
    g = np.asarray(grads, np.float64)
    w = np.asarray(weights, np.float64)
    if not (w > 0).any():
        return np.zeros(g.shape[1:]), True
    total = np.sum(w[w > 0, None] * g[w > 0], axis=0)
    return total / (w.sum() if normalise == "kept" else len(w)), False


def dis_cnn_weights(losses, finite, b=None):
    """0.55 for loss <= b, 0.45 above (Dis-CNN); b defaults to the median; non-finite -> 0."""
    v = np.asarray(losses, np.float64)
    ok = np.isfinite(v) & (np.asarray(finite) > 0.5)
    if b is None:
        b = np.median(v[ok]) if ok.any() else 0.0
    return np.where(ok, np.where(v <= b, 0.55, 0.45), 0.0)


def coordinate_median(grads, finite):
    g = np.asarray(grads, np.float64)[np.asarray(finite) > 0.5]
    return np.median(g, axis=0) if len(g) else np.zeros(np.shape(grads)[1:])


def trimmed_mean(grads, finite, trim=0.25):
    g = np.sort(np.asarray(grads, np.float64)[np.asarray(finite) > 0.5], axis=0)
    n = len(g)
    if n == 0:
        return np.zeros(np.shape(grads)[1:])
    t = min(int(np.floor(trim * n)), (n - 1) // 2)
    return g[t : n - t].mean(axis=0)


# ------------------------------------------------------------------ direction screen (spec §3)
CHI2_1_MEDIAN = 0.454936


def loo_cosine(dots, norms, weights, agg_sq):
    """cos(g_k, A - a_k g_k) from g_k . A, |g_k|, a_k and |A|^2; NaN where undefined."""
    d, n, a = (np.asarray(x, np.float64) for x in (dots, norms, weights))
    dot = d - a * n * n
    rest = np.maximum(agg_sq - 2 * a * d + a * a * n * n, 0.0)
    den = n * np.sqrt(rest)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-30, dot / np.where(den > 1e-30, den, 1.0), np.nan)


def reputation_update(state, cos, kept, decay):
    """Bias-corrected exponential averages of each worker's cosine and of the pooled spread
    (median squared deviation from the step's median / chi2(1) median) over the kept workers."""
    c = np.asarray(cos, np.float64)
    has = np.isfinite(c)
    out = {
        "num": np.where(
            has, decay * state["num"] + (1 - decay) * np.where(has, c, 0), state["num"]
        ),
        "s1": np.where(has, decay * state["s1"] + (1 - decay), state["s1"]),
        "s2": np.where(has, decay**2 * state["s2"] + (1 - decay) ** 2, state["s2"]),
        "var_num": state["var_num"],
        "var_s1": state["var_s1"],
    }
    use = has & np.asarray(kept, bool)
    if use.sum() >= 2:
        med = np.median(c[use])
        var = np.median((c[use] - med) ** 2) / CHI2_1_MEDIAN
        out["var_num"] = decay * state["var_num"] + (1 - decay) * var
        out["var_s1"] = decay * state["var_s1"] + (1 - decay)
    return out


def new_reputation(k):
    return {"num": np.zeros(k), "s1": np.zeros(k), "s2": np.zeros(k), "var_num": 0.0, "var_s1": 0.0}


def direction_law(state, valid=None, kappa=5.0):
    """LAW_k = 0 iff worker k's reputation is more than kappa standard errors below the median
    reputation (workers without one pass; with fewer than 3 that have one, nobody is rejected);
    returns (law, z)."""
    s1, s2 = state["s1"], state["s2"]
    k = len(s1)
    has = s1 > 0 if valid is None else (s1 > 0) & np.asarray(valid, bool)
    r = np.where(s1 > 0, state["num"] / np.where(s1 > 0, s1, 1), 0.0)
    neff = np.where(s1 > 0, s1 * s1 / np.where(s2 > 0, s2, 1), 1.0)
    var = state["var_num"] / state["var_s1"] if state["var_s1"] > 0 else 0.0
    se = np.sqrt(var / neff)
    med = np.median(r[has]) if has.any() else 0.0
    # fewer than 3 workers with a reputation: no majority to tell a minority from, none rejected
    use = (s1 > 0) & (se > 1e-6) & (has.sum() >= 3)
    z = np.where(use, (r - med) / np.where(se > 1e-6, se, 1e-6), 0.0)
    law = np.ones(k, np.float32)
    law[(s1 > 0) & (z < -kappa)] = 0.0
    return law, z
