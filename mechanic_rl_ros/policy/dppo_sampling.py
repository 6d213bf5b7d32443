"""DPPO sampling with clipped exploration noise (kept for the RL core's imports).

The RL core first added this as a copy of :meth:`DiffusionPolicy.sample` with
the one DPPO ingredient it lacked: each standard-normal draw of a stochastic
denoising step is clipped to ``[-noise_clip, noise_clip]`` before scaling
(Ren et al. 2024, released configurations: ``randn_clip_value = 3``).  The
policy now has that option itself (``noise_clip`` argument /
``sampling.noise_clip``), so this is a thin wrapper; delegating keeps every
later change of the sampler (e.g. the network's prediction type) in one place.
Log-probabilities are those of the *unclipped* Gaussian at the sampled point,
so :meth:`DiffusionPolicy.chain_log_prob` re-evaluates them exactly.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from .policy import DiffusionPolicy, DiffusionSample


def sample_clipped_noise(policy: DiffusionPolicy, obs: Mapping[str, Any], *, noise_clip: float = 3.0,
                         generator: torch.Generator | None = None, ft_steps: int | None = None,
                         eta: float | None = None) -> DiffusionSample:
    """``policy.sample(obs, stochastic=True, noise_clip=noise_clip, ...)``; ``noise_clip <= 0`` disables clipping."""
    return policy.sample(obs, stochastic=True, generator=generator, ft_steps=ft_steps, eta=eta,
                         noise_clip=noise_clip if noise_clip > 0 else 0.0)
