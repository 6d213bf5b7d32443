"""The learner's join of executed steps and their rewards, by (episode, step).

Transitions (policy node) and step rewards (reward node) arrive on separate
topics, in any order, possibly twice (a restarted learner gets the recent
history replayed by transient-local QoS). :class:`Join` remembers which chunk
every step belongs to and which steps were rewarded, holds a reward that
arrived before its transition, and recognises duplicates. Its state is plain
JSON, saved with the learner's checkpoint.
"""
from __future__ import annotations

from typing import Any


class Join:
    """(episode, step) bookkeeping between transitions and rewards; serialisable to JSON."""

    def __init__(self) -> None:
        self.step_chunk: dict[tuple[int, int], int] = {}
        self.rewarded: set[tuple[int, int]] = set()
        self.waiting: dict[tuple[int, int], tuple[Any, ...]] = {}

    def add_step(self, key: tuple[int, int], chunk: int) -> tuple[bool, tuple[Any, ...] | None]:
        """Record an executed step: (new, the reward that waited for it or None); a duplicate is not new."""
        if key in self.step_chunk:
            return False, None
        self.step_chunk[key] = int(chunk)
        return True, self.waiting.pop(key, None)

    def add_reward(self, key: tuple[int, int], reward: tuple[Any, ...]) -> tuple[bool, int | None]:
        """Record a step's reward: (new, the chunk to credit now, or None when its step is not known yet)."""
        if key in self.rewarded or key in self.waiting:
            return False, None
        if key not in self.step_chunk:
            self.waiting[key] = reward
            return True, None
        self.rewarded.add(key)
        return True, self.step_chunk[key]

    def credit(self, key: tuple[int, int]) -> int:
        """Mark a step whose reward waited as rewarded; its chunk."""
        self.rewarded.add(key)
        return self.step_chunk[key]

    def state(self) -> dict:
        return {"step_chunk": [[e, s, c] for (e, s), c in self.step_chunk.items()],
                "rewarded": [[e, s] for e, s in self.rewarded]}

    def load(self, d: dict) -> None:
        self.step_chunk = {(int(e), int(s)): int(c) for e, s, c in d["step_chunk"]}
        self.rewarded = {(int(e), int(s)) for e, s in d["rewarded"]}
