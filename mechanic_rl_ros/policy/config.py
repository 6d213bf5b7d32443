"""Configuration of the diffusion visuomotor policy.

The configuration is split in two kinds of fields:

* **architecture** fields decide the shape of every tensor of the noise
  prediction network (observation spec, horizons T_o/T_p, vision encoder,
  U-Net, number of training diffusion steps).  They are hashed into the
  *architecture id* (:attr:`PolicyConfig.arch_id`), which travels with every
  checkpoint and every weights message, so a receiver can refuse weights that
  were trained for another network before it looks at a single tensor.
* **runtime** fields (T_a, number of DDIM steps K, DPPO noise levels and
  clipping) may change between runs without invalidating the weights.

Defaults are the values documented in ``config/policy.yaml``; the dataclass
defaults below are kept identical so that code that builds a config in Python
(tests, benchmarks) sees the same policy as the command-line tools.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from mechanic_rl_ros.resources import config_file

#: bump when the meaning of an architecture field changes
ARCH_VERSION = 1

#: default YAML file: config/policy.yaml of the package's share directory (source checkout or install)
DEFAULT_CONFIG_PATH = config_file("policy.yaml")


@dataclass
class VisionConfig:
    """ResNet-18-style image encoder (one per camera), GroupNorm instead of BatchNorm.

    Chi et al. (2023, Sec. IV-B) replace BatchNorm by GroupNorm (BatchNorm
    interacts badly with the EMA of the weights) and global average pooling by a
    spatial softmax.  ``base_width`` 64 is the original ResNet-18; we default to
    16 (~1/16 of the parameters, 3x less training time per frame than width 32
    on 2 CPU cores; see docs/policy.md for the measured figures).
    """

    base_width: int = 16          #: channels of the stem / first stage; stages use w, 2w, 4w, 8w
    blocks_per_stage: tuple[int, ...] = (2, 2, 2, 2)  #: ResNet-18 layout
    group_size: int = 16          #: channels per GroupNorm group (Chi et al. use C/16 groups)
    pool: str = "spatial_softmax"  #: "spatial_softmax" or "avg"
    num_keypoints: int = 32       #: spatial-softmax keypoints (1x1 conv before the softmax)
    feature_dim: int = 64         #: per-camera, per-frame feature size after the final linear layer


@dataclass
class UNetConfig:
    """Conditional 1D temporal U-Net (Chi et al. 2023, Sec. III-B, Fig. 2)."""

    down_dims: tuple[int, ...] = (64, 128, 256)  #: channels of each resolution level
    kernel_size: int = 5          #: temporal convolution kernel
    mid_blocks: int = 1           #: residual blocks at the coarsest level (Chi et al. use 2)
    n_groups: int = 8             #: GroupNorm groups inside the residual blocks
    step_embed_dim: int = 64      #: sinusoidal diffusion-step embedding size


@dataclass
class DiffusionConfig:
    """DDPM training (Ho et al. 2020) with the squared-cosine schedule (Nichol & Dhariwal 2021)."""

    train_steps: int = 100        #: N, number of forward-process steps used in training
    schedule: str = "squaredcos"  #: only the squared-cosine schedule is implemented
    beta_max: float = 0.999       #: cap on beta_t (Nichol & Dhariwal 2021, Sec. 3.2)
    prediction: str = "sample"    #: network target: "epsilon", "sample" (x0) or "v"; see docs/policy.md


@dataclass
class SamplingConfig:
    """Inference and DPPO sampling knobs (runtime, not part of the architecture id).

    DPPO (Ren et al. 2024, Sec. 4 and App. C) treats every denoising step as a
    Gaussian policy; its exploration noise is the DDIM noise eta*sigma_k
    (Song et al. 2021, Eq. 16) floored at ``min_sampling_std``, and the
    log-likelihood uses a std floored at ``min_logprob_std``.
    """

    inference_steps: int = 10     #: K, DDIM steps at inference
    eta: float = 1.0              #: DDIM eta for *stochastic* sampling (0 = deterministic DDIM)
    min_sampling_std: float = 0.03  #: floor on the per-step sampling std (DPPO min_sampling_denoising_std is 0.1; see docs/learner.md)
    min_logprob_std: float = 0.1  #: floor on the std used for log-probabilities (DPPO min_logprob_denoising_std)
    clip_x0: float = 1.0          #: clip the x0 prediction to [-c, c] (0 or negative disables)
    clip_action: float = 1.0      #: clip the final (normalised) action before un-normalising
    clip_chain: bool = False      #: also clip every *stored* chain sample to [-clip_action, clip_action]
    noise_clip: float = 0.0       #: clip each N(0, I) draw to [-c, c] (DPPO randn_clip_value 3); 0 = off (exact Gaussian)
    finetune_steps: int = 0       #: K', last denoising steps run by the fine-tuned copy (0 = none)


@dataclass
class PolicyConfig:
    """Everything needed to rebuild a :class:`~mechanic_rl_ros.policy.policy.DiffusionPolicy`."""

    obs_horizon: int = 2          #: T_o
    pred_horizon: int = 16        #: T_p
    action_horizon: int = 8       #: T_a (runtime)
    action_dim: int = 8           #: 7 joint position targets + gripper width
    cameras: tuple[str, ...] = ("scene",)  #: camera names; empty = state-only policy
    image_size: int = 96          #: square images, H = W
    lowdim_keys: tuple[str, ...] = ("qpos", "gripper")  #: low-dim observation keys, concatenated in order
    lowdim_dims: dict[str, int] = field(default_factory=lambda: {"qpos": 7, "gripper": 1})
    vision: VisionConfig = field(default_factory=VisionConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def __post_init__(self) -> None:
        self.cameras = tuple(self.cameras)
        self.lowdim_keys = tuple(self.lowdim_keys)
        self.lowdim_dims = {str(k): int(v) for k, v in dict(self.lowdim_dims).items()}
        self.vision.blocks_per_stage = tuple(int(b) for b in self.vision.blocks_per_stage)
        self.unet.down_dims = tuple(int(d) for d in self.unet.down_dims)

    # ------------------------------------------------------------------ checks
    def validate(self) -> "PolicyConfig":
        """Raise ``ValueError`` on an inconsistent configuration."""
        if self.obs_horizon < 1 or self.pred_horizon < 1 or self.action_horizon < 1:
            raise ValueError("horizons must be >= 1")
        if self.obs_horizon - 1 + self.action_horizon > self.pred_horizon:
            raise ValueError(
                f"T_o - 1 + T_a = {self.obs_horizon - 1 + self.action_horizon} exceeds T_p = "
                f"{self.pred_horizon}: the executed actions start at index T_o - 1 of the prediction")
        n_down = len(self.unet.down_dims) - 1
        if self.pred_horizon % (2 ** n_down):
            raise ValueError(f"T_p = {self.pred_horizon} must be divisible by 2^{n_down} (U-Net levels)")
        missing = [k for k in self.lowdim_keys if k not in self.lowdim_dims]
        if missing:
            raise ValueError(f"lowdim_dims lacks sizes for {missing}")
        if not self.cameras and not self.lowdim_keys:
            raise ValueError("the policy needs at least one camera or one low-dim key")
        if self.vision.pool not in ("spatial_softmax", "avg"):
            raise ValueError(f"vision.pool must be 'spatial_softmax' or 'avg', got {self.vision.pool!r}")
        if self.diffusion.prediction not in ("epsilon", "sample", "v"):
            raise ValueError(f"diffusion.prediction must be epsilon, sample or v, got {self.diffusion.prediction!r}")
        if self.diffusion.schedule != "squaredcos":
            raise ValueError(f"unknown diffusion schedule {self.diffusion.schedule!r}")
        s = self.sampling
        if not 1 <= s.inference_steps <= self.diffusion.train_steps:
            raise ValueError("sampling.inference_steps must be in [1, diffusion.train_steps]")
        if not 0 <= s.finetune_steps <= s.inference_steps:
            raise ValueError("sampling.finetune_steps must be in [0, sampling.inference_steps]")
        return self

    @property
    def lowdim_dim(self) -> int:
        return sum(self.lowdim_dims[k] for k in self.lowdim_keys)

    @property
    def action_start(self) -> int:
        """Index in the predicted chunk of the first action to execute (T_o - 1, Chi et al.)."""
        return self.obs_horizon - 1

    @property
    def max_lead(self) -> int:
        """Most control periods a chunk may start after its observation and still have T_a predicted actions."""
        return self.pred_horizon - self.action_start - self.action_horizon

    # -------------------------------------------------------------- (de)serialise
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return json.loads(json.dumps(d))  # tuples -> lists, plain JSON types

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PolicyConfig":
        d = dict(copy.deepcopy(d))
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown policy config keys: {sorted(unknown)}")
        subs = {"vision": VisionConfig, "unet": UNetConfig, "diffusion": DiffusionConfig,
                "sampling": SamplingConfig}
        for name, sub in subs.items():
            if name in d:
                sd = dict(d[name] or {})
                bad = set(sd) - {f.name for f in dataclasses.fields(sub)}
                if bad:
                    raise ValueError(f"unknown keys in policy.{name}: {sorted(bad)}")
                d[name] = sub(**sd)
        return cls(**d)

    def arch_dict(self) -> dict[str, Any]:
        """The fields that determine tensor shapes and their meaning (hashed into the arch id)."""
        d = self.to_dict()
        return {
            "arch_version": ARCH_VERSION,
            "obs_horizon": d["obs_horizon"],
            "pred_horizon": d["pred_horizon"],
            "action_dim": d["action_dim"],
            "cameras": d["cameras"],
            "image_size": d["image_size"] if self.cameras else None,
            "lowdim": [[k, self.lowdim_dims[k]] for k in self.lowdim_keys],
            "vision": d["vision"] if self.cameras else None,
            "unet": d["unet"],
            "diffusion": d["diffusion"],
        }

    @property
    def arch_id(self) -> str:
        """sha256 (first 16 hex digits) of the canonical JSON of :meth:`arch_dict`."""
        blob = json.dumps(self.arch_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
