"""Joint trajectories as ros2_control's JointTrajectoryController (JTC) plays them, ROS-free.

The stack commands the FR3 through a JTC on franka_hardware's joint *position*
command interface (README, "On the real FR3"). What the robot then sees every
1 ms is exactly what the JTC samples from the trajectory messages, so the
safety filter and the simulator both need the JTC's semantics, modelled here
from ros2_controllers' jazzy branch (4.42.1, joint_trajectory_controller/src/
joint_trajectory_controller.cpp and trajectory.cpp):

* **Interpolation between two points** (``Trajectory::interpolate_between_points``):
  linear when the points carry positions only, cubic with positions +
  velocities, quintic with positions + velocities + accelerations; outside the
  segment the time is clamped and the end point returned.
* **Timing**: a message with ``header.stamp`` = 0 (``stamp=None`` here) starts at the controller
  time it is first sampled; otherwise at its stamp (points may lie in the past;
  the sample falls into the segment that contains the sample time). Past the
  last point the controller holds the last point.
* **Sampling one period ahead** (since 4.17.0, PR #1306): the command written
  at controller time t is the sample at t + update period.
* **Replacing a trajectory**: a new message replaces the current one at the
  next update. Only while the sample time lies *before* its first point does
  the controller interpolate from a "point before" -- the last command (with
  ``interpolate_from_desired_state: true``; its time is the previous update's,
  one period earlier than the instant that command was sampled for) or the
  measured state (default). Either way that start point is off the commanded
  path: by one period of motion, or by the tracking error. The stack therefore
  stamps every message at the instant of its first point, which lies in the
  past when the JTC picks it up, and makes that first point the state the
  previous trajectory has there: the JTC then never uses the "point before",
  and the two trajectories share position, velocity and acceleration at the
  switch (they differ by (jerk difference) * delay^3 / 6, see
  :mod:`.safety`).
* **Activation** holds the measured position (``set_hold_position``).

Pure numpy; no ROS (the nodes convert to and from trajectory_msgs).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mechanic_rl_ros.control import fr3


@dataclass
class Point:
    """One trajectory point: reached ``time_from_start`` [s] after the trajectory's start."""

    time_from_start: float
    positions: np.ndarray
    velocities: np.ndarray | None = None
    accelerations: np.ndarray | None = None


@dataclass
class Trajectory:
    """A JointTrajectory in the controller's joint order (fr3_joint1..7).

    ``stamp`` [s, controller clock]: when ``time_from_start`` = 0 is; None means
    "when the controller first samples it" (a zero ``header.stamp`` in trajectory_msgs).
    """

    stamp: float | None
    points: list[Point] = field(default_factory=list)

    def end_time(self) -> float:
        if self.stamp is None:
            raise ValueError("end_time: the trajectory starts when first sampled (stamp None)")
        return self.stamp + self.points[-1].time_from_start

    def validate(self, allow_nonzero_velocity_at_end: bool = False) -> None:
        """What the JTC checks before accepting a message (``validate_trajectory_msg``); ValueError otherwise."""
        if not self.points:
            raise ValueError("points: empty trajectory")
        last = -np.inf
        for i, p in enumerate(self.points):
            if p.positions is None or np.shape(p.positions) != (fr3.NUM_JOINTS,):
                raise ValueError(f"points[{i}].positions: expected 7 values, got {np.shape(p.positions)}")
            for name in ("positions", "velocities", "accelerations"):
                v = getattr(p, name)
                if v is not None and (np.shape(v) != (fr3.NUM_JOINTS,) or not np.all(np.isfinite(v))):
                    raise ValueError(f"points[{i}].{name}: expected 7 finite values, got {v}")
            if not p.time_from_start > last:
                raise ValueError(f"points[{i}].time_from_start: {p.time_from_start} s is not after the previous "
                                 f"point's {last} s (must strictly increase)")
            last = p.time_from_start
        v_end = self.points[-1].velocities
        if not allow_nonzero_velocity_at_end and v_end is not None and np.any(np.asarray(v_end) != 0.0):
            raise ValueError(f"points[-1].velocities: must be 0 at the trajectory's end "
                             f"(allow_nonzero_velocity_at_trajectory_end: false), got {v_end}")


def interpolate(t0: float, a: Point, t1: float, b: Point, t: np.ndarray | float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions, velocities, accelerations between points ``a`` (at ``t0``) and ``b`` (at ``t1``), as the JTC does.

    ``t`` may be an array of sample times (returns [N, 7] arrays).
    """
    t = np.asarray(t, dtype=np.float64)
    scalar = t.ndim == 0
    t = np.atleast_1d(t)
    T = t1 - t0
    s = t - t0
    outside = (s < 0.0) | (s > T)
    s = np.clip(s, 0.0, max(T, 0.0))[:, None]
    p0, p1 = np.asarray(a.positions, float), np.asarray(b.positions, float)
    has_vel = a.velocities is not None and b.velocities is not None
    has_acc = has_vel and a.accelerations is not None and b.accelerations is not None
    if not has_vel:
        c = [p0, (p1 - p0) / T if T != 0.0 else np.zeros_like(p0)]
    elif not has_acc:
        v0, v1 = np.asarray(a.velocities, float), np.asarray(b.velocities, float)
        c = [p0, v0, np.zeros_like(p0), np.zeros_like(p0)]
        if T != 0.0:
            c[2] = (-3.0 * p0 + 3.0 * p1 - 2.0 * v0 * T - v1 * T) / T ** 2
            c[3] = (2.0 * p0 - 2.0 * p1 + v0 * T + v1 * T) / T ** 3
    else:
        v0, v1 = np.asarray(a.velocities, float), np.asarray(b.velocities, float)
        a0, a1 = np.asarray(a.accelerations, float), np.asarray(b.accelerations, float)
        c = [p0, v0, 0.5 * a0, np.zeros_like(p0), np.zeros_like(p0), np.zeros_like(p0)]
        if T != 0.0:
            T2, T3, T4, T5 = T ** 2, T ** 3, T ** 4, T ** 5
            c[3] = (-20.0 * p0 + 20.0 * p1 - 3.0 * a0 * T2 + a1 * T2 - 12.0 * v0 * T - 8.0 * v1 * T) / (2.0 * T3)
            c[4] = (30.0 * p0 - 30.0 * p1 + 3.0 * a0 * T2 - 2.0 * a1 * T2 + 16.0 * v0 * T + 14.0 * v1 * T) / (2.0 * T4)
            c[5] = (-12.0 * p0 + 12.0 * p1 - a0 * T2 + a1 * T2 - 6.0 * v0 * T - 6.0 * v1 * T) / (2.0 * T5)
    pos = sum(ci * s ** i for i, ci in enumerate(c))
    vel = sum(i * ci * s ** (i - 1) for i, ci in enumerate(c) if i >= 1)
    acc = sum(i * (i - 1) * ci * s ** (i - 2) for i, ci in enumerate(c) if i >= 2) if len(c) > 2 else np.zeros_like(pos)
    # the JTC drops to linear interpolation outside the segment: the position is clamped to the end point
    if np.any(outside):
        vel = np.where(outside[:, None], 0.0, vel)
        acc = np.where(outside[:, None], 0.0, acc)
    if scalar:
        return pos[0], vel[0], acc[0]
    return pos, vel, acc


def sample(traj: Trajectory, start: float, t: np.ndarray | float, before: tuple[float, Point] | None = None
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample ``traj`` (started at controller time ``start``) at times ``t``, as ``Trajectory::sample`` does.

    ``before`` = (time, point) is the JTC's "point before the trajectory",
    used only for sample times before the first point. Past the last point the
    last point is held (zero velocity and acceleration).
    """
    t = np.atleast_1d(np.asarray(t, dtype=np.float64))
    pts = traj.points
    times = start + np.array([p.time_from_start for p in pts])
    pos = np.empty((t.size, fr3.NUM_JOINTS))
    vel = np.zeros_like(pos)
    acc = np.zeros_like(pos)
    seg = np.searchsorted(times, t, side="right")  # 0: before the first point; len: past the last
    for k in np.unique(seg):
        idx = seg == k
        if k == 0:
            if before is None:
                raise ValueError("sample: a time before the first point needs the point before the trajectory")
            pos[idx], vel[idx], acc[idx] = interpolate(before[0], before[1], times[0], pts[0], t[idx])
        elif k == len(pts):
            pos[idx] = np.asarray(pts[-1].positions, float)
        else:
            pos[idx], vel[idx], acc[idx] = interpolate(times[k - 1], pts[k - 1], times[k], pts[k], t[idx])
    return pos, vel, acc


class TrajectoryController:
    """ros2_control's JointTrajectoryController (jazzy) on a position command interface, at ``period``.

    :meth:`activate` holds the measured position; :meth:`receive` stages a
    message (replacing the current trajectory at the next update, the JTC's
    ``new_trajectory_msg_``); :meth:`update` returns the position command for
    controller time ``t`` (sampled at ``t + period``).
    ``interpolate_from_desired_state``: see the module docstring.
    """

    def __init__(self, period: float = 1e-3, interpolate_from_desired_state: bool = True,
                 allow_nonzero_velocity_at_end: bool = False):
        self.period = float(period)
        self.interpolate_from_desired_state = bool(interpolate_from_desired_state)
        self.allow_nonzero_velocity_at_end = bool(allow_nonzero_velocity_at_end)
        self.active = False
        self._traj: Trajectory | None = None
        self._pending: Trajectory | None = None
        self._start = 0.0
        self._before: tuple[float, Point] | None = None
        self._last_cmd: Point | None = None
        self._last_time = 0.0
        self.rejected = 0
        self.last_rejection = ""
        #: [rad] the step of the last message received (:meth:`_switch_step`)
        self.last_switch_step = float("nan")

    def activate(self, q_measured, q_desired=None) -> None:
        """on_activate: hold the measured joint positions (``set_hold_position``).

        The last command starts as the hardware's command interface value,
        which franka_hardware initialises to the robot's desired position
        ``q_desired`` (``set_last_command_interface_value_as_state_on_activation``).
        """
        q = np.asarray(q_measured, dtype=np.float64).copy()
        q_d = q if q_desired is None else np.asarray(q_desired, dtype=np.float64).copy()
        self._last_cmd = Point(0.0, q_d, np.zeros(7), np.zeros(7))
        self._last_time = 0.0
        self._traj, self._pending = None, Trajectory(None, [Point(0.0, q.copy())])
        self.active = True

    def deactivate(self) -> None:
        self.active = False
        self._traj = self._pending = None

    def receive(self, traj: Trajectory, now: float) -> None:
        """A message on ``~/joint_trajectory``; refused (ValueError) as the JTC refuses it."""
        if not self.active:
            raise ValueError("controller is not active: message dropped")
        try:
            traj.validate(self.allow_nonzero_velocity_at_end)
            if traj.stamp is not None and traj.end_time() < now:
                raise ValueError(f"header.stamp: trajectory ends at {traj.end_time():.3f} s, before the controller's "
                                 f"time {now:.3f} s (it would be ignored)")
        except ValueError as exc:
            self.rejected += 1
            self.last_rejection = str(exc)
            raise
        self._pending = traj
        self.last_switch_step = self._switch_step(traj, now)

    def _switch_step(self, traj: Trajectory, now: float) -> float:
        """[rad] how far ``traj``'s command lies from the current trajectory's at the next sample after ``now``.

        0 for a seamless switch (the message repeats what is playing there); NaN where it cannot be told (no
        trajectory playing yet, or a message read before its first point, which the JTC joins from its "point
        before"). A step of more than a few microradians breaks the FR3's 1 kHz jerk check.
        """
        t = now + self.period
        if self._traj is None or traj.stamp is None:
            return float("nan")
        if t < traj.stamp + traj.points[0].time_from_start:
            return float("nan")
        first = self._traj.points[0].time_from_start + self._start
        if t < first and self._before is None:
            return float("nan")
        old = sample(self._traj, self._start, t, self._before)[0][0]
        new = sample(traj, traj.stamp, t)[0][0]
        return float(np.max(np.abs(new - old)))

    def update(self, t, q_measured=None) -> tuple[np.ndarray, np.ndarray]:
        """Control cycles at controller times ``t`` (one or many, increasing, no message in between).

        Returns the position commands written to the hardware, and the
        velocities of the trajectory there ([N, 7] each, or [7] for a scalar ``t``).
        """
        if not self.active:
            raise RuntimeError("TrajectoryController.update while inactive")
        times = np.atleast_1d(np.asarray(t, dtype=np.float64))
        if self._pending is not None:
            traj, self._pending = self._pending, None
            self._traj = traj
            t0 = float(times[0])
            self._start = traj.stamp if traj.stamp is not None else t0
            if self.interpolate_from_desired_state or q_measured is None:
                when = self._last_time if self._last_time != 0.0 else t0
                self._before = (when, self._last_cmd)
            else:
                self._before = (t0, Point(0.0, np.asarray(q_measured, float), np.zeros(7), np.zeros(7)))
        pos, vel, acc = sample(self._traj, self._start, times + self.period, self._before)
        self._last_cmd = Point(0.0, pos[-1], vel[-1], acc[-1])
        self._last_time = float(times[-1])
        if np.ndim(t) == 0:
            return pos[0], vel[0]
        return pos, vel

    @property
    def last_command(self) -> Point:
        return self._last_cmd
