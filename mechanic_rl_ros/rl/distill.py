"""Distillation of successful chunks into the diffusion policy's own weights, with Mechanic.

The learner keeps the chunks the policy itself chose in episodes that succeeded, and trains the
denoiser on them with the policy's own pretraining loss (DDPM simple loss, Ho et al. 2020, Eq. 14), the
distillation step of Policy-Agnostic RL (PA-RL; Mark et al., 2024), where a critic's choices among the
policy's samples are "distilled" into the policy by supervised learning. With a sparse 0/1 outcome the
choice is the outcome itself: a chunk of a successful episode is kept, one of a failed episode is not
(reward-filtered regression, as in filtered behaviour cloning). Every batch is ``demo_fraction``
demonstrations (RLPD and HIL-SERL draw half of every batch from them, Ball et al. 2023, Luo et al.
2024), so the policy keeps what the demonstrations taught. Measured (docs/learner.md), keeping whole
successful episodes does not lift the shipped policies: the mechanism is here, the choice of what to
distil is the part to improve.

Only the parameters under ``train_params`` (prefixes of ``policy.net``'s parameter names) change: they
are what crosses the wire (a few MB instead of the whole 17.6 MB network) and what the policy node
swaps in between chunks. The optimiser is ``Mechanic(Adam(lr=1))`` (no learning rate), or ``Adam(lr)``
for comparisons. No ROS imports.

A second objective (``objective: align``) trains only the camera encoder, offline on the
demonstrations: its features of a jittered and warped window are pulled to the frozen starting encoder's
features of the window as recorded, so a changed scene looks to the denoiser like the recorded one and the
recorded scene keeps the behaviour it had (:meth:`Distiller.align_loss`; docs/world.md).

Pieces: :class:`DistillConfig` (config/distill.yaml), :class:`ChunkReplay` (observation histories and
the chunks to imitate, in a keyed ring saved without pickle), :class:`Distiller` (one gradient step on
a mixed batch), :func:`distilled_layers` (the names, shapes and architecture id the policy node checks).
"""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mechanic_rl_ros.optim.ema import EMA
from mechanic_rl_ros.policy.augment import ImageAugment
from mechanic_rl_ros.policy.policy import frame_features, random_shift
from mechanic_rl_ros.resources import config_file

from .replay import KeyedRing

#: what the trained layers learn (:attr:`DistillConfig.objective`)
OBJECTIVES = ("diffusion", "align")
#: the stack's distillation settings, read by policy_node and learner_node alike
DEFAULT_DISTILL_CONFIG = config_file("distill.yaml")
FORMAT = "mechanic_rl_ros.distill_learner/1"


@dataclass
class DistillConfig:
    """Settings of the distillation learner (config/distill.yaml). ``train_params`` fixes the tensors on
    the wire, so policy_node reads it from the same file."""

    train_params: tuple[str, ...] = ("unet.up", "unet.upsample", "unet.final")
    batch_size: int = 64             #: windows per gradient step
    demo_fraction: float = 0.5       #: share of every batch drawn from the demonstrations (all before online data)
    utd: float = 1.0                 #: gradient steps per kept decision (update-to-data ratio)
    offline_steps: int = 0           #: gradient steps on the demonstrations alone, owed at start
    successful_demos_only: bool = False  #: skip demonstrations whose bag records a failure (imperfect teleoperation)
    #: keep a person's corrections only from episodes that then succeeded (false: whatever the outcome, HIL-SERL)
    successful_corrections_only: bool = False
    keep_capacity: int = 4000        #: [decisions] kept chunks held (the oldest are overwritten)
    augment_pad: int = -1            #: random-shift pad [px]; -1: the checkpoint's pretraining value
    augment_color: float = 0.0       #: colour jitter strength in [0, 1] (policy/augment.py; 1: every hue)
    augment_warp: float = 0.0        #: viewpoint warp strength in [0, 1] (1: +-6 deg, zoom 1.15, shift 12 %)
    augment_kept: bool = True        #: false: colour and warp on the demonstration part of each batch only
    #: share of the eligible rows of a batch that colour and warp reach, drawn per row; the rest stay as recorded
    augment_share: float = 0.8
    #: diffusion: the policy's own loss on demonstrations and kept chunks; align: only the camera encoder
    #: trains, its features of each jittered, warped demonstration window pulled to the starting encoder's
    #: features of the window as recorded (:meth:`Distiller.align_loss`; demonstrations only)
    objective: str = "diffusion"
    optimizer: str = "mechanic"      #: mechanic (Mechanic(Adam(lr=1))) or adam (Adam(lr))
    lr: float = 1e-4                 #: only for optimizer=adam
    #: the weights published and saved: 0 the last gradient step's; in (0, 1) a moving average of the trained
    #: layers (optim/ema.py) whose decay warms up to this cap (an average over about 1 / (1 - cap) steps)
    ema_decay: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        self.train_params = tuple(str(p) for p in self.train_params)
        kinds = {**dict.fromkeys(("batch_size", "offline_steps", "keep_capacity", "augment_pad", "seed"),
                                 (int, "an integer")),
                 **dict.fromkeys(("demo_fraction", "utd", "augment_color", "augment_warp", "augment_share", "lr",
                                  "ema_decay"),
                                 ((int, float), "a number"))}
        for name, (kind, expected) in kinds.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, kind):
                raise ValueError(f"distill config {name}: got {value!r}; expected {expected}")
        checks = [("batch_size", self.batch_size >= 1, "an integer >= 1"),
                  ("demo_fraction", 0.0 <= self.demo_fraction <= 1.0, "a number in [0, 1]"),
                  ("utd", self.utd > 0, "a number > 0"), ("offline_steps", self.offline_steps >= 0, "an integer >= 0"),
                  ("keep_capacity", self.keep_capacity >= 1, "an integer >= 1"),
                  ("augment_pad", self.augment_pad >= -1, "an integer >= -1"),
                  ("augment_color", 0.0 <= self.augment_color <= 1.0, "a number in [0, 1]"),
                  ("augment_warp", 0.0 <= self.augment_warp <= 1.0, "a number in [0, 1]"),
                  ("augment_kept", isinstance(self.augment_kept, bool), "true or false"),
                  ("augment_share", 0.0 <= self.augment_share <= 1.0, "a number in [0, 1]"),
                  ("ema_decay", 0.0 <= self.ema_decay < 1.0, "a number in [0, 1) (0: no average)"),
                  ("successful_demos_only", isinstance(self.successful_demos_only, bool), "true or false"),
                  ("successful_corrections_only", isinstance(self.successful_corrections_only, bool),
                   "true or false"),
                  ("optimizer", self.optimizer in ("mechanic", "adam"), "mechanic or adam"),
                  ("objective", self.objective in OBJECTIVES, " or ".join(OBJECTIVES)),
                  ("train_params", len(self.train_params) > 0, "a non-empty list of parameter-name prefixes"),
                  ("train_params", self.objective != "align" or all(p == "encoders" or p.startswith("encoders.")
                                                                    for p in self.train_params),
                   "prefixes under encoders only with objective align (the denoiser keeps its weights)")]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"distill config {name}: got {getattr(self, name)!r}; expected {expected}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["train_params"] = list(self.train_params)
        return d


def distill_settings_file(name: str, config_dir: Path | None = None) -> Path:
    """The settings file a spec's first item names: the path as given, or, for a bare file name that is not in
    the current directory, the shipped file of that name in ``config_dir`` (default: config/), so that
    ``distill_encoder.yaml`` means the same to the launch argument and to ``train-distill`` from anywhere."""
    config_dir = DEFAULT_DISTILL_CONFIG.parent if config_dir is None else config_dir
    p = Path(name).expanduser()
    if not p.is_absolute() and not p.exists() and len(p.parts) == 1 and (config_dir / p).is_file():
        return config_dir / p
    return p


def load_distill_config(spec: str | Path | None = None, **overrides: Any) -> DistillConfig:
    """The settings a spec names, with ``overrides`` (those not None) on top.

    ``spec``: '' or None = config/distill.yaml; else a file and/or ``key=value`` overrides separated by
    spaces (:func:`~mechanic_rl_ros.config_files.split_spec`), e.g. ``"distill_augmented.yaml
    augment_warp=0.5"`` or ``"offline_steps=200"`` (on config/distill.yaml), so a variant of a settings file
    needs no copy of it. A bare file name that is not in the current directory is one of the shipped
    settings (config/). A missing or malformed file, an unknown key, a bad value or an unreadable item
    raises ValueError naming it and the file."""
    from mechanic_rl_ros.config_files import load_yaml, split_spec

    if isinstance(spec, Path):
        first, changed = str(spec), {}
    else:
        first, changed = split_spec(spec, "distill config")
    p = distill_settings_file(first) if first else DEFAULT_DISTILL_CONFIG
    try:
        raw = load_yaml(p, "distill config")
    except ValueError as exc:
        offered = ", ".join(sorted(q.name for q in DEFAULT_DISTILL_CONFIG.parent.glob("distill*.yaml")))
        raise ValueError(f"{exc}; settings are a path or a file of {DEFAULT_DISTILL_CONFIG.parent}: {offered}"
                         ) from None
    raw.update(changed)
    raw.update({k: v for k, v in overrides.items() if v is not None})
    source = f"{p} with overrides {sorted(changed)}" if changed else str(p)
    known = {f.name for f in fields(DistillConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"distill config {source}: unknown key(s) {unknown}; expected some of {sorted(known)}")
    try:
        return DistillConfig(**raw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: {exc}") from None


def trained_names(net: torch.nn.Module, prefixes: Sequence[str]) -> list[str]:
    """Names of ``net``'s parameters under ``prefixes`` (ValueError naming a prefix that matches none)."""
    names = [n for n, _ in net.named_parameters()]
    for p in prefixes:
        if not any(n == p or n.startswith(p + ".") for n in names):
            raise ValueError(f"distill config train_params: {p!r} names no parameter of the policy network "
                             f"(top-level parts: {sorted({n.split('.')[0] + '.' + n.split('.')[1] for n in names})})")
    return [n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes)]


def distill_arch_id(policy_arch_id: str, shapes: Mapping[str, Sequence[int]]) -> str:
    """The architecture id distilled weights carry: the policy's, and the names and shapes sent."""
    text = json.dumps({"policy": policy_arch_id, "tensors": {k: list(v) for k, v in sorted(shapes.items())}})
    return "distill-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def distilled_layers(policy: Any, prefixes: Sequence[str]) -> tuple[dict[str, tuple[int, ...]], str]:
    """(name -> shape, architecture id) of the layers of ``policy`` under ``prefixes``: what a distillation
    learner sends and what a policy node accepts."""
    params = dict(policy.net.named_parameters())
    shapes = {n: tuple(params[n].shape) for n in trained_names(policy.net, prefixes)}
    return shapes, distill_arch_id(policy.arch_id, shapes)


class ChunkReplay(KeyedRing):
    """Decisions to imitate: the observation history the policy saw and the chunk it predicted.

    Rows: ``images`` uint8 [T_o, n_cam, H, W, 3], ``lowdim`` float32 [T_o, D] (the policy's low-dim keys
    concatenated in its order), ``action`` float32 [T_p, A] (real units), keyed by (episode, chunk)."""

    FORMAT = "mechanic_rl_ros.distill_replay/1"
    FIELDS = ("images", "lowdim", "action", "episode", "chunk")
    DIMS = ("capacity", "obs_horizon", "num_cameras", "image_size", "lowdim_dim", "pred_horizon", "action_dim")

    def __init__(self, capacity: int, obs_horizon: int, num_cameras: int, image_size: int, lowdim_dim: int,
                 pred_horizon: int, action_dim: int):
        self._start(capacity)
        c = self.capacity
        self.obs_horizon, self.num_cameras, self.image_size = int(obs_horizon), int(num_cameras), int(image_size)
        self.lowdim_dim, self.pred_horizon, self.action_dim = int(lowdim_dim), int(pred_horizon), int(action_dim)
        self.images = np.zeros((c, obs_horizon, num_cameras, image_size, image_size, 3), np.uint8)
        self.lowdim = np.zeros((c, obs_horizon, lowdim_dim), np.float32)
        self.action = np.zeros((c, pred_horizon, action_dim), np.float32)

    @classmethod
    def for_policy(cls, cfg: Any, capacity: int) -> "ChunkReplay":
        return cls(capacity, cfg.obs_horizon, len(cfg.cameras), cfg.image_size,
                   sum(cfg.lowdim_dims[k] for k in cfg.lowdim_keys), cfg.pred_horizon, cfg.action_dim)

    def add(self, episode: int, chunk: int, images: np.ndarray, lowdim: np.ndarray, action: np.ndarray) -> bool:
        """Store one decision; False (and counted) for a repeated key or a non-finite value."""
        if self._is_duplicate(episode, chunk):
            return False
        return self._put(episode, chunk, {"images": images, "lowdim": lowdim, "action": action})

    def rows(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        return {k: getattr(self, k)[idx] for k in ("images", "lowdim", "action")}


def decision_row(cfg: Any, obs: Mapping[str, Any], action: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, lowdim, action) of a :class:`ChunkReplay` row from a decision's T_o-step observation history and
    its predicted chunk [T_p, A]; ValueError naming the field when a shape does not match the policy."""
    to = cfg.obs_horizon
    imgs = []
    for c in cfg.cameras:
        im = np.asarray((obs.get("images") or {}).get(c, np.zeros(0)))
        if im.shape != (to, cfg.image_size, cfg.image_size, 3):
            raise ValueError(f"decision obs images[{c!r}]: shape {list(im.shape)}; expected "
                             f"[{to}, {cfg.image_size}, {cfg.image_size}, 3]")
        imgs.append(im.astype(np.uint8))
    lows = []
    for k in cfg.lowdim_keys:
        v = np.asarray(obs.get(k, np.zeros(0)), np.float32)
        if v.size != to * cfg.lowdim_dims[k]:
            raise ValueError(f"decision obs {k}: {v.size} values; expected {to} x {cfg.lowdim_dims[k]}")
        lows.append(v.reshape(to, -1))
    a = np.asarray(action, np.float32)
    if a.shape != (cfg.pred_horizon, cfg.action_dim):
        raise ValueError(f"decision chain: final action of shape {list(a.shape)}; expected "
                         f"[{cfg.pred_horizon}, {cfg.action_dim}]")
    images = np.stack(imgs, axis=1) if imgs else np.zeros((to, 0, cfg.image_size, cfg.image_size, 3), np.uint8)
    lowdim = np.concatenate(lows, axis=1) if lows else np.zeros((to, 0), np.float32)
    return images, lowdim, a


def _encoder_features(encoders: torch.nn.ModuleDict, images: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``[cameras, B * T_o, feature_dim]``: each camera's encoder on its ``[B, T_o, H, W, 3]`` frames."""
    return torch.stack([frame_features(encoder, images[cam]) for cam, encoder in encoders.items()])


class Distiller:
    """One gradient step at a time of ``policy.net``'s ``train_params`` on a batch of kept chunks and
    demonstration windows (``demos``: a :class:`~mechanic_rl_ros.policy.dataset.SequenceDataset`, or None).
    Deterministic per ``cfg.seed``: the same data and seed give the same weights."""

    def __init__(self, policy: Any, cfg: DistillConfig, demos: Any = None):
        from mechanic_rl_ros.optim import build_optimizer

        self.policy, self.cfg, self.demos = policy, cfg, demos
        self.augment_pad = 4 if cfg.augment_pad < 0 else int(cfg.augment_pad)
        self.augment = ImageAugment(color=float(cfg.augment_color), warp=float(cfg.augment_warp),
                                    prob=float(cfg.augment_share))
        self.names = trained_names(policy.net, cfg.train_params)
        chosen = set(self.names)
        params = dict(policy.net.named_parameters())
        for n, p in params.items():
            p.requires_grad_(n in chosen)
        self.params = [params[n] for n in self.names]
        self.opt = build_optimizer(cfg.optimizer, self.params, cfg.lr)
        #: ema_decay > 0: the moving average of the trained layers, what :meth:`tensors` gives out
        self.ema = EMA([p.detach().clone() for p in self.params], max_decay=cfg.ema_decay) if cfg.ema_decay else None
        #: objective align: the starting camera encoder, frozen (the features a changed picture is pulled to)
        self.teacher: torch.nn.ModuleDict | None = None
        if cfg.objective == "align":
            if demos is None:
                raise ValueError("distill config objective: align learns from the demonstrations; got none "
                                 "(give demos, or use objective diffusion)")
            self.teacher = copy.deepcopy(policy.net.encoders).eval().requires_grad_(False)
        self.replay = ChunkReplay.for_policy(policy.cfg, cfg.keep_capacity)
        self.rng = np.random.default_rng(cfg.seed + 31)
        self.gen = torch.Generator().manual_seed(int(cfg.seed) + 37)
        self.steps = 0
        self.nonfinite_skipped = 0

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return distilled_layers(self.policy, self.cfg.train_params)[0]

    @property
    def arch_id(self) -> str:
        return distilled_layers(self.policy, self.cfg.train_params)[1]

    def tensors(self) -> dict[str, torch.Tensor]:
        """The weights of the trained layers to publish and save, detached copies: the moving average with
        ``ema_decay`` > 0, else the last gradient step's."""
        values = self.ema.targets if self.ema is not None else self.params
        return {n: v.detach().clone() for n, v in zip(self.names, values)}

    def deployed_policy(self) -> Any:
        """A copy of the policy with :meth:`tensors` in its trained layers: the checkpoint to evaluate alone."""
        if self.ema is None:
            return self.policy
        out = copy.deepcopy(self.policy)
        out.load_partial(self.tensors())
        return out.eval()

    @property
    def scale(self) -> float:
        from mechanic_rl_ros.optim import mechanic_scale

        return mechanic_scale(self.opt)

    def batch(self) -> dict[str, Any]:
        """``batch_size`` windows: ``demo_fraction`` of them demonstrations (all of them while nothing is
        kept), the rest kept chunks (all of them without demonstrations); with objective align all of them
        demonstrations. ``demo_rows``: how many of the first rows are demonstrations."""
        b = self.cfg.batch_size
        n_kept = 0 if self.teacher is not None else len(self.replay)
        if self.demos is None and n_kept == 0:
            raise ValueError("nothing to distil: no demonstrations and no kept chunks")
        n_demo = b if n_kept == 0 else 0 if self.demos is None else int(round(b * self.cfg.demo_fraction))
        parts = []
        if n_demo:
            parts.append(self.demos.get_batch(self.rng.integers(0, len(self.demos), n_demo)))
        if b - n_demo:
            parts.append(self._kept_batch(self.rng.integers(0, n_kept, b - n_demo)))
        if len(parts) == 1:
            return {**parts[0], "demo_rows": n_demo}
        out: dict[str, Any] = {k: torch.cat([p[k] for p in parts]) for k in parts[0] if k != "images"}
        if "images" in parts[0]:
            out["images"] = {c: torch.cat([p["images"][c] for p in parts]) for c in parts[0]["images"]}
        return {**out, "demo_rows": n_demo}

    def _kept_batch(self, idx: np.ndarray) -> dict[str, Any]:
        cfg = self.policy.cfg
        rows = self.replay.rows(idx)
        out: dict[str, Any] = {}
        if cfg.cameras:
            out["images"] = {c: torch.from_numpy(rows["images"][:, :, j]) for j, c in enumerate(cfg.cameras)}
        start = 0
        for k in cfg.lowdim_keys:
            d = cfg.lowdim_dims[k]
            out[k] = torch.from_numpy(np.ascontiguousarray(rows["lowdim"][:, :, start:start + d]))
            start += d
        out["action"] = torch.from_numpy(rows["action"])
        return out

    def step(self, batch: dict[str, Any] | None = None) -> dict[str, float]:
        """One gradient step; its statistics (``actor_loss``, ``actor_scale``: the trained policy is the
        stack's actor; ``skipped`` = 1 when a non-finite loss or gradient changed nothing). The network is
        left in eval mode. ``batch``: one :meth:`batch` drew already (under the caller's lock)."""
        net = self.policy.net.train()
        try:
            batch = dict(self.batch() if batch is None else batch)
            demo_rows = batch.pop("demo_rows", None)
            if self.teacher is not None:
                loss = self.align_loss(batch["images"])
            else:
                if self.augment.active and "images" in batch:
                    first = None if self.cfg.augment_kept or demo_rows is None else int(demo_rows)
                    batch["images"] = self.augment(batch["images"], self.gen, first=first)
                loss = self.policy.compute_loss(batch, generator=self.gen, augment_pad=self.augment_pad)
            self.opt.zero_grad(set_to_none=True)
            stats = {"actor_loss": float(loss.detach()), "kept": float(len(self.replay))}
            finite = bool(torch.isfinite(loss))
            if finite:
                loss.backward()
                finite = all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in self.params)
            if not finite:
                self.opt.zero_grad(set_to_none=True)
                self.nonfinite_skipped += 1
                return {**stats, "skipped": 1.0}
            self.opt.step()
            if self.ema is not None:
                self.ema.update(self.params)
            self.steps += 1
            return {**stats, "actor_scale": self.scale, "skipped": 0.0}
        finally:
            net.eval()

    def align_loss(self, images: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Objective align: mean over cameras, frames and features of

            || phi(aug(shift(o))) - phi_0(o) ||^2,

        ``phi`` the trained camera encoder, ``phi_0`` the frozen starting one, ``o`` a demonstration window
        as recorded, ``shift`` the pretraining's random shift and ``aug`` the colour and viewpoint
        augmentation. A changed picture of a recorded scene is taught to look, after the encoder, like the
        recorded picture did to the starting policy, so the denoiser it conditions need not change and the
        recorded scene keeps its features (feature-level invariance with a frozen target, as in SODA:
        Hansen & Wang, ICRA 2021)."""
        with torch.no_grad():
            target = _encoder_features(self.teacher, images)
        seen = {c: random_shift(torch.as_tensor(images[c]), self.augment_pad, self.gen) for c in self.teacher}
        if self.augment.active:
            seen = self.augment(seen, self.gen)
        return F.mse_loss(_encoder_features(self.policy.net.encoders, seen), target)

    # ------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        state = {"opt": self.opt.state_dict(), "steps": torch.tensor(self.steps),
                 "nonfinite_skipped": torch.tensor(self.nonfinite_skipped),
                 "gen": self.gen.get_state()}
        if self.teacher is not None:
            state["teacher"] = {k: v.clone() for k, v in self.teacher.state_dict().items()}
        if self.ema is not None:  # the saved policy holds the average: the trained weights go here
            state["trained"] = {n: p.detach().clone() for n, p in zip(self.names, self.params)}
            state["ema"] = {n: t.clone() for n, t in zip(self.names, self.ema.targets)}
            state["ema_step"] = torch.tensor(self.ema.step)
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.teacher is not None:
            if "teacher" not in state:
                raise ValueError("distiller state: objective align but no starting encoder saved (teacher)")
            self.teacher.load_state_dict(state["teacher"])
        if self.ema is not None:
            missing = [k for k in ("trained", "ema", "ema_step") if k not in state]
            if missing:
                raise ValueError(f"distiller state: ema_decay {self.cfg.ema_decay} but no {', '.join(missing)} saved")
            with torch.no_grad():
                for n, p, t in zip(self.names, self.params, self.ema.targets):
                    p.copy_(state["trained"][n])
                    t.copy_(state["ema"][n])
            self.ema.step = int(state["ema_step"])
        self.opt.load_state_dict(state["opt"])
        self.steps = int(state["steps"])
        self.nonfinite_skipped = int(state["nonfinite_skipped"])
        self.gen.set_state(state["gen"])
