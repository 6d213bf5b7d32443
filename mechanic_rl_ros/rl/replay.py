"""The replay buffer of value-guided selection: decisions with the next state's proposals.

:class:`KeyedRing` is the mechanism: a ring of rows keyed by (episode, chunk), a repeated key or a
non-finite value refused and counted (``refused_duplicate``, ``refused_nonfinite``), never stored; when
full, the oldest rows are overwritten; ``.npz`` save/load without pickle
(``np.load(..., allow_pickle=False)``). :class:`CandidateReplay` is the selection learner's buffer.

One row is one decision (one action chunk of T_a control steps). The pretrained encoder is frozen, so
features are stored instead of images (144 floats instead of 2 x 96 x 96 x 3 bytes per observation).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

class KeyedRing:
    """Ring buffer of ``capacity`` rows keyed by (episode, chunk); subclasses name their arrays.

    Subclasses set ``FORMAT`` and ``FIELDS`` (the arrays saved, ``episode`` and ``chunk`` among them),
    allocate them in ``__init__`` after :meth:`_start`, and store a row with :meth:`_put`. ``DIMS``
    names the constructor's integer arguments in order (saved in ``meta``, so :meth:`load` can build
    an empty buffer of the same shape)."""

    FORMAT = ""
    READS: tuple[str, ...] = ()  #: older formats :meth:`load` also reads (their extra arrays are ignored)
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
            if str(z["format"]) not in (cls.FORMAT, *cls.READS):
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


class CandidateReplay(KeyedRing):
    """Ring buffer of decisions with the next state's proposals (for the max in the TD target).

    Rows: feat, action (the chosen proposal), reward, done, next_feat, next_cands [N, act_dim],
    episode, chunk. A repeated (episode, chunk) or a non-finite value is refused and counted. Saved as ``.npz``
    and loaded with ``allow_pickle=False`` (:class:`KeyedRing`); a buffer of format ``/3`` (which also held
    the observed returns of a retired critic variant) loads without them."""

    FORMAT = "mechanic_rl_ros.select_replay/4"
    READS = ("mechanic_rl_ros.select_replay/3",)
    FIELDS = ("feat", "action", "reward", "done", "next_feat", "next_cands", "episode", "chunk")
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

    def add(self, feat: Any, action: Any, reward: float, done: bool, next_feat: Any | None, next_cands: Any | None,
            episode: int, chunk: int) -> bool:
        """Store one decision (``next_*`` may be None when ``done``); False (and counted) if refused."""
        if self._is_duplicate(episode, chunk):
            return False
        if not done and (next_feat is None or next_cands is None):
            raise ValueError("a decision that is not done needs next_feat and next_cands")
        row = {"feat": np.asarray(feat, np.float32).reshape(self.feat_dim),
               "action": np.asarray(action, np.float32).reshape(self.act_dim),
               "reward": np.float32(reward), "done": np.float32(bool(done)),
               "next_feat": np.zeros(self.feat_dim, np.float32) if next_feat is None else
               np.asarray(next_feat, np.float32).reshape(self.feat_dim),
               "next_cands": np.zeros((self.num_candidates, self.act_dim), np.float32) if next_cands is None else
               np.asarray(next_cands, np.float32).reshape(self.num_candidates, self.act_dim)}
        return self._put(episode, chunk, row)

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return self._rows(("feat", "action", "reward", "done", "next_feat", "next_cands"), batch_size, rng)
