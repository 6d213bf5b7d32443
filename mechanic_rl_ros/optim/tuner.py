r"""The scale update of Mechanic: the coin-betting tuners, in float64 scalars.

Reference: A. Cutkosky, A. Defazio, H. Mehta, "Mechanic: A Learning Rate Tuner",
NeurIPS 2023, arXiv:2306.00144, Algorithm 1 (MECHANIC), in the form of
``optax.contrib.mechanize`` (optax 0.2.8). Labels (M2)-(M7) are those of
``docs/mechanic.md``. Nothing here touches tensors: the caller reduces the
parameters to four sums and applies the new scale
(:mod:`mechanic_rl_ros.optim.buckets`, :mod:`mechanic_rl_ros.optim.adam_fused`).

The tuner state is a dict ``{"step": int, "s": [...], "m": [...], "v": [...],
"r": [...]}`` of ``num_betas`` Python floats per key; tuner ``i`` decays with
:math:`\beta_i = 1 - 10^{-(i+1)}`.
"""
from __future__ import annotations

import math
from typing import Any, Dict

__all__ = ["TUNER_KEYS", "check_hyper", "initial_tuner", "scale", "betting_signal",
           "tuner_update", "is_finite"]

TUNER_KEYS = ("s", "m", "v", "r")


def check_hyper(weight_decay, eps, s_init, num_betas) -> Dict[str, Any]:
    """Validate Mechanic's hyper-parameters; return them as a dict of Python numbers."""
    if not (math.isfinite(weight_decay) and weight_decay >= 0.0):
        raise ValueError(f"weight_decay must be finite and >= 0, got {weight_decay!r}")
    if not (math.isfinite(eps) and eps > 0.0):
        raise ValueError(f"eps must be finite and > 0, got {eps!r}")
    if not (math.isfinite(s_init) and s_init > 0.0):
        raise ValueError(f"s_init must be finite and > 0, got {s_init!r}")
    if isinstance(num_betas, bool) or int(num_betas) != num_betas or num_betas < 1:
        raise ValueError(f"num_betas must be an integer >= 1, got {num_betas!r}")
    return {"weight_decay": float(weight_decay), "eps": float(eps), "s_init": float(s_init),
            "num_betas": int(num_betas)}


def initial_tuner(hyper: Dict[str, Any]) -> Dict[str, Any]:
    """Algorithm 1's initial state: every :math:`s_i = s_{init}`, :math:`m = v = r = 0`."""
    n = hyper["num_betas"]
    return {"step": 0, "s": [hyper["s_init"]] * n, "m": [0.0] * n, "v": [0.0] * n,
            "r": [0.0] * n}


def scale(tuner: Dict[str, Any]) -> float:
    """The learned scale :math:`S = \\sum_i s_i` (exactly rounded sum)."""
    return math.fsum(tuner["s"])


def betting_signal(g_sq: float, x_sq: float, g_dot: float, x_dot: float, scale_now: float,
                   hyper: Dict[str, Any]) -> float:
    r"""The tuners' input :math:`h_t` of (M2)-(M3), from four global sums.

    .. math::
        h_t = \Big\langle g_t + \lambda S_t \frac{\|g_t\|}{\|x_t\| + \epsilon}\,x_t,\
              \Delta_t \Big\rangle, \qquad \Delta_t = \frac{x_t - x_{ref}}{S_t + \epsilon}

    with ``g_sq`` :math:`=\|g_t\|^2`, ``x_sq`` :math:`=\|x_t\|^2`, ``g_dot``
    :math:`=\langle g_t, x_t - x_{ref}\rangle`, ``x_dot``
    :math:`=\langle x_t, x_t - x_{ref}\rangle`, all over the parameters that
    have a gradient. :math:`\Delta_t` is optax's memory-saving form (the paper
    keeps the running sum of updates); :math:`\lambda` is ``weight_decay``.
    """
    eps = hyper["eps"]
    c = hyper["weight_decay"] * scale_now * math.sqrt(g_sq) / (math.sqrt(x_sq) + eps)
    return (g_dot + c * x_dot) / (scale_now + eps)


def tuner_update(tuner: Dict[str, Any], h: float, hyper: Dict[str, Any]) -> Dict[str, Any]:
    r"""One betting step of every tuner, (M4)-(M7); returns the new ``s, m, v, r``
    (without ``step``), leaving ``tuner`` unchanged.

    .. math::
        m' &= \max(\beta m,\ |h| + \epsilon) \\
        v' &= \beta^2 v + h^2 \\
        r' &= \beta r - s\,\mathrm{clip}(h, -m, m) \\
        s' &= \frac{(s_{init}/n)\,m' + \max(0, r')}{\sqrt{v'} + \epsilon}

    As in optax 0.2.8 and not in the paper's Algorithm 1: :math:`h` is clipped
    with the *previous* :math:`m` (so the first step leaves :math:`r = 0`),
    :math:`m'` is floored at :math:`|h| + \epsilon`, :math:`s'` uses the new
    :math:`m', r', v'`, and :math:`r'` is stored unclipped. optax stores
    :math:`h` and :math:`r` with the opposite sign; the iterates are the same.
    """
    n, eps, s_init = hyper["num_betas"], hyper["eps"], hyper["s_init"]
    out: Dict[str, Any] = {key: [] for key in TUNER_KEYS}
    for i in range(n):
        beta = 1.0 - 0.1 ** (i + 1)
        s, m, v, r = (tuner[key][i] for key in TUNER_KEYS)
        clipped = min(max(h, -m), m)
        m_new = max(beta * m, abs(h) + eps)
        v_new = beta ** 2 * v + h * h
        r_new = beta * r - clipped * s
        wealth = (s_init / n) * m_new + max(0.0, r_new)
        out["s"].append(wealth / (math.sqrt(v_new) + eps))
        out["m"].append(m_new)
        out["v"].append(v_new)
        out["r"].append(r_new)
    return out


def is_finite(h: float, new_tuner: Dict[str, Any]) -> bool:
    """Whether ``h`` and every scalar of an updated tuner are finite."""
    return math.isfinite(h) and math.isfinite(scale(new_tuner)) and all(
        math.isfinite(x) for key in ("m", "v", "r") for x in new_tuner[key])
