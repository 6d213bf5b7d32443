"""DPPO: PPO over the two-level denoising MDP of a diffusion policy (Ren et al. 2024), with Mechanic.

Reference: A. Z. Ren, J. Lidard, L. L. Ankile, A. Simeonov, P. Agrawal,
A. Majumdar, B. Burchfiel, H. Dai, M. Simchowitz, "Diffusion Policy Policy
Optimization", arXiv:2409.00588 (2024). Written from the paper and the numbers
of its released configurations; no code was taken from it.

The environment MDP has one decision per action chunk (T_a executed actions,
reward = sum of their rewards). Inside a decision the K DDIM denoising steps
form an inner MDP whose "actions" are the denoised samples x_{k-1} ~
N(mu_theta(x_k, k, O), sigma_k^2 I): each step is a Gaussian policy with an
exact log-likelihood, so PPO applies to it directly (Sec. 4). What this class
does, with the released defaults (see ``config/rl.yaml``):

* only the last K' denoising steps use ``ft_net``, a trainable copy of the
  pretrained network; the earlier K - K' steps keep the frozen pretrained one
  (Sec. 5.1 / App.: fine-tuning fewer steps is cheaper and as good);
* a critic V(O) on the observation only, regressed on GAE(gamma, lambda)
  returns over environment decisions (:func:`~mechanic_rl_ros.rl.gae.gae`);
* every fine-tuned denoising step of a decision shares that decision's
  advantage, discounted by ``gamma_denoising`` per step away from the final
  one (:func:`~mechanic_rl_ros.rl.gae.denoising_discount`);
* the clipped PPO surrogate with a per-denoising-step clip range
  (:func:`~mechanic_rl_ros.rl.gae.clip_schedule`), the ratio taken against the
  **behaviour** log-probabilities recorded when the chunk was sampled; with
  ``logprob_reduction="mean"`` the log-ratio is the per-element mean over
  T_p x A, as DPPO computes it (the clip ranges of 0.001-0.01 are meant for it);
* exploration and likelihood noise floors (``min_sampling_std``,
  ``min_logprob_std``, both 0.1; implemented by the policy,
  ``policy.cfg.sampling``) and a clipped N(0, I) draw (``noise_clip`` = 3,
  the ``noise_clip`` option of :meth:`DiffusionPolicy.sample`);
* per-minibatch advantage normalisation, a running reward scale, critic-only
  warm-up updates, early stop of the epochs at ``target_kl``.

Asynchrony: each decision carries the version of the weights that sampled it;
:meth:`DPPO.update` refuses decisions more than ``max_staleness`` versions older
than the learner's current version (and any from a "future" version) and
counts them. An update is all-or-nothing: a NaN/inf loss or gradient raises
:class:`~mechanic_rl_ros.rl.errors.NonFiniteUpdateError` after restoring
networks, optimiser states (Mechanic's included), reward statistics and random
state, so the published weights stay the last good ones.
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn as nn

from mechanic_rl_ros.control.decision import index_obs
from mechanic_rl_ros.optim import build_optimizer, mechanic_scale
from mechanic_rl_ros.policy import DiffusionPolicy

from .buffer import Batch
from .config import DPPOConfig
from .critic import ObsCritic
from .errors import NonFiniteUpdateError
from .running_stats import RunningMeanStd
from .gae import (clip_schedule, denoising_advantages, denoising_discount, gae, normalize_advantages,
                  ppo_clip_loss)

FORMAT = "mechanic_rl_ros.dppo_learner/1"


def _build_optimizer(kind: str, params: list[nn.Parameter], lr: float, cfg: DPPOConfig) -> torch.optim.Optimizer:
    return build_optimizer(kind, params, lr, betas=cfg.adam_betas, eps=cfg.adam_eps,
                           **({"weight_decay": cfg.mechanic_weight_decay, "s_init": cfg.mechanic_s_init,
                               "num_betas": cfg.mechanic_num_betas} if kind == "mechanic" else {}))


def _order(batch: Batch) -> tuple[np.ndarray, np.ndarray]:
    """Row order grouping each episode's decisions in chunk order, and where each lambda-trace ends."""
    order = np.lexsort((batch.chunk, batch.episode))
    ep, ck = batch.episode[order], batch.chunk[order]
    ended = (batch.terminated | batch.truncated)[order]
    cont = np.zeros(len(order), dtype=bool)
    if len(order) > 1:
        cont[:-1] = (ep[1:] == ep[:-1]) & (ck[1:] == ck[:-1] + 1)
    return order, ~cont | ended


@dataclass
class ActResult:
    """Output of :meth:`DPPO.act`: what to execute and what to record for the learner."""

    actions: np.ndarray        #: float32 [B, T_p, A] real units (execute ``policy.executable(actions)``)
    chain: np.ndarray          #: float32 [B, K+1, T_p, A], the whole sampled chain
    chain_logprob: np.ndarray  #: float64 [B, K] (empty for deterministic sampling)
    policy_version: int


# ------------------------------------------------------------------------ DPPO
class DPPO:
    """The DPPO learner: policy (frozen ``net`` + trainable ``ft_net``), critic, optimisers, counters.

    Build it with :meth:`from_checkpoint` (a pretrained policy directory) or
    :meth:`load` (a learner checkpoint written by :meth:`save`). The weights
    it publishes are ``policy.ft_net``'s, for the last :attr:`finetune_steps`
    denoising steps, at version :attr:`policy_version`.
    """

    def __init__(self, policy: DiffusionPolicy, config: DPPOConfig | None = None):
        self.cfg = (config or DPPOConfig()).validate()
        cfg = self.cfg
        k = policy.cfg.sampling.inference_steps
        if cfg.finetune_steps > k:
            raise ValueError(f"finetune_steps = {cfg.finetune_steps} exceeds the policy's K = {k} denoising steps")
        self.policy = policy
        if policy.ft_net is None:
            policy.make_finetune_copy(cfg.finetune_steps)
        else:
            policy.net.requires_grad_(False)
            policy.ft_net.requires_grad_(True)
            policy.cfg.sampling.finetune_steps = cfg.finetune_steps
        s = policy.cfg.sampling
        if cfg.min_sampling_std is not None:
            s.min_sampling_std = float(cfg.min_sampling_std)
        if cfg.min_logprob_std is not None:
            s.min_logprob_std = float(cfg.min_logprob_std)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.critic = ObsCritic(policy.cfg, cfg.critic_hidden).to(policy.device)
        if cfg.critic_encoder_init == "pretrained":
            for cam in self.critic.cameras:
                self.critic.encoders[cam].load_state_dict(policy.net.encoders[cam].state_dict())
        self.actor_params = [p for p in policy.ft_net.parameters()]  # type: ignore[union-attr]
        self.actor_opt = _build_optimizer(cfg.actor_optimizer, self.actor_params, cfg.actor_lr, cfg)
        self.critic_opt = _build_optimizer(cfg.critic_optimizer, list(self.critic.parameters()), cfg.critic_lr,
                                           cfg)
        self.k = k
        self.n_elem = policy.cfg.pred_horizon * policy.cfg.action_dim
        self.policy_version = 0
        self.num_updates = 0          #: gradient (optimiser) steps
        self.update_calls = 0         #: successful calls of update() that used data
        self.counters = {"decisions_used": 0, "refused_stale": 0, "refused_future": 0, "env_steps_used": 0}
        self.reward_rms = RunningMeanStd()
        self._episode_return: dict[int, float] = {}
        self._rng = np.random.default_rng(cfg.seed)

    # ------------------------------------------------------------ building
    @classmethod
    def from_checkpoint(cls, directory: str | Path, config: DPPOConfig | None = None,
                        map_location: str | torch.device = "cpu") -> "DPPO":
        """Learner around a pretrained policy checkpoint (``DiffusionPolicy.save`` directory).

        A checkpoint that already holds an ``ft_net`` (a fine-tuned policy)
        continues from it; the version counter restarts at 0.
        """
        return cls(DiffusionPolicy.from_checkpoint(directory, map_location=map_location), config)

    @property
    def finetune_steps(self) -> int:
        return self.cfg.finetune_steps

    @property
    def ft_indices(self) -> list[int]:
        return list(range(self.k - self.cfg.finetune_steps, self.k))

    # -------------------------------------------------------------- acting
    @torch.no_grad()
    def act(self, obs: Mapping[str, Any], *, deterministic: bool = False,
            generator: torch.Generator | None = None) -> ActResult:
        """Sample action chunks for a batch of observation histories ``[B, T_o, ...]``.

        Stochastic (training): DPPO sampling with clipped noise (``noise_clip``);
        returns the chain and the behaviour log-probabilities to store with
        the decision. Deterministic (evaluation): DDIM, eta = 0, no log-probs.
        """
        clip = self.cfg.noise_clip if self.cfg.noise_clip > 0 else 0.0
        out = self.policy.sample(obs, stochastic=not deterministic, generator=generator, noise_clip=clip)
        b = out.actions.shape[0]
        logp = (out.logprobs.cpu().numpy().astype(np.float64) if out.logprobs is not None
                else np.zeros((b, 0), np.float64))
        return ActResult(actions=out.actions.cpu().numpy().astype(np.float32),
                         chain=out.chain.cpu().numpy().astype(np.float32), chain_logprob=logp,
                         policy_version=self.policy_version)

    # ------------------------------------------------------------- pieces
    def values(self, obs: Mapping[str, Any]) -> torch.Tensor:
        images, lowdim = self.policy.prepare_obs(obs)
        return self.critic(images, lowdim)

    def log_probs(self, obs: Mapping[str, Any], chain: torch.Tensor) -> torch.Tensor:
        """log pi_theta of the K' fine-tuned transitions of the whole chain ``[B, K+1, T_p, A]`` -> ``[B, K']``
        (summed over T_p x A), with gradients into ``ft_net``."""
        return self.policy.chain_log_prob(obs, chain, step_indices=self.ft_indices)

    @torch.no_grad()
    def _batched_values(self, obs: Mapping[str, Any], n: int, chunk: int = 256) -> torch.Tensor:
        return torch.cat([self.values(index_obs(obs, slice(i, i + chunk))).double().cpu() for i in range(0, n, chunk)])

    def _scale_rewards(self, batch: Batch, order: np.ndarray) -> np.ndarray:
        """DPPO's running reward scaling: r / std(running discounted return), per episode, in time order."""
        r = batch.reward[order].astype(np.float64)
        if not self.cfg.reward_scale_running:
            return r * self.cfg.reward_scale_const
        rets = np.empty_like(r)
        ep, ck = batch.episode[order], batch.chunk[order]
        ended = (batch.terminated | batch.truncated)[order]
        for i in range(len(r)):
            e = int(ep[i])
            prev = self._episode_return.pop(e, 0.0) if ck[i] > 0 else 0.0
            rets[i] = prev * self.cfg.gamma + r[i]
            if not ended[i]:
                self._episode_return[e] = rets[i]
        while len(self._episode_return) > 10000:
            self._episode_return.pop(next(iter(self._episode_return)))
        self.reward_rms.update(rets)
        return r / math.sqrt(self.reward_rms.var + 1e-8) * self.cfg.reward_scale_const

    # ------------------------------------------------------------- update
    def update(self, batch: Batch) -> dict[str, float]:
        """One DPPO update (``update_epochs`` passes of minibatch PPO) on complete decision steps.

        Returns the statistics dict: ``num_updates`` (gradient steps so far),
        ``policy_version``, ``actor_loss``, ``critic_loss``, ``approx_kl``,
        ``clip_fraction`` (means over the update's minibatches),
        ``actor_scale`` / ``critic_scale`` (Mechanic's learned scale, NaN for
        Adam), ``refused_stale`` / ``refused_future`` (this batch) and
        ``refused_stale_total``, ``batch_size``, ``decisions_used``,
        ``grad_steps``, ``epochs``, ``kl_stop``, ``actor_trained``,
        ``explained_variance``, ``reward_std``, ``ratio_mean``, ``update_s``.

        Raises ``ValueError`` for malformed input and
        :class:`NonFiniteUpdateError` for a NaN/inf loss or gradient; in both
        cases nothing changed.
        """
        t0 = time.perf_counter()
        self._validate(batch)
        v = self.policy_version
        stale = batch.policy_version < v - self.cfg.max_staleness
        future = batch.policy_version > v
        keep = ~(stale | future)
        stats: dict[str, float] = {
            "batch_size": float(len(batch)), "refused_stale": float(stale.sum()),
            "refused_future": float(future.sum()), "decisions_used": float(keep.sum()),
        }
        self.counters["refused_stale"] += int(stale.sum())
        self.counters["refused_future"] += int(future.sum())
        if not keep.any():
            stats.update({"grad_steps": 0.0, "epochs": 0.0, "actor_trained": 0.0, "kl_stop": 0.0,
                          **{k: float("nan") for k in ("actor_loss", "critic_loss", "approx_kl", "clip_fraction",
                                                       "explained_variance", "ratio_mean", "reward_std")}})
            return self._finish_stats(stats, t0)
        data = batch if keep.all() else batch.select(keep)
        snapshot = self._snapshot()
        try:
            stats.update(self._ppo(data))
        except Exception:
            self._restore(snapshot)
            raise
        self.counters["decisions_used"] += len(data)
        self.counters["env_steps_used"] += int(data.env_steps.sum())
        self.update_calls += 1
        if stats["actor_trained"]:
            self.policy_version += 1
        return self._finish_stats(stats, t0)

    def _finish_stats(self, stats: dict[str, float], t0: float) -> dict[str, float]:
        stats.update({
            "num_updates": float(self.num_updates), "policy_version": float(self.policy_version),
            "update_calls": float(self.update_calls),
            "actor_scale": mechanic_scale(self.actor_opt), "critic_scale": mechanic_scale(self.critic_opt),
            "refused_stale_total": float(self.counters["refused_stale"]),
            "refused_future_total": float(self.counters["refused_future"]),
            "update_s": time.perf_counter() - t0,
        })
        return stats

    def _validate(self, batch: Batch) -> None:
        n = len(batch)
        want = (n, self.k + 1, self.policy.cfg.pred_horizon, self.policy.cfg.action_dim)
        if batch.chain.shape != want:
            raise ValueError(f"batch.chain: expected shape {want} ([N, K+1, T_p, A]), got {batch.chain.shape}")
        if batch.chain_logprob.shape != (n, self.k):
            raise ValueError(f"batch.chain_logprob: expected shape {(n, self.k)} ([N, K]), "
                             f"got {batch.chain_logprob.shape}")
        for name in ("reward", "chain", "chain_logprob"):
            arr = np.asarray(getattr(batch, name))
            if not np.all(np.isfinite(arr)):
                rows = np.unique(np.nonzero(~np.isfinite(arr))[0])[:10].tolist()
                raise ValueError(f"batch.{name} is not finite (rows {rows}); the batch was refused, "
                                 "nothing was updated")

    def _ppo(self, data: Batch) -> dict[str, float]:
        cfg = self.cfg
        n = len(data)
        dev = self.policy.device
        order, trace_end = _order(data)
        data = data.select(order)
        rewards = torch.as_tensor(self._scale_rewards(data, np.arange(n)), dtype=torch.float64)
        values = self._batched_values(data.obs, n)
        next_values = self._batched_values(data.next_obs, n)
        # the task's success must come within max_steps and the observation does not show the time left:
        # with "terminate" a time-out is worth 0, as in DPPO, instead of the value of a state that looks the same
        terminal = data.terminated | data.truncated if cfg.truncation == "terminate" else data.terminated
        adv, returns = gae(rewards, values, next_values, torch.as_tensor(terminal),
                           torch.as_tensor(trace_end), cfg.gamma, cfg.gae_lambda)
        if not (torch.isfinite(adv).all() and torch.isfinite(returns).all()):
            raise NonFiniteUpdateError("DPPO.update: advantages/returns are not finite (critic output or "
                                       "reward scale); rolled back, the weights are the last good ones")
        discount = denoising_discount(cfg.finetune_steps, cfg.gamma_denoising).to(dev, torch.float32)
        clip = clip_schedule(cfg.finetune_steps, cfg.clip, cfg.clip_base, cfg.clip_rate).to(dev, torch.float32)
        chain = torch.as_tensor(data.chain, device=dev)
        old_lp = torch.as_tensor(data.chain_logprob[:, self.k - cfg.finetune_steps:], device=dev,
                                 dtype=torch.float64)
        ret32 = returns.to(dev, torch.float32)
        train_actor = self.update_calls >= cfg.critic_warmup_updates
        mb = min(cfg.minibatch_size, n)
        n_mb = max(1, n // mb)
        sums = {"actor_loss": 0.0, "critic_loss": 0.0, "approx_kl": 0.0, "clip_fraction": 0.0, "ratio_mean": 0.0}
        count, grad_steps, epochs, kl_stop, pending = 0, 0, 0, False, 0
        for _epoch in range(cfg.update_epochs):
            epochs += 1
            perm = self._rng.permutation(n)
            for j in range(n_mb):
                idx = perm[j * mb:(j + 1) * mb]
                obs_b = index_obs(data.obs, idx)
                with torch.set_grad_enabled(train_actor):
                    new_lp = self.log_probs(obs_b, chain[idx])
                logratio = (new_lp.double() - old_lp[idx])
                if cfg.logprob_reduction == "mean":
                    logratio = logratio / self.n_elem
                logratio = logratio.float()
                a = adv[idx].to(dev, torch.float32)
                if cfg.norm_adv:
                    a = normalize_advantages(a)
                a_k = denoising_advantages(a, discount)
                pg_loss, approx_kl, clip_frac = ppo_clip_loss(logratio, a_k, clip)
                v_pred = self.values(obs_b)
                v_loss = 0.5 * ((v_pred - ret32[idx]) ** 2).mean()
                loss = (pg_loss if train_actor else 0.0) + cfg.vf_coef * v_loss
                if not torch.isfinite(loss):
                    raise NonFiniteUpdateError(
                        f"DPPO.update: non-finite loss (actor {pg_loss.item()}, critic {v_loss.item()}) in epoch "
                        f"{epochs}, minibatch {j}; rolled back: weights, optimiser states and counters are the "
                        "last good ones")
                (loss / cfg.grad_accumulate).backward()
                pending += 1
                sums["actor_loss"] += pg_loss.item()
                sums["critic_loss"] += v_loss.item()
                sums["approx_kl"] += approx_kl.item()
                sums["clip_fraction"] += clip_frac.item()
                sums["ratio_mean"] += logratio.exp().mean().item()
                count += 1
                if pending == cfg.grad_accumulate or j == n_mb - 1:
                    self._step(train_actor)
                    grad_steps += 1
                    pending = 0
                if cfg.target_kl is not None and approx_kl.item() > cfg.target_kl:
                    kl_stop = True
                    break
            if kl_stop:
                break
        self.num_updates += grad_steps
        var_y = float(returns.var(unbiased=False))
        ev = float("nan") if var_y == 0 else 1.0 - float((returns - values).var(unbiased=False)) / var_y
        out = {k: v / max(count, 1) for k, v in sums.items()}
        out.update({"grad_steps": float(grad_steps), "epochs": float(epochs), "kl_stop": float(kl_stop),
                    "actor_trained": float(train_actor and grad_steps > 0), "explained_variance": ev,
                    "reward_std": math.sqrt(self.reward_rms.var) if cfg.reward_scale_running else float("nan")})
        return out

    def _step(self, train_actor: bool) -> None:
        """Optimiser steps after checking the gradients (Mechanic checks again and raises ValueError)."""
        groups = [("critic", list(self.critic.parameters()), self.critic_opt)]
        if train_actor:
            groups.insert(0, ("actor", self.actor_params, self.actor_opt))
        for name, params, _ in groups:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
            if not torch.isfinite(norm):
                raise NonFiniteUpdateError(f"DPPO.update: non-finite {name} gradient (norm {norm.item()}); rolled "
                                           "back: weights, optimiser states and counters are the last good ones")
        if train_actor and self.cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.actor_params, self.cfg.max_grad_norm)
        try:
            for _, _, opt in groups:
                opt.step()
        except ValueError as e:
            raise NonFiniteUpdateError(f"DPPO.update: optimiser refused the step ({e}); rolled back") from e
        self.actor_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)

    # --------------------------------------------------- snapshot / restore
    def _snapshot(self) -> dict[str, Any]:
        return {
            "ft_net": {k: v.detach().clone() for k, v in self.policy.ft_net.state_dict().items()},  # type: ignore
            "critic": {k: v.detach().clone() for k, v in self.critic.state_dict().items()},
            "actor_opt": copy.deepcopy(self.actor_opt.state_dict()),
            "critic_opt": copy.deepcopy(self.critic_opt.state_dict()),
            "scalars": self._scalars(),
        }

    def _restore(self, snap: Mapping[str, Any]) -> None:
        with torch.no_grad():
            self.policy.ft_net.load_state_dict(snap["ft_net"])  # type: ignore[union-attr]
            self.critic.load_state_dict(snap["critic"])
        self.actor_opt.load_state_dict(snap["actor_opt"])
        self.critic_opt.load_state_dict(snap["critic_opt"])
        self.actor_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        self._load_scalars(snap["scalars"])

    def _scalars(self) -> dict[str, Any]:
        return {
            "policy_version": self.policy_version, "num_updates": self.num_updates,
            "update_calls": self.update_calls, "counters": dict(self.counters),
            "reward_rms": self.reward_rms.state(),
            "episode_return": [[int(k), float(v)] for k, v in self._episode_return.items()],
            "rng": copy.deepcopy(self._rng.bit_generator.state),
        }

    def _load_scalars(self, s: Mapping[str, Any]) -> None:
        self.policy_version = int(s["policy_version"])
        self.num_updates = int(s["num_updates"])
        self.update_calls = int(s["update_calls"])
        self.counters = {k: int(v) for k, v in s["counters"].items()}
        self.reward_rms.load(s["reward_rms"])
        self._episode_return = {int(k): float(v) for k, v in s["episode_return"]}
        self._rng.bit_generator.state = copy.deepcopy(s["rng"])

    # -------------------------------------------------------- state / disk
    def state_dict(self) -> dict[str, Any]:
        """Networks, optimisers and scalars (tensors, numbers, strings, lists: ``weights_only``-loadable)."""
        return {
            "format": FORMAT, "config": self.cfg.to_dict(),
            "ft_net": self.policy.ft_net.state_dict(),  # type: ignore[union-attr]
            "critic": self.critic.state_dict(),
            "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
            "scalars": self._scalars(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("format") != FORMAT:
            raise ValueError(f"not a DPPO learner state: format {state.get('format')!r}")
        if int(state["config"]["finetune_steps"]) != self.cfg.finetune_steps:
            raise ValueError(f"state has finetune_steps = {state['config']['finetune_steps']}, this learner {self.cfg.finetune_steps}")
        with torch.no_grad():
            self.policy.ft_net.load_state_dict(state["ft_net"])  # type: ignore[union-attr]
            self.critic.load_state_dict(state["critic"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self._load_scalars(state["scalars"])

    def save(self, directory: str | Path) -> Path:
        """Write a learner checkpoint directory:

        * ``policy/`` -- the policy checkpoint (``model.safetensors`` with
          ``net`` and ``ft_net``, ``config.json``), loadable by
          ``DiffusionPolicy.from_checkpoint`` and by ``mechanic-rl eval``;
        * ``critic.safetensors``;
        * ``optimizers.pt`` -- actor/critic optimiser state dicts (torch.save,
          read back with ``weights_only=True``; a local file, never sent);
        * ``learner.json`` -- format, config, versions and counters, reward
          statistics, random state, Mechanic scales (for reading).
        """
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.policy.train_info = dict(self.policy.train_info, rl_policy_version=self.policy_version,
                                      rl_num_updates=self.num_updates)
        self.policy.save(d / "policy")
        save_file({k: v.detach().cpu().contiguous() for k, v in self.critic.state_dict().items()},
                  str(d / "critic.safetensors"))
        torch.save({"actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict()},
                   d / "optimizers.pt")
        meta = {"format": FORMAT, "config": self.cfg.to_dict(), "scalars": self._scalars(),
                "actor_scale": mechanic_scale(self.actor_opt), "critic_scale": mechanic_scale(self.critic_opt),
                "arch_id": self.policy.arch_id}
        (d / "learner.json").write_text(json.dumps(meta, indent=1, allow_nan=True) + "\n")
        return d

    @classmethod
    def load(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> "DPPO":
        """Rebuild a learner from :meth:`save` output, bit-for-bit where it left off."""
        from safetensors.torch import load_file

        d = Path(directory)
        meta = json.loads((d / "learner.json").read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{d}/learner.json: format {meta.get('format')!r}, expected {FORMAT!r}")
        policy = DiffusionPolicy.from_checkpoint(d / "policy", map_location=map_location)
        learner = cls(policy, DPPOConfig.from_dict(meta["config"]))
        learner.critic.load_state_dict(load_file(str(d / "critic.safetensors")))
        opts = torch.load(d / "optimizers.pt", weights_only=True, map_location=map_location)
        learner.actor_opt.load_state_dict(opts["actor_opt"])
        learner.critic_opt.load_state_dict(opts["critic_opt"])
        learner._load_scalars(meta["scalars"])
        return learner
