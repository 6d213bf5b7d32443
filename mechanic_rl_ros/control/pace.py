"""Pacing the episodes to the learner: a fixed number of gradient steps per robot minute.

The stack's learner runs beside the arm and makes what gradient steps its machine allows; on the robot a
robot minute is a wall minute, so how much it learns per robot minute is a property of the learner's
computer. In simulation the arm runs as fast as the CPUs let it, and on a small machine the learner falls
far behind its update-to-data ratio: the same 30 robot minutes then give 600 gradient steps on one machine
and 2 500 on another, and simulated results depend on the machine's speed.

:class:`LearnerPace` fixes that rate. reward_node asks it before every episode's reset; it holds the start
(the arm at rest, between episodes) while the learner has made fewer than ``rate`` gradient steps per robot
minute so far and still owes steps (it learns from what it was given, never waits for nothing), and never
longer than ``max_wait`` wall seconds at one start (a learner that stopped answering does not stop the arm
for good). Robot minutes are control steps executed (``control_dt`` each), as everywhere in the project.
Pure Python: reward_node feeds it the learner's ``LearnerStats`` and asks with its count of executed steps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class PaceConfig:
    """``rate``: [gradient steps per robot minute], 0 = no pacing; ``control_dt``: [s] one control step;
    ``max_wait``: [wall s] the longest hold of one episode start."""

    rate: float = 0.0
    control_dt: float = 0.1
    max_wait: float = 600.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate < math.inf:
            raise ValueError(f"learner_pace: got {self.rate}; expected gradient steps per robot minute >= 0 "
                             f"(0 = no pacing)")
        if not self.control_dt > 0.0:
            raise ValueError(f"control_dt: got {self.control_dt}; expected seconds > 0")
        if not self.max_wait > 0.0:
            raise ValueError(f"learner_pace_max_wait: got {self.max_wait}; expected wall seconds > 0")


class LearnerPace:
    """Whether the next episode may start, given the learner's progress (:meth:`hold`)."""

    def __init__(self, cfg: PaceConfig):
        self.cfg = cfg
        #: the learner's last report: gradient steps made and still owed; None before the first
        self.updates: int | None = None
        self.owed = 0
        #: the learner's gradient steps when the first episode started: the offline stage (or a resumed
        #: learner's past) is not the online phase's
        self.baseline: int | None = None
        self.holding_since: float | None = None
        self.holds = 0
        self.held_seconds = 0.0
        self.gave_up = 0

    @property
    def enabled(self) -> bool:
        return self.cfg.rate > 0.0

    def on_stats(self, num_updates: int, updates_owed: int) -> None:
        self.updates, self.owed = int(num_updates), int(updates_owed)

    def robot_minutes(self, control_steps: int) -> float:
        return control_steps * self.cfg.control_dt / 60.0

    def hold(self, now: float, control_steps: int) -> str | None:
        """Why the next episode waits for the learner at wall time ``now`` [s], after ``control_steps``
        executed, or None when it may start.

        Call it only when everything else lets the episode start; a None ends the current hold."""
        why = self._behind(control_steps) if self.enabled else None
        if why is not None and self.holding_since is None:
            self.holding_since, self.holds = now, self.holds + 1
        if why is not None and now - self.holding_since > self.cfg.max_wait:
            self.gave_up += 1
            why = None
        if why is None:
            if self.holding_since is not None:
                self.held_seconds += now - self.holding_since
                self.holding_since = None
            if self.baseline is None:
                self.baseline = self.updates or 0
        return why

    def _behind(self, control_steps: int) -> str | None:
        if self.updates is None or self.baseline is None:
            return None  # nothing heard yet, or the first episode: nothing online to catch up with
        minutes = self.robot_minutes(control_steps)
        due = self.cfg.rate * minutes  # counted from the first episode's start
        if self.updates - self.baseline >= due or self.owed <= 0:
            return None
        return (f"the learner made {self.updates - self.baseline} of {due:.0f} gradient steps for {minutes:.2f} "
                f"robot min at learner_pace {self.cfg.rate:g} per robot min ({self.owed} owed)")
