"""What the FR3 checks on every 1 ms joint position command, and the reflex it answers with.

The FR3 runs its own motion-generator checks at 1 kHz on the joint positions
``q_c`` the controller sends (libfranka's joint position interface; franka_hardware
forwards ros2_control's ``position`` command interface unfiltered: its
``joint_position_command_rate_limit_active_`` and low-pass filter are off by
default, franka_hardware/src/robot.cpp). The robot differentiates the commands
(``dq_c``, ``ddq_c``, jerk by finite differences over ``kDeltaT`` = 1 ms) and stops
with a reflex when one of these is violated (error names as in
franka_msgs/msg/Errors.msg):

=====================================================  ============================================
``joint_motion_generator_position_limits_violation``   ``Q_MIN <= q_c <= Q_MAX`` (FR3 datasheet)
``joint_motion_generator_velocity_limits_violation``   ``dq_c`` inside the position-dependent limits
                                                       :func:`fr3.velocity_limits`
``joint_motion_generator_velocity_discontinuity``      ``|ddq_c| <= 10 rad/s^2`` (``kMaxJointAcceleration``)
``joint_motion_generator_acceleration_discontinuity``  ``|dddq_c| <= 5000 rad/s^3`` (``kMaxJointJerk``)
=====================================================  ============================================

Numbers: libfranka include/franka/rate_limiting.h (commit 155ddac, 2025-01),
which takes them from the FR3 "control parameters" documentation. libfranka's
own limiter subtracts ``kLimitEps`` = 1e-3 from each limit to stay clear of the
robot's check; the check here uses the published values, and the stack's
safety filter plans against scaled-down ones (config/policy_node.yaml).

A step of a one-tick target ``delta`` from rest is a velocity ``delta / 1 ms``
in one tick and an acceleration ``delta / (1 ms)^2``: any step above 1e-5 rad
violates the acceleration limit (franka_ros2 issue #55). That is why the
command stream must be interpolated at 1 kHz (see :mod:`.trajectory`).

Pure numpy; no ROS. Used by the simulator (every 1 ms command it plays) and by
the tests of the safety filter (every 1 ms command the filter's trajectory
would produce).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mechanic_rl_ros.control import fr3

#: The FR3's command period [s] (libfranka ``kDeltaT``).
DT = 1e-3

#: Error names, in the order they are checked (franka_msgs/msg/Errors.msg field names).
POSITION_LIMITS = "joint_motion_generator_position_limits_violation"
VELOCITY_LIMITS = "joint_motion_generator_velocity_limits_violation"
VELOCITY_DISCONTINUITY = "joint_motion_generator_velocity_discontinuity"
ACCELERATION_DISCONTINUITY = "joint_motion_generator_acceleration_discontinuity"
#: An explicitly injected reflex (tests, ``/sim/inject_reflex``), as a collision would be.
INJECTED = "joint_reflex"


@dataclass(frozen=True)
class Violation:
    """The first 1 ms command that broke a limit: which check, joint, value and limit."""

    error: str
    joint: str
    value: float
    limit: float
    #: index of the offending command in the checked batch
    index: int

    def __str__(self) -> str:
        return f"{self.error}: {self.joint} = {self.value:.6g} (limit {self.limit:.6g})"


class CommandChecker:
    """The robot side of the joint position interface: checks each 1 ms command.

    Keeps the last three commands (for velocity, acceleration and jerk by
    finite differences, as the robot does). :meth:`start` begins a motion at
    rest from the robot's desired position; :meth:`check` takes one or many
    consecutive commands and returns the first :class:`Violation` or None.
    After a violation the caller stops the arm; :meth:`start` again after the
    error recovery.
    """

    def __init__(self, tolerance: float = 1e-9):
        #: numerical slack on every comparison (the robot's own check is in float64 too)
        self.tolerance = float(tolerance)
        self._hist: np.ndarray | None = None  # [3, 7]: q(k-3), q(k-2), q(k-1)
        self.commands_checked = 0
        #: largest |velocity| / (position-dependent limit), |acceleration| [rad/s^2], |jerk| [rad/s^3] accepted so far
        self.peaks = {"velocity_fraction": 0.0, "acceleration": 0.0, "jerk": 0.0}

    def start(self, q_d) -> None:
        """A motion starts at rest at the robot's desired position ``q_d``."""
        q = np.asarray(q_d, dtype=np.float64)
        if q.shape != (fr3.NUM_JOINTS,):
            raise ValueError(f"q_d: expected 7 joint positions, got shape {q.shape}")
        self._hist = np.repeat(q[None], 3, axis=0)

    @property
    def last(self) -> np.ndarray:
        if self._hist is None:
            raise RuntimeError("CommandChecker.last before start()")
        return self._hist[-1].copy()

    def check(self, commands) -> Violation | None:
        """Check consecutive 1 ms commands ``[N, 7]`` (or one ``[7]``); the accepted ones are remembered.

        On a violation the commands up to (not including) the offending one
        are remembered and the violation is returned.
        """
        if self._hist is None:
            raise RuntimeError("CommandChecker.check before start(q_d)")
        c = np.atleast_2d(np.asarray(commands, dtype=np.float64))
        if c.ndim != 2 or c.shape[1] != fr3.NUM_JOINTS:
            raise ValueError(f"commands: expected [N, 7] joint positions, got shape {c.shape}")
        violation = first_violation(self._hist, c, self.tolerance)
        n_ok = c.shape[0] if violation is None else violation.index
        if n_ok:
            q = np.concatenate([self._hist, c[:n_ok]])
            v = np.diff(q, axis=0) / DT
            a, j = np.diff(v, axis=0) / DT, np.diff(v, n=2, axis=0) / DT ** 2
            lo, up = fr3.velocity_limits(q[2:-1])
            frac = np.where(v[2:] >= 0, v[2:] / np.maximum(up, 1e-12), v[2:] / np.minimum(lo, -1e-12))
            self.peaks["velocity_fraction"] = max(self.peaks["velocity_fraction"], float(frac.max()))
            self.peaks["acceleration"] = max(self.peaks["acceleration"], float(np.abs(a[1:]).max()))
            self.peaks["jerk"] = max(self.peaks["jerk"], float(np.abs(j).max()))
            self._hist = q[-3:]
        self.commands_checked += n_ok
        return violation


def first_violation(history: np.ndarray, commands: np.ndarray, tolerance: float = 1e-9,
                    velocity_scale: float = 1.0, acceleration_scale: float = 1.0,
                    jerk_scale: float = 1.0) -> Violation | None:
    """First of ``commands`` [N, 7] the FR3 would refuse, after the three ``history`` commands [3, 7].

    The scales (<= 1) tighten the limits: the safety filter plans with them,
    the simulator checks with 1.
    """
    if not np.all(np.isfinite(commands)):
        i = int(np.argwhere(~np.isfinite(commands))[0, 0])
        return Violation(POSITION_LIMITS, fr3.JOINT_NAMES[int(np.argwhere(~np.isfinite(commands[i]))[0, 0])],
                         float("nan"), float("nan"), i)
    q = np.concatenate([history, commands])
    v = np.diff(q, axis=0) / DT          # v[k] between q[k] and q[k+1]
    a = np.diff(v, axis=0) / DT
    j = np.diff(a, axis=0) / DT
    n = commands.shape[0]
    # per command i (row 3 + i of q): its position, velocity v[2+i], acceleration a[1+i], jerk j[i]
    pos = commands
    vel = v[2:]
    acc = a[1:]
    jerk = j
    lo_v, up_v = fr3.velocity_limits(q[2:-1])  # the robot bounds dq_c by the limits at the last position
    checks = (
        (POSITION_LIMITS, np.maximum(fr3.Q_MIN - pos, pos - fr3.Q_MAX), pos,
         np.where(pos < fr3.Q_MIN, fr3.Q_MIN, fr3.Q_MAX)),
        (VELOCITY_LIMITS, np.maximum(lo_v * velocity_scale - vel, vel - up_v * velocity_scale), vel,
         np.where(vel < 0, lo_v * velocity_scale, up_v * velocity_scale)),
        (VELOCITY_DISCONTINUITY, np.abs(acc) - fr3.DDQ_MAX * acceleration_scale, acc,
         fr3.DDQ_MAX * acceleration_scale * np.sign(acc)),
        (ACCELERATION_DISCONTINUITY, np.abs(jerk) - fr3.DDDQ_MAX * jerk_scale, jerk,
         fr3.DDDQ_MAX * jerk_scale * np.sign(jerk)),
    )
    first: Violation | None = None
    for error, excess, value, limit in checks:
        bad = np.argwhere(excess > tolerance)
        if bad.size:
            i, joint = int(bad[0, 0]), int(bad[0, 1])
            if first is None or i < first.index:
                first = Violation(error, fr3.JOINT_NAMES[joint], float(value[i, joint]), float(limit[i, joint]), i)
    assert first is None or first.index < n
    return first
