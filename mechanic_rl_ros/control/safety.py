"""The last gate before a command leaves the stack for the FR3: 10 Hz targets in,
trajectories the 1 kHz interface accepts out.

The FR3 checks every 1 ms joint position command (:mod:`.franka_checks`:
position, position-dependent velocity, acceleration 10 rad/s^2, jerk
5000 rad/s^3); a 10 Hz target step reaching it unsmoothed is a reflex. The
stack therefore streams JointTrajectory messages to a JointTrajectoryController
on the position interface (:mod:`.trajectory` models it), and
:class:`SafetyFilter` makes each message. Every control period it

1. samples the trajectory it sent last (the *committed* one, which the
   controller is playing) at ``now + switch_lead``: position, velocity,
   acceleration ``P0``;
2. makes the candidate knot ``P1`` one control period later from the policy's
   target (clipped to the joint position limits minus a margin), with velocity
   between the segment's mean and its constant-acceleration end velocity
   (:data:`KNOT_BLEND`) and zero acceleration, and a braking tail
   from ``P1`` to rest (a quintic of length ``Ts`` with peak deceleration
   1.5 |v| / Ts and peak jerk 6 |v| / Ts^2, chosen within the limits);
3. samples the whole candidate at the interface rate (1 ms) and checks every
   sample against the scaled FR3 limits (the robot's own check,
   :func:`franka_checks.first_violation`), the joint position margin, the TCP
   workspace box with a table clearance, and a TCP speed limit;
4. if the candidate fails, moves ``P1`` back towards where the committed
   trajectory would be (bisection on the fraction ``alpha`` of the step) and,
   if no fraction passes, keeps the committed trajectory, which already ends
   at rest within the limits.

So braking always respects the acceleration and jerk limits -- position and
workspace bounds are met by stopping earlier, never by a harder stop -- and
every message ends at rest: a late or missing next message makes the
controller play the braking tail to a stop, never hold a moving target.
Messages are stamped at ``now`` and begin with the committed trajectory itself
for ``switch_lead`` seconds (its state at ``now``, its knots, its state at
``now + switch_lead`` = ``P0``; a quintic piece is fixed by its end states, so
the copy is exact); the new motion starts at ``P0``. The JTC never
interpolates from its "point before" (the stamp lies in the past when it picks
the message up, see :mod:`.trajectory`), and if it switches within
``switch_lead`` of the stamp it plays exactly what it would have played. A
zero lead is not enough: the old and new trajectory then differ by (jerk
difference) d^3 / 6 at a switch d after the stamp, a one-tick step whose
acceleration d^3 j / (6 * 1 ms^2) passes 10 rad/s^2 at d = 3 ms for j = 2500.

:meth:`SafetyFilter.hold` is what a stale observation, a dead model or a robot
error gets: the committed trajectory again (a stop within the limits), never a
guess. Pure numpy; no ROS.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mechanic_rl_ros.control import fr3
from mechanic_rl_ros.control.franka_checks import DT as INTERFACE_DT
from mechanic_rl_ros.control.franka_checks import first_violation
from mechanic_rl_ros.control.trajectory import Point, Trajectory, sample

#: Knot velocity v1 = mean + KNOT_BLEND (mean - v0), mean = (q1 - q0) / T: 0 is the segment's mean
#: velocity (the arm lags: every segment must overshoot it, 0/4 scripted-expert lifts at half the
#: limits), 1 the constant-acceleration (trapezoid) velocity (marginally stable: a velocity error
#: alternates without decaying); 0.5 halves the error every period (4/4 lifts, /tmp measurement in
#: docs/sim.md).
KNOT_BLEND = 0.5
_LIMIT_NAMES = {
    "joint_motion_generator_position_limits_violation": "position",
    "joint_motion_generator_velocity_limits_violation": "velocity",
    "joint_motion_generator_velocity_discontinuity": "acceleration",
    "joint_motion_generator_acceleration_discontinuity": "jerk",
}


@dataclass
class SafetyConfig:
    """Limits applied to every outgoing command (safety_* parameters of policy_node, config/policy_node.yaml)."""

    #: Streaming period of the targets [s] (10 Hz control).
    control_dt: float = 0.1
    #: Targets stay this far inside the FR3 joint position limits [rad].
    position_margin: float = 0.02
    #: Fractions of the FR3 velocity (position-dependent), acceleration and jerk limits allowed at 1 kHz.
    #: Conservative while a policy explores: half the robot's limits.
    velocity_scale: float = 0.5
    acceleration_scale: float = 0.5
    jerk_scale: float = 0.5
    #: Largest TCP speed [m/s] (checked every 10 ms along the trajectory).
    tcp_speed_max: float = 0.5
    #: TCP workspace box in the robot base frame (fr3_link0) [m]; workspace_min z is the table top.
    workspace_min: tuple[float, float, float] = (0.2, -0.4, 0.0)
    workspace_max: tuple[float, float, float] = (0.8, 0.4, 0.7)
    #: The TCP stays this far above workspace_min z [m] (z = table top would let the fingertips touch it).
    table_clearance: float = 0.005
    #: Bisection steps towards the largest admissible fraction of a limited step.
    bisection_steps: int = 8
    #: [s] each message repeats the committed trajectory for this long after its stamp before it
    #: diverges, so a controller that switches to it up to this late sees no change at all
    #: (DDS delivery + the controller's next 1 ms cycle; see the module docstring).
    switch_lead: float = 0.02
    #: [s] after :meth:`SafetyFilter.reset` from a *measured* position, the first message (header.stamp 0) lets
    #: the controller glide from its own last command to it in this time; streaming starts after it. The
    #: measured and commanded positions differ by the tracking error, and a stamped trajectory starting at the
    #: measured one would step the command by that much in one 1 ms tick (a reflex above ~1e-5 rad).
    settle_time: float = 0.2
    #: [s] streaming starts this long after the glide's nominal end. The controller starts the glide when it
    #: reads the message (stamp 0), so the glide ends as late as that message was delivered; a stamped message
    #: read before then would switch mid-glide, off the path by the glide's motion (a reflex). This covers
    #: the glide message's delivery delay beyond that of the first streamed message.
    settle_margin: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.switch_lead < self.control_dt:
            raise ValueError(f"switch_lead: must be in [0, control_dt = {self.control_dt}), got {self.switch_lead}")
        for name in ("control_dt", "velocity_scale", "acceleration_scale", "jerk_scale", "tcp_speed_max"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        for name in ("velocity_scale", "acceleration_scale", "jerk_scale"):
            if getattr(self, name) > 1:
                raise ValueError(f"{name}: a fraction of the FR3 limit, must be <= 1, got {getattr(self, name)}")
        if not (self.settle_time >= 0 and self.settle_margin >= 0):
            raise ValueError(f"settle_time / settle_margin: must be >= 0, got {self.settle_time} / "
                             f"{self.settle_margin}")
        if self.table_clearance < 0 or self.position_margin < 0:
            raise ValueError(f"table_clearance / position_margin: must be >= 0, got {self.table_clearance} / "
                             f"{self.position_margin}")
        lo, hi = self.box()
        if lo.shape != (3,) or hi.shape != (3,) or np.any(lo >= hi):
            raise ValueError(f"workspace_min/workspace_max: expected 3 values each with min < max (z min + "
                             f"table_clearance), got {self.workspace_min} / {self.workspace_max}")

    def box(self) -> tuple[np.ndarray, np.ndarray]:
        """The TCP box with the table clearance applied."""
        lo = np.array(self.workspace_min, dtype=float)
        lo[2:] += self.table_clearance
        return lo, np.array(self.workspace_max, dtype=float)


@dataclass
class FilterResult:
    #: the 7 joint positions commanded for ``now + switch_lead + control_dt`` (the executed action)
    q: np.ndarray
    gripper_width: float
    #: Names of the limits that changed the command (empty: passed unchanged).
    limited: list[str] = field(default_factory=list)
    #: the message to send: stamped at ``now`` [s, the caller's clock], first point = the state there;
    #: None: send nothing (settling after a reset, see ``SafetyConfig.settle_time``)
    trajectory: Trajectory | None = None
    #: fraction of the requested step that was taken (1: all of it; 0: braking on the committed trajectory)
    alpha: float = 1.0

    @property
    def clamped(self) -> bool:
        return bool(self.limited)


class SafetyFilter:
    """Stateful: turns a stream of 10 Hz joint targets into trajectories within the FR3's 1 kHz limits."""

    def __init__(self, config: SafetyConfig | None = None):
        self.config = config or SafetyConfig()
        self._traj: Trajectory | None = None
        self._target: np.ndarray | None = None
        self._settle_until = -math.inf
        self._stream_from = -math.inf
        self._uncommit: tuple[Trajectory, np.ndarray] | None = None
        self._settle_sent = True
        #: the last :meth:`filter` gave the settling message (which :meth:`unsent` takes back)
        self._settle_just_sent = False

    @property
    def initialized(self) -> bool:
        return self._traj is not None

    @property
    def last_command(self) -> np.ndarray | None:
        """The newest target knot sent (the rest position right after :meth:`reset`)."""
        return None if self._target is None else self._target.copy()

    @property
    def committed(self) -> Trajectory | None:
        """The trajectory last sent, which the controller is playing."""
        return self._traj

    def reset(self, q_measured, now: float = 0.0, settle: float | None = None) -> None:
        """Start a stream from the measured joint positions, at rest, at time ``now`` [s].

        For ``settle`` seconds (default ``config.settle_time``; 0 where the
        controller is known to hold exactly ``q_measured``, e.g. a simulator
        reset) the filter sends only the settling message (see
        ``SafetyConfig.settle_time``).
        """
        q = np.asarray(q_measured, dtype=np.float64)
        if q.shape != (fr3.NUM_JOINTS,) or not np.all(np.isfinite(q)):
            raise ValueError(f"q_measured: expected 7 finite joint positions, got {q}")
        settle = self.config.settle_time if settle is None else float(settle)
        self._settle_until = now + settle if settle > 0 else -math.inf
        self._stream_from = self._settle_until + self.config.settle_margin if settle > 0 else -math.inf
        self._settle_sent = False
        self._uncommit = None
        self._traj = _rest(q, now + (settle + self.config.settle_margin if settle > 0 else 0.0),
                           self.config.control_dt)
        self._target = q.copy()

    def _settling(self, now: float) -> FilterResult | None:
        """While settling: the settling message once, then nothing (trajectory None) until it has played.

        Sent again mid-glide, a message would make the JTC restart from its
        "point before", one period off the path it is on (see :mod:`.trajectory`).
        """
        if now >= self._stream_from - 1e-9:
            return None
        z = np.zeros(fr3.NUM_JOINTS)
        q = self._target.copy()
        traj = None
        if not self._settle_sent and now < self._settle_until:
            self._settle_sent = self._settle_just_sent = True
            # stamp 0: the controller interpolates from its last command (at rest) to q in the remaining time
            traj = Trajectory(None, [Point(self._settle_until - now, q, z.copy(), z.copy())])
        return FilterResult(q, float("nan"), ["settling"], traj, 0.0)

    def state(self, t) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Position, velocity, acceleration the committed trajectory commands at time(s) ``t``."""
        if self._traj is None:
            raise RuntimeError("SafetyFilter.state before reset: call reset(q_measured, now) first")
        t = np.maximum(np.atleast_1d(np.asarray(t, dtype=np.float64)), self._traj.stamp)
        return sample(self._traj, self._traj.stamp, t)

    def commanded(self, t: float) -> np.ndarray | None:
        """The position the controller commands at ``t`` [s] if it plays the committed trajectory (the robot's
        q_d there), or None where the filter cannot tell: before the committed message's stamp (the one before
        it was playing), and until the settling glide has played (the controller glides from its own command)."""
        traj = self._traj
        if traj is None or traj.stamp is None or t < traj.stamp or t < self._stream_from:
            return None
        return self.state(t)[0][0]

    def hold(self, now: float = 0.0) -> FilterResult:
        """The committed trajectory again: it brakes to rest within the limits (re-stamped once it has ended)."""
        if self._traj is None:
            raise RuntimeError("SafetyFilter.hold before reset: no command to hold")
        settling = self._settling(now)
        if settling is not None:
            return settling
        if self._traj.end_time() <= now + INTERFACE_DT:  # (it would end before the controller reads it)
            self._traj = _rest(np.asarray(self._traj.points[-1].positions, float), now, self.config.control_dt)
        q1 = self.state(now + self.config.switch_lead + self.config.control_dt)[0][0]
        return FilterResult(q1, float("nan"), ["hold"], self._traj, 0.0)

    def filter(self, q_target, gripper_width: float | None, now: float = 0.0) -> FilterResult:
        """Limit one target for time ``now`` + control_dt; ``gripper_width=None`` keeps the gripper (NaN width)."""
        if self._traj is None:
            raise RuntimeError("SafetyFilter.filter before reset: call reset(q_measured, now) first")
        self._uncommit = None
        self._settle_just_sent = False
        cfg = self.config
        q_target = np.asarray(q_target, dtype=np.float64)
        if q_target.shape != (fr3.NUM_JOINTS,):
            raise ValueError(f"q_target: expected 7 joint positions, got shape {q_target.shape}")
        if not np.all(np.isfinite(q_target)):
            raise ValueError(f"q_target: must be finite, got {q_target}")
        width = float("nan")
        limited: list[str] = []
        if gripper_width is not None:
            w = float(gripper_width)
            if not math.isfinite(w):
                raise ValueError(f"gripper_width: must be finite, got {gripper_width}")
            width = float(np.clip(w, fr3.GRIPPER_MIN_WIDTH, fr3.GRIPPER_MAX_WIDTH))
            if width != w:
                limited.append("gripper")
        settling = self._settling(now)
        if settling is not None:
            settling.gripper_width = width
            return settling
        lo, hi = fr3.Q_MIN + cfg.position_margin, fr3.Q_MAX - cfg.position_margin
        q_t = np.clip(q_target, lo, hi)
        if not np.array_equal(q_t, q_target):
            limited.append("position")

        T = cfg.control_dt
        history = self.state(now - INTERFACE_DT * np.arange(2, -1, -1))[0]
        prefix = self._prefix(now)
        t0 = now + cfg.switch_lead
        p0 = self.state(t0)
        base = self.state(t0 + T)[0][0]
        full = self._candidate(now, prefix, p0, base + (q_t - base))
        problem = self._problem(full, history, now)
        if problem is None:
            return self._commit(full, q_t, width, limited, 1.0)
        limited.append(problem)
        zero = self._candidate(now, prefix, p0, base)
        if self._problem(zero, history, now) is not None:
            res = self.hold(now)  # keep braking on the committed trajectory
            return FilterResult(res.q, width, limited + ["hold"], res.trajectory, 0.0)
        ok, bad, best = 0.0, 1.0, zero
        for _ in range(cfg.bisection_steps):
            mid = 0.5 * (ok + bad)
            cand = self._candidate(now, prefix, p0, base + mid * (q_t - base))
            if self._problem(cand, history, now) is None:
                ok, best = mid, cand
            else:
                bad = mid
        return self._commit(best, np.asarray(best.points[-2].positions), width, limited, ok)

    # ------------------------------------------------------------ internals
    def unsent(self) -> None:
        """The message of the last :meth:`filter` was not sent: the committed trajectory is the one before it.

        (A caller that finds its message too late to be read within ``switch_lead`` of its stamp drops it;
        the controller plays on what it has, which ends at rest.) A settling message not sent is given by the
        next :meth:`filter` while there is time left to glide.
        """
        if self._uncommit is not None:
            self._traj, self._target = self._uncommit
            self._uncommit = None
        if self._settle_just_sent:
            self._settle_sent = self._settle_just_sent = False

    def _commit(self, traj: Trajectory, q1: np.ndarray, width: float, limited: list[str], alpha: float
                ) -> FilterResult:
        self._uncommit = (self._traj, self._target)
        self._traj = traj
        self._target = np.asarray(traj.points[-2].positions, float).copy()
        return FilterResult(self._target.copy(), width, limited, traj, alpha)

    def _prefix(self, now: float) -> list[Point]:
        """The committed trajectory from ``now`` to ``now + switch_lead``, as points of a message stamped ``now``."""
        lead = self.config.switch_lead
        if lead <= 0.0:
            return []
        traj = self._traj
        pts = [_point(0.0, self.state(now))]
        for p in traj.points:
            t = traj.stamp + p.time_from_start - now
            if 1e-9 < t < lead - 1e-9:
                pts.append(Point(t, np.asarray(p.positions, float), _or_zero(p.velocities), _or_zero(p.accelerations)))
        return pts

    def _candidate(self, now: float, prefix: list[Point], p0, q1: np.ndarray) -> Trajectory:
        """The committed prefix, P0 (its state at now + lead) -> P1 = q1 one period later -> rest."""
        cfg = self.config
        T = cfg.control_dt
        L = cfg.switch_lead
        q0, v0, a0 = (x[0] for x in p0)
        mean = (q1 - q0) / T
        v1 = mean + KNOT_BLEND * (mean - v0)
        a_lim = cfg.acceleration_scale * fr3.DDQ_MAX
        j_lim = cfg.jerk_scale * fr3.DDDQ_MAX
        # braking quintic from (q1, v1, 0) to rest: peak |a| = 1.5 |v| / Ts, peak |j| = 6 |v| / Ts^2
        ts = max(T, float(np.max(1.5 * np.abs(v1) / (0.9 * a_lim))), float(np.max(np.sqrt(6.0 * np.abs(v1) / (0.9 * j_lim)))))
        ts = math.ceil(ts / INTERFACE_DT) * INTERFACE_DT
        q_stop = q1 + v1 * ts / 2.0
        z = np.zeros(fr3.NUM_JOINTS)
        return Trajectory(now, prefix + [Point(L, q0, v0, a0), Point(L + T, q1, v1, z.copy()),
                                         Point(L + T + ts, q_stop, z.copy(), z.copy())])

    def _problem(self, traj: Trajectory, history: np.ndarray, now: float) -> str | None:
        """The first limit the candidate breaks (None: all within).

        Every 1 ms sample up to 10 ms past ``P1`` goes through the robot's own
        check (finite differences, as the FR3 does); the braking tail beyond is
        a single quintic whose peak deceleration and jerk are within the
        limits by construction (:meth:`_candidate`) and whose position and
        speed fall monotonically, so it is sampled every 5 ms for the
        position, position-dependent velocity, workspace and TCP speed checks.
        """
        cfg = self.config
        t_knot = traj.points[-2].time_from_start
        n_dense = int(round((t_knot + 0.01) / INTERFACE_DT))
        dense_t = now + INTERFACE_DT * np.arange(1, n_dense + 1)
        q = sample(traj, traj.stamp, dense_t)[0]
        v = first_violation(history, q, velocity_scale=cfg.velocity_scale,
                            acceleration_scale=cfg.acceleration_scale, jerk_scale=cfg.jerk_scale)
        if v is not None:
            return _LIMIT_NAMES.get(v.error, v.error)
        tail_t = np.arange(dense_t[-1], traj.end_time() + 0.005, 0.005)
        q_tail, v_tail, _ = sample(traj, traj.stamp, tail_t)
        lo_v, up_v = fr3.velocity_limits(q_tail)
        if np.any(v_tail < cfg.velocity_scale * lo_v - 1e-9) or np.any(v_tail > cfg.velocity_scale * up_v + 1e-9):
            return "velocity"
        lo, hi = fr3.Q_MIN + cfg.position_margin, fr3.Q_MAX - cfg.position_margin
        if (np.any(q < lo - 1e-9) or np.any(q > hi + 1e-9) or np.any(q_tail < lo - 1e-9)
                or np.any(q_tail > hi + 1e-9)):
            return "position"
        # TCP every 10 ms (5 ms in the tail, where it slows down)
        sub = np.concatenate([history[-1:], q[9::10], q_tail])
        sub_t = np.concatenate([[now], dense_t[9::10], tail_t])
        p = fr3.tcp_positions(sub)
        box_lo, box_hi = cfg.box()
        out = _outside(p, box_lo, box_hi)
        if np.any(out > 1e-9) and (out[0] <= 1e-9 or out[1:].max() > out[0] + 1e-9):
            # (a TCP already outside, e.g. started there, may only move back in)
            return "workspace"
        dt = np.maximum(np.diff(sub_t), INTERFACE_DT)
        if np.any(np.linalg.norm(np.diff(p, axis=0), axis=1) / dt > cfg.tcp_speed_max):
            return "tcp_speed"
        return None


def _point(t: float, state) -> Point:
    return Point(t, state[0][0].copy(), state[1][0].copy(), state[2][0].copy())


def _or_zero(v) -> np.ndarray:
    return np.zeros(fr3.NUM_JOINTS) if v is None else np.asarray(v, float)


def _rest(q: np.ndarray, now: float, duration: float) -> Trajectory:
    """At rest at ``q`` from ``now`` until ``now + duration``: a message of it still ends in the controller's
    future when it arrives (the JTC drops one that has ended; a single point at ``now`` would be)."""
    z = np.zeros(fr3.NUM_JOINTS)
    return Trajectory(now, [Point(0.0, q.copy(), z.copy(), z.copy()), Point(duration, q.copy(), z.copy(), z.copy())])


def _outside(p: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.maximum(lo - p, 0.0) + np.maximum(p - hi, 0.0), axis=-1)
