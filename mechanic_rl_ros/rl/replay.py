"""Bounded replay buffers of decisions for the off-policy learners.

:class:`KeyedRing` is what they share: a ring of rows keyed by (episode, chunk), a repeated key or a
non-finite value refused and counted, ``.npz`` save/load without pickle. :class:`ReplayBuffer` is the
noise-space learner's (:mod:`.steer`), :class:`~mechanic_rl_ros.rl.select.CandidateReplay` the
selection learner's.

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


class KeyedRing:
    """Ring buffer of ``capacity`` rows keyed by (episode, chunk); subclasses name their arrays.

    Subclasses set ``FORMAT`` and ``FIELDS`` (the arrays saved, ``episode`` and ``chunk`` among them),
    allocate them in ``__init__`` after :meth:`_start`, and store a row with :meth:`_put`. ``DIMS``
    names the constructor's integer arguments in order (saved in ``meta``, so :meth:`load` can build
    an empty buffer of the same shape)."""

    FORMAT = ""
    FIELDS: tuple[str, ...] = ()
    DIMS: tuple[str, ...] = ("capacity",)

    def _start(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.episode = np.full(self.capacity, -1, np.int64)
        self.chunk = np.full(self.capacity, -1, np.int64)
        self.size = 0
        self.pos = 0
        self.added = 0                 #: rows ever stored
        self.refused_duplicate = 0
        self.refused_nonfinite = 0
        self._keys: dict[tuple[int, int], int] = {}

    def __len__(self) -> int:
        return self.size

    def _is_duplicate(self, episode: int, chunk: int) -> bool:
        """True (and counted) if (episode, chunk) is stored already."""
        if (int(episode), int(chunk)) in self._keys:
            self.refused_duplicate += 1
            return True
        return False

    def _put(self, episode: int, chunk: int, row: dict[str, Any]) -> bool:
        """Store ``row`` (array name -> value) under (episode, chunk), overwriting the oldest row when full;
        False (and counted) if a floating value is not finite."""
        if not all(np.isfinite(v).all() for v in row.values()):
            self.refused_nonfinite += 1
            return False
        i = self.pos
        if self.size == self.capacity:  # overwrite the oldest row
            self._keys.pop((int(self.episode[i]), int(self.chunk[i])), None)
        for k, v in row.items():
            getattr(self, k)[i] = v
        key = (int(episode), int(chunk))
        self.episode[i], self.chunk[i] = key
        self._keys[key] = i
        self.pos = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        self.added += 1
        return True

    def _rows(self, keys: tuple[str, ...], batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``batch_size`` rows drawn uniformly with replacement, arrays ``keys``."""
        if self.size == 0:
            raise ValueError("sample from an empty replay buffer")
        idx = rng.integers(0, self.size, size=int(batch_size))
        return {k: getattr(self, k)[idx] for k in keys}

    def counters(self) -> dict[str, int]:
        return {"size": self.size, "added": self.added, "refused_duplicate": self.refused_duplicate,
                "refused_nonfinite": self.refused_nonfinite}

    # ------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = np.array([getattr(self, d) for d in self.DIMS] + [self.size, self.pos, self.added,
                                                                  self.refused_duplicate, self.refused_nonfinite],
                        np.int64)
        with open(path, "wb") as fh:  # np.savez would append .npz to a name without it
            np.savez(fh, format=np.array(self.FORMAT), meta=meta,
                     **{k: getattr(self, k)[:self.size] for k in self.FIELDS})
        return path

    @classmethod
    def load(cls, path: str | Path):
        with np.load(Path(path), allow_pickle=False) as z:
            if str(z["format"]) != cls.FORMAT:
                raise ValueError(f"{path}: not a replay buffer of format {cls.FORMAT} (got {z['format']})")
            meta = [int(v) for v in z["meta"]]
            nd = len(cls.DIMS)
            buf = cls(*meta[:nd])
            size, pos, added, dup, nonfin = meta[nd:]
            for k in cls.FIELDS:
                arr = z[k]
                if arr.shape[0] != size:
                    raise ValueError(f"{path}: field {k} has {arr.shape[0]} rows, expected {size}")
                getattr(buf, k)[:size] = arr
        buf.size, buf.pos, buf.added, buf.refused_duplicate, buf.refused_nonfinite = size, pos, added, dup, nonfin
        buf._keys = {(int(e), int(c)): i for i, (e, c) in enumerate(zip(buf.episode[:size], buf.chunk[:size]))}
        return buf


class ReplayBuffer(KeyedRing):
    """Ring buffer of ``capacity`` decisions with feature dim ``feat_dim`` and noise dim ``noise_dim``."""

    FORMAT = FORMAT
    FIELDS = ("feat", "noise", "reward", "done", "next_feat", "episode", "chunk", "env_steps")
    DIMS = ("capacity", "feat_dim", "noise_dim")

    def __init__(self, capacity: int, feat_dim: int, noise_dim: int):
        self._start(capacity)
        self.feat_dim, self.noise_dim = int(feat_dim), int(noise_dim)
        c = self.capacity
        self.feat = np.zeros((c, feat_dim), np.float32)
        self.noise = np.zeros((c, noise_dim), np.float32)
        self.reward = np.zeros(c, np.float32)
        self.done = np.zeros(c, np.float32)
        self.next_feat = np.zeros((c, feat_dim), np.float32)
        self.env_steps = np.zeros(c, np.int64)

    def add(self, feat: Any, noise: Any, reward: float, done: bool, next_feat: Any, episode: int, chunk: int,
            env_steps: int = 0) -> bool:
        """Store one decision; False (and counted) if its (episode, chunk) is already stored or a value is
        not finite."""
        if self._is_duplicate(episode, chunk):
            return False
        f = np.asarray(feat, np.float32).reshape(-1)
        nf = np.asarray(next_feat, np.float32).reshape(-1)
        w = np.asarray(noise, np.float32).reshape(-1)
        if f.shape[0] != self.feat_dim or nf.shape[0] != self.feat_dim or w.shape[0] != self.noise_dim:
            raise ValueError(f"feature/noise sizes {f.shape[0]}/{nf.shape[0]}/{w.shape[0]}, "
                             f"expected {self.feat_dim}/{self.feat_dim}/{self.noise_dim}")
        ok = self._put(episode, chunk, {"feat": f, "noise": w, "next_feat": nf,
                                        "reward": np.float32(reward), "done": np.float32(bool(done))})
        if ok:
            self.env_steps[(self.pos - 1) % self.capacity] = int(env_steps)
        return ok

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``batch_size`` rows drawn uniformly with replacement."""
        return self._rows(("feat", "noise", "reward", "done", "next_feat"), batch_size, rng)
