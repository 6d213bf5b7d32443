"""Decisions and per-step rewards arriving one by one -> rows of a :class:`~.replay.CandidateReplay`.

The stack's learner sees a decision (features, N proposals, the chosen one) on the first step of each
chunk and the rewards of the chunk's steps one control period later, each joined to its chunk by
(episode, step) before it gets here. A row of the selection learner's replay needs the decision, the
sum of its chunk's rewards, whether the episode ended in it, and -- unless it ended -- the *next*
decision's features and proposals (the max of the TD target runs over them). :class:`SelectStream`
holds each decision until that is all known:

* a decision whose chunk gets a terminal or truncated reward is complete at once (``done``; a time-limit
  failure is terminal with value 0, as in ``mechanic-rl train-select``); decisions of later chunks of
  that episode (the step the policy had already sent) are dropped and counted;
* otherwise it is complete when the next chunk's decision has arrived and every step the policy
  executed in the chunk has its reward (transitions arrive in order, so by then the step count is final).

Nothing is dropped silently: every refusal is counted in :attr:`counters`. The pending decisions are
saved with the learner's checkpoint (``.npz``, loaded with ``allow_pickle=False``). No ROS imports.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .replay import CandidateReplay

FORMAT = "mechanic_rl_ros.select_stream/1"


@dataclass
class _Pending:
    feat: np.ndarray
    proposals: np.ndarray
    chosen: int
    reward: float = 0.0
    rewards: int = 0
    steps: int = 0
    done: bool = False


class SelectStream:
    """See the module docstring. ``max_episodes`` bounds the episodes with pending decisions (the oldest
    is dropped, counted, when a new one would exceed it: an episode whose end never came)."""

    def __init__(self, replay: CandidateReplay, max_episodes: int = 64):
        self.replay = replay
        self.max_episodes = int(max_episodes)
        self.pending: "OrderedDict[int, dict[int, _Pending]]" = OrderedDict()  # episode -> chunk -> decision
        self.ended: "OrderedDict[int, None]" = OrderedDict()  # episodes whose terminal reward came (bounded)
        self.counters = {"decisions": 0, "complete": 0, "complete_done": 0, "refused_shape": 0,
                         "refused_replay": 0, "after_end": 0, "dropped_incomplete": 0, "rewards_unmatched": 0}

    def __len__(self) -> int:
        return sum(len(c) for c in self.pending.values())

    # ------------------------------------------------------------ input
    def add_decision(self, episode: int, chunk: int, features: Any, proposals: Any, chosen: int) -> bool:
        """A decision; False (counted) if its shapes do not fit the replay or its episode already ended."""
        r = self.replay
        feat = np.asarray(features, np.float32)
        props = np.asarray(proposals, np.float32)
        if feat.shape != (r.feat_dim,) or props.shape != (r.num_candidates, r.act_dim) or \
                not 0 <= int(chosen) < r.num_candidates:
            self.counters["refused_shape"] += 1
            raise ValueError(f"decision of episode {episode} chunk {chunk}: features {list(feat.shape)}, proposals "
                             f"{list(props.shape)}, chosen {chosen}; expected [{r.feat_dim}], "
                             f"[{r.num_candidates}, {r.act_dim}] and 0..{r.num_candidates - 1} (select config "
                             f"of policy_node and learner_node must match)")
        if episode in self.ended:
            self.counters["after_end"] += 1
            return False
        if episode not in self.pending:
            self.pending[episode] = {}
            while len(self.pending) > self.max_episodes:
                _, chunks = self.pending.popitem(last=False)
                self.counters["dropped_incomplete"] += len(chunks)
        self.pending[episode][int(chunk)] = _Pending(feat, props, int(chosen))
        self.counters["decisions"] += 1
        self._try_complete(episode, int(chunk) - 1)
        return True

    def add_step(self, episode: int, chunk: int) -> None:
        """A step the policy executed in (episode, chunk) (every Transition, the decision's own included)."""
        p = self.pending.get(episode, {}).get(int(chunk))
        if p is not None:
            p.steps += 1

    def add_reward(self, episode: int, chunk: int, reward: float, terminal: bool) -> bool:
        """The reward of one step of (episode, chunk); ``terminal``: the episode ended with it (success,
        failure or time limit). False (counted) if no pending decision takes it."""
        p = self.pending.get(episode, {}).get(int(chunk))
        if p is None:
            self.counters["rewards_unmatched"] += 1
            return False
        p.reward += float(reward)
        p.rewards += 1
        if terminal:
            p.done = True
            self._store(episode, int(chunk), p, None)
            later = self.pending.pop(episode, {})
            self.counters["after_end"] += len(later)
            self.ended[episode] = None
            while len(self.ended) > 4 * self.max_episodes:
                self.ended.popitem(last=False)
        else:
            self._try_complete(episode, int(chunk))
        return True

    def drop_episode(self, episode: int) -> int:
        """Forget every pending decision of ``episode`` (the robot aborted it); how many."""
        n = len(self.pending.pop(episode, {}))
        self.counters["dropped_incomplete"] += n
        self.ended[episode] = None
        return n

    # ------------------------------------------------------------ completion
    def _try_complete(self, episode: int, chunk: int) -> None:
        chunks = self.pending.get(episode, {})
        p, nxt = chunks.get(chunk), chunks.get(chunk + 1)
        if p is not None and nxt is not None and p.steps > 0 and p.rewards == p.steps:
            self._store(episode, chunk, p, nxt)

    def _store(self, episode: int, chunk: int, p: _Pending, nxt: _Pending | None) -> None:
        self.pending.get(episode, {}).pop(chunk, None)
        ok = self.replay.add(p.feat, p.proposals[p.chosen], p.reward, nxt is None,
                             None if nxt is None else nxt.feat, None if nxt is None else nxt.proposals,
                             episode, chunk)
        if ok:
            self.counters["complete"] += 1
            self.counters["complete_done"] += int(nxt is None)
        else:
            self.counters["refused_replay"] += 1

    # ------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """The pending decisions, counters and ended episodes as ``.npz`` (no pickled objects)."""
        rows = [(e, c, p) for e, chunks in self.pending.items() for c, p in chunks.items()]
        r = self.replay
        arrays = {
            "episode": np.array([e for e, _, _ in rows], np.int64),
            "chunk": np.array([c for _, c, _ in rows], np.int64),
            "feat": np.array([p.feat for _, _, p in rows], np.float32).reshape(len(rows), r.feat_dim),
            "proposals": np.array([p.proposals for _, _, p in rows], np.float32).reshape(
                len(rows), r.num_candidates, r.act_dim),
            "ints": np.array([(p.chosen, p.rewards, p.steps, int(p.done)) for _, _, p in rows], np.int64
                             ).reshape(len(rows), 4),
            "reward": np.array([p.reward for _, _, p in rows], np.float64),
            "ended": np.array(list(self.ended), np.int64),
            "counter_names": np.array(list(self.counters)),
            "counter_values": np.array(list(self.counters.values()), np.int64),
        }
        path = Path(path)
        with open(path, "wb") as fh:
            np.savez(fh, format=np.array(FORMAT), **arrays)
        return path

    def load(self, path: str | Path) -> None:
        """Restore what :meth:`save` wrote (the replay is loaded on its own)."""
        with np.load(Path(path), allow_pickle=False) as z:
            if str(z["format"]) != FORMAT:
                raise ValueError(f"{path}: format {z['format']}, expected {FORMAT}")
            self.pending.clear()
            for e, c, f, pr, ints, rew in zip(z["episode"], z["chunk"], z["feat"], z["proposals"], z["ints"],
                                              z["reward"]):
                self.pending.setdefault(int(e), {})[int(c)] = _Pending(f.copy(), pr.copy(), int(ints[0]), float(rew),
                                                                       int(ints[1]), int(ints[2]), bool(ints[3]))
            self.ended = OrderedDict((int(e), None) for e in z["ended"])
            self.counters.update({str(k): int(v) for k, v in zip(z["counter_names"], z["counter_values"])})
