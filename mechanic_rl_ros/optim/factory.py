"""The one optimiser factory of every learner: Mechanic over Adam, or plain Adam.

``mechanic`` wraps ``Adam(lr=1)`` in :class:`~mechanic_rl_ros.optim.Mechanic` (Cutkosky, Defazio, Mehta,
"Mechanic: A Learning Rate Tuner", NeurIPS 2023): the base optimiser proposes a direction, Mechanic learns
the scale ``s`` of the whole update online, so there is no learning rate to choose. ``adam`` is
``Adam(lr)``, the baseline a learning rate has to be picked for.
"""
from __future__ import annotations

from typing import Iterable

import torch

from .mechanic import Mechanic

KINDS = ("mechanic", "adam")


def build_optimizer(kind: str, params: Iterable[torch.nn.Parameter], lr: float = 3e-4,
                    betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                    **mechanic: float) -> torch.optim.Optimizer:
    """``Mechanic(Adam(params, lr=1, betas, eps), **mechanic)`` for ``kind`` ``mechanic`` (``mechanic``: its
    ``weight_decay``, ``s_init``, ``num_betas``), ``Adam(params, lr, betas, eps)`` for ``adam``; ``lr`` is
    ignored under Mechanic. Any other kind raises ValueError naming the choices."""
    params = list(params)
    if kind == "mechanic":
        return Mechanic(torch.optim.Adam(params, lr=1.0, betas=betas, eps=eps), **mechanic)
    if kind == "adam":
        return torch.optim.Adam(params, lr=float(lr), betas=betas, eps=eps)
    raise ValueError(f"optimizer must be one of {KINDS}, got {kind!r}")


def mechanic_scale(opt: torch.optim.Optimizer) -> float:
    """Mechanic's learned scale ``s`` of ``opt`` (summed over its betas), NaN for plain Adam: the number to
    watch, the effective learning rate Mechanic chose."""
    return float(opt.scale) if isinstance(opt, Mechanic) else float("nan")
