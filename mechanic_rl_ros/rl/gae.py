"""Advantages and the DPPO policy loss as plain functions of tensors (no networks, no state).

Everything the tests check against hand-computed values lives here:

* :func:`gae` -- generalised advantage estimation over environment decision
  steps (Schulman et al., ICLR 2016, Eq. 16), with terminations (no bootstrap)
  and truncations / batch ends (bootstrap, trace cut) kept apart;
* :func:`denoising_discount` -- DPPO's discount along the fine-tuned denoising
  steps (Ren et al. 2024, Sec. 4: in the two-layer "diffusion policy MDP" only
  the final denoising step, which emits the executed action, is rewarded; the
  released implementation discounts the shared advantage by gamma_denoise per
  step towards the noisier ones);
* :func:`clip_schedule` -- DPPO's per-denoising-step PPO clip range, growing
  exponentially from ``clip_base`` at the first fine-tuned (noisiest) step to
  ``clip`` at the last one (Ren et al. 2024, appendix on PPO details; values
  from their released configurations);
* :func:`ppo_clip_loss` -- the clipped surrogate (Schulman et al. 2017, Eq. 7)
  with the k3 KL estimator and the clip fraction as diagnostics.
"""
from __future__ import annotations

import math

import torch


def gae(rewards: torch.Tensor, values: torch.Tensor, next_values: torch.Tensor, terminated: torch.Tensor,
        trace_end: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    r"""GAE(gamma, lambda) over ``N`` decision steps laid out trajectory by trajectory in time order.

    .. math::
        \delta_t = r_t + \gamma (1 - \mathrm{term}_t) V(s'_t) - V(s_t), \qquad
        A_t = \delta_t + \gamma \lambda (1 - \mathrm{end}_t) A_{t+1}

    (Schulman et al. 2016, Eq. 16, truncated to the data at hand).

    Args:
        rewards, values: ``[N]``; ``values[t] = V(s_t)``.
        next_values: ``[N]``, ``V(s'_t)`` of the state after step ``t`` (the
            next decision's observation, or the final observation of a
            truncated episode); ignored where ``terminated``.
        terminated: ``[N]`` bool, the episode reached a terminal state at step
            ``t``: no bootstrap.
        trace_end: ``[N]`` bool, step ``t + 1`` of the layout does not continue
            step ``t``'s trajectory (episode ended, time limit, or the data
            stops): the lambda-trace is cut there. Must be true where
            ``terminated`` and at ``t = N - 1``.
    Returns:
        ``(advantages, returns)`` with ``returns = advantages + values``
        (the critic's regression target, the TD(lambda) return), dtype of
        ``rewards``.
    """
    n = rewards.shape[0]
    for name, t in (("values", values), ("next_values", next_values), ("terminated", terminated),
                    ("trace_end", trace_end)):
        if t.shape != (n,):
            raise ValueError(f"gae: {name} must have shape ({n},), got {tuple(t.shape)}")
    if n and not bool(trace_end[-1]):
        raise ValueError("gae: trace_end[-1] must be true (nothing follows the last step)")
    if bool((terminated & ~trace_end).any()):
        raise ValueError("gae: a terminated step must also end its trace")
    not_term = (~terminated).to(rewards.dtype)
    cont = (~trace_end).to(rewards.dtype)
    delta = rewards + gamma * not_term * next_values - values
    adv = torch.empty_like(rewards)
    running = rewards.new_zeros(())
    for t in range(n - 1, -1, -1):
        running = delta[t] + gamma * lam * cont[t] * running
        adv[t] = running
    return adv, adv + values


def denoising_discount(finetune_steps: int, gamma_denoising: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Weights ``[K']`` of the shared advantage on the fine-tuned denoising steps, earliest (noisiest) first.

    DPPO's denoising MDP (Ren et al. 2024, Sec. 4) rewards only the final
    denoising step, which produces the executed action; the step ``j`` steps
    before it sees that reward discounted ``gamma_denoising ** j``. So the
    fine-tuned step ``i`` (``i = 0 .. K'-1``, in sampling order) gets
    ``gamma_denoising ** (K' - 1 - i)``, and the last one gets 1.
    """
    if finetune_steps < 1:
        raise ValueError(f"finetune_steps must be >= 1, got {finetune_steps}")
    return torch.tensor([gamma_denoising ** (finetune_steps - 1 - i) for i in range(finetune_steps)], dtype=dtype)


def denoising_advantages(advantages: torch.Tensor, discount: torch.Tensor) -> torch.Tensor:
    """Advantage of every fine-tuned denoising step ``[B, K']``: the decision's advantage ``[B]`` shared by its
    K' steps, times :func:`denoising_discount` ``[K']``."""
    return advantages[:, None] * discount.to(advantages.dtype)[None, :]


def clip_schedule(finetune_steps: int, clip: float, clip_base: float, rate: float,
                  dtype: torch.dtype = torch.float64) -> torch.Tensor:
    r"""PPO clip range per fine-tuned denoising step ``[K']``, earliest (noisiest) first.

    .. math::
        \epsilon_i = \epsilon_{base} + (\epsilon - \epsilon_{base})
            \frac{e^{r\,i/(K'-1)} - 1}{e^{r} - 1}

    so the noisiest fine-tuned step gets ``clip_base`` and the last one
    ``clip`` (DPPO: 0.001 -> 0.01 with rate 3; a tighter range where the
    denoising step is noisier). With ``K' = 1`` the single step gets ``clip``.
    """
    if finetune_steps < 1:
        raise ValueError(f"finetune_steps must be >= 1, got {finetune_steps}")
    if finetune_steps == 1:
        return torch.tensor([clip], dtype=dtype)
    if rate == 0:
        frac = [i / (finetune_steps - 1) for i in range(finetune_steps)]
    else:
        frac = [math.expm1(rate * i / (finetune_steps - 1)) / math.expm1(rate) for i in range(finetune_steps)]
    return torch.tensor([clip_base + (clip - clip_base) * f for f in frac], dtype=dtype)


def normalize_advantages(adv: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``(A - mean) / (std + eps)`` over the (mini)batch, unbiased std as DPPO; unchanged for fewer than 2."""
    if adv.numel() < 2:
        return adv
    return (adv - adv.mean()) / (adv.std() + eps)


def ppo_clip_loss(logratio: torch.Tensor, advantages: torch.Tensor,
                  clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Clipped surrogate, averaged over every (decision, denoising step) pair.

    .. math::
        L = \mathrm{mean}\, \max\big(-A\,\rho,\ -A\,\mathrm{clip}(\rho, 1 - \epsilon, 1 + \epsilon)\big),
        \qquad \rho = e^{\log \rho}

    (Schulman et al. 2017, Eq. 7, as a loss to minimise).

    Args:
        logratio: ``[B, K']`` log(pi_theta / pi_behaviour) per denoising step.
        advantages: ``[B, K']`` (already normalised and denoising-discounted).
        clip: ``[K']`` clip range per denoising step (or a scalar tensor).
    Returns:
        ``(loss, approx_kl, clip_fraction)``; the last two are detached:
        ``approx_kl = mean((rho - 1) - log rho)`` (the non-negative "k3"
        estimator of KL(behaviour || current), Schulman 2020, as DPPO logs it)
        and the fraction of pairs with ``|rho - 1| > eps``.
    """
    ratio = logratio.exp()
    lo, hi = 1.0 - clip, 1.0 + clip
    unclipped = -advantages * ratio
    clipped = -advantages * torch.minimum(torch.maximum(ratio, lo), hi)
    loss = torch.maximum(unclipped, clipped).mean()
    with torch.no_grad():
        approx_kl = ((ratio - 1.0) - logratio).mean()
        clip_fraction = ((ratio - 1.0).abs() > clip).to(logratio.dtype).mean()
    return loss, approx_kl, clip_fraction
