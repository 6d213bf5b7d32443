"""Observation history of the last T_o observations (Chi et al. 2023: the policy sees O_t = o_{t-T_o+1..t}).

At the start of an episode there are fewer than T_o observations; like the
training windows (see :mod:`.dataset`) the history is padded by repeating the
first observation.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Mapping, Sequence

import numpy as np


class ObsHistory:
    """Keeps the last ``horizon`` observations and stacks them along a new leading axis.

    ``push(obs)`` takes one environment observation
    (``{"images": {cam: uint8[H, W, 3]}, "qpos": float[7], ...}``); ``stacked()``
    returns ``{"images": {cam: uint8[T_o, H, W, 3]}, key: float32[T_o, d]}`` for
    the cameras and low-dim keys given at construction -- the input of
    :meth:`DiffusionPolicy.predict_chunk`.
    """

    def __init__(self, horizon: int, cameras: Sequence[str] = (), lowdim_keys: Sequence[str] = ()):
        self.horizon = int(horizon)
        self.cameras = tuple(cameras)
        self.lowdim_keys = tuple(lowdim_keys)
        self._buf: deque[dict[str, Any]] = deque(maxlen=self.horizon)

    @classmethod
    def for_policy(cls, policy: Any) -> "ObsHistory":
        cfg = policy.cfg
        return cls(cfg.obs_horizon, cfg.cameras, cfg.lowdim_keys)

    def reset(self) -> None:
        self._buf.clear()

    def __len__(self) -> int:
        return len(self._buf)

    def push(self, obs: Mapping[str, Any]) -> None:
        """Append one observation (copied); the first one after :meth:`reset` fills the whole history."""
        item: dict[str, Any] = {k: np.asarray(obs[k], dtype=np.float32).reshape(-1).copy() for k in self.lowdim_keys}
        if self.cameras:
            item["images"] = {c: np.asarray(obs["images"][c], dtype=np.uint8).copy() for c in self.cameras}
        if not self._buf:
            for _ in range(self.horizon - 1):
                self._buf.append(item)
        self._buf.append(item)

    def stacked(self) -> dict[str, Any]:
        if not self._buf:
            raise RuntimeError("ObsHistory is empty: push an observation first")
        out: dict[str, Any] = {k: np.stack([o[k] for o in self._buf]) for k in self.lowdim_keys}
        if self.cameras:
            out["images"] = {c: np.stack([o["images"][c] for o in self._buf]) for c in self.cameras}
        return out


def stack_histories(histories: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Batch several ``ObsHistory.stacked()`` dicts (e.g. from parallel envs) into ``[B, T_o, ...]`` arrays."""
    first = histories[0]
    out: dict[str, Any] = {k: np.stack([h[k] for h in histories]) for k in first if k != "images"}
    if "images" in first:
        out["images"] = {c: np.stack([h["images"][c] for h in histories]) for c in first["images"]}
    return out
