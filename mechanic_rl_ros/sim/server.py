"""The simulated FR3's robot server: what sim_node does, without ROS.

:class:`RobotServer` owns the environment (:class:`~mechanic_rl_ros.sim.env.FR3Env`)
and everything that happens between a command arriving and the physics
answering it, so that sim_node is only parameters, topics, services, actions
and timers around it:

* the request queue: arm commands (forward controller), trajectories (JTC),
  gripper targets, resets, error recovery, injected reflexes and the
  controller_manager calls are handed from any thread to the one physics
  thread (MuJoCo's GL context belongs to the thread that made it), which
  applies them between physics slices (:meth:`RobotServer.command_arm`,
  :meth:`RobotServer.command_trajectory`, :meth:`RobotServer.call`);
* the two clock modes (sim_node's parameter ``mode``, below);
* the stamp mapping between the stack's clock and simulated time, the
  late-trajectory accounting (a trajectory read more than 1 ms after its
  stamp, not a hold's repeat of the one playing) and the trajectories stamped
  before the last reset (dropped, counted);
* the reset's clock arithmetic: the clock jumps to the next control period
  boundary, so stamps before and after a reset differ and stay on the grid;
* the robot's mode and the controller_manager model
  (:mod:`mechanic_rl_ros.sim.controller_manager`) after a reflex;
* the gripper-goal lifecycle with franka_gripper's semantics: a goal's motion
  starts when it is accepted, it ends when the fingers have stopped for
  :data:`FINGER_SETTLE` s of sim time, after ``gripper_goal_timeout`` or when
  an episode reset re-opens the hand under it.

Two clock modes (``ServerConfig.mode``, sim_node's parameter ``mode``):

``realtime``  physics advances with the wall clock (times ``real_time_factor``);
              nodes use wall time. Simulated time is tied to the wall clock
              by one fixed map per episode (:mod:`mechanic_rl_ros.sim.clock_map`):
              stamps are placed with it, what the sim publishes is stamped
              with it, and a trajectory acts no earlier than the simulated
              instant of its arrival. Behind the wall clock (a busy machine)
              the sim runs back to back until it has caught up, warns, and
              reports its largest lag (``max_lag_ms``).
``lockstep``  physics advances one control period per arm command received,
              as fast as the stack allows, and publishes ``/clock``; every node
              runs with ``use_sim_time``. If no command arrives for
              ``lockstep_idle_timeout`` wall seconds the sim advances anyway,
              holding the last target, so the stack never deadlocks.
              A trajectory then takes effect at the sim time it is read, and a
              real JTC reads a message within microseconds of its stamp: the
              sim must not run on while policy_node still computes the tick's
              message (it waits up to ``inference_timeout`` + ``input_wait`` on
              sim time), so the idle timeout is longer than that wait. A
              trajectory read more than 1 ms after its stamp is counted (not a hold's
              repeat of the trajectory being played)
              (``late_trajectories``, the largest delay in
              ``max_trajectory_delay_ms``): beyond the safety filter's
              ``switch_lead`` the controller switches after the new trajectory
              has diverged, which the FR3 answers with a reflex.

What the server measures goes out through a :class:`StateSink` (plain numpy
values, stamps in integer nanoseconds on the stack's clock); sim_node turns it
into messages. Logging goes to any object with rclpy's logger methods
(``info`` / ``warning`` / ``error`` / ``fatal`` taking ``throttle_duration_sec``);
:class:`PythonLog` is the default.
"""
from __future__ import annotations

import logging
import math
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from mechanic_rl_ros.control.fr3 import CommandError, check_arm_command  # noqa: F401 (sim_node's names)
from mechanic_rl_ros.control.trajectory import Trajectory
from mechanic_rl_ros.sim import gripper as gripper_semantics
from mechanic_rl_ros.sim.clock_map import ClockMap
from mechanic_rl_ros.sim.controller_manager import (ARM_CONTROLLERS, ROBOT_STATE_BROADCASTER, STATE_LABELS,
                                                    ControllerManager)

MODES = ("realtime", "lockstep")
#: why a gripper goal ended when an episode reset re-opened the hand under it (expected, logged at INFO)
RESET_DURING_GOAL = "the episode was reset while the goal ran"
#: [m/s] the fingers count as stopped below this speed, and [s of sim time] for this long
FINGER_STOPPED = 1e-3
FINGER_SETTLE = 0.1
#: [s] a trajectory read later than this after its stamp counts as late
LATE_TRAJECTORY = 1e-3
#: [rad] a new trajectory whose command at the switch lies further than this from the one playing switched off
#: its path (a step the FR3's 1 kHz jerk check sees from about 5 microradians on; a switch within the lead differs
#: by the rounding of wall-clock stamps, whose float seconds since 1970 resolve 0.24 microseconds: a few tenths
#: of a microradian at the arm's speeds)
OFF_PATH = 1e-6
#: [s] a lag of the simulation behind the wall clock (real time) worth a warning
LAG_WARNING = 0.05
#: [s] stamps this close are the same instant (a stamp crosses the wire as integer nanoseconds)
SAME_INSTANT = 1e-6
#: the request kinds the physics thread understands; those it answers (:meth:`RobotServer.call`)
KINDS = ("arm", "trajectory", "gripper", "reset", "recover", "inject", "hardware", "switch")
ANSWERED = ("reset", "recover", "inject", "hardware", "switch")


def same_trajectory(a: Trajectory, b: Trajectory | None) -> bool:
    """The same message again (a hold re-sends the trajectory the controller plays)."""
    return (b is not None and a.stamp == b.stamp and len(a.points) == len(b.points)
            and all(p.time_from_start == q.time_from_start and np.array_equal(p.positions, q.positions)
                    for p, q in zip(a.points, b.points)))


def reset_offset(end: float, control_dt: float) -> float:
    """The stack-clock time [s] a new episode starts at, after one that ended at ``end``.

    The next control period boundary strictly after ``end``: the stamps before
    and after the reset differ (a node can tell which side of it a measurement
    is from) and stay on the grid of the nodes' control-rate timers (lockstep
    advances one period per command).
    """
    return (math.floor(end / control_dt + 1e-6) + 1) * control_dt


@dataclass(frozen=True)
class ServerConfig:
    """What the robot server needs from sim_node's parameters (their descriptions are sim_node's)."""

    mode: str = "realtime"
    real_time_factor: float = 1.0
    publish_rate: float = 50.0  # [Hz of sim time]
    camera_rate: float = 10.0  # [Hz of sim time]
    image_height: int = 96
    image_width: int = 96
    arm_controller: str = "trajectory"  # "trajectory" | "forward"
    lockstep_idle_timeout: float = 3.0  # [wall s]
    gripper_goal_timeout: float = 3.0  # [s of sim time]
    #: names the server's messages use for the command sources and the error-recovery action
    trajectory_source: str = "trajectory"
    command_source: str = "command"
    recovery_action: str = "error recovery"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode: {self.mode!r}; expected one of {list(MODES)}")
        if self.arm_controller not in ARM_CONTROLLERS:
            raise ValueError(f"arm_controller: {self.arm_controller!r}; expected one of {sorted(ARM_CONTROLLERS)}")
        for name in ("real_time_factor", "publish_rate", "camera_rate", "lockstep_idle_timeout",
                     "gripper_goal_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: {getattr(self, name)}; expected > 0")


@dataclass
class Request:
    """Work handed from any thread to the physics thread."""

    kind: str  # one of KINDS
    value: object = None
    done: threading.Event | None = None
    result: object = None
    #: [s, wall clock] when a trajectory reached this process (real time only): the simulated controller may
    #: not read it before the simulated instant of its arrival (see ``RobotServer.sim_of_ros``)
    arrived: float | None = None


@dataclass
class RobotState:
    """What the robot's joints report after a physics slice (stamp on the stack's clock)."""

    stamp_ns: int
    name: list[str]
    position: np.ndarray  # 9: 7 arm joints, 2 fingers
    velocity: np.ndarray
    effort: np.ndarray
    #: (robot_mode, errors, last_motion_errors, desired) while the robot-state broadcaster is active, else None
    robot: tuple[str, tuple[str, ...], tuple[str, ...], object] | None = None


@dataclass
class TaskReport:
    """The task's privileged state after a physics slice."""

    stamp_ns: int
    values: np.ndarray
    success: bool
    failure: bool
    shaped_reward: float


class StateSink(Protocol):
    """Where the server's measurements go (sim_node publishes them); called on the physics thread."""

    def publish_robot(self, state: RobotState) -> None: ...

    def publish_task(self, report: TaskReport) -> None: ...

    def publish_frame(self, stamp_ns: int, images: dict[str, np.ndarray]) -> None: ...


class PythonLog:
    """The server's logger outside ROS: Python logging, throttling ignored."""

    def __init__(self, name: str = "robot_server"):
        self._log = logging.getLogger(name)

    def debug(self, text, **_): self._log.debug(text)
    def info(self, text, **_): self._log.info(text)
    def warning(self, text, **_): self._log.warning(text)
    def error(self, text, **_): self._log.error(text)
    def fatal(self, text, **_): self._log.critical(text)


@dataclass
class _Goal:
    """A gripper goal from acceptance to its end: its motion (or why it has none), sim time and resets then."""

    motion: object
    started: float
    resets: int


class RobotServer:
    """The simulated FR3 behind franka_ros2's interfaces, driven from one physics thread.

    ``env`` is the :class:`FR3Env` (rendering and physics stay on the physics
    thread this object starts); ``sink`` receives what is measured;
    ``wall()`` is the wall clock [s] the realtime mode follows (the node's
    clock); ``on_rejected(source, text)`` reports a refused command (sim_node
    logs it rate-limited).
    """

    def __init__(self, env, config: ServerConfig, sink: StateSink, wall: Callable[[], float] = time.time,
                 log=None, on_rejected: Callable[[str, str], None] | None = None):
        self.env, self.config, self.sink, self.wall = env, config, sink, wall
        self.log = log if log is not None else PythonLog()
        self.on_rejected = on_rejected or (lambda source, text: self.log.error(text))
        self.lockstep = config.mode == "lockstep"
        sim = env.sim
        self.cameras = tuple(env.config.cameras)
        self.control_dt = env.control_dt
        self.substeps_per_publish = max(1, int(round(1.0 / (config.publish_rate * sim.physics_dt))))
        self.publishes_per_control = max(1, int(round(self.control_dt / (self.substeps_per_publish * sim.physics_dt))))
        self.publishes_per_frame = max(1, int(round(1.0 / (config.camera_rate * self.substeps_per_publish
                                                           * sim.physics_dt))))
        self.cm = ControllerManager(arm_controller=ARM_CONTROLLERS[config.arm_controller])
        sim.select_interface(config.arm_controller)
        #: [rad] vertical field of view of each camera, for its camera_info
        self.fovy = {c: math.radians(float(sim.model.cam_fovy[sim.model.camera(c).id])) for c in self.cameras}
        self._mode_sent = ""
        self.last_motion_errors: tuple[str, ...] = ()
        self.requests: queue.Queue[Request] = queue.Queue()
        self.stats = {"commands_applied": 0, "commands_rejected": 0, "resets": 0, "ticks": 0, "frames": 0,
                      "gripper_goals": 0, "gripper_goals_succeeded": 0, "gripper_goals_failed": 0,
                      "gripper_goals_overlapping": 0,
                      "reflexes": 0, "recoveries": 0, "commands_while_inactive": 0, "idle_periods": 0,
                      "late_trajectories": 0, "off_path_switches": 0,
                      "dropped_before_reset": 0}
        self.max_trajectory_delay = 0.0  # [s] largest (sim time read - header.stamp) of a trajectory
        self.max_switch_step = 0.0  # [rad] largest step of an off-path switch
        self._last_trajectory: Trajectory | None = None  # the last one received, stamp on the stack's clock
        self.last_error = ""
        self.failed = False
        self.time_offset = 0.0  # sim time keeps increasing across resets
        self.last_reset_stamp = -float("inf")  # [s, stack clock] a trajectory stamped before it is refused
        self._stop = threading.Event()
        self._started_wall = time.monotonic()
        self.clock = ClockMap(config.real_time_factor, self.wall(), sim.time)  # real time: sim <-> stack clock
        self._early: list[Request] = []  # trajectories that came before the simulation reached their arrival
        self.max_lag = 0.0  # [s] largest lag of the simulation behind the wall clock (real time)
        #: gripper goals from acceptance to execution, by the caller's key
        self._accepted_goals: dict[object, _Goal] = {}
        #: (finger width [m], finger speed [m/s], sim time [s]) after each physics slice, and its condition
        self.fingers = (math.nan, 0.0, 0.0)
        self.fingers_changed = threading.Condition()
        self.gripper_goals_active = 0
        self.gripper_goal: float | None = None  # [m] the width the last gripper goal drives to
        self.worker: threading.Thread | None = None

    # ------------------------------------------------------------ life cycle
    def start(self, keep_going: Callable[[], bool] = lambda: True) -> None:
        """Start the physics thread; it runs while ``keep_going()`` and :meth:`stop` was not called."""
        self.worker = threading.Thread(target=self._run, args=(keep_going,), name="physics", daemon=True)
        self.worker.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self.worker is not None and self.worker.is_alive():
            self.worker.join(timeout=timeout)

    def alive(self) -> bool:
        return self.worker is not None and self.worker.is_alive()

    def _run(self, keep_going: Callable[[], bool]) -> None:
        try:
            self._publish_state(frame=True)
            self.clock.anchor_at(self.wall(), self.env.sim.time)  # after the first frame (GL start-up)
            while not self._stop.is_set() and keep_going():
                self.control_period()
        except Exception as exc:
            if self._stop.is_set() or not keep_going():
                return  # shutting down: publishers may already be gone
            # a dead physics thread must take the node down, loudly
            self.log.fatal(f"physics thread died: {exc!r}")
            self.failed = True
            self._stop.set()
            raise
        finally:
            self.env.close()  # GL contexts belong to this thread

    def summary(self) -> str:
        """The run's counters and the FR3 check's peaks, for the last log line."""
        chk = self.env.sim.checker
        return (f"{self.stats}, max_trajectory_delay_ms={self.max_trajectory_delay * 1e3:.1f}, "
                f"max_switch_step_urad={self.max_switch_step * 1e6:.1f}; 1 ms commands "
                f"checked {chk.commands_checked}, peaks: velocity {chk.peaks['velocity_fraction']:.1%} of the "
                f"position-dependent limit, acceleration {chk.peaks['acceleration']:.2f} rad/s^2, jerk "
                f"{chk.peaks['jerk']:.0f} rad/s^3")

    # ------------------------------------------------------------ requests (any thread)
    def reject(self, source: str, exc: Exception) -> None:
        """Count and report a command that is not applied (malformed, or refused by the controller)."""
        self.stats["commands_rejected"] += 1
        self.last_error = f"{source}: {exc}"
        self.on_rejected(source, f"rejected {source} command, not applied: {exc}")

    def command_arm(self, values) -> None:
        """Forward controller: 7 joint position targets [rad]; malformed ones are rejected, never applied."""
        try:
            self.requests.put(Request("arm", check_arm_command(values)))
        except CommandError as exc:
            self.reject(self.config.command_source, exc)

    def command_trajectory(self, trajectory: Trajectory, arrived: float | None = None) -> None:
        """Trajectory controller: a trajectory in fr3_joint1..7 order, stamp on the stack's clock (None: now).

        ``arrived`` [s, wall clock]: when the message reached this process (real time; default: now).
        """
        if self.lockstep:
            arrived = None
        elif arrived is None:
            arrived = self.wall()
        self.requests.put(Request("trajectory", trajectory, arrived=arrived))

    def call(self, kind: str, value=None, timeout: float = 30.0):
        """A request answered by the physics thread: its result; TimeoutError if none came in ``timeout`` s.

        ``reset`` (value: seed) answers None or why it failed; ``recover`` and ``inject`` (success, message);
        ``hardware`` (value: (component name, target lifecycle state id)) (ok, state id); ``switch`` (value:
        (activate, deactivate, strictness)) (ok, message).
        """
        if kind not in ANSWERED:
            raise ValueError(f"kind: {kind!r}; expected one of {list(ANSWERED)} (commands go through "
                             f"command_arm / command_trajectory, gripper goals through accept_gripper_goal)")
        req = Request(kind, value, threading.Event())
        self.requests.put(req)
        end = time.monotonic() + timeout
        while not req.done.wait(timeout=min(0.1, max(0.0, end - time.monotonic()))):
            if self._stop.is_set():
                raise TimeoutError("physics thread stopped: the simulator is shutting down")
            if time.monotonic() >= end:
                raise TimeoutError(f"physics thread did not answer in {timeout:.0f} s")
        return req.result

    # ------------------------------------------------------------ gripper goals (any thread)
    def accept_gripper_goal(self, key, motion) -> None:
        """Accept a goal, as franka_gripper accepts every one, and start its motion now.

        ``motion`` is the goal's :class:`gripper.Motion`, None (already there) or
        the :class:`gripper.GoalError` that makes it fail. The fingers start
        moving in the control period the goal is accepted in, not when its
        execution gets a thread: a client that waits for the acceptance before
        it sends the tick's arm trajectory (policy_node on sim time) then has
        the hand move in the same lock-step period as the arm, as the real
        hand starts within milliseconds of its goal (docs/safety.md, "Arm
        command interface and reflexes").
        """
        with self.fingers_changed:
            started, resets = self.fingers[2], self.stats["resets"]
            if isinstance(motion, gripper_semantics.Motion):
                self.stats["gripper_goals"] += 1
                if self.gripper_goals_active:
                    self.stats["gripper_goals_overlapping"] += 1
                self.gripper_goals_active += 1
                self.requests.put(Request("gripper", motion.target))
        self._accepted_goals[key] = _Goal(motion, started, resets)

    def run_gripper_goal(self, key) -> tuple[bool, str]:
        """Wait for the end of the goal accepted under ``key``: franka_gripper's (success, error)."""
        goal = self._accepted_goals.pop(key)
        if isinstance(goal.motion, Exception):
            success, error = False, str(goal.motion)
        elif goal.motion is None:  # already there
            success, error = True, ""
        else:
            success, error = self._drive_fingers(goal.motion, goal.started, goal.resets)
        self.stats["gripper_goals_succeeded" if success else "gripper_goals_failed"] += 1
        if not success:
            # the goal's outcome goes to its client in the result, as franka_gripper reports it; a move
            # blocked by the cube in the hand is the task going on, not a fault of the simulator
            self.log.info(f"gripper goal aborted: {error}", throttle_duration_sec=1.0)
        return success, error

    def _drive_fingers(self, motion: gripper_semantics.Motion, started: float, resets: int) -> tuple[bool, str]:
        """Wait (on sim time) until the fingers of a goal accepted at ``started`` stop; franka_gripper's success
        and error. The motion was commanded at acceptance (:meth:`accept_gripper_goal`)."""
        timeout = self.config.gripper_goal_timeout
        try:
            settled_at = None
            while not self._stop.is_set():
                with self.fingers_changed:
                    self.fingers_changed.wait(timeout=0.5)
                    width, speed, now = self.fingers
                if self.stats["resets"] != resets:  # the episode was reset under the goal: the hand was re-opened
                    return False, RESET_DURING_GOAL
                if now - started > timeout:
                    return False, (f"{motion.kind} timed out: fingers still moving at {width:.4f} m after "
                                   f"{timeout} s")
                # moving, or not started yet: wait; stopped for FINGER_SETTLE s: done
                if now - started < FINGER_SETTLE or speed > FINGER_STOPPED:
                    settled_at = None
                    continue
                settled_at = now if settled_at is None else settled_at
                if now - settled_at >= FINGER_SETTLE:
                    return gripper_semantics.outcome(motion, width)
            return False, "simulator shutting down"
        finally:
            with self.fingers_changed:
                self.gripper_goals_active -= 1

    # ------------------------------------------------------------ clock
    def ros_of_sim(self, t: float) -> float:
        """The instant [s, stack clock] that simulated time ``t`` (since the last reset) stands for.

        Lock-step: the stack's clock is simulated time (plus ``time_offset``).
        Real time: the wall clock, rigidly tied to simulated time (:class:`ClockMap`).
        """
        return self.time_offset + t if self.lockstep else self.clock.wall_of(t)

    def sim_of_ros(self, t: float) -> float:
        """Inverse of :meth:`ros_of_sim`: where a stamp lies on the simulated timeline."""
        return t - self.time_offset if self.lockstep else self.clock.sim_of(t)

    def now_seconds(self) -> float:
        """The instant the simulation has reached, on the stack's clock [s]."""
        return self.ros_of_sim(self.env.sim.time)

    def sim_time(self) -> float:
        """[s] simulated time since the start, across resets."""
        return self.time_offset + self.env.sim.time

    def real_time_factor(self) -> float:
        """Simulated seconds per wall second since the server was made."""
        return self.sim_time() / max(time.monotonic() - self._started_wall, 1e-9)

    # ------------------------------------------------------------ robot mode
    def robot_mode(self) -> str:
        """libfranka's robot mode: reflex until recovered, move while the arm controller runs, else idle."""
        if self.env.sim.robot_mode == "reflex":
            return "reflex"
        return "move" if self.cm.is_active(self.cm.arm_controller) else "idle"

    def _note_mode(self) -> None:
        """Count and log each new reflex; its errors stay in ``last_motion_errors`` after recovery."""
        sim = self.env.sim
        text = sim.robot_mode + (": " + ", ".join(sim.errors) if sim.errors else "")
        if text != self._mode_sent:
            if sim.robot_mode == "reflex":
                self.stats["reflexes"] += 1
                self.last_motion_errors = tuple(sim.errors)
                self.cm.on_hardware_error()
                self.log.error(f"robot reflex: {sim.last_violation}; commands are ignored until "
                               f"{self.config.recovery_action} is called")
            self._mode_sent = text

    # ------------------------------------------------------------ physics thread
    def _apply_motion(self, req: Request) -> None:
        """An arm command or trajectory for an active arm controller: stamp mapping, late and early ones."""
        sim = self.env.sim
        try:
            traj = req.value
            if req.kind == "arm":
                sim.send_position(req.value)
            else:
                if traj.stamp is not None:  # ROS time -> simulator time
                    if traj.stamp < self.last_reset_stamp - SAME_INSTANT:
                        # the tick in flight when reward_node reset the episode: expected at an
                        # episode's end, dropped (the arm was elsewhere), counted, not an error
                        self.stats["dropped_before_reset"] += 1
                        self.log.info(
                            f"dropped a trajectory stamped {traj.stamp:.3f} s, before the last reset "
                            f"({self.last_reset_stamp:.3f} s), where the arm was elsewhere")
                        traj = None  # (it still counts as the command of this lockstep period)
                    else:
                        start = self.sim_of_ros(traj.stamp)
                        delay = sim.time - start
                        # (a hold re-sends the trajectory being played: no switch, its stamp is old)
                        if delay > LATE_TRAJECTORY and not same_trajectory(traj, self._last_trajectory):
                            self.stats["late_trajectories"] += 1
                            self.log.info(f"trajectory stamped {traj.stamp:.3f} s read "
                                          f"{delay * 1e3:.1f} ms after its stamp", throttle_duration_sec=1.0)
                            self.max_trajectory_delay = max(self.max_trajectory_delay, delay)
                        self._last_trajectory = traj
                        traj = Trajectory(start, traj.points)
            if req.kind == "arm":
                self.stats["commands_applied"] += 1
            elif traj is not None:
                sim.send_trajectory(traj)
                self.stats["commands_applied"] += 1
                step = sim.controller.last_switch_step
                if step > OFF_PATH:
                    self.stats["off_path_switches"] += 1
                    self.max_switch_step = max(self.max_switch_step, step)
                    self.log.info(f"a trajectory read {(sim.time - traj.stamp) * 1e3:.1f} ms after its stamp "
                                  f"switched off the path playing by {step * 1e6:.1f} microrad (past its lead)",
                                  throttle_duration_sec=1.0)
        except ValueError as exc:  # what the controller refuses (inactive, JTC validation)
            self.reject(self.config.trajectory_source if req.kind == "trajectory" else self.config.command_source,
                        exc)

    def _reset(self, seed: int | None) -> str | None:
        """A new episode (None), or why not: refused outside move mode, as the real arm cannot be driven home."""
        sim = self.env.sim
        if self.robot_mode() != "move":
            return (f"robot not in move mode ({self.robot_mode()}; errors {list(sim.errors)}): recover "
                    f"it first ({self.config.recovery_action}, then re-activate the hardware and "
                    f"the controllers), as the real arm cannot be driven home before")
        try:
            self.time_offset = reset_offset(self.time_offset + sim.time, self.control_dt)
            self.env.reset(seed=seed)
            self.gripper_goal = None
            if not self.lockstep:  # the lag of the last episode is not carried into the next
                self.clock.anchor_at(self.wall(), sim.time)
            self.last_reset_stamp = self.now_seconds()
            self.stats["dropped_before_reset"] += len(self._early)
            self._early = []
            self.stats["resets"] += 1
            self._publish_state(frame=True)
            return None
        except Exception as exc:  # report through the service, keep running
            return f"reset failed: {exc}"

    def _answer(self, req: Request) -> None:
        """A request other than a motion: apply it and give its result."""
        sim = self.env.sim
        if req.kind == "gripper":
            self.gripper_goal = float(req.value)
            return
        if req.kind == "recover":
            was = sim.robot_mode
            if was == "reflex":  # the robot's error is cleared; commands wait for an active arm controller
                sim.recover()  # (without an error there is nothing to clear: a running motion goes on)
            req.result = (True, f"error recovery done (was {was}); hardware {STATE_LABELS[self.cm.hardware_state]}, "
                                f"active controllers {sorted(self.cm.active)}")
            self._note_mode()
        elif req.kind == "inject":
            sim.inject_reflex()
            req.result = (True, "reflex injected: joint_reflex")
            self._note_mode()
        elif req.kind == "hardware":
            name, target = req.value
            ok, state = self.cm.set_hardware_state(name, int(target), robot_error=sim.robot_mode == "reflex")
            req.result = (ok, state)
            self.log.info(f"set_hardware_component_state {name} -> {target}: {'ok' if ok else 'refused'}, now "
                          f"{STATE_LABELS[state]}")
        elif req.kind == "switch":
            activate, deactivate, strictness = req.value
            ok, message, started = self.cm.switch(list(activate), list(deactivate), int(strictness))
            if self.cm.arm_controller in started:
                sim.recover()  # the arm controller starts at rest where the arm is now (FR3Sim.recover)
                self.stats["recoveries"] += 1
            req.result = (ok, message)
            self.log.info(f"switch_controller: {message} (active: {sorted(self.cm.active)})")
        elif req.kind == "reset":
            req.result = self._reset(req.value)
        if req.done is not None:
            req.done.set()

    def drain(self, block_for: float) -> bool:
        """Apply queued requests; wait up to ``block_for`` s for an arm command. True if one was applied.

        Other requests (gripper, reset, recovery) are applied as they come and the wait goes on: in lockstep the
        gripper command policy_node sends after a tick's trajectory must not start the next period before the
        next tick's trajectory (the sim would run ahead of the stack and read that trajectory late). A reset
        starts the wait anew: the stack may hold the arm at rest between episodes for longer than the wait
        (reward_node's learner_pace), and the new episode's first trajectory, stamped at the reset instant,
        gets the whole wait, not what the hold left of it.
        """
        got_arm = False
        deadline = time.monotonic() + block_for
        due, early = [], []
        for r in self._early:
            (due if self.clock.arrived(r.arrived, self.env.sim.time) else early).append(r)
        self._early = early
        while True:
            timeout = deadline - time.monotonic()
            try:
                if due:
                    req = due.pop(0)
                else:
                    req = self.requests.get(timeout=timeout) if timeout > 0 else self.requests.get_nowait()
            except queue.Empty:
                return got_arm
            if req.kind == "trajectory" and req.arrived is not None and not self.clock.arrived(req.arrived,
                                                                                              self.env.sim.time):
                self._early.append(req)  # the simulation is behind the wall clock: not there yet
                continue
            if req.kind in ("arm", "trajectory"):
                got_arm = True  # (an inactive controller's command still counts as the command of this period)
                if self.cm.is_active(self.cm.arm_controller):
                    self._apply_motion(req)
                else:
                    self.stats["commands_while_inactive"] += 1
                    self.log.info(f"{self.cm.arm_controller} is not active: command not applied",
                                  throttle_duration_sec=1.0)
            else:
                self._answer(req)
                if req.kind == "reset":
                    deadline = time.monotonic() + block_for
            if got_arm and self.lockstep:
                return True

    def control_period(self) -> None:
        """Advance one control period in publish-sized slices."""
        if self.lockstep and not self.drain(block_for=self.config.lockstep_idle_timeout):
            self.stats["idle_periods"] += 1
        sim = self.env.sim
        # the gripper target moves toward the goal width at most its speed times one control period per command,
        # so the goal width is re-commanded every period until the target is there (the arm's is left as it is)
        if self.gripper_goal is not None:
            sim.set_gripper(self.gripper_goal)
        for _ in range(self.publishes_per_control):
            if self.lockstep:
                sim.step_physics(self.substeps_per_publish)
            else:
                # commands take effect within 4 ms (of sim time) of arrival, as the 1 kHz controller picks them
                # up: the slice is run in 4 ms pieces, each followed by a look at the queue, and each piece waits
                # for the wall clock to reach its simulated instant (behind it, the pieces run back to back
                # until the simulation has caught up)
                for done in range(0, self.substeps_per_publish, 2):
                    self.drain(block_for=0.0)
                    sim.step_physics(min(2, self.substeps_per_publish - done))
                    lag = self.clock.lag(self.wall(), sim.time)
                    if lag < 0.0:
                        self._stop.wait(-lag)
                    elif lag > self.max_lag:
                        self.max_lag = lag
                        if lag > LAG_WARNING:
                            self.log.warning(f"the simulation is {lag * 1e3:.0f} ms behind the wall clock: this "
                                             f"machine does not simulate the FR3 in real time (the states it "
                                             f"publishes are that old; mode lockstep has no such lag)",
                                             throttle_duration_sec=5.0)
            self.stats["ticks"] += 1
            self._publish_state(frame=self.stats["ticks"] % self.publishes_per_frame == 0)

    def _publish_state(self, frame: bool) -> None:
        """Hand the sink what the robot and the task report now (and the camera frames if ``frame``)."""
        self._note_mode()
        stamp_ns = int(round(self.now_seconds() * 1e9))
        sim = self.env.sim
        js = sim.joint_state()
        position, velocity = js["position"].tolist(), js["velocity"].tolist()
        robot = None
        if self.cm.is_active(ROBOT_STATE_BROADCASTER):
            robot = (self.robot_mode(), sim.errors, self.last_motion_errors, sim.desired)
        self.sink.publish_robot(RobotState(stamp_ns, list(js["name"]), js["position"], js["velocity"],
                                           js["effort"], robot))
        with self.fingers_changed:
            self.fingers = (float(sum(position[7:9])), float(abs(sum(velocity[7:9]))), self.time_offset + sim.time)
            self.fingers_changed.notify_all()

        status = self.env.task.evaluate(sim)
        self.sink.publish_task(TaskReport(stamp_ns, self.env.task.task_state(sim).astype(np.float64),
                                          bool(status.success), bool(status.failed), float(status.shaped_reward)))
        if frame:
            h, w = self.config.image_height, self.config.image_width
            self.sink.publish_frame(stamp_ns, {cam: sim.render(cam, h, w) for cam in self.cameras})
            self.stats["frames"] += 1
