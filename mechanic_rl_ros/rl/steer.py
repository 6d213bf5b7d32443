"""Noise-space SAC: steer a frozen diffusion policy through its initial noise x_K, with Mechanic.

Idea from DSRL (Wagenmaker et al., CoRL 2025, "Steering Your Diffusion Policy with Latent Space
RL"): the pretrained diffusion policy with deterministic DDIM is a fixed map
(observation, x_K) -> action chunk. Treat x_K as the action of a new MDP and learn a small
policy over it with SAC; the diffusion policy stays frozen and is used as a black box. Critic
design after RLPD (Ball et al., ICML 2023): an ensemble of Q networks with LayerNorm, high
update-to-data ratio, targets from the minimum over a random subset of the target ensemble.
Written from the papers' descriptions; no code was taken from them.

Here:

* the actor and the critics read the frozen policy's observation features (``policy.encode``:
  per camera the ResNet keypoint features of the T_o frames, plus the normalised joint state);
* the actor is an MLP -> tanh-squashed Gaussian over ``noise_dim = T_p * A`` dims, scaled by
  ``noise_bound`` (x_K in [-b, b]^{T_p x A}); the deterministic action is ``b * tanh(mu)``;
* with ``latent_dim`` = d > 0 the actor works in a d-dimensional latent instead: z in [-b, b]^d
  (tanh-squashed Gaussian, entropy per latent dimension) and x_K = P z with a fixed random
  P (noise_dim x d, entries N(0, 1/d), drawn from ``seed``, saved with the actor), so z ~ N(0, I_d)
  gives x_K entries of unit variance. The critics still read the full x_K, so the warm-up's
  x_K ~ N(0, I) (the pretrained policy) and the actor's x_K are stored alike;
* the bootstrapped value is clipped to [0, ``q_max``] (with sparse 0/1 reward and episodes that end
  on success every return lies in [0, 1]; without the clip Q rose to 4.5 in 1 700 control steps,
  see docs/offpolicy.md);
* the entropy term is per dimension (log pi / noise_dim), with a learned temperature
  ``alpha = exp(log_alpha)`` driven to the target entropy per dimension;
* every optimiser (actor, critic ensemble, temperature) is ``Mechanic(Adam(lr=1))`` unless
  ``optimizer="adam"`` (then Adam with ``lr``, for the comparison);
* :meth:`SteerLearner.update` is all-or-nothing: the three losses and all gradients are computed
  first; if any is non-finite nothing is stepped (weights, optimiser states, temperature and the
  update counter stay as they were) and ``nonfinite_skipped`` counts it.
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mechanic_rl_ros.optim import Mechanic
from mechanic_rl_ros.rl.persist import read_learner, save_learner

FORMAT = "mechanic_rl_ros.steer_learner/1"


@dataclass
class SteerConfig:
    feat_dim: int = 144
    noise_dim: int = 128            #: T_p * A of the frozen policy
    hidden: int = 256
    layers: int = 2
    num_critics: int = 2            #: ensemble size
    target_subset: int = 2          #: the TD target is the min over this many random target critics
    gamma: float = 0.99             #: per decision (action chunk)
    tau: float = 0.005              #: Polyak rate of the target critics
    batch_size: int = 256
    noise_bound: float = 1.5        #: x_K in [-b, b] (with latent_dim: z in [-b, b]^latent_dim)
    latent_dim: int = 0             #: > 0: the actor picks z (this many dims), x_K = P z (fixed random P)
    target_entropy: float = -0.5    #: per noise dimension
    init_alpha: float = 0.01
    actor_q: str = "min"            #: how the actor aggregates the ensemble: min or mean
    q_max: float = 1.0              #: clip the bootstrapped value to [0, q_max] (sparse 0/1 reward,
                                    #: episode ends on success: returns lie in [0, 1]); 0 = no clip
    optimizer: str = "mechanic"     #: mechanic (Mechanic(Adam(lr=1))) or adam (Adam(lr))
    lr: float = 3e-4                #: only for optimizer=adam
    seed: int = 0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SteerConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown learner keys: {sorted(unknown)}")
        return cls(**dict(d))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mlp(inp: int, hidden: int, layers: int, out: int, layer_norm: bool) -> nn.Sequential:
    mods: list[nn.Module] = []
    d = inp
    for _ in range(layers):
        mods.append(nn.Linear(d, hidden))
        if layer_norm:
            mods.append(nn.LayerNorm(hidden))
        mods.append(nn.ReLU())
        d = hidden
    mods.append(nn.Linear(d, out))
    return nn.Sequential(*mods)


class NoiseActor(nn.Module):
    """features -> tanh-squashed Gaussian over x_K (flattened), scaled to [-bound, bound].

    With ``latent_dim`` > 0 the Gaussian is over a latent z in [-bound, bound]^latent_dim and
    x_K = z @ proj.T, ``proj`` a fixed [noise_dim, latent_dim] matrix (N(0, 1/latent_dim) entries,
    drawn with ``proj_seed``; a buffer, so it is saved and loaded with the actor). The log-probability
    is then that of z, per latent dimension."""

    LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0

    def __init__(self, feat_dim: int, noise_dim: int, hidden: int, layers: int, bound: float,
                 latent_dim: int = 0, proj_seed: int = 0):
        super().__init__()
        self.noise_dim, self.bound = int(noise_dim), float(bound)
        self.latent_dim = int(latent_dim)
        if self.latent_dim < 0:
            raise ValueError(f"latent_dim must be >= 0, got {latent_dim}")
        self.act_dim = self.latent_dim or self.noise_dim
        self.net = _mlp(feat_dim, hidden, layers, 2 * self.act_dim, layer_norm=True)
        if self.latent_dim:
            gen = torch.Generator().manual_seed(int(proj_seed) + 4242)
            proj = torch.randn((self.noise_dim, self.latent_dim), generator=gen) / math.sqrt(self.latent_dim)
            self.register_buffer("proj", proj)

    def to_noise(self, z: torch.Tensor) -> torch.Tensor:
        """The actor's output space -> x_K (identity without a latent)."""
        return z @ self.proj.t() if self.latent_dim else z

    def forward(self, feat: torch.Tensor, deterministic: bool = False,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_K [B, noise_dim], log pi per dimension [B]) -- rsample, differentiable."""
        mu, log_std = self.net(feat).chunk(2, dim=-1)
        log_std = log_std.clamp(self.LOG_STD_MIN, self.LOG_STD_MAX)
        if deterministic:
            u = mu
        else:
            eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype).to(mu.device)
            u = mu + log_std.exp() * eps
        a = torch.tanh(u)
        # log N(u; mu, std) - log|d(b tanh u)/du|, summed over dims, then per dimension
        lp_u = -0.5 * ((u - mu) / log_std.exp()).pow(2) - log_std - 0.5 * math.log(2 * math.pi)
        log_det = math.log(self.bound) + 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
        logp = (lp_u - log_det).sum(-1) / self.act_dim
        return self.to_noise(self.bound * a), logp


class QEnsemble(nn.Module):
    """``n`` Q(features, x_K) networks with LayerNorm, evaluated in one batched pass -> [n, B]."""

    def __init__(self, n: int, feat_dim: int, noise_dim: int, hidden: int, layers: int):
        super().__init__()
        self.n = int(n)
        dims = [feat_dim + noise_dim] + [hidden] * layers + [1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.norms_w = nn.ParameterList()
        self.norms_b = nn.ParameterList()
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            w = torch.empty(self.n, a, b)
            for j in range(self.n):  # the default init of nn.Linear, per member
                lin = nn.Linear(a, b)
                w[j] = lin.weight.detach().t()
            bound = 1.0 / math.sqrt(a)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.empty(self.n, 1, b).uniform_(-bound, bound)))
            if i < len(dims) - 2:
                self.norms_w.append(nn.Parameter(torch.ones(self.n, 1, b)))
                self.norms_b.append(nn.Parameter(torch.zeros(self.n, 1, b)))

    def forward(self, feat: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        x = torch.cat([feat, noise], dim=-1)
        x = x.unsqueeze(0).expand(self.n, *x.shape)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b, x, w)
            if i < last:
                x = F.layer_norm(x, x.shape[-1:]) * self.norms_w[i] + self.norms_b[i]
                x = F.relu(x)
        return x.squeeze(-1)


def build_optimizer(params: list[nn.Parameter], cfg: SteerConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "mechanic":
        return Mechanic(torch.optim.Adam(params, lr=1.0))
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=float(cfg.lr))
    raise ValueError(f"optimizer must be mechanic or adam, got {cfg.optimizer!r}")


def _scale(opt: torch.optim.Optimizer) -> float:
    return float(opt.scale) if isinstance(opt, Mechanic) else float("nan")


class SteerLearner:
    """Noise-space SAC learner (see the module docstring)."""

    def __init__(self, cfg: SteerConfig, device: str | torch.device = "cpu"):
        if cfg.actor_q not in ("min", "mean"):
            raise ValueError(f"actor_q must be min or mean, got {cfg.actor_q!r}")
        if not 1 <= cfg.target_subset <= cfg.num_critics:
            raise ValueError("target_subset must be in [1, num_critics]")
        self.cfg = cfg
        self.device = torch.device(device)
        torch.manual_seed(cfg.seed)
        self.actor = NoiseActor(cfg.feat_dim, cfg.noise_dim, cfg.hidden, cfg.layers, cfg.noise_bound,
                                cfg.latent_dim, cfg.seed).to(self.device)
        self.critic = QEnsemble(cfg.num_critics, cfg.feat_dim, cfg.noise_dim, cfg.hidden, cfg.layers).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(cfg.init_alpha), device=self.device))
        self.actor_opt = build_optimizer(list(self.actor.parameters()), cfg)
        self.critic_opt = build_optimizer(list(self.critic.parameters()), cfg)
        self.alpha_opt = build_optimizer([self.log_alpha], cfg)
        self.generator = torch.Generator().manual_seed(cfg.seed + 1)
        self.num_updates = 0
        self.nonfinite_skipped = 0
        self.version = 0  #: bumps with every successful update (the published actor changed)

    # ---------------------------------------------------------------- acting
    @torch.no_grad()
    def act(self, feat: torch.Tensor, deterministic: bool = False,
            generator: torch.Generator | None = None) -> torch.Tensor:
        """x_K [B, noise_dim] for features [B, feat_dim]."""
        return self.actor(feat.to(self.device, torch.float32), deterministic=deterministic,
                          generator=generator or self.generator)[0]

    @property
    def alpha(self) -> float:
        return float(self.log_alpha.detach().exp())

    # ---------------------------------------------------------------- update
    def update(self, batch: Mapping[str, Any], update_actor: bool = True) -> dict[str, float]:
        """One gradient step of the critics (and, with ``update_actor``, of actor and temperature).

        Nothing is stepped if a loss or gradient is non-finite (counted in ``nonfinite_skipped``)."""
        cfg, dev = self.cfg, self.device
        t = {k: torch.as_tensor(np.asarray(batch[k]), dtype=torch.float32, device=dev)
             for k in ("feat", "noise", "reward", "done", "next_feat")}
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            na, nlogp = self.actor(t["next_feat"], generator=self.generator)
            qn = self.critic_target(t["next_feat"], na)
            if cfg.target_subset < cfg.num_critics:
                idx = torch.randperm(cfg.num_critics, generator=self.generator)[:cfg.target_subset].to(dev)
                qn = qn[idx]
            v_next = qn.min(0).values - alpha * nlogp
            if cfg.q_max > 0:
                v_next = v_next.clamp(0.0, cfg.q_max)
            target = t["reward"] + cfg.gamma * (1.0 - t["done"]) * v_next
        q = self.critic(t["feat"], t["noise"])
        critic_loss = (q - target.unsqueeze(0)).pow(2).mean(1).sum()
        c_params = list(self.critic.parameters())
        c_grads = torch.autograd.grad(critic_loss, c_params)
        losses = [critic_loss]
        a_grads: tuple[torch.Tensor, ...] = ()
        al_grads: tuple[torch.Tensor, ...] = ()
        stats: dict[str, float] = {}
        if update_actor:
            a, logp = self.actor(t["feat"], generator=self.generator)
            qa = self.critic(t["feat"], a)
            qa = qa.min(0).values if cfg.actor_q == "min" else qa.mean(0)
            actor_loss = (alpha * logp - qa).mean()
            a_params = list(self.actor.parameters())
            a_grads = torch.autograd.grad(actor_loss, a_params)
            alpha_loss = -(self.log_alpha * (logp.detach() + cfg.target_entropy)).mean()
            al_grads = torch.autograd.grad(alpha_loss, [self.log_alpha])
            losses += [actor_loss, alpha_loss]
            stats.update(actor_loss=float(actor_loss.detach()), alpha_loss=float(alpha_loss.detach()),
                         entropy=float(-logp.detach().mean()), q_pi=float(qa.detach().mean()))
        finite = all(bool(torch.isfinite(x).all()) for x in (*losses, *c_grads, *a_grads, *al_grads))
        if not finite:
            self.nonfinite_skipped += 1
            stats.update(critic_loss=float("nan"), skipped=1.0, nonfinite_skipped=float(self.nonfinite_skipped))
            return stats
        for p, g in zip(c_params, c_grads):
            p.grad = g
        self.critic_opt.step()
        self.critic_opt.zero_grad(set_to_none=True)
        if update_actor:
            for p, g in zip(self.actor.parameters(), a_grads):
                p.grad = g
            self.actor_opt.step()
            self.actor_opt.zero_grad(set_to_none=True)
            self.log_alpha.grad = al_grads[0]
            self.alpha_opt.step()
            self.alpha_opt.zero_grad(set_to_none=True)
            self.version += 1
        with torch.no_grad():
            for p, pt in zip(self.critic.parameters(), self.critic_target.parameters()):
                pt.lerp_(p, cfg.tau)
        self.num_updates += 1
        stats.update(critic_loss=float(critic_loss.detach()), q_mean=float(q.detach().mean()), skipped=0.0,
                     alpha=self.alpha, actor_scale=_scale(self.actor_opt), critic_scale=_scale(self.critic_opt),
                     alpha_scale=_scale(self.alpha_opt))
        return stats

    # ----------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, Any]:
        return {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                "critic_target": self.critic_target.state_dict(), "log_alpha": self.log_alpha.detach().clone(),
                "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
                "alpha_opt": self.alpha_opt.state_dict(), "generator": self.generator.get_state(),
                "counters": torch.tensor([self.num_updates, self.nonfinite_skipped, self.version])}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.alpha_opt.load_state_dict(state["alpha_opt"])
        self.generator.set_state(state["generator"])
        self.num_updates, self.nonfinite_skipped, self.version = (int(v) for v in state["counters"])

    def save(self, directory: str | Path) -> Path:
        """``learner.pt`` (tensors only; read back with ``weights_only=True``) + ``learner.json``."""
        return save_learner(directory, self.state_dict(), FORMAT, self.cfg.to_dict())

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu") -> "SteerLearner":
        config, state = read_learner(directory, FORMAT, device)
        learner = cls(SteerConfig.from_dict(config), device)
        learner.load_state_dict(state)
        return learner
