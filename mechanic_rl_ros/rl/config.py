"""Settings of the RL learner (:class:`DPPOConfig`) and their YAML file, ``config/rl.yaml``.

Defaults follow DPPO (Ren et al., "Diffusion Policy Policy Optimization",
arXiv:2409.00588, 2024) as released with the paper for Robomimic *Lift*
(``cfg/robomimic/finetune/lift/ft_ppo_diffusion_*.yaml``: the pixel-input DDIM
configuration where the two differ, since our default policy is visuomotor
with DDIM sampling). ``config/rl.yaml`` documents every key with its source;
the dataclass defaults are kept identical (a test checks it).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from mechanic_rl_ros.config_files import apply_overrides, deep_update, load_yaml
from mechanic_rl_ros.resources import config_file

#: config/rl.yaml of the package's share directory (source checkout or install)
DEFAULT_CONFIG_PATH = config_file("rl.yaml")

OPTIMIZERS = ("mechanic", "adam")


@dataclass
class DPPOConfig:
    """Every knob of :class:`~mechanic_rl_ros.rl.dppo.DPPO`; see ``config/rl.yaml`` for sources."""

    # --- denoising MDP
    finetune_steps: int = 5                     #: K', fine-tuned (last) denoising steps of the K DDIM steps
    gamma_denoising: float = 0.9          #: discount along the fine-tuned denoising steps
    noise_clip: float = 3.0               #: clip the N(0, I) draw of each denoising step to +-this (<= 0: off)
    min_sampling_std: float | None = None  #: override the policy's floor on the sampling std (None: keep 0.1)
    min_logprob_std: float | None = None   #: override the policy's floor on the log-prob std (None: keep 0.1)
    logprob_reduction: str = "mean"       #: "mean" (DPPO: per-element mean over T_p x A) or "sum" (exact density)
    # --- environment MDP (one decision = one action chunk)
    gamma: float = 0.999                  #: discount between decisions
    gae_lambda: float = 0.95
    reward_scale_running: bool = True     #: divide rewards by the running std of the discounted return
    reward_scale_const: float = 1.0       #: constant reward multiplier (after running scaling)
    truncation: str = "terminate"         #: at the time limit: "terminate" (return ends, DPPO) or "bootstrap" V(s')
    # --- PPO
    clip: float = 0.01                    #: clip range at the last denoising step
    clip_base: float = 0.001              #: clip range at the first fine-tuned (noisiest) step
    clip_rate: float = 3.0                #: exponential rate of the clip schedule between them
    update_epochs: int = 10
    minibatch_size: int = 500
    grad_accumulate: int = 1              #: minibatches averaged per optimiser step
    vf_coef: float = 0.5
    target_kl: float | None = 1.0         #: stop the update's epochs once approx KL exceeds this (None: never)
    norm_adv: bool = True                 #: normalise advantages per minibatch
    max_grad_norm: float | None = None    #: clip the actor's gradient norm (None: off)
    critic_warmup_updates: int = 2        #: first updates train only the critic
    # --- asynchronous data
    max_staleness: int = 1                #: refuse decisions sampled more than this many versions ago
    # --- optimisers
    actor_optimizer: str = "mechanic"     #: "mechanic" (Mechanic(Adam(lr=1))) or "adam" (fixed lr)
    critic_optimizer: str = "mechanic"
    actor_lr: float = 1e-5                #: Adam learning rate of the actor (ignored by Mechanic)
    critic_lr: float = 1e-3               #: Adam learning rate of the critic (ignored by Mechanic)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    mechanic_s_init: float = 1e-6         #: Mechanic's initial scale (per tuner)
    mechanic_weight_decay: float = 0.01   #: Mechanic's lambda (enters only its scale update)
    mechanic_num_betas: int = 6
    # --- critic network
    critic_hidden: tuple[int, ...] = (256, 256, 256)
    critic_encoder_init: str = "pretrained"  #: image encoders of the critic: "pretrained" copy or "random"
    # --- reproducibility
    seed: int = 0

    def __post_init__(self) -> None:
        self.adam_betas = tuple(float(b) for b in self.adam_betas)  # type: ignore[assignment]
        self.critic_hidden = tuple(int(h) for h in self.critic_hidden)

    def validate(self) -> "DPPOConfig":
        def bad(name: str, what: str) -> ValueError:
            return ValueError(f"rl config: {name} = {getattr(self, name)!r}; expected {what}")
        if self.finetune_steps < 1:
            raise bad("finetune_steps", "an integer >= 1")
        for name in ("gamma", "gae_lambda", "gamma_denoising"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise bad(name, "a number in [0, 1]")
        if self.truncation not in ("terminate", "bootstrap"):
            raise bad("truncation", "'terminate' (the time limit ends the return) or 'bootstrap'")
        if self.logprob_reduction not in ("mean", "sum"):
            raise bad("logprob_reduction", "'mean' or 'sum'")
        if not (0 < self.clip_base and 0 < self.clip):
            raise bad("clip", "clip and clip_base > 0")
        if self.update_epochs < 1 or self.minibatch_size < 1 or self.grad_accumulate < 1:
            raise bad("update_epochs", "update_epochs, minibatch_size, grad_accumulate >= 1")
        if self.max_staleness < 0:
            raise bad("max_staleness", "an integer >= 0")
        for name in ("actor_optimizer", "critic_optimizer"):
            if getattr(self, name) not in OPTIMIZERS:
                raise bad(name, f"one of {OPTIMIZERS}")
        for name in ("actor_lr", "critic_lr"):
            if not getattr(self, name) > 0:
                raise bad(name, "a learning rate > 0")
        if self.critic_encoder_init not in ("pretrained", "random"):
            raise bad("critic_encoder_init", "'pretrained' or 'random'")
        if self.target_kl is not None and not self.target_kl > 0:
            raise bad("target_kl", "> 0 or null")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise bad("max_grad_norm", "> 0 or null")
        return self

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        d["critic_hidden"] = list(self.critic_hidden)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DPPOConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown rl learner config keys: {sorted(unknown)} (known: {sorted(known)})")
        return cls(**{k: _num(v) for k, v in d.items()}).validate()


def _num(v: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` as a string; accept it as a float."""
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


@dataclass
class RLFileConfig:
    """Both sections of ``config/rl.yaml``: the learner and the headless trainer."""

    learner: DPPOConfig = field(default_factory=DPPOConfig)
    train: dict[str, Any] = field(default_factory=dict)


def load_config(paths: list[str | Path] | None = None, overrides: list[str] | None = None,
                defaults: str | Path | None = DEFAULT_CONFIG_PATH) -> RLFileConfig:
    """``config/rl.yaml`` (when present), then ``paths`` merged over it, then ``overrides``."""
    raw: dict[str, Any] = {}
    if defaults is not None and Path(defaults).is_file():
        raw = load_yaml(defaults, "rl config")
    for p in paths or []:
        raw = deep_update(raw, load_yaml(p, "rl config"))
    raw = apply_overrides(raw, overrides or [])
    unknown = set(raw) - {"learner", "train"}
    if unknown:
        raise ValueError(f"unknown sections in rl config: {sorted(unknown)} (expected learner, train)")
    return RLFileConfig(learner=DPPOConfig.from_dict(raw.get("learner") or {}),
                        train={k: _num(v) for k, v in (raw.get("train") or {}).items()})
