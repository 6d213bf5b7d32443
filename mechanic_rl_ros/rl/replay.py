"""Bounded replay buffer of decisions for the off-policy noise-space learner (:mod:`.steer`).

One row is one decision (one action chunk of T_a control steps):

* ``feat``      -- the frozen policy's observation features of the decision (``DiffusionPolicy.encode``),
* ``noise``     -- the initial DDIM noise x_K the actor chose, flattened (``T_p * A``),
* ``reward``    -- the sum of the chunk's step rewards,
* ``done``      -- the episode *terminated* in this chunk (a time-limit truncation is not ``done``:
  the target bootstraps through it),
* ``next_feat`` -- the features of the observation history after the chunk,
* ``episode``, ``chunk`` -- the decision's key; ``env_steps`` -- control steps the chunk executed.

The pretrained encoder is frozen, so features are stored instead of images (144 floats instead of
2 x 96 x 96 x 3 bytes per observation). A decision whose key is already in the buffer is refused
and counted (``refused_duplicate``), never stored twice; a row with a non-finite value is refused
and counted (``refused_nonfinite``). When full, the oldest rows are overwritten (ring buffer).

:meth:`ReplayBuffer.save` / :meth:`ReplayBuffer.load` use ``.npz`` (no pickle:
``np.load(..., allow_pickle=False)``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "mechanic_rl_ros.offpolicy_replay/1"


class ReplayBuffer:
    """Ring buffer of ``capacity`` decisions with feature dim ``feat_dim`` and noise dim ``noise_dim``."""

    FIELDS = ("feat", "noise", "reward", "done", "next_feat", "episode", "chunk", "env_steps")

    def __init__(self, capacity: int, feat_dim: int, noise_dim: int):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity, self.feat_dim, self.noise_dim = int(capacity), int(feat_dim), int(noise_dim)
        c = self.capacity
        self.feat = np.zeros((c, feat_dim), np.float32)
        self.noise = np.zeros((c, noise_dim), np.float32)
        self.reward = np.zeros(c, np.float32)
        self.done = np.zeros(c, np.float32)
        self.next_feat = np.zeros((c, feat_dim), np.float32)
        self.episode = np.full(c, -1, np.int64)
        self.chunk = np.full(c, -1, np.int64)
        self.env_steps = np.zeros(c, np.int64)
        self.size = 0
        self.pos = 0
        self.added = 0                 #: rows ever stored
        self.refused_duplicate = 0
        self.refused_nonfinite = 0
        self._keys: dict[tuple[int, int], int] = {}

    def __len__(self) -> int:
        return self.size

    def add(self, feat: Any, noise: Any, reward: float, done: bool, next_feat: Any, episode: int, chunk: int,
            env_steps: int = 0) -> bool:
        """Store one decision; False (and counted) if its (episode, chunk) is already stored or a value is
        not finite."""
        key = (int(episode), int(chunk))
        if key in self._keys:
            self.refused_duplicate += 1
            return False
        f = np.asarray(feat, np.float32).reshape(-1)
        nf = np.asarray(next_feat, np.float32).reshape(-1)
        w = np.asarray(noise, np.float32).reshape(-1)
        if f.shape[0] != self.feat_dim or nf.shape[0] != self.feat_dim or w.shape[0] != self.noise_dim:
            raise ValueError(f"feature/noise sizes {f.shape[0]}/{nf.shape[0]}/{w.shape[0]}, "
                             f"expected {self.feat_dim}/{self.feat_dim}/{self.noise_dim}")
        if not (np.isfinite(f).all() and np.isfinite(nf).all() and np.isfinite(w).all() and np.isfinite(reward)):
            self.refused_nonfinite += 1
            return False
        i = self.pos
        if self.size == self.capacity:  # overwrite the oldest row
            self._keys.pop((int(self.episode[i]), int(self.chunk[i])), None)
        self.feat[i], self.noise[i], self.next_feat[i] = f, w, nf
        self.reward[i], self.done[i] = float(reward), float(bool(done))
        self.episode[i], self.chunk[i], self.env_steps[i] = key[0], key[1], int(env_steps)
        self._keys[key] = i
        self.pos = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        self.added += 1
        return True

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``batch_size`` rows drawn uniformly with replacement."""
        if self.size == 0:
            raise ValueError("sample from an empty replay buffer")
        idx = rng.integers(0, self.size, size=int(batch_size))
        return {"feat": self.feat[idx], "noise": self.noise[idx], "reward": self.reward[idx],
                "done": self.done[idx], "next_feat": self.next_feat[idx]}

    def counters(self) -> dict[str, int]:
        return {"size": self.size, "added": self.added, "refused_duplicate": self.refused_duplicate,
                "refused_nonfinite": self.refused_nonfinite}

    # ------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = np.array([self.capacity, self.feat_dim, self.noise_dim, self.size, self.pos, self.added,
                         self.refused_duplicate, self.refused_nonfinite], np.int64)
        n = self.size
        with open(path, "wb") as fh:  # np.savez would append .npz to a name without it
            np.savez(fh, format=np.array(FORMAT), meta=meta,
                     **{k: getattr(self, k)[:n] if self.size < self.capacity else getattr(self, k)
                        for k in self.FIELDS})
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ReplayBuffer":
        with np.load(Path(path), allow_pickle=False) as z:
            if str(z["format"]) != FORMAT:
                raise ValueError(f"{path}: not a replay buffer of format {FORMAT} (got {z['format']})")
            cap, fd, nd, size, pos, added, dup, nonfin = (int(v) for v in z["meta"])
            buf = cls(cap, fd, nd)
            for k in cls.FIELDS:
                arr = z[k]
                if arr.shape[0] != size:
                    raise ValueError(f"{path}: field {k} has {arr.shape[0]} rows, expected {size}")
                getattr(buf, k)[:size] = arr
        buf.size, buf.pos, buf.added, buf.refused_duplicate, buf.refused_nonfinite = size, pos, added, dup, nonfin
        buf._keys = {(int(e), int(c)): i for i, (e, c) in enumerate(zip(buf.episode[:size], buf.chunk[:size]))}
        return buf
