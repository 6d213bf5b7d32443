"""The FR3's mode and errors as franka_ros2 reports them (franka_msgs/msg/FrankaRobotState).

franka_robot_state_broadcaster publishes the robot's state at the controller
rate; after a reflex ``/joint_states`` keeps coming (joint_state_publisher
re-stamps it), so the robot mode is the only sign that commands no longer
execute. The stack reads two fields of it:

* ``robot_mode`` (``ROBOT_MODE_*``: other, idle, move, guiding, reflex,
  user stopped, automatic error recovery). Commands execute only in *move*;
* ``current_errors`` (franka_msgs/Errors: one bool per libfranka error, e.g.
  ``joint_motion_generator_acceleration_discontinuity``);
* ``desired_joint_state`` (libfranka's q_d, dq_d): the last joint command the
  robot took. A safety filter seeded there, with the arm commanded at rest,
  continues the controller's own command exactly, with no settling glide from
  the measured position.

:func:`read_robot_state` turns a message into a :class:`RobotStatus`;
:func:`robot_state_message` is the simulator's side.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from franka_msgs.msg import Errors, FrankaRobotState

from mechanic_rl_ros.control import fr3

#: ROBOT_MODE_* value -> the word the stack logs
MODE_NAMES = {
    FrankaRobotState.ROBOT_MODE_OTHER: "other",
    FrankaRobotState.ROBOT_MODE_IDLE: "idle",
    FrankaRobotState.ROBOT_MODE_MOVE: "move",
    FrankaRobotState.ROBOT_MODE_GUIDING: "guiding",
    FrankaRobotState.ROBOT_MODE_REFLEX: "reflex",
    FrankaRobotState.ROBOT_MODE_USER_STOPPED: "user_stopped",
    FrankaRobotState.ROBOT_MODE_AUTOMATIC_ERROR_RECOVERY: "automatic_error_recovery",
}
MODE_VALUES = {name: value for value, name in MODE_NAMES.items()}
#: every franka_msgs/Errors field (one per libfranka error)
ERROR_FIELDS = tuple(Errors.get_fields_and_field_types())


@dataclass(frozen=True)
class RobotStatus:
    """What the stack needs to know from one robot state."""

    mode: str
    errors: tuple[str, ...]
    stamp: float
    #: q_d and dq_d [rad, rad/s] in fr3_joint1..7 order; None when the message carries no 7 named values
    desired_q: np.ndarray | None = None
    desired_dq: np.ndarray | None = None
    #: ``last_motion_errors``: what stopped the last motion (kept after a recovery)
    last_errors: tuple[str, ...] = ()
    #: the measured joint positions of the same message [rad] (None: not 7 named values)
    measured_q: np.ndarray | None = None

    @property
    def executing(self) -> bool:
        """Commands reach the joints only in move mode (a reflex, a user stop or idle hold the arm)."""
        return self.mode == "move"

    def describe(self) -> str:
        return self.mode + (f" ({', '.join(self.errors)})" if self.errors else "")


def read_robot_state(msg: FrankaRobotState) -> RobotStatus:
    """The mode and the raised errors of a robot state; ValueError on a mode outside ROBOT_MODE_*."""
    mode = MODE_NAMES.get(int(msg.robot_mode))
    if mode is None:
        raise ValueError(f"robot_mode: {msg.robot_mode} is not one of the ROBOT_MODE_* values {sorted(MODE_NAMES)}")
    errors = tuple(f for f in ERROR_FIELDS if getattr(msg.current_errors, f))
    q_d, dq_d = _named(msg.desired_joint_state, "desired_joint_state", ("position", "velocity"))
    (q_m,) = _named(msg.measured_joint_state, "measured_joint_state", ("position",))
    last = tuple(f for f in ERROR_FIELDS if getattr(msg.last_motion_errors, f))
    return RobotStatus(mode, errors, msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9, q_d, dq_d, last, q_m)


def _named(js, field: str, kinds: tuple[str, ...]) -> list[np.ndarray | None]:
    """The ``kinds`` of a JointState in fr3_joint1..7 order; Nones when it does not name all 7 with values."""
    names = list(js.name)
    if not all(n in names for n in fr3.JOINT_NAMES) or any(len(getattr(js, k)) != len(names) for k in kinds):
        return [None] * len(kinds)
    idx = [names.index(n) for n in fr3.JOINT_NAMES]
    out = [np.asarray(getattr(js, k), dtype=np.float64)[idx] for k in kinds]
    if not all(np.all(np.isfinite(v)) for v in out):
        raise ValueError(f"{field}: {', '.join(kinds)} must be finite, got {out}")
    return out


def robot_state_message(mode: str, errors: list[str] | tuple[str, ...], last_motion_errors: list[str] | tuple[str, ...],
                        joint_state, desired: tuple[np.ndarray, np.ndarray] | None = None) -> FrankaRobotState:
    """A robot state with ``mode`` (a :data:`MODE_VALUES` key), the named errors raised, ``joint_state``
    (sensor_msgs/JointState of the 7 arm joints, its header stamps the message) as the measured joints and
    ``desired`` = (q_d, dq_d) as the desired ones."""
    msg = FrankaRobotState()
    msg.header = joint_state.header
    msg.measured_joint_state = joint_state
    if desired is not None:
        msg.desired_joint_state.header = joint_state.header
        msg.desired_joint_state.name = list(fr3.JOINT_NAMES)
        msg.desired_joint_state.position = [float(v) for v in desired[0]]
        msg.desired_joint_state.velocity = [float(v) for v in desired[1]]
    msg.robot_mode = MODE_VALUES[mode]
    for target, names in ((msg.current_errors, errors), (msg.last_motion_errors, last_motion_errors)):
        for name in names:
            if name not in ERROR_FIELDS:
                raise ValueError(f"errors: {name!r} is not a franka_msgs/Errors field")
            setattr(target, name, True)
    return msg
