"""The last gate before a command leaves the stack for the FR3.

Every joint position command the policy (or a reset motion) streams passes
:class:`SafetyFilter`, which keeps it inside

* the FR3 joint position limits (with a margin),
* the FR3 joint velocity, acceleration and jerk limits at the streaming period
  -- franka_hardware's own rate limiters are off by default, so streamed
  targets must already respect them (franka_description joint_limits.yaml),
* a Cartesian workspace box for the TCP (forward kinematics of the target),
* the gripper's 0..0.08 m opening range.

A command that violates a limit is not refused but moved to the nearest
admissible one, and the filter reports which limits acted. A non-finite or
wrongly shaped command is refused (ValueError); the caller then holds.

:meth:`SafetyFilter.hold` is what a stale observation or a dead model gets: a
command towards the last one sent, decelerating within the limits, never a
guess. Pure numpy; no ROS.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mechanic_rl_ros.control import fr3


@dataclass
class SafetyConfig:
    """Limits applied to every outgoing command (safety_* parameters of policy_node)."""

    #: Streaming period of the commands [s] (10 Hz control).
    control_dt: float = 0.1
    #: Targets stay this far inside the FR3 position limits [rad].
    position_margin: float = 0.02
    #: Fractions of the FR3 velocity / acceleration / jerk limits allowed.
    velocity_scale: float = 1.0
    acceleration_scale: float = 1.0
    jerk_scale: float = 1.0
    #: TCP workspace box in the robot base frame (fr3_link0) [m].
    workspace_min: tuple[float, float, float] = (0.2, -0.4, 0.0)
    workspace_max: tuple[float, float, float] = (0.8, 0.4, 0.7)
    #: Bisection steps used to pull a target back into the workspace.
    workspace_iterations: int = 12

    def __post_init__(self) -> None:
        for name in ("control_dt", "velocity_scale", "acceleration_scale", "jerk_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        lo, hi = np.asarray(self.workspace_min, float), np.asarray(self.workspace_max, float)
        if lo.shape != (3,) or hi.shape != (3,) or np.any(lo >= hi):
            raise ValueError(f"workspace_min/workspace_max: expected 3 values each with min < max, "
                             f"got {self.workspace_min} / {self.workspace_max}")


@dataclass
class FilterResult:
    q: np.ndarray
    gripper_width: float
    #: Names of the limits that changed the command (empty: passed unchanged).
    limited: list[str] = field(default_factory=list)

    @property
    def clamped(self) -> bool:
        return bool(self.limited)


class SafetyFilter:
    """Stateful limiter for a stream of joint position targets."""

    def __init__(self, config: SafetyConfig | None = None):
        self.config = config or SafetyConfig()
        self._q: np.ndarray | None = None
        self._v = np.zeros(fr3.NUM_JOINTS)
        self._a = np.zeros(fr3.NUM_JOINTS)

    @property
    def initialized(self) -> bool:
        return self._q is not None

    @property
    def last_command(self) -> np.ndarray | None:
        return None if self._q is None else self._q.copy()

    def reset(self, q_measured) -> None:
        """Start a stream from the measured joint positions, at rest."""
        q = np.asarray(q_measured, dtype=np.float64)
        if q.shape != (fr3.NUM_JOINTS,) or not np.all(np.isfinite(q)):
            raise ValueError(f"q_measured: expected 7 finite joint positions, got {q}")
        self._q = q.copy()
        self._v[:] = 0.0
        self._a[:] = 0.0

    def hold(self) -> FilterResult:
        """Command towards the last command, braking within the limits."""
        if self._q is None:
            raise RuntimeError("SafetyFilter.hold before reset: no command to hold")
        return self.filter(self._q, None)

    def filter(self, q_target, gripper_width: float | None) -> FilterResult:
        """Limit one target; ``gripper_width=None`` keeps the gripper as it is (returns NaN width)."""
        if self._q is None:
            raise RuntimeError("SafetyFilter.filter before reset: call reset(q_measured) first")
        cfg = self.config
        q_target = np.asarray(q_target, dtype=np.float64)
        if q_target.shape != (fr3.NUM_JOINTS,):
            raise ValueError(f"q_target: expected 7 joint positions, got shape {q_target.shape}")
        if not np.all(np.isfinite(q_target)):
            raise ValueError(f"q_target: must be finite, got {q_target}")
        limited: list[str] = []
        dt = cfg.control_dt
        lo, hi = fr3.Q_MIN + cfg.position_margin, fr3.Q_MAX - cfg.position_margin
        q = np.clip(q_target, lo, hi)
        if not np.array_equal(q, q_target):
            limited.append("position")

        v = (q - self._q) / dt
        v_max = cfg.velocity_scale * fr3.DQ_MAX
        v_c = np.clip(v, -v_max, v_max)
        if not np.allclose(v_c, v):
            limited.append("velocity")
        a_max = cfg.acceleration_scale * fr3.DDQ_MAX
        v_b = np.clip(v_c, -_braking_speed(self._q - lo, a_max, dt, v_max),
                      _braking_speed(hi - self._q, a_max, dt, v_max))
        if not np.allclose(v_b, v_c):
            limited.append("braking")
        a = (v_b - self._v) / dt
        j_max = cfg.jerk_scale * fr3.DDDQ_MAX
        a_c = np.clip(np.clip(a, -a_max, a_max), self._a - j_max * dt, self._a + j_max * dt)
        if not np.allclose(a_c, a):
            limited.append("acceleration/jerk")
        q = np.clip(self._q + (self._v + a_c * dt) * dt, lo, hi)

        q = self._into_workspace(q, limited)
        v_new = (q - self._q) / dt
        self._a = (v_new - self._v) / dt
        self._v = v_new
        self._q = q

        width = float("nan")
        if gripper_width is not None:
            w = float(gripper_width)
            if not np.isfinite(w):
                raise ValueError(f"gripper_width: must be finite, got {gripper_width}")
            width = float(np.clip(w, fr3.GRIPPER_MIN_WIDTH, fr3.GRIPPER_MAX_WIDTH))
            if width != w:
                limited.append("gripper")
        return FilterResult(q.copy(), width, limited)

    def _into_workspace(self, q: np.ndarray, limited: list[str]) -> np.ndarray:
        """Pull ``q`` back along the segment from the last command until the TCP is in the box."""
        cfg = self.config
        lo, hi = np.asarray(cfg.workspace_min), np.asarray(cfg.workspace_max)

        def outside_by(qq: np.ndarray) -> float:
            p = fr3.forward_kinematics(qq)[:3, 3]
            return float(np.linalg.norm(np.maximum(lo - p, 0.0) + np.maximum(p - hi, 0.0)))

        def inside(qq: np.ndarray) -> bool:
            return outside_by(qq) == 0.0

        if inside(q):
            return q
        limited.append("workspace")
        start = self._q
        if not inside(start):
            # already outside (e.g. started there): only moves that get closer pass
            return q if outside_by(q) < outside_by(start) else start.copy()
        ok, bad = 0.0, 1.0
        for _ in range(cfg.workspace_iterations):
            mid = 0.5 * (ok + bad)
            if inside(start + mid * (q - start)):
                ok = mid
            else:
                bad = mid
        return start + ok * (q - start)


def _braking_speed(d: np.ndarray, a_max: np.ndarray, dt: float, v_max: np.ndarray) -> np.ndarray:
    """Fastest speed towards a limit ``d`` away from which the stream can still stop.

    Moving at v for one period and then slowing by ``a_max * dt`` per period
    travels dt * sum_{k=0..n} (v - k a dt) with n = floor(v / (a dt)); this is
    the largest v whose travel is <= d (per joint, exact in discrete time).
    """
    d = np.maximum(d, 0.0)
    step = a_max * dt
    best = np.zeros_like(d)
    for n in range(int(np.ceil(np.max(v_max / step))) + 1):
        v = (d / dt + step * n * (n + 1) / 2) / (n + 1)
        valid = np.floor(v / step + 1e-12) >= n
        best = np.where(valid, np.maximum(best, np.minimum(v, step * (n + 1))), best)
    return best
