"""A person's device stream as an intervention, and end-effector velocity as joint targets -- without ROS.

The operator steers with a 3D mouse (spacenav: ``geometry_msgs/Twist`` + ``sensor_msgs/Joy``) or a gamepad
(joy + teleop_twist_joy onto the same topics), as in HIL-SERL (Luo et al. 2024), where a SpaceMouse gives
end-effector deltas and the operator takes over whenever the policy goes astray.

:class:`TeleopInput` turns the stream into a mode:

* *idle* -- the policy acts;
* *active* -- the operator acts. It starts with the first *activity* (a Twist component beyond the
  ``deadband``, or a gripper button held) and lasts until ``release`` seconds pass without activity; a
  button held counts, so an operator who holds the cube without moving keeps control;
* *lost* -- while the operator was active, no message came for ``timeout`` seconds (a device unplugged, a
  driver dead): policy_node holds the arm and gives the episode up (reward_node ends it ABORTED, nothing of
  it is learned); :meth:`TeleopInput.reset` at the next one.

Ages are measured on two clocks, and a stream counts as silent (or a device as released) only when it is
so on both: the node's clock, which is simulated time in the simulation, and the wall clock (``wall``; by
default the node's clock, as on a robot, where the two are one). A person's device publishes on the wall
clock while the lock-step simulator may run several times faster than real time, and the simulated
operator publishes on simulated time while a loaded machine may run the simulator slower than real time;
either alone would read a steady stream as gaps.

Button map (indices are configurable): ``close_button`` (0: the SpaceMouse's left button) held closes the
gripper, ``open_button`` (1: the right one) opens it; between presses the gripper keeps its last state.

:class:`CartesianJog` integrates the commanded TCP velocity into a target pose and follows it with one
damped-least-squares step per control period on the FR3's own kinematics
(:func:`mechanic_rl_ros.control.fr3.forward_kinematics`), from the joint targets last sent: closed loop on
the pose, so orientation does not drift while only the position is steered. The target never runs more
than ``max_pose_lead`` ahead of the arm's command (no wind-up against a limit). Whatever it returns still
passes the safety filter, like the policy's actions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from mechanic_rl_ros.control import fr3

IDLE, ACTIVE, LOST = "idle", "active", "lost"
CLOSE, OPEN = "close", "open"


@dataclass(frozen=True)
class TeleopConfig:
    """policy_node's ``teleop_*`` parameters (config/policy_node.yaml says the same)."""

    linear_scale: float = 0.15       #: [m/s per device unit] TCP speed of a full deflection
    angular_scale: float = 0.8       #: [rad/s per device unit]
    max_linear_speed: float = 0.15   #: [m/s] a faster Twist is scaled down to this (counted as clamped)
    max_angular_speed: float = 0.8   #: [rad/s]
    deadband: float = 0.05           #: [device units] smaller components count as zero (a mouse at rest drifts)
    release: float = 0.5             #: [s] without activity before the policy takes back over
    timeout: float = 0.5             #: [s] without any message while active: the stream is lost
    close_button: int = 0            #: Joy button index that closes the gripper
    open_button: int = 1             #: Joy button index that opens it
    max_pose_lead: float = 0.02      #: [m] (and 5x this in rad) the target pose may lead the command

    def __post_init__(self) -> None:
        for name in ("linear_scale", "angular_scale", "max_linear_speed", "max_angular_speed", "release",
                     "timeout", "max_pose_lead"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"teleop_{name}: {v}; expected a finite number > 0")
        if not 0 <= self.deadband < 1:
            raise ValueError(f"teleop_deadband: {self.deadband}; expected a number in [0, 1)")
        if self.close_button < 0 or self.open_button < 0 or self.close_button == self.open_button:
            raise ValueError(f"teleop_close_button {self.close_button}, teleop_open_button {self.open_button}: "
                             "expected two different button indices >= 0")


def _vector3(values: Sequence[float], field: str) -> np.ndarray:
    v = np.array(values, dtype=np.float64).reshape(-1)  # a copy: the deadband zeroes components of it
    if v.shape != (3,) or not np.all(np.isfinite(v)):
        raise ValueError(f"{field}: got {np.asarray(values).tolist()}; expected 3 finite numbers")
    return v


class TeleopInput:
    """The operator's stream as idle / active / lost (module docstring); times [s] on the node's clock
    (``now``) and on the wall clock (``wall``, None: the node's clock)."""

    def __init__(self, config: TeleopConfig):
        self.config = config
        self.reset()

    def reset(self) -> None:
        """A new episode: forget the stream's state (a lost stream is given another chance)."""
        self._linear = np.zeros(3)
        self._angular = np.zeros(3)
        #: (node clock, wall clock) [s] of the last Twist, the last message, the last activity
        self._twist_at = self._message_at = self._active_at = (-math.inf, -math.inf)
        self._twist_moving = self._buttons_held = False
        self._lost = False
        #: the gripper the buttons last asked for (None: no button pressed since the reset), and when [s]
        self.gripper: str | None = None
        self.gripper_at = -math.inf

    @staticmethod
    def _at(now: float, wall: float | None) -> tuple[float, float]:
        return (now, now if wall is None else wall)

    @staticmethod
    def _age(since: tuple[float, float], now: float, wall: float | None) -> float:
        """[s] since ``since``: the younger of its ages on the two clocks (module docstring)."""
        return min(now - since[0], (now if wall is None else wall) - since[1])

    def on_twist(self, linear: Sequence[float], angular: Sequence[float], now: float,
                 wall: float | None = None) -> None:
        """A Twist (device units); ValueError names the field of a malformed one, which changes nothing."""
        lin, ang = _vector3(linear, "twist linear"), _vector3(angular, "twist angular")
        db = self.config.deadband
        lin[np.abs(lin) < db] = 0.0
        ang[np.abs(ang) < db] = 0.0
        at = self._at(now, wall)
        self._linear, self._angular, self._twist_at, self._message_at = lin, ang, at, at
        self._twist_moving = bool(lin.any() or ang.any())
        if self._twist_moving:
            self._active_at = at

    def on_joy(self, buttons: Sequence[int], now: float, wall: float | None = None) -> None:
        """A Joy message's buttons; pressing both gripper buttons at once is refused (ValueError)."""
        c = self.config
        close = len(buttons) > c.close_button and bool(buttons[c.close_button])
        open_ = len(buttons) > c.open_button and bool(buttons[c.open_button])
        if close and open_:
            raise ValueError(f"joy buttons: {list(buttons)}; close ({c.close_button}) and open ({c.open_button}) "
                             "pressed together, expected at most one")
        self._message_at = self._at(now, wall)
        self._buttons_held = close or open_
        if self._buttons_held:
            self.gripper, self.gripper_at = (CLOSE if close else OPEN), now
            self._active_at = self._message_at

    def mode(self, now: float, wall: float | None = None) -> str:
        """:data:`IDLE`, :data:`ACTIVE` or :data:`LOST` at ``now`` (and ``wall``)."""
        if self._lost:
            return LOST
        showing_activity = self._twist_moving or self._buttons_held
        if showing_activity and self._age(self._message_at, now, wall) > self.config.timeout:
            self._lost = True
            return LOST
        return ACTIVE if self._age(self._active_at, now, wall) <= self.config.release else IDLE

    def velocity(self, now: float, wall: float | None = None) -> tuple[np.ndarray, np.ndarray, bool]:
        """(TCP velocity [m/s], angular velocity [rad/s], whether a limit scaled it down) at ``now``; zero when
        the last Twist is older than ``timeout``."""
        c = self.config
        if self._age(self._twist_at, now, wall) > c.timeout:
            return np.zeros(3), np.zeros(3), False
        v, w = self._linear * c.linear_scale, self._angular * c.angular_scale
        clamped = False
        for vec, limit in ((v, c.max_linear_speed), (w, c.max_angular_speed)):
            norm = float(np.linalg.norm(vec))
            if norm > limit:
                vec *= limit / norm
                clamped = True
        return v, w, clamped


def rotation_vector(r: np.ndarray) -> np.ndarray:
    """The axis-angle vector [rad] of the rotation matrix ``r``."""
    cos = np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0)
    angle = math.acos(cos)
    axis = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    if angle < 1e-9:
        return 0.5 * axis
    if math.pi - angle < 1e-6:  # 180 deg: the axis from the symmetric part
        k = int(np.argmax(np.diag(r)))
        a = np.sqrt(max(0.0, (r[k, k] + 1.0) / 2.0))
        col = r[:, k] / (2.0 * a) if a > 0 else np.eye(3)[k]
        col[k] = a
        return angle * col / np.linalg.norm(col)
    return angle * axis / (2.0 * math.sin(angle))


def rotation_matrix(rotvec: np.ndarray) -> np.ndarray:
    """Rodrigues: the rotation matrix of an axis-angle vector [rad]."""
    angle = float(np.linalg.norm(rotvec))
    if angle < 1e-12:
        return np.eye(3)
    k = np.asarray(rotvec) / angle
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + math.sin(angle) * kx + (1.0 - math.cos(angle)) * kx @ kx


def pose_jacobian(q: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """[6, 7] d(TCP position, TCP rotation vector)/dq in the base frame, by central differences of the FK."""
    q = np.asarray(q, dtype=np.float64)
    jac = np.zeros((6, fr3.NUM_JOINTS))
    for j in range(fr3.NUM_JOINTS):
        dq = np.zeros(fr3.NUM_JOINTS)
        dq[j] = eps
        plus, minus = fr3.forward_kinematics(q + dq), fr3.forward_kinematics(q - dq)
        jac[:3, j] = (plus[:3, 3] - minus[:3, 3]) / (2 * eps)
        jac[3:, j] = rotation_vector(plus[:3, :3] @ minus[:3, :3].T) / (2 * eps)
    return jac


class CartesianJog:
    """TCP velocity -> joint targets, one control period at a time (module docstring).

    ``damping`` [m]: the damped-least-squares damping (Wampler 1986; Nakamura and Hanafusa 1986), which keeps
    the step bounded near singularities.
    """

    def __init__(self, config: TeleopConfig, damping: float = 0.02):
        self.config, self.damping = config, float(damping)
        self.target_p: np.ndarray | None = None
        self.target_r: np.ndarray | None = None

    def start(self, q: np.ndarray) -> None:
        """Take over at joint targets ``q``: the target pose is where they put the TCP."""
        pose = fr3.forward_kinematics(np.asarray(q, dtype=np.float64))
        self.target_p, self.target_r = pose[:3, 3].copy(), pose[:3, :3].copy()

    def step(self, q: np.ndarray, v: np.ndarray, w: np.ndarray, dt: float) -> np.ndarray:
        """Joint targets one period ``dt`` on from the last sent ``q``, the TCP moving at ``v`` [m/s] and
        turning at ``w`` [rad/s] (base frame)."""
        if self.target_p is None or self.target_r is None:
            self.start(q)
        q = np.asarray(q, dtype=np.float64)
        pose = fr3.forward_kinematics(q)
        p, r = pose[:3, 3], pose[:3, :3]
        lead = self.config.max_pose_lead
        target_p = self.target_p + np.asarray(v, dtype=np.float64) * dt
        off = target_p - p
        if np.linalg.norm(off) > lead:
            target_p = p + off * (lead / np.linalg.norm(off))
        target_r = rotation_matrix(np.asarray(w, dtype=np.float64) * dt) @ self.target_r
        rot_off = rotation_vector(target_r @ r.T)
        if np.linalg.norm(rot_off) > 5 * lead:
            target_r = rotation_matrix(rot_off * (5 * lead / np.linalg.norm(rot_off))) @ r
            rot_off = rotation_vector(target_r @ r.T)
        self.target_p, self.target_r = target_p, target_r
        err = np.concatenate([target_p - p, rot_off])
        jac = pose_jacobian(q)
        dq = jac.T @ np.linalg.solve(jac @ jac.T + self.damping ** 2 * np.eye(6), err)
        return np.clip(q + dq, fr3.Q_MIN, fr3.Q_MAX)


POLICY, OPERATOR = "policy", "operator"


class Takeover:
    """Who commands the arm at a tick -- the policy, the operator, or nobody (a lost stream: hold) -- and the
    operator's action when it is the operator.

    policy_node asks :meth:`who` once per tick; on the operator's ticks :meth:`action` gives the 7 joint
    targets and the gripper width, from the joint targets last sent (so taking over continues the command
    without a step; the safety filter smooths whatever follows). ``events`` collects what changed at the tick
    (``"takeover"``, ``"handback"``, ``"lost"``) for the node to log and act on.
    """

    def __init__(self, config: TeleopConfig, control_dt: float):
        self.input = TeleopInput(config)
        self.jog = CartesianJog(config)
        self.control_dt = float(control_dt)
        self.active = False
        self.width = fr3.GRIPPER_MAX_WIDTH
        self._started = -math.inf  #: [s] when the current takeover began
        self._fresh = False  #: no action given since it began
        self.counts = {"interventions": 0, "intervened_steps": 0, "teleop_clamped": 0, "teleop_lost": 0}

    def reset(self) -> None:
        """A new episode: the policy starts; a stream lost in the last one gets another chance."""
        self.input.reset()
        self.active = False

    def who(self, now: float, wall: float | None = None) -> tuple[str, str | None]:
        """(:data:`POLICY`, :data:`OPERATOR` or :data:`LOST`; what changed: None, ``"takeover"``,
        ``"handback"`` or ``"lost"``)."""
        mode = self.input.mode(now, wall)
        if mode == LOST:
            if self.active:
                self.active = False
                self.counts["teleop_lost"] += 1
                return LOST, "lost"
            return LOST, None
        if mode == ACTIVE:
            if not self.active:
                self.active, self._started, self._fresh = True, now, True
                self.counts["interventions"] += 1
                return OPERATOR, "takeover"
            return OPERATOR, None
        if self.active:
            self.active = False
            return POLICY, "handback"
        return POLICY, None

    def action(self, q_sent: np.ndarray, width_sent: float, now: float, wall: float | None = None) -> np.ndarray:
        """The operator's command [8]: joint targets one period on from ``q_sent`` (the last command) and the
        gripper width its buttons ask for (``width_sent`` until one is pressed)."""
        if self._fresh:
            self.jog.start(q_sent)
            self.width, self._fresh = float(width_sent), False
        v, w, clamped = self.input.velocity(now, wall)
        self.counts["teleop_clamped"] += clamped
        self.counts["intervened_steps"] += 1
        # a press before this takeover's activity began belongs to an earlier one (they are `release` apart)
        if self.input.gripper is not None and self.input.gripper_at >= self._started - self.input.config.release:
            self.width = fr3.GRIPPER_MIN_WIDTH if self.input.gripper == CLOSE else fr3.GRIPPER_MAX_WIDTH
        return np.append(self.jog.step(q_sent, v, w, self.control_dt), self.width)
