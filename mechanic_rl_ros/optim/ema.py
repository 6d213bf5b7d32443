"""Exponential moving average of weights (pure torch, no ROS imports).

The weights a diffusion policy is evaluated and deployed with are an average of the trained ones, not the
last gradient step's (Chi et al., "Diffusion Policy", RSS 2023, Sec. IV-C): the last step's weights carry
the noise of the last few batches, the average does not. Pretraining and the distillation learner use the
same schedule.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch


class EMA:
    """``targets`` (tensors of their own, updated in place) follow ``sources`` with the warm-up decay

        d_n = min(max_decay, 1 - (1 + n / inv_gamma)^(-power)),   target <- d_n target + (1 - d_n) source,

    ``n`` the number of updates so far: early on the average forgets its starting values fast, later it
    spans about ``1 / (1 - max_decay)`` updates (the schedule of Chi et al. 2023's EMA model)."""

    def __init__(self, targets: Sequence[torch.Tensor], power: float = 0.75, max_decay: float = 0.999,
                 inv_gamma: float = 1.0):
        if not 0.0 <= max_decay < 1.0:
            raise ValueError(f"EMA max_decay: got {max_decay!r}; expected a number in [0, 1)")
        self.targets = list(targets)
        self.power, self.max_decay, self.inv_gamma = float(power), float(max_decay), float(inv_gamma)
        self.step = 0

    def decay(self) -> float:
        d = 1.0 - (1.0 + self.step / self.inv_gamma) ** (-self.power)
        return float(min(max(d, 0.0), self.max_decay))

    @torch.no_grad()
    def update(self, sources: Iterable[torch.Tensor]) -> None:
        d = self.decay()
        sources = [s.detach() for s in sources]
        if len(sources) != len(self.targets):
            raise ValueError(f"EMA update: {len(sources)} tensors; expected {len(self.targets)}")
        torch._foreach_lerp_(self.targets, sources, 1.0 - d)
        self.step += 1
