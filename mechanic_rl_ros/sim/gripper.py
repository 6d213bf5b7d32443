"""franka_gripper's action semantics for the simulated hand (no ROS).

What the simulator's ``move`` / ``grasp`` / ``homing`` / ``gripper_action``
servers decide, following franka_gripper (franka_ros2
``franka_gripper/src/gripper_action_server.cpp``) and libfranka's
``Gripper::move`` / ``grasp``:

* a goal is checked first (finite, width in the hand's range, positive speed
  and force, non-negative epsilons); a bad one is answered at once with an
  error naming the field;
* the fingers are driven to the goal width at the simulator's gripper speed
  until they stop (they reached it, or they are blocked by an object);
* ``move`` succeeds when they stopped within :data:`MOVE_TOLERANCE` of the
  width (blocked by an object, it fails, as libfranka's move does);
  ``grasp`` succeeds when the width they stopped at is within
  ``[width - epsilon.inner, width + epsilon.outer]``; ``homing`` opens fully;
* ``gripper_action`` (control_msgs/GripperCommand): ``command.position`` is
  half the width (one finger); opening is a move, closing a grasp with
  franka_gripper's default epsilons (0.005 m), and a target within 0.1 mm of
  the current width succeeds at once.

Not simulated: the requested speed and force (the simulated hand moves at its
own speed and squeezes with its own actuator force), and libfranka's
homing calibration.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from mechanic_rl_ros.control import fr3

#: [m] a move has reached its width when the fingers stopped this close to it
MOVE_TOLERANCE = 0.005
#: [m] franka_gripper's default_grasp_epsilon.inner / .outer (used by gripper_action)
DEFAULT_EPSILON = 0.005
#: [m] gripper_action: a target this close to the current width succeeds without moving
SAME_POSITION = 1e-4


class GoalError(ValueError):
    """A gripper goal that cannot be executed; the text names the field and the expected value."""


@dataclass(frozen=True)
class Motion:
    """What the fingers are to do for one goal: the width to drive to, and the window that counts as success."""

    target: float
    low: float
    high: float
    kind: str  # move | grasp | homing


def _width(value: float, field: str) -> float:
    if not (math.isfinite(value) and fr3.GRIPPER_MIN_WIDTH <= value <= fr3.GRIPPER_MAX_WIDTH):
        raise GoalError(f"{field}: got {value}; expected a width in [{fr3.GRIPPER_MIN_WIDTH}, "
                        f"{fr3.GRIPPER_MAX_WIDTH}] m")
    return float(value)


def _positive(value: float, field: str, unit: str) -> None:
    if not (math.isfinite(value) and value > 0):
        raise GoalError(f"{field}: got {value}; expected a finite value > 0 {unit}")


def move(width: float, speed: float) -> Motion:
    w = _width(width, "width")
    _positive(speed, "speed", "m/s")
    return Motion(w, w - MOVE_TOLERANCE, w + MOVE_TOLERANCE, "move")


def grasp(width: float, speed: float, force: float, inner: float, outer: float) -> Motion:
    w = _width(width, "width")
    _positive(speed, "speed", "m/s")
    _positive(force, "force", "N")
    for value, field in ((inner, "epsilon.inner"), (outer, "epsilon.outer")):
        if not (math.isfinite(value) and value >= 0):
            raise GoalError(f"{field}: got {value}; expected a finite value >= 0 m")
    return Motion(w, w - inner, w + outer, "grasp")


def homing() -> Motion:
    return Motion(fr3.GRIPPER_MAX_WIDTH, fr3.GRIPPER_MAX_WIDTH - MOVE_TOLERANCE, math.inf, "homing")


def gripper_command(position: float, current_width: float) -> Motion | None:
    """The motion of a control_msgs/GripperCommand goal (None: already there, succeed at once)."""
    target = _width(2.0 * position if math.isfinite(position) else position, "command.position * 2")
    if abs(target - current_width) < SAME_POSITION:
        return None
    if target >= current_width:
        return Motion(target, target - MOVE_TOLERANCE, target + MOVE_TOLERANCE, "move")
    return Motion(target, target - DEFAULT_EPSILON, target + DEFAULT_EPSILON, "grasp")


def outcome(motion: Motion, width: float) -> tuple[bool, str]:
    """Success and franka_gripper's ``error`` text once the fingers stopped at ``width`` [m]."""
    if motion.low <= width <= motion.high:
        return True, ""
    if motion.kind == "grasp":
        return False, (f"grasp failed: fingers stopped at {width:.4f} m, outside [{motion.low:.4f}, "
                       f"{motion.high:.4f}] m (width - epsilon.inner, width + epsilon.outer)")
    return False, f"{motion.kind} failed: fingers stopped at {width:.4f} m, {motion.target:.4f} m commanded (blocked)"
