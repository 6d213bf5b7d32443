"""The policy's gripper width -> franka_gripper goals: one at a time, with hysteresis.

The policy predicts a gripper opening width every control period (10 Hz), a
continuous value that hovers around "open" or "closed" with noise. The Franka
Hand is not a streaming device: franka_gripper (franka_ros2) offers actions
(``~/move``, ``~/grasp``, ``~/homing``, ``~/gripper_action``), each a motion of
up to a second that libfranka executes to its end, and it runs every goal it
accepts on its own thread, so goals sent at 10 Hz would pile up and fight over
the fingers. :class:`GripperCommander` turns the stream of widths into goals:

* **one goal at a time**: no new goal while one is in flight (sent, not yet
  answered); the width wanted meanwhile is kept, and the next goal (if still
  needed) goes out when the answer comes;
* **hysteresis**: a new goal only when the wanted width differs from the last
  goal's width by at least ``hysteresis`` [m], so noise never becomes motion;
* **a goal goes where the motion ends**: the policy's widths pass through
  intermediate values on their way (0.08, 0.065, 0.0 over two periods), and a
  goal to the first of them would stop the fingers there, wider than the
  object, until its answer lets the next goal out, while the arm already
  lifts. Given the widths the policy predicts for the following periods
  (``ahead``), a goal's width is the end of the run that keeps moving the
  same way (within ``hysteresis``); without them, the width asked for now;
* **grasp when closing, move when opening**, as franka_gripper's own
  ``gripper_action`` does: closing on an object with ``Move`` would stall and
  fail, ``Grasp`` holds it with ``force`` [N]. The grasp's epsilon window
  (``epsilon_inner``, ``epsilon_outer``) decides when libfranka calls it
  successful; the defaults accept any object narrower than the open hand
  (the policy says "close", not "close to 3.2 cm");
* a goal not answered within ``goal_timeout`` seconds is given up (counted),
  so a lost answer cannot freeze the gripper for the rest of the run.

No ROS here: the node sends :class:`GripperGoal` with its action client and
reports the answer with :meth:`GripperCommander.done`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from mechanic_rl_ros.control import fr3

MOVE, GRASP = "move", "grasp"


@dataclass(frozen=True)
class GripperConfig:
    """How widths become goals (units: m, m/s, N, s)."""

    hysteresis: float = 0.01
    speed: float = 0.1
    force: float = 20.0
    epsilon_inner: float = 0.005
    epsilon_outer: float = fr3.GRIPPER_MAX_WIDTH
    goal_timeout: float = 5.0

    def __post_init__(self) -> None:
        checks = {
            "gripper_hysteresis": (self.hysteresis, 0.0, fr3.GRIPPER_MAX_WIDTH),
            "gripper_speed": (self.speed, 1e-6, fr3.GRIPPER_MAX_SPEED),
            "gripper_force": (self.force, 1e-6, fr3.GRIPPER_MAX_FORCE),
            "gripper_epsilon_inner": (self.epsilon_inner, 0.0, fr3.GRIPPER_MAX_WIDTH),
            "gripper_epsilon_outer": (self.epsilon_outer, 0.0, fr3.GRIPPER_MAX_WIDTH),
            "gripper_goal_timeout": (self.goal_timeout, 1e-6, math.inf),
        }
        for name, (value, low, high) in checks.items():
            if not low <= value <= high:
                raise ValueError(f"{name}: got {value}; expected a value in [{low}, {high}]")


@dataclass(frozen=True)
class GripperGoal:
    """One franka_gripper goal: ``kind`` "move" (width, speed) or "grasp" (all fields)."""

    kind: str
    width: float
    speed: float
    force: float = 0.0
    epsilon_inner: float = 0.0
    epsilon_outer: float = 0.0


def motion_end(width: float, ahead: Sequence[float], closing: bool, hysteresis: float) -> float:
    """Where a gripper motion that starts with ``width`` ends, given the widths ``ahead`` predicted after it:
    the narrowest (``closing``) or widest width of the leading run of ``ahead`` that never turns back by
    ``hysteresis`` or more (a smaller wobble would not make a goal of its own either). The run also ends at
    a width that is not finite (that action will be refused when its period comes); widths are clipped to
    the hand's range.

    ``motion_end(0.065, [0.0, 0.002, 0.0, 0.08], True, 0.01)`` is 0.0: the policy closes fully and opens
    again only later, which is a goal of its own then."""
    end = width
    for a in ahead:
        if not math.isfinite(a):
            break
        a = min(max(float(a), fr3.GRIPPER_MIN_WIDTH), fr3.GRIPPER_MAX_WIDTH)
        if (a >= end + hysteresis) if closing else (a <= end - hysteresis):
            break
        end = min(end, a) if closing else max(end, a)
    return end


class GripperCommander:
    """Decides, each control period, whether the gripper gets a new goal (see the module docstring).

    Not thread-safe: the node calls it under one lock from its control tick
    and its action-client callbacks.
    """

    def __init__(self, config: GripperConfig | None = None) -> None:
        self.config = config or GripperConfig()
        self.last_goal: GripperGoal | None = None
        self.in_flight_since: float | None = None
        self.counts = {"goals_sent": 0, "goals_succeeded": 0, "goals_failed": 0, "goals_timed_out": 0,
                       "widths_held_back": 0}

    @property
    def in_flight(self) -> bool:
        return self.in_flight_since is not None

    def reset(self) -> None:
        """Forget the last goal (a new episode: the reset opened the gripper, or a person moved it)."""
        self.last_goal = None

    def request(self, width: float, now: float, measured_width: float | None = None,
                ahead: Sequence[float] = ()) -> GripperGoal | None:
        """The goal to send now for the wanted ``width`` [m], or None.

        ``now`` [s] is any monotonic clock (for ``goal_timeout``);
        ``measured_width`` [m], the fingers' opening from the joint states if
        known, decides between move and grasp before the first goal (after
        that, the last goal's width does). ``ahead`` [m]: the widths the
        policy predicts for the next periods, in order (the rest of its
        chunk); a goal sent now goes to where that motion ends
        (:func:`motion_end`). A width that is not finite raises
        ``ValueError``; one outside the gripper's range is clipped to it.
        """
        if not math.isfinite(width):
            raise ValueError(f"gripper width: got {width}; expected a finite width in "
                             f"[{fr3.GRIPPER_MIN_WIDTH}, {fr3.GRIPPER_MAX_WIDTH}] m")
        width = min(max(float(width), fr3.GRIPPER_MIN_WIDTH), fr3.GRIPPER_MAX_WIDTH)
        if self.in_flight_since is not None:
            if now - self.in_flight_since < self.config.goal_timeout:
                self.counts["widths_held_back"] += 1
                return None
            self.counts["goals_timed_out"] += 1
            self.in_flight_since = None
        reference = self.last_goal.width if self.last_goal is not None else measured_width
        if reference is not None and abs(width - reference) < self.config.hysteresis:
            return None
        cfg = self.config
        closing = reference is not None and width < reference
        width = motion_end(width, ahead, closing, cfg.hysteresis)
        if closing:
            goal = GripperGoal(GRASP, width, cfg.speed, cfg.force, cfg.epsilon_inner, cfg.epsilon_outer)
        else:
            goal = GripperGoal(MOVE, width, cfg.speed)
        self.last_goal = goal
        self.in_flight_since = now
        self.counts["goals_sent"] += 1
        return goal

    def unsent(self, previous: GripperGoal | None) -> None:
        """The goal :meth:`request` just returned could not be sent (no action server yet): forget it,
        so that the same width is asked for again next period; ``previous`` is the last goal before it."""
        self.last_goal = previous
        self.in_flight_since = None
        self.counts["goals_sent"] -= 1

    def done(self, success: bool) -> None:
        """The answer to the goal in flight came (accepted and finished, or refused)."""
        if self.in_flight_since is None:
            return  # the answer to a goal already given up on
        self.in_flight_since = None
        self.counts["goals_succeeded" if success else "goals_failed"] += 1
