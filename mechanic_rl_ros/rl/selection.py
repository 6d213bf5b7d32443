"""Value-guided chunk selection over the frozen diffusion policy: Q-learning with a max over its own samples.

The frozen pretrained policy proposes ``N`` action chunks per decision (deterministic DDIM from ``N``
independent x_K ~ N(0, I)); a critic ensemble Q(features, executed chunk) picks one. The critic is
learned off-policy with the TD target

    y = r + gamma (1 - done) max_j Q_target(s', a'_j),    a'_1..a'_N the proposals stored at s',

so the learned policy is "the best of N samples of the pretrained policy", the policy whose value
Expected-Max Q-learning (EMaQ; Ghasemipour, Schuurmans, Gu, ICML 2021) learns, and the selection
rule of V-GPS (Nakamoto et al., CoRL 2024). Nothing of the
diffusion policy is trained and no actor is trained: the only network that changes (and the only
one to publish) is the critic, and the chosen chunks are always ones the pretrained policy itself
produces, so the critic is never asked about actions far from its data.

Why this and not a noise-space actor (tried and retired, docs/history.md): the critic reads the
executed motion (normalised joint targets and gripper, ``T_a x A`` numbers) instead of the
128-dimensional noise that produces it through 10 denoising steps, and the max over the policy's
own samples cannot extrapolate. ``studies/noise_oracle.py`` measured why choosing among samples can
be enough: over 48 reset seeds x 6 noise draws the pretrained policy succeeds in 72.9 % of episodes,
yet 47 of the 48 seeds succeed at least once.

Details: sparse 0/1 reward, an episode ends on success, a time-limit failure is terminal with value 0;
gamma per decision (default 0.9, so a faster lift is worth more, which keeps failures and slow
successes apart); the bootstrapped value is clipped to [0, ``q_max``]; the TD target takes the min
over the target ensemble for each proposal, then the max over proposals; choosing uses the ensemble
mean (``choose``). Every optimiser is ``Mechanic(Adam(lr=1))`` unless ``optimizer="adam"``. An update
with a non-finite loss or gradient steps nothing and is counted (``nonfinite_skipped``).

Four critic variants were measured and were not better than this (docs/history.md, "What did not
help"): the fraction of the episode left as an input, the TD target floored by or mixed with the
observed return, and a cross-entropy loss. They are gone; :data:`RETIRED` lists their keys, which a
saved config may still hold at the value this code implements.
"""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from mechanic_rl_ros.resources import config_file

from .persist import read_learner, save_learner
from .replay import CandidateReplay
from mechanic_rl_ros.optim import build_optimizer, mechanic_scale

from .critic import QEnsemble

FORMAT = "mechanic_rl_ros.select_learner/1"
EXPORT_FORMAT = "mechanic_rl_ros.select_critic/1"
#: the stack's selection settings, read by policy_node and learner_node alike
DEFAULT_SELECT_CONFIG = config_file("select.yaml")
#: the fields that fix the critic's tensors and what it scores: sender and receiver must agree on them
STRUCTURE = ("feat_dim", "act_dim", "num_candidates", "num_critics", "hidden", "layers")
#: keys of retired critic variants -> the value this code implements (older saved configs hold them)
RETIRED = {"horizon": 0, "mc_floor": False, "loss": "mse", "mc_mix": 0.0}


@dataclass
class SelectConfig:
    feat_dim: int = 144
    act_dim: int = 64               #: T_a * A: the executed part of a chunk, normalised
    num_candidates: int = 8         #: proposals of the frozen policy per decision (N)
    num_critics: int = 2
    hidden: int = 256
    layers: int = 2
    gamma: float = 0.9              #: per decision (action chunk)
    tau: float = 0.005              #: Polyak rate of the target critics
    batch_size: int = 256
    q_max: float = 1.0              #: clip of the bootstrapped value (sparse 0/1 reward)
    choose: str = "mean"            #: ensemble aggregation when choosing: mean or min
    optimizer: str = "mechanic"     #: mechanic (Mechanic(Adam(lr=1))) or adam (Adam(lr))
    lr: float = 3e-4                #: only for optimizer=adam
    seed: int = 0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SelectConfig":
        """The config of a mapping; a :data:`RETIRED` key is dropped if it holds the value this code
        implements and refused otherwise (the critic was trained as this code no longer trains)."""
        names = {f.name for f in fields(cls)}
        d = dict(d)
        for key, value in RETIRED.items():
            got = d.pop(key, value)
            if got != value:
                raise ValueError(f"{key} = {got!r} is a retired critic variant (measured and not better, "
                                 f"docs/history.md); only {key} = {value!r} is implemented")
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown learner keys: {sorted(unknown)}; expected some of {sorted(names)}")
        return cls(**dict(d))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_select_config(path: str | Path | None, *, feat_dim: int, act_dim: int,
                       **overrides: Any) -> SelectConfig:
    """The stack's :class:`SelectConfig`: ``path`` (``None`` or ``""``: ``config/select.yaml``), with the
    dimensions that come from the frozen policy (``feat_dim``, ``act_dim``) and ``overrides`` on top.
    A malformed file or an unknown key raises ``ValueError`` naming the file and the key."""
    from mechanic_rl_ros.config_files import load_yaml

    p = Path(path) if path else DEFAULT_SELECT_CONFIG
    raw = load_yaml(p, "select config")
    if "feat_dim" in raw or "act_dim" in raw:
        raise ValueError(f"select config {p}: feat_dim and act_dim come from the policy checkpoint; remove them")
    try:
        cfg = SelectConfig.from_dict({**raw, "feat_dim": int(feat_dim), "act_dim": int(act_dim), **overrides})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"select config {p}: {exc}") from None
    for name in ("num_candidates", "num_critics", "hidden", "layers", "batch_size"):
        if not isinstance(getattr(cfg, name), int) or getattr(cfg, name) < 1:
            raise ValueError(f"select config {p}: {name} = {getattr(cfg, name)!r}; expected an integer >= 1")
    if not 0.0 <= cfg.gamma < 1.0:
        raise ValueError(f"select config {p}: gamma = {cfg.gamma!r}; expected a number in [0, 1)")
    if cfg.choose not in ("mean", "min"):
        raise ValueError(f"select config {p}: choose = {cfg.choose!r}; expected mean or min")
    return cfg


def critic_arch_id(policy_arch_id: str, cfg: SelectConfig) -> str:
    """Architecture id of a critic on the wire: the frozen policy's arch id and the :data:`STRUCTURE` fields,
    hashed; a policy node refuses critic weights of any other (another policy, N or network size)."""
    key = json.dumps({"policy": policy_arch_id, **{k: getattr(cfg, k) for k in STRUCTURE}}, sort_keys=True)
    return "select-critic-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def ensemble_scores(net: QEnsemble, feat: torch.Tensor, cands: torch.Tensor, how: str) -> torch.Tensor:
    """[B, N] value of each of the N proposals [B, N, act_dim] at states ``feat`` [B, F]: the mean or the min
    (``how``) over the ensemble."""
    b, n = cands.shape[:2]
    q = net(feat.repeat_interleave(n, dim=0), cands.reshape(b * n, -1)).view(-1, b, n)
    return q.mean(0) if how == "mean" else q.min(0).values


class CriticSelector:
    """The policy node's half of selection: a critic without optimiser or target that picks a proposal.

    Until the first critic arrives (:attr:`version` 0) it picks proposal 0, a plain x_K ~ N(0, I): the
    pretrained policy as it is. :meth:`load` takes verified weights (``expected_shapes``)."""

    def __init__(self, cfg: SelectConfig, policy_arch_id: str):
        self.cfg = cfg
        self.critic = QEnsemble(cfg.num_critics, cfg.feat_dim, cfg.act_dim, cfg.hidden, cfg.layers)
        self.critic.requires_grad_(False)
        self.arch_id = critic_arch_id(policy_arch_id, cfg)
        self.expected_shapes = {k: tuple(v.shape) for k, v in self.critic.state_dict().items()}
        self.version = 0

    def load(self, tensors: Mapping[str, Any], version: int) -> None:
        """Swap in critic ``tensors`` (name -> array of :attr:`expected_shapes`); ValueError leaves the old."""
        state = {k: torch.as_tensor(np.array(v, dtype=np.float32)) for k, v in tensors.items()}
        if set(state) != set(self.expected_shapes):
            raise ValueError(f"critic tensors {sorted(state)}; expected {sorted(self.expected_shapes)}")
        self.critic.load_state_dict(state)
        self.version = int(version)

    @torch.no_grad()
    def choose(self, feat: torch.Tensor, cands: torch.Tensor, t: int | None = None) -> int:
        """Index of the proposal to run, of ``cands`` [N, act_dim] at ``feat`` [F] (0 before any critic);
        ``t``, the decision's index in its episode, is not read."""
        if self.version == 0:
            return 0
        return int(ensemble_scores(self.critic, feat.reshape(1, -1).float(), cands[None].float(),
                                   self.cfg.choose).argmax(dim=1)[0])


class SelectLearner:
    """The critic ensemble that picks one of N proposals (see the module docstring)."""

    def __init__(self, cfg: SelectConfig, device: str | torch.device = "cpu"):
        if cfg.choose not in ("mean", "min"):
            raise ValueError(f"choose must be mean or min, got {cfg.choose!r}")
        if cfg.num_candidates < 1:
            raise ValueError(f"num_candidates must be >= 1, got {cfg.num_candidates}")
        self.cfg = cfg
        self.device = torch.device(device)
        torch.manual_seed(cfg.seed)
        self.critic = QEnsemble(cfg.num_critics, cfg.feat_dim, cfg.act_dim, cfg.hidden,
                                cfg.layers).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.critic_opt = build_optimizer(cfg.optimizer, self.critic.parameters(), cfg.lr)
        self.num_updates = 0
        self.nonfinite_skipped = 0
        self.version = 0  #: bumps with every successful update (the published critic changed)

    # --------------------------------------------------------------- choosing
    @torch.no_grad()
    def scores(self, feat: torch.Tensor, cands: torch.Tensor, t: Any = None) -> torch.Tensor:
        """[B, N] the ensemble's value of each proposal (mean or min over critics, ``cfg.choose``) at states
        ``feat`` [B, F]; ``t`` (decision indices) is not read."""
        return ensemble_scores(self.critic, feat.to(self.device, torch.float32),
                               cands.to(self.device, torch.float32), self.cfg.choose)

    @torch.no_grad()
    def choose(self, feat: torch.Tensor, cands: torch.Tensor, t: Any = None) -> torch.Tensor:
        """[B] index of the best proposal per state (ties: the first)."""
        return self.scores(feat, cands, t).argmax(dim=1)

    # ----------------------------------------------------------------- update
    def update(self, batch: Mapping[str, Any]) -> dict[str, float]:
        """One gradient step of the critic ensemble on ``batch`` (keys feat, action, reward, done,
        next_feat, next_cands [B, N, act_dim]): the squared TD error of every member against
        ``y = r + gamma (1 - done) clip(max_j min_k Q_target_k(s', a'_j), 0, q_max)``, then the targets'
        Polyak step; nothing is stepped if a value is non-finite."""
        cfg, dev = self.cfg, self.device
        t = {k: torch.as_tensor(np.asarray(batch[k]), dtype=torch.float32, device=dev)
             for k in ("feat", "action", "reward", "done", "next_feat", "next_cands")}
        with torch.no_grad():
            qn = ensemble_scores(self.critic_target, t["next_feat"], t["next_cands"], "min").max(1).values
            if cfg.q_max > 0:
                qn = qn.clamp(0.0, cfg.q_max)
            target = t["reward"] + cfg.gamma * (1.0 - t["done"]) * qn
        q = self.critic(t["feat"], t["action"])
        loss = (q - target.unsqueeze(0)).pow(2).mean(1).sum()
        params = list(self.critic.parameters())
        grads = torch.autograd.grad(loss, params)
        if not (bool(torch.isfinite(loss)) and all(bool(torch.isfinite(g).all()) for g in grads)):
            self.nonfinite_skipped += 1
            return {"critic_loss": float("nan"), "skipped": 1.0, "nonfinite_skipped": float(self.nonfinite_skipped)}
        for p, g in zip(params, grads):
            p.grad = g
        self.critic_opt.step()
        self.critic_opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for p, pt in zip(self.critic.parameters(), self.critic_target.parameters()):
                pt.lerp_(p, cfg.tau)
        self.num_updates += 1
        self.version += 1
        return {"critic_loss": float(loss.detach()), "q_mean": float(q.detach().mean()),
                "target_mean": float(target.mean()), "skipped": 0.0, "critic_scale": mechanic_scale(self.critic_opt)}

    # ------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        return {"critic": self.critic.state_dict(), "critic_target": self.critic_target.state_dict(),
                "critic_opt": self.critic_opt.state_dict(),
                "counters": torch.tensor([self.num_updates, self.nonfinite_skipped, self.version])}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.num_updates, self.nonfinite_skipped, self.version = (int(v) for v in state["counters"])

    def save(self, directory: str | Path) -> Path:
        """``learner.pt`` (tensors only; read back with ``weights_only=True``) + ``learner.json``."""
        return save_learner(directory, self.state_dict(), FORMAT, self.cfg.to_dict())

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu") -> "SelectLearner":
        config, state = read_learner(directory, FORMAT, device)
        learner = cls(SelectConfig.from_dict(config), device)
        learner.load_state_dict(state)
        return learner


def policy_weights_id(checkpoint: str | Path) -> str | None:
    """The sha256 of a policy checkpoint's weights (its ``config.json``), ``None`` where not recorded. Two
    checkpoints of one architecture (``lift_pretrained`` and a fine-tuned ``lift_demos``) share the arch id but
    not their features, so a critic also records the weights it was trained over."""
    try:
        return json.loads((Path(checkpoint) / "config.json").read_text()).get("weights_sha256")
    except (OSError, ValueError, AttributeError):
        return None


def export_critic(learner: SelectLearner, directory: str | Path, policy_arch_id: str,
                  policy_weights: str | None = None) -> Path:
    """The trained critic alone, for shipping and for evaluation: ``critic.safetensors`` (the ensemble's
    weights, no optimiser state) + ``select.json`` (format, learner config, the arch id of the frozen policy
    whose features and proposals it scores and, where known, the sha256 of that policy's weights)."""
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in learner.critic.state_dict().items()}, str(d / "critic.safetensors"))
    meta = {"format": EXPORT_FORMAT, "policy_arch_id": policy_arch_id, "config": learner.cfg.to_dict()}
    if policy_weights:
        meta["policy_weights_sha256"] = policy_weights
    (d / "select.json").write_text(json.dumps(meta, indent=1) + "\n")
    return d


def _read_export(directory: str | Path, policy_arch_id: str | None,
                 policy_weights: str | None = None) -> tuple[SelectConfig, dict[str, torch.Tensor]]:
    """Config and critic tensors of an :func:`export_critic` directory, checked against ``policy_arch_id`` and,
    where both are known, the sha256 of the policy's weights (:func:`policy_weights_id`)."""
    from safetensors.torch import load_file

    d = Path(directory)
    if not (d / "select.json").is_file():
        raise FileNotFoundError(f"{d}: no select.json; expected an exported critic (critic.safetensors + select.json, "
                                "e.g. <run_dir>/learner/critic or checkpoints/lift_demos_select)")
    meta = json.loads((d / "select.json").read_text())
    if meta.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{d}/select.json: format {meta.get('format')!r}, expected {EXPORT_FORMAT!r}")
    if policy_arch_id is not None and meta.get("policy_arch_id") != policy_arch_id:
        raise ValueError(f"{d}: critic trained over policy arch_id {meta.get('policy_arch_id')!r}, "
                         f"but the policy is {policy_arch_id!r}")
    trained_over = meta.get("policy_weights_sha256")
    if policy_weights and trained_over and policy_weights != trained_over:
        raise ValueError(f"{d}: critic trained over policy weights sha256 {trained_over[:16]}..., but this policy's "
                         f"weights are {policy_weights[:16]}... (same architecture, other weights: its features and "
                         "proposals are not the ones the critic learned to score)")
    return SelectConfig.from_dict(meta["config"]), load_file(str(d / "critic.safetensors"))


def load_exported_critic(directory: str | Path, policy_arch_id: str | None = None,
                         policy_weights: str | None = None) -> SelectLearner:
    """A :class:`SelectLearner` whose critic is an :func:`export_critic` directory's; with ``policy_arch_id``
    (and ``policy_weights``) the frozen policy must be the one the critic was trained over (ValueError naming
    both otherwise)."""
    cfg, tensors = _read_export(directory, policy_arch_id, policy_weights)
    learner = SelectLearner(cfg)
    learner.critic.load_state_dict(tensors)
    learner.critic_target.load_state_dict(learner.critic.state_dict())
    return learner


def exported_selector(directory: str | Path, policy_arch_id: str, policy_weights: str | None = None) -> CriticSelector:
    """The policy-side :class:`CriticSelector` of an :func:`export_critic` directory (version 1: choosing)."""
    cfg, tensors = _read_export(directory, policy_arch_id, policy_weights)
    selector = CriticSelector(cfg, policy_arch_id)
    selector.load({k: v.numpy() for k, v in tensors.items()}, 1)
    return selector
