"""The regression fine-tuning problem on which Mechanic's learning is measured.

A 4-16-1 tanh MLP starts from 'pretrained' weights A and fits the noisy
outputs of a perturbed network B: 4096 points, noise floor ~0.032, full-data
loss 0.150 at the start. ``test/test_mechanic_training.py`` asserts on it,
``studies/plot_mechanic.py`` plots it and ``docs/mechanic.md`` quotes both.
Pure torch and deterministic (fixed seeds); nothing here is used in training
the policy.
"""
from __future__ import annotations

from typing import Callable, Iterable, List, Optional, Tuple

import torch

__all__ = ["N", "D", "H", "net", "finetune_problem", "train", "full_loss"]

N, D, H = 4096, 4, 16

Problem = Tuple[torch.Tensor, torch.Tensor, dict]


def net() -> torch.nn.Module:
    """A fresh D-H-1 tanh MLP (initialised from torch's global generator)."""
    return torch.nn.Sequential(torch.nn.Linear(D, H), torch.nn.Tanh(), torch.nn.Linear(H, 1))


def finetune_problem() -> Problem:
    """``(x, y, init)``: inputs [N, D], noisy targets [N, 1] of the perturbed
    network B, and the state dict of the pretrained network A to start from."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=gen)
    torch.manual_seed(1)
    pre = net()
    target = net()
    with torch.no_grad():
        for p in pre.parameters():
            p.mul_(2.0)
        for pa, pb in zip(pre.parameters(), target.parameters()):
            pb.copy_(pa + 0.5 * torch.randn(pa.shape, generator=gen) * pa.abs().mean())
        clean = target(x)
        y = clean + 0.3 * clean.std() * torch.randn(N, 1, generator=gen)
    return x, y, pre.state_dict()


def train(make_opt: Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer],
          problem: Problem, steps: int, batch: int, seed: int = 3,
          clip: Optional[float] = None, dtype: torch.dtype = torch.float32,
          after_step: Optional[Callable[..., None]] = None
          ) -> Tuple[float, torch.optim.Optimizer, List[float]]:
    """Minibatch MSE training from ``problem``'s initial weights.

    ``make_opt(params)`` builds the optimizer; minibatch indices come from
    ``seed``; with ``clip``, ``clip_grad_norm_(max_norm=clip)`` runs before each
    step; ``after_step(opt, model, t)`` is called after step ``t`` (1-based).
    Returns the final full-data loss, the optimizer and the gradient norms
    before clipping (empty without ``clip``).
    """
    x, y, init = problem
    model = net()
    model.load_state_dict(init)
    model.to(dtype)
    x, y = x.to(dtype), y.to(dtype)
    opt = make_opt(model.parameters())
    index = torch.randint(0, x.shape[0], (steps, batch),
                          generator=torch.Generator().manual_seed(seed))
    norms = []
    for t in range(steps):
        opt.zero_grad()
        batch_x, batch_y = x[index[t]], y[index[t]]
        ((model(batch_x) - batch_y) ** 2).mean().backward()
        if clip is not None:
            norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip)))
        opt.step()
        if after_step is not None:
            after_step(opt, model, t + 1)
    return full_loss(model, (x, y, init)), opt, norms


def full_loss(model: torch.nn.Module, problem: Problem) -> float:
    """Mean squared error of ``model`` over all of ``problem``'s points (in float32)."""
    x, y, _ = problem
    with torch.no_grad():
        return float(((model(x) - y) ** 2).float().mean())
