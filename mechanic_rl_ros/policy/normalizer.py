"""Min/max normalisation of actions and low-dimensional observations to [-1, 1].

Chi et al. (2023) normalise actions to [-1, 1] with the dataset's per-dimension
min and max, which matches the range the clipped DDPM/DDIM x0 prediction lives
in.  The statistics are fitted once on the demonstrations, written to the
checkpoint's JSON config and never trained.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

#: a dimension whose range is below this is treated as constant (mapped to 0, scale 1)
_MIN_RANGE = 1e-6


class MinMaxNormalizer:
    """Per-dimension affine map ``y = (x - center) * scale`` with ``[min, max] -> [-1, 1]``.

    Constant dimensions (``max - min < 1e-6``) get ``scale = 1`` so they map to
    ``x - center`` (i.e. 0 on the data) and stay invertible.
    Works on numpy arrays and torch tensors of shape ``[..., D]``.
    """

    def __init__(self, min_: np.ndarray, max_: np.ndarray):
        self.min = np.asarray(min_, dtype=np.float64).reshape(-1)
        self.max = np.asarray(max_, dtype=np.float64).reshape(-1)
        if self.min.shape != self.max.shape:
            raise ValueError("min and max must have the same shape")
        if np.any(self.max < self.min):
            raise ValueError("normaliser max < min")
        rng = self.max - self.min
        self.center = (self.max + self.min) / 2.0
        self.scale = np.where(rng > _MIN_RANGE, 2.0 / np.maximum(rng, _MIN_RANGE), 1.0)
        self._cache: dict[tuple[Any, Any], tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def fit(cls, data: np.ndarray) -> "MinMaxNormalizer":
        data = np.asarray(data, dtype=np.float64)
        data = data.reshape(-1, data.shape[-1])
        return cls(data.min(axis=0), data.max(axis=0))

    @classmethod
    def identity(cls, dim: int) -> "MinMaxNormalizer":
        return cls(-np.ones(dim), np.ones(dim))

    @property
    def dim(self) -> int:
        return int(self.min.shape[0])

    def _torch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (x.device, x.dtype)
        if key not in self._cache:
            with torch.inference_mode(False):  # cached tensors must stay usable by autograd later
                self._cache[key] = (torch.as_tensor(self.center, dtype=x.dtype, device=x.device),
                                    torch.as_tensor(self.scale, dtype=x.dtype, device=x.device))
        return self._cache[key]

    def normalize(self, x):
        if isinstance(x, torch.Tensor):
            c, s = self._torch(x)
            return (x - c) * s
        x = np.asarray(x)
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
        return ((x - self.center) * self.scale).astype(dtype)

    def unnormalize(self, y):
        if isinstance(y, torch.Tensor):
            c, s = self._torch(y)
            return y / s + c
        y = np.asarray(y)
        dtype = y.dtype if np.issubdtype(y.dtype, np.floating) else np.float32
        return (y / self.scale + self.center).astype(dtype)

    def to_dict(self) -> dict[str, list[float]]:
        return {"min": self.min.tolist(), "max": self.max.tolist()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "MinMaxNormalizer":
        return cls(np.asarray(d["min"]), np.asarray(d["max"]))


class PolicyNormalizer:
    """The action normaliser plus one normaliser per low-dim observation key."""

    def __init__(self, action: MinMaxNormalizer, lowdim: Mapping[str, MinMaxNormalizer]):
        self.action = action
        self.lowdim = dict(lowdim)

    @classmethod
    def fit(cls, episodes: list[Mapping[str, Any]], lowdim_keys: tuple[str, ...]) -> "PolicyNormalizer":
        """Fit min/max over all steps of all episodes (``episode["action"]``, ``episode[key]``)."""
        act = np.concatenate([np.asarray(e["action"], dtype=np.float64) for e in episodes])
        low = {k: MinMaxNormalizer.fit(np.concatenate([np.asarray(e[k], dtype=np.float64)
                                                       for e in episodes]))
               for k in lowdim_keys}
        return cls(MinMaxNormalizer.fit(act), low)

    @classmethod
    def identity(cls, action_dim: int, lowdim_dims: Mapping[str, int]) -> "PolicyNormalizer":
        return cls(MinMaxNormalizer.identity(action_dim),
                   {k: MinMaxNormalizer.identity(d) for k, d in lowdim_dims.items()})

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action.to_dict(),
                "lowdim": {k: v.to_dict() for k, v in self.lowdim.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PolicyNormalizer":
        return cls(MinMaxNormalizer.from_dict(d["action"]),
                   {k: MinMaxNormalizer.from_dict(v) for k, v in d["lowdim"].items()})
