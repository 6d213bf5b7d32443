"""Small configurations and random inputs for fast tests of code that uses the policy (no mocks needed)."""
from __future__ import annotations

from typing import Any

import numpy as np

from mechanic_rl_ros.policy.config import PolicyConfig, UNetConfig, VisionConfig


def tiny_config(cameras: tuple[str, ...] = ("scene",), image_size: int = 32, state_only: bool = False,
                task_dim: int = 13, **overrides: Any) -> PolicyConfig:
    """A few-thousand-parameter policy with the default horizons (T_o=2, T_p=16, T_a=8)."""
    if state_only:
        cameras = ()
    keys = ("qpos", "gripper", "task_state") if state_only else ("qpos", "gripper")
    dims = {"qpos": 7, "gripper": 1, "task_state": task_dim}
    cfg = PolicyConfig(cameras=cameras, image_size=image_size, lowdim_keys=keys,
                       lowdim_dims={k: dims[k] for k in keys},
                       vision=VisionConfig(base_width=8, group_size=8, num_keypoints=8, feature_dim=16),
                       unet=UNetConfig(down_dims=(16, 32, 32), kernel_size=3, n_groups=4, step_embed_dim=16))
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg.validate()


def random_obs(cfg: PolicyConfig, batch: int, seed: int = 0) -> dict[str, Any]:
    """A batch of random raw observations ``[B, T_o, ...]`` matching ``cfg``."""
    rng = np.random.default_rng(seed)
    obs: dict[str, Any] = {k: rng.normal(size=(batch, cfg.obs_horizon, cfg.lowdim_dims[k])).astype(np.float32)
                           for k in cfg.lowdim_keys}
    if cfg.cameras:
        obs["images"] = {c: rng.integers(0, 256, size=(batch, cfg.obs_horizon, cfg.image_size, cfg.image_size, 3),
                                         dtype=np.uint8) for c in cfg.cameras}
    return obs
