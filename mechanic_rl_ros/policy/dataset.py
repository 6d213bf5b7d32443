"""Training windows from demonstration episodes (Chi et al. 2023, Sec. III-A and IV-C).

Sample j of an episode of length L is the window around time t:
observations o_{t-T_o+1..t} and actions a_{t-T_o+1..t-T_o+T_p} (the predicted
sequence starts with the first observed step, so the actions to execute are
indices T_o-1 .. T_o-2+T_a).  Indices before the start repeat the first step
and indices past the end repeat the last step.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch

from .config import PolicyConfig


class SequenceDataset:
    """All windows of a list of episodes, stored as contiguous arrays and gathered by index.

    Episodes are dicts as returned by ``mechanic_rl_ros.data.demos.load_episodes``:
    ``"images": {cam: uint8[L, H, W, 3]}``, low-dim keys ``[L, d]``, ``"action": [L, A]``.
    """

    def __init__(self, episodes: Sequence[Mapping[str, Any]], cfg: PolicyConfig):
        if not episodes:
            raise ValueError("no episodes")
        self.cfg = cfg
        to, tp = cfg.obs_horizon, cfg.pred_horizon
        self.images = {c: np.concatenate([np.asarray(e["images"][c], dtype=np.uint8) for e in episodes])
                       for c in cfg.cameras}
        self.lowdim = {k: np.concatenate([np.asarray(e[k], dtype=np.float32).reshape(len(e["action"]), -1)
                                          for e in episodes]) for k in cfg.lowdim_keys}
        self.action = np.concatenate([np.asarray(e["action"], dtype=np.float32) for e in episodes])
        obs_idx, act_idx = [], []
        start = 0
        for e in episodes:
            n = len(e["action"])
            t = np.arange(n)[:, None]
            obs_idx.append(start + np.clip(t - to + 1 + np.arange(to)[None], 0, n - 1))
            act_idx.append(start + np.clip(t - to + 1 + np.arange(tp)[None], 0, n - 1))
            start += n
        self.obs_idx = np.concatenate(obs_idx)
        self.act_idx = np.concatenate(act_idx)
        for c, im in self.images.items():
            if im.shape[1:] != (cfg.image_size, cfg.image_size, 3):
                raise ValueError(f"camera {c!r}: images are {im.shape[1:]}, config expects "
                                 f"({cfg.image_size}, {cfg.image_size}, 3)")
        for k, v in self.lowdim.items():
            if v.shape[1] != cfg.lowdim_dims[k]:
                raise ValueError(f"low-dim key {k!r} has {v.shape[1]} dims, config says {cfg.lowdim_dims[k]}")

    def __len__(self) -> int:
        return len(self.obs_idx)

    def get_batch(self, idx: np.ndarray) -> dict[str, Any]:
        """Windows ``idx`` as torch tensors: images uint8[B, T_o, H, W, 3], low-dim [B, T_o, d], action [B, T_p, A]."""
        oi, ai = self.obs_idx[idx], self.act_idx[idx]
        batch: dict[str, Any] = {k: torch.from_numpy(v[oi]) for k, v in self.lowdim.items()}
        if self.images:
            batch["images"] = {c: torch.from_numpy(v[oi]) for c, v in self.images.items()}
        batch["action"] = torch.from_numpy(self.action[ai])
        return batch

    def batches(self, batch_size: int, rng: np.random.Generator | None = None,
                drop_last: bool = False) -> Iterator[dict[str, Any]]:
        """One epoch of batches (shuffled when ``rng`` is given)."""
        order = rng.permutation(len(self)) if rng is not None else np.arange(len(self))
        stop = len(order) - (len(order) % batch_size if drop_last else 0)
        for i in range(0, stop, batch_size):
            yield self.get_batch(order[i:i + batch_size])


def synthetic_episodes(n: int = 8, length: int = 40, cameras: Sequence[str] = ("scene",), image_size: int = 32,
                       task_dim: int = 3, seed: int = 0) -> list[dict[str, Any]]:
    """Toy demonstrations for tests and benchmarks (no simulator needed).

    A 7-joint arm moves its joints smoothly towards a goal configuration that
    is a fixed function of ``task_state``; the camera shows a bright square at a
    position encoding the goal; the action is the next joint target and a
    gripper width that closes half-way through the episode.
    """
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(task_dim, 7)) * 0.5
    eps = []
    for _ in range(n):
        task = rng.uniform(-1, 1, size=task_dim).astype(np.float32)
        goal = np.tanh(task @ mix)
        q = rng.normal(scale=0.1, size=7)
        qs, acts, grip = [], [], []
        for t in range(length):
            target = q + 0.15 * (goal - q)
            width = 0.08 if t < length // 2 else 0.0
            qs.append(q.copy())
            grip.append([0.08 if t <= length // 2 else 0.0])
            acts.append(np.concatenate([target, [width]]))
            q = target + rng.normal(scale=0.005, size=7)
        ep: dict[str, Any] = {"qpos": np.asarray(qs, np.float32), "gripper": np.asarray(grip, np.float32),
                              "action": np.asarray(acts, np.float32),
                              "task_state": np.repeat(task[None], length, axis=0), "success": True}
        if cameras:
            img = np.zeros((length, image_size, image_size, 3), np.uint8)
            s = max(2, image_size // 8)
            px = int((task[0] + 1) / 2 * (image_size - s))
            py = int((task[1 % task_dim] + 1) / 2 * (image_size - s))
            img[:, py:py + s, px:px + s] = 255
            img[..., 2] = np.linspace(0, 120, length, dtype=np.uint8)[:, None, None]
            ep["images"] = {c: img.copy() for c in cameras}
        eps.append(ep)
    return eps


def demo_windows(policy: Any, episodes: Sequence[dict]) -> Any:
    """The :class:`~mechanic_rl_ros.policy.dataset.SequenceDataset` of ``episodes`` for ``policy``; ValueError
    naming the episode and the field when one does not match the policy's inputs or action."""
    cfg = policy.cfg
    if not episodes:
        raise ValueError("no demonstration episodes")
    for i, ep in enumerate(episodes):
        act = np.asarray(ep.get("action", np.zeros((0, 0))))
        if act.ndim != 2 or act.shape[1] != cfg.action_dim or len(act) == 0:
            raise ValueError(f"episode {i}: action has shape {list(act.shape)}; expected [L > 0, {cfg.action_dim}]")
        if not np.all(np.isfinite(act)):
            raise ValueError(f"episode {i}: action has non-finite values")
        for k in cfg.lowdim_keys:
            if k not in ep:
                raise ValueError(f"episode {i}: no low-dim key {k!r}; the policy reads {list(cfg.lowdim_keys)}")
            v = np.asarray(ep[k], dtype=np.float32).reshape(len(act), -1)
            if v.shape[1] != cfg.lowdim_dims[k]:
                raise ValueError(f"episode {i}: {k} has {v.shape[1]} values per step; expected {cfg.lowdim_dims[k]}")
            if not np.all(np.isfinite(v)):
                raise ValueError(f"episode {i}: {k} has non-finite values")
        for c in cfg.cameras:
            im = np.asarray(ep.get("images", {}).get(c, np.zeros((0,))))
            if im.shape != (len(act), cfg.image_size, cfg.image_size, 3):
                raise ValueError(f"episode {i}: images[{c!r}] has shape {list(im.shape)}; expected "
                                 f"[{len(act)}, {cfg.image_size}, {cfg.image_size}, 3]")
    return SequenceDataset(episodes, cfg)


def pretraining_augment_pad(checkpoint: str | Path) -> int:
    """The random-shift pad [px] a checkpoint was pretrained with (its ``train_config.yaml``), else 4."""
    from mechanic_rl_ros.config_files import load_yaml

    f = Path(checkpoint) / "train_config.yaml"
    if f.is_file():
        try:
            return int((load_yaml(f).get("train") or {}).get("augment_pad", 4))
        except Exception:  # a malformed file: the default, as when there is none
            pass
    return 4
