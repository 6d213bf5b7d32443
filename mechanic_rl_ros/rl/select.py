"""Value-guided chunk selection over the frozen diffusion policy: Q-learning with a max over its own samples.

The frozen pretrained policy proposes ``N`` action chunks per decision (deterministic DDIM from ``N``
independent x_K ~ N(0, I)); a critic ensemble Q(features, executed chunk) picks one. The critic is
learned off-policy with the TD target

    y = r + gamma (1 - done) max_j Q_target(s', a'_j),    a'_1..a'_N the proposals stored at s',

so the learned policy is "the best of N samples of the pretrained policy", the policy whose value
Expected-Max Q-learning (EMaQ; Ghasemipour, Schuurmans, Gu, ICML 2021) learns, and the selection
rule of value-guided policy steering (V-GPS; Nakamoto et al., CoRL 2024). Nothing of the
diffusion policy is trained and no actor is trained: the only network that changes (and the only
one to publish) is the critic, and the chosen chunks are always ones the pretrained policy itself
produces, so the critic is never asked about actions far from its data.

Why this and not a noise-space actor (:mod:`.steer`, docs/history.md): the critic reads the
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
from .replay import KeyedRing
from .steer import QEnsemble, build_optimizer

FORMAT = "mechanic_rl_ros.select_learner/1"
EXPORT_FORMAT = "mechanic_rl_ros.select_critic/1"
#: the stack's selection settings, read by policy_node and learner_node alike
DEFAULT_SELECT_CONFIG = config_file("select.yaml")
#: the fields that fix the critic's tensors and what it scores: sender and receiver must agree on them
STRUCTURE = ("feat_dim", "act_dim", "num_candidates", "num_critics", "hidden", "layers", "horizon")


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
    horizon: int = 0                #: decisions per episode at the time limit; > 0 adds the fraction left to Q's input
    mc_floor: bool = False          #: TD target floored by the discounted return observed from the decision
    loss: str = "mse"               #: mse (regression of Q) or bce (Q = sigmoid(logit), cross-entropy to the target)
    mc_mix: float = 0.0             #: lambda: TD target (1 - lambda) TD + lambda (observed return), once the episode ended

    @property
    def reads_returns(self) -> bool:
        """Whether the TD target reads each decision's observed return (the floor or the mix): only then
        must an episode's end fill them in (:meth:`CandidateReplay.close_episode`)."""
        return self.mc_floor or self.mc_mix > 0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SelectConfig":
        names = {f.name for f in fields(cls)}
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
    try:
        raw = load_yaml(p)
    except Exception as exc:  # yaml.YAMLError, OSError: say which file
        raise ValueError(f"select config {p}: cannot read it ({exc})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"select config {p}: expected a mapping of SelectConfig fields, got {type(raw).__name__}")
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
    if cfg.loss not in ("mse", "bce"):
        raise ValueError(f"select config {p}: loss = {cfg.loss!r}; expected mse or bce")
    if isinstance(cfg.mc_mix, bool) or not (isinstance(cfg.mc_mix, (int, float)) and 0.0 <= cfg.mc_mix <= 1.0):
        raise ValueError(f"select config {p}: mc_mix = {cfg.mc_mix!r}; expected a number in [0, 1]")
    return cfg


def critic_arch_id(policy_arch_id: str, cfg: SelectConfig) -> str:
    """Architecture id of a critic on the wire: the frozen policy's arch id and the :data:`STRUCTURE` fields,
    hashed; a policy node refuses critic weights of any other (another policy, N or network size)."""
    key = json.dumps({"policy": policy_arch_id, **{k: getattr(cfg, k) for k in STRUCTURE}}, sort_keys=True)
    return "select-critic-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def critic_input_dim(cfg: SelectConfig) -> int:
    """Width of the critic's state input: the policy's features, plus the fraction of time left if ``horizon``."""
    return cfg.feat_dim + (1 if cfg.horizon > 0 else 0)


def with_time(feat: torch.Tensor, t: Any, horizon: int) -> torch.Tensor:
    """``feat`` [B, F] with the fraction of the episode's decisions left, ``1 - t / horizon`` clipped to [0, 1],
    appended (``t`` [B]: the decision's index in its episode). With a time limit the same observation has a
    different value early and late, so time is part of the state (Pardo et al., "Time Limits in
    Reinforcement Learning", ICML 2018); ``horizon`` 0 returns ``feat`` unchanged."""
    if horizon <= 0:
        return feat
    if t is None:
        raise ValueError("a critic with horizon > 0 needs the decision index t")
    left = (1.0 - torch.as_tensor(t, dtype=feat.dtype, device=feat.device).reshape(-1, 1) / horizon).clamp(0.0, 1.0)
    return torch.cat([feat, left.expand(feat.shape[0], 1)], dim=1)


def ensemble_scores(net: QEnsemble, feat: torch.Tensor, cands: torch.Tensor, how: str,
                    sigmoid: bool = False) -> torch.Tensor:
    """[B, N] value of each of the N proposals [B, N, act_dim] at states ``feat`` [B, F] (with the time input
    already appended, :func:`with_time`): the mean or the min (``how``) over the ensemble; ``sigmoid``: the
    networks output logits (``loss: bce``)."""
    b, n = cands.shape[:2]
    q = net(feat.repeat_interleave(n, dim=0), cands.reshape(b * n, -1)).view(-1, b, n)
    if sigmoid:
        q = torch.sigmoid(q)
    return q.mean(0) if how == "mean" else q.min(0).values


class CriticSelector:
    """The policy node's half of selection: a critic without optimiser or target that picks a proposal.

    Until the first critic arrives (:attr:`version` 0) it picks proposal 0, a plain x_K ~ N(0, I): the
    pretrained policy as it is. :meth:`load` takes verified weights (``expected_shapes``)."""

    def __init__(self, cfg: SelectConfig, policy_arch_id: str):
        self.cfg = cfg
        self.critic = QEnsemble(cfg.num_critics, critic_input_dim(cfg), cfg.act_dim, cfg.hidden, cfg.layers)
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
        """Index of the proposal to run, of ``cands`` [N, act_dim] at ``feat`` [F], decision ``t`` of its
        episode (0 before any critic)."""
        if self.version == 0:
            return 0
        x = with_time(feat.reshape(1, -1).float(), None if t is None else [t], self.cfg.horizon)
        return int(ensemble_scores(self.critic, x, cands[None].float(), self.cfg.choose,
                                   self.cfg.loss == "bce").argmax(dim=1)[0])


class SelectLearner:
    """The critic ensemble that picks one of N proposals (see the module docstring)."""

    def __init__(self, cfg: SelectConfig, device: str | torch.device = "cpu"):
        if cfg.choose not in ("mean", "min"):
            raise ValueError(f"choose must be mean or min, got {cfg.choose!r}")
        if cfg.loss not in ("mse", "bce"):
            raise ValueError(f"loss must be mse or bce, got {cfg.loss!r}")
        if cfg.num_candidates < 1:
            raise ValueError(f"num_candidates must be >= 1, got {cfg.num_candidates}")
        if not 0.0 <= cfg.mc_mix <= 1.0:
            raise ValueError(f"mc_mix must be in [0, 1], got {cfg.mc_mix}")
        self.cfg = cfg
        self.device = torch.device(device)
        torch.manual_seed(cfg.seed)
        self.critic = QEnsemble(cfg.num_critics, critic_input_dim(cfg), cfg.act_dim, cfg.hidden,
                                cfg.layers).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.critic_opt = build_optimizer(list(self.critic.parameters()), cfg)  # type: ignore[arg-type]
        self.num_updates = 0
        self.nonfinite_skipped = 0
        self.version = 0  #: bumps with every successful update (the published critic changed)

    # --------------------------------------------------------------- choosing
    @torch.no_grad()
    def scores(self, feat: torch.Tensor, cands: torch.Tensor, t: Any = None) -> torch.Tensor:
        """[B, N] the ensemble's value of each proposal (mean or min over critics, ``cfg.choose``) at states
        ``feat`` [B, F], decision indices ``t`` [B] (needed when ``cfg.horizon`` > 0)."""
        x = with_time(feat.to(self.device, torch.float32), t, self.cfg.horizon)
        return ensemble_scores(self.critic, x, cands.to(self.device, torch.float32), self.cfg.choose,
                               self.cfg.loss == "bce")

    @torch.no_grad()
    def choose(self, feat: torch.Tensor, cands: torch.Tensor, t: Any = None) -> torch.Tensor:
        """[B] index of the best proposal per state (ties: the first)."""
        return self.scores(feat, cands, t).argmax(dim=1)

    # ----------------------------------------------------------------- update
    def update(self, batch: Mapping[str, Any]) -> dict[str, float]:
        """One gradient step of the critic ensemble on ``batch`` (keys feat, action, reward, done,
        next_feat, next_cands [B, N, act_dim]; ``chunk`` [B], the decision's index in its episode, when
        ``cfg.horizon`` > 0; ``mc`` [B], the discounted return observed from it, negative while its episode runs,
        when ``cfg.mc_floor`` or ``cfg.mc_mix``); nothing is stepped if a value is non-finite."""
        cfg, dev = self.cfg, self.device
        keys = ["feat", "action", "reward", "done", "next_feat", "next_cands"]
        keys += (["chunk"] if cfg.horizon > 0 else []) + (["mc"] if cfg.reads_returns else [])
        t = {k: torch.as_tensor(np.asarray(batch[k]), dtype=torch.float32, device=dev) for k in keys}
        step = t.get("chunk")
        feat = with_time(t["feat"], step, cfg.horizon)
        next_feat = with_time(t["next_feat"], None if step is None else step + 1, cfg.horizon)
        with torch.no_grad():
            bce = cfg.loss == "bce"
            qn = ensemble_scores(self.critic_target, next_feat, t["next_cands"], "min", bce).max(1).values
            if cfg.q_max > 0:
                qn = qn.clamp(0.0, cfg.q_max)
            target = t["reward"] + cfg.gamma * (1.0 - t["done"]) * qn
            if cfg.mc_floor:
                # what was actually reached from here is a value the policy class can attain (self-imitation's
                # lower bound, Oh et al., ICML 2018); it carries a success back at once instead of one TD step a time
                target = torch.maximum(target, t["mc"].clamp(min=0.0))  # unknown (-1) floors nothing
            if cfg.mc_mix > 0:
                # a lambda-return-like mix (Sutton & Barto, ch. 12): a failed episode's zero reaches every decision
                # of it at once instead of one TD step per update; rows of a running episode (mc < 0) keep TD
                mixed = (1.0 - cfg.mc_mix) * target + cfg.mc_mix * t["mc"]
                target = torch.where(t["mc"] >= 0, mixed, target)
            if bce:
                target = target.clamp(0.0, 1.0)
        q = self.critic(feat, t["action"])
        if bce:  # value learning as classification (Farebrother et al., "Stop Regressing", ICML 2024)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                q, target.unsqueeze(0).expand_as(q), reduction="none").mean(1).sum()
            q = torch.sigmoid(q)
        else:
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
        scale = getattr(self.critic_opt, "scale", float("nan"))
        return {"critic_loss": float(loss.detach()), "q_mean": float(q.detach().mean()),
                "target_mean": float(target.mean()), "skipped": 0.0, "critic_scale": float(scale)}

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
                                "e.g. <run_dir>/learner/critic or checkpoints/lift_select)")
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


class CandidateReplay(KeyedRing):
    """Ring buffer of decisions with the next state's proposals (for the max in the TD target).

    Rows: feat, action (the chosen proposal), reward, done, next_feat, next_cands [N, act_dim],
    episode, chunk, and mc: the discounted return observed from the decision to its episode's end, -1 (unknown)
    until :meth:`close_episode` fills it in. A repeated (episode, chunk) or a non-finite value is refused and
    counted. Saved as ``.npz`` and loaded with ``allow_pickle=False``
    (:class:`~mechanic_rl_ros.rl.replay.KeyedRing`)."""

    FORMAT = "mechanic_rl_ros.select_replay/3"
    FIELDS = ("feat", "action", "reward", "done", "next_feat", "next_cands", "episode", "chunk", "mc")
    DIMS = ("capacity", "feat_dim", "act_dim", "num_candidates")

    def __init__(self, capacity: int, feat_dim: int, act_dim: int, num_candidates: int):
        self._start(capacity)
        c = self.capacity
        self.feat_dim, self.act_dim, self.num_candidates = int(feat_dim), int(act_dim), int(num_candidates)
        self.feat = np.zeros((c, feat_dim), np.float32)
        self.action = np.zeros((c, act_dim), np.float32)
        self.reward = np.zeros(c, np.float32)
        self.done = np.zeros(c, np.float32)
        self.next_feat = np.zeros((c, feat_dim), np.float32)
        self.next_cands = np.zeros((c, num_candidates, act_dim), np.float32)
        self.mc = np.full(c, -1.0, np.float32)

    def close_episode(self, episode: int, gamma: float) -> int:
        """Fill in ``mc`` of the stored decisions of ``episode`` (which has ended): the discounted sum of the
        rewards of it and the decisions after it that are stored. Returns how many rows it set."""
        rows = sorted((c, i) for (e, c), i in self._keys.items() if e == int(episode))
        ret = 0.0
        for _, i in reversed(rows):
            ret = float(self.reward[i]) + gamma * ret
            self.mc[i] = ret
        return len(rows)

    def add(self, feat: Any, action: Any, reward: float, done: bool, next_feat: Any | None, next_cands: Any | None,
            episode: int, chunk: int) -> bool:
        """Store one decision (``next_*`` may be None when ``done``); False (and counted) if refused."""
        if self._is_duplicate(episode, chunk):
            return False
        if not done and (next_feat is None or next_cands is None):
            raise ValueError("a decision that is not done needs next_feat and next_cands")
        row = {"feat": np.asarray(feat, np.float32).reshape(self.feat_dim),
               "action": np.asarray(action, np.float32).reshape(self.act_dim),
               "reward": np.float32(reward), "done": np.float32(bool(done)), "mc": np.float32(-1.0),
               "next_feat": np.zeros(self.feat_dim, np.float32) if next_feat is None else
               np.asarray(next_feat, np.float32).reshape(self.feat_dim),
               "next_cands": np.zeros((self.num_candidates, self.act_dim), np.float32) if next_cands is None else
               np.asarray(next_cands, np.float32).reshape(self.num_candidates, self.act_dim)}
        return self._put(episode, chunk, row)

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return self._rows(("feat", "action", "reward", "done", "next_feat", "next_cands", "chunk", "mc"),
                          batch_size, rng)
