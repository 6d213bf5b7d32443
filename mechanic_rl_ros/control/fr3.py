"""Franka Research 3 facts shared by the simulator and the policy's safety filter.

One module holds every number about the arm that more than one part of the
project needs: joint names, the published position/velocity/effort/acceleration/
jerk limits, the home pose, the gripper range and the kinematic (modified DH)
parameters, and the check of a joint position command against the limits. It
imports only numpy, so a ROS node, the simulator and the learning
code can all use it.

The FR3 shares the Panda's kinematic chain (Craig's modified Denavit-Hartenberg
convention, frame ``i`` = RotX(alpha) . TransX(a) . RotZ(theta_i) . TransZ(d)),
but has its own joint limits (FR3 datasheet).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

#: Arm joint names in the order used by every array in the project.
JOINT_NAMES: tuple[str, ...] = tuple(f"fr3_joint{i}" for i in range(1, 8))
#: Finger joint names (each finger travels 0..0.04 m; opening width = sum).
FINGER_JOINT_NAMES: tuple[str, ...] = ("fr3_finger_joint1", "fr3_finger_joint2")
#: All nine names as published on /joint_states.
ALL_JOINT_NAMES: tuple[str, ...] = JOINT_NAMES + FINGER_JOINT_NAMES

NUM_JOINTS = 7

#: Lower / upper joint position limits [rad].
Q_MIN = np.array([-2.7437, -1.7837, -2.9007, -3.0421, -2.8065, 0.5445, -3.0159])
Q_MAX = np.array([2.7437, 1.7837, 2.9007, -0.1518, 2.8065, 4.5169, 3.0159])
#: Joint velocity limits [rad/s].
DQ_MAX = np.array([2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26])
#: Joint torque (effort) limits [Nm].
TAU_MAX = np.array([87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0])
#: Joint acceleration limits [rad/s^2] (libfranka ``kMaxJointAcceleration``, rate_limiting.h).
DDQ_MAX = np.full(7, 10.0)
#: Joint jerk limits [rad/s^3] (libfranka ``kMaxJointJerk``, rate_limiting.h).
DDDQ_MAX = np.full(7, 5000.0)

for _a in (Q_MIN, Q_MAX, DQ_MAX, TAU_MAX, DDQ_MAX, DDDQ_MAX):
    _a.setflags(write=False)  # shared constants: an in-place edit would corrupt every user

#: FR3 position-dependent joint velocity limits, the robot's own check at 1 kHz
#: (docs "Limits for Franka Research 3"; libfranka include/franka/rate_limiting.h,
#: ``computeUpperLimitsJointVelocity`` / ``computeLowerLimitsJointVelocity``,
#: libfranka commit 155ddac, 2025-01): upper_i(q) = min(DQ_MAX_i, max(0, -c_i +
#: sqrt(max(0, k_i (q_up_i - q_i))))), lower_i(q) = max(-DQ_MAX_i, min(0, c_i -
#: sqrt(max(0, k_i (q_i - q_lo_i))))). Rows: c, k, q_up, q_lo.
_VEL_C = np.array([0.30, 0.20, 0.20, 0.30, 0.35, 0.35, 0.35])
_VEL_K = np.array([12.0, 5.17, 7.00, 8.00, 34.0, 11.0, 34.0])
_VEL_Q_UP = np.array([2.75010, 1.79180, 2.90650, -0.1458, 2.81010, 4.52050, 3.01960])
_VEL_Q_LO = np.array([-2.75010, -1.79180, -2.90650, -3.04810, -2.81010, 0.54092, -3.01960])
for _a in (_VEL_C, _VEL_K, _VEL_Q_UP, _VEL_Q_LO):
    _a.setflags(write=False)


def velocity_limits(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) joint velocity limits [rad/s] the FR3 enforces at joint position ``q``.

    Near a position limit the robot allows only the speed from which it can
    still stop before it, so the limit shrinks with the distance to the
    limit (see the constants above for the source). ``q`` may be [..., 7].
    """
    q = np.asarray(q, dtype=np.float64)
    up = np.minimum(DQ_MAX, np.maximum(0.0, -_VEL_C + np.sqrt(np.maximum(0.0, _VEL_K * (_VEL_Q_UP - q)))))
    lo = np.maximum(-DQ_MAX, np.minimum(0.0, _VEL_C - np.sqrt(np.maximum(0.0, _VEL_K * (q - _VEL_Q_LO)))))
    return lo, up

#: Home pose [rad]: the hand points straight down above the table.
Q_HOME = np.array([0.0, -math.pi / 4, 0.0, -3 * math.pi / 4, 0.0, math.pi / 2, math.pi / 4])
Q_HOME.setflags(write=False)

#: Gripper opening width range [m] (two fingers, 0..0.04 m each).
GRIPPER_MIN_WIDTH = 0.0
GRIPPER_MAX_WIDTH = 0.08
#: Franka Hand maximum opening speed [m/s of width].
GRIPPER_MAX_SPEED = 0.1
#: Franka Hand continuous grasp force [N].
GRIPPER_MAX_FORCE = 70.0

#: Modified-DH rows (a_{i-1}, d_i, alpha_{i-1}) for joints 1..7 and the flange.
#: The flange row has no joint (theta = 0).
DH_PARAMS: tuple[tuple[float, float, float], ...] = (
    (0.0, 0.333, 0.0),
    (0.0, 0.0, -math.pi / 2),
    (0.0, 0.316, math.pi / 2),
    (0.0825, 0.0, math.pi / 2),
    (-0.0825, 0.384, -math.pi / 2),
    (0.0, 0.0, math.pi / 2),
    (0.088, 0.0, math.pi / 2),
    (0.0, 0.107, 0.0),  # flange
)
#: Franka Hand: rotated by this angle about the flange z axis [rad] ...
HAND_YAW = -math.pi / 4
#: ... and its tool centre point (between the fingertips) this far along z [m].
HAND_TCP_OFFSET = 0.1034


@dataclass(frozen=True)
class FR3Limits:
    """Bundle of the FR3 limits, for code that prefers one object to constants.

    Every array is float64 with one entry per arm joint, in ``JOINT_NAMES`` order.
    """

    q_min: np.ndarray = field(default_factory=lambda: Q_MIN.copy())
    q_max: np.ndarray = field(default_factory=lambda: Q_MAX.copy())
    dq_max: np.ndarray = field(default_factory=lambda: DQ_MAX.copy())
    tau_max: np.ndarray = field(default_factory=lambda: TAU_MAX.copy())
    ddq_max: np.ndarray = field(default_factory=lambda: DDQ_MAX.copy())
    dddq_max: np.ndarray = field(default_factory=lambda: DDDQ_MAX.copy())
    gripper_min: float = GRIPPER_MIN_WIDTH
    gripper_max: float = GRIPPER_MAX_WIDTH
    gripper_max_speed: float = GRIPPER_MAX_SPEED


LIMITS = FR3Limits()


def clamp_joint_command(
    q_target: np.ndarray,
    q_previous: np.ndarray,
    dt: float,
    position_margin: float = 0.0,
    velocity_scale: float = 1.0,
    dq_previous: np.ndarray | None = None,
    acceleration_scale: float = 1.0,
) -> np.ndarray:
    """Clamp a joint position target to the FR3 position, velocity and acceleration limits.

    ``q_previous`` is the previously applied target and ``dt`` the time in which
    the new one will be reached. The target is limited to
    ``[Q_MIN + margin, Q_MAX - margin]``; the implied velocity
    ``(q - q_previous) / dt`` to ``velocity_scale * DQ_MAX``. When
    ``dq_previous`` (the velocity implied by the previous command) is given, the
    velocity change is also limited to ``acceleration_scale * DDQ_MAX * dt`` and
    the velocity towards a position limit to what can still be braked to rest
    before it -- the same job libfranka's rate limiter does. Position limits
    win over the acceleration limit when the two conflict.
    """
    q_target = np.asarray(q_target, dtype=np.float64)
    q_previous = np.asarray(q_previous, dtype=np.float64)
    if q_target.shape != (NUM_JOINTS,) or q_previous.shape != (NUM_JOINTS,):
        raise ValueError(
            f"clamp_joint_command: q_target and q_previous must have shape (7,), "
            f"got {q_target.shape} and {q_previous.shape}"
        )
    if dt <= 0:
        raise ValueError(f"clamp_joint_command: dt must be > 0, got {dt}")
    lo, hi = Q_MIN + position_margin, Q_MAX - position_margin
    v_max = velocity_scale * DQ_MAX
    v = (np.clip(q_target, lo, hi) - q_previous) / dt
    v = np.clip(v, -v_max, v_max)
    if dq_previous is not None:
        dq_previous = np.asarray(dq_previous, dtype=np.float64)
        if dq_previous.shape != (NUM_JOINTS,):
            raise ValueError(f"clamp_joint_command: dq_previous must have shape (7,), got {dq_previous.shape}")
        dv = acceleration_scale * DDQ_MAX * dt
        v = np.clip(v, dq_previous - dv, dq_previous + dv)
        a = acceleration_scale * DDQ_MAX
        v_up = np.sqrt(2 * a * np.maximum(hi - q_previous, 0.0))
        v_down = np.sqrt(2 * a * np.maximum(q_previous - lo, 0.0))
        v = np.clip(v, -v_down, v_up)
    # q_previous itself may lie outside the (margined) range; keep the result inside.
    return np.clip(q_previous + v * dt, lo, hi)


class CommandError(ValueError):
    """An incoming command is malformed; the message says which field and why."""


def check_arm_command(values, field: str = "data") -> np.ndarray:
    """Validate 7 joint position targets [rad] against the FR3 position limits."""
    q = np.asarray(values, dtype=np.float64)
    if q.shape != (NUM_JOINTS,):
        raise CommandError(f"{field}: expected {NUM_JOINTS} joint positions (fr3_joint1..7), got {q.size}")
    if not np.all(np.isfinite(q)):
        raise CommandError(f"{field}: joint positions must be finite, got {np.array2string(q, precision=3)}")
    outside = np.flatnonzero((q < Q_MIN) | (q > Q_MAX))
    if outside.size:
        j = int(outside[0])
        raise CommandError(
            f"{field}: {JOINT_NAMES[j]} = {q[j]:.4f} rad is outside the FR3 limits "
            f"[{Q_MIN[j]:.4f}, {Q_MAX[j]:.4f}]"
        )
    return q


def _dh_transform(a: float, d: float, alpha: float, theta: float) -> np.ndarray:
    ca, sa, ct, st = math.cos(alpha), math.sin(alpha), math.cos(theta), math.sin(theta)
    return np.array(
        [
            [ct, -st, 0.0, a],
            [st * ca, ct * ca, -sa, -d * sa],
            [st * sa, ct * sa, ca, d * ca],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )


def forward_kinematics(q: np.ndarray, tcp: bool = True) -> np.ndarray:
    """4x4 pose of the TCP (or of the flange when ``tcp=False``) in the base frame.

    Pure-numpy FK from ``DH_PARAMS``; the simulator's MJCF is built from the same
    table, and the tests check that both agree.
    """
    q = np.asarray(q, dtype=np.float64)
    if q.shape != (NUM_JOINTS,):
        raise ValueError(f"forward_kinematics: q must have shape (7,), got {q.shape}")
    pose = np.eye(4)
    for i, (a, d, alpha) in enumerate(DH_PARAMS):
        pose = pose @ _dh_transform(a, d, alpha, q[i] if i < NUM_JOINTS else 0.0)
    if tcp:
        pose = pose @ _dh_transform(0.0, HAND_TCP_OFFSET, 0.0, HAND_YAW)
    return pose


def tcp_positions(q: np.ndarray) -> np.ndarray:
    """TCP positions [N, 3] in the base frame for joint positions ``q`` [N, 7] (batched :func:`forward_kinematics`)."""
    q = np.asarray(q, dtype=np.float64)
    if q.ndim != 2 or q.shape[1] != NUM_JOINTS:
        raise ValueError(f"tcp_positions: q must have shape (N, 7), got {q.shape}")
    n = q.shape[0]
    pose = np.broadcast_to(np.eye(4), (n, 4, 4)).copy()
    rows = list(DH_PARAMS) + [(0.0, HAND_TCP_OFFSET, 0.0)]
    for i, (a, d, alpha) in enumerate(rows):
        theta = q[:, i] if i < NUM_JOINTS else np.full(n, HAND_YAW if i == len(rows) - 1 else 0.0)
        ca, sa = math.cos(alpha), math.sin(alpha)
        ct, st = np.cos(theta), np.sin(theta)
        t = np.zeros((n, 4, 4))
        t[:, 0, 0], t[:, 0, 1], t[:, 0, 3] = ct, -st, a
        t[:, 1, 0], t[:, 1, 1], t[:, 1, 2], t[:, 1, 3] = st * ca, ct * ca, -sa, -d * sa
        t[:, 2, 0], t[:, 2, 1], t[:, 2, 2], t[:, 2, 3] = st * sa, ct * sa, ca, d * ca
        t[:, 3, 3] = 1.0
        pose = pose @ t
    return pose[:, :3, 3].copy()
