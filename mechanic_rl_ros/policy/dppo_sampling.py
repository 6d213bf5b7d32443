"""DPPO sampling with clipped exploration noise -- a separate extension of :meth:`DiffusionPolicy.sample`.

Added by the RL core (mechanic_rl_ros/rl) and kept out of ``policy.py`` on
purpose: it reuses the policy's own noise floors (``_stds``: sampling std
floored at ``min_sampling_std``, log-prob std at ``min_logprob_std``), x0
clipping and fine-tuned-step routing, and adds the one DPPO ingredient
``sample`` lacks: the standard-normal draw of every stochastic denoising step
is clipped to ``[-noise_clip, noise_clip]`` before scaling (Ren et al. 2024,
released configurations: ``randn_clip_value = 3``), which keeps rare 4-sigma
draws from producing wild actions. Log-probabilities are those of the
*unclipped* Gaussian at the sampled point, as in DPPO, so
:meth:`DiffusionPolicy.chain_log_prob` re-evaluates them exactly.

With ``noise_clip <= 0`` (or ``inf``) the result equals ``policy.sample(...,
stochastic=True)`` bit for bit for the same generator (tested). If the policy
grows a ``noise_clip`` option of its own, this module can go.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch

from .diffusion import ddim_mean_sigma, gaussian_log_prob
from .policy import DiffusionPolicy, DiffusionSample


@torch.no_grad()
def sample_clipped_noise(policy: DiffusionPolicy, obs: Mapping[str, Any], *, noise_clip: float = 3.0,
                         generator: torch.Generator | None = None, ft_steps: int | None = None,
                         eta: float | None = None) -> DiffusionSample:
    """Stochastic DPPO sampling like ``policy.sample(obs, stochastic=True)`` with the noise clipped.

    Returns the same :class:`DiffusionSample` (full K-step chain, per-step
    log-probabilities summed over the T_p x A elements).
    """
    s = policy.cfg.sampling
    k = int(s.inference_steps)
    eta = float(s.eta if eta is None else eta)
    n_ft = policy._resolve_ft(ft_steps, k)
    sp = policy.schedule.step_params(k)
    sigma, std, lp_std = policy._stds(sp.ddim_sigma_unit, eta)
    images, lowdim = policy.prepare_obs(obs)
    cond_base = policy.net.encode(images, lowdim) if n_ft < k else None
    cond_ft = policy.ft_net.encode(images, lowdim) if n_ft > 0 else None  # type: ignore[union-attr]
    b = (cond_base if cond_base is not None else cond_ft).shape[0]  # type: ignore[union-attr]
    dev, dt = policy.device, torch.float32
    shape = (b, policy.cfg.pred_horizon, policy.cfg.action_dim)
    x = torch.randn(shape, generator=generator, dtype=dt).to(dev)
    clip_z = noise_clip > 0 and math.isfinite(noise_clip)
    chain, logps = [x], []
    clip = s.clip_action
    for i in range(k):
        use_ft = i >= k - n_ft
        net, cond = (policy.ft_net, cond_ft) if use_ft else (policy.net, cond_base)
        t = sp.timesteps[i].to(dev).expand(b)
        eps = net(x, t, cond)  # type: ignore[misc]
        c = [v[i].to(device=dev, dtype=dt) for v in (sp.abar, sp.abar_prev, sigma, std, lp_std)]
        mean, _ = ddim_mean_sigma(x, eps, c[0], c[1], c[2], s.clip_x0)
        z = torch.randn(shape, generator=generator, dtype=dt).to(dev)
        if clip_z:
            z = z.clamp(-noise_clip, noise_clip)
        x = mean + c[3] * z
        if s.clip_chain and clip > 0:
            x = x.clamp(-clip, clip)
        logps.append(gaussian_log_prob(x, mean, c[4]).sum(dim=(-1, -2)))
        chain.append(x)
    x0 = x.clamp(-clip, clip) if clip > 0 else x
    return DiffusionSample(actions=policy.normalizer.action.unnormalize(x0), actions_norm=x0,
                           chain=torch.stack(chain, dim=1), logprobs=torch.stack(logps, dim=1),
                           timesteps=sp.timesteps.clone(), ft_steps=n_ft)
