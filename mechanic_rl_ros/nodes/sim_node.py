"""sim_node: the simulated FR3 speaking the robot's ROS 2 interfaces.

A thin adapter around :class:`mechanic_rl_ros.sim.env.FR3Env`. It stands in
for franka_ros2 + ros2_control + a camera driver:

* publishes ``/joint_states`` (sensor_msgs/JointState, 9 joints),
  ``/camera/<cam>/image_raw`` + ``camera_info`` (rgb8), the task's privileged
  state (``/sim/task_state``, mechanic_rl_ros/TaskState), ``/diagnostics``, and
  ``/clock`` in lock-step mode;
* runs the arm controller franka_bringup would run (parameter
  ``arm_controller``): a JointTrajectoryController on the position interface
  (trajectory_msgs/JointTrajectory on ``trajectory_topic``, the jazzy JTC's
  interpolation, stamps and replacement) or a forward position controller
  (std_msgs/Float64MultiArray on ``command_topic``, the target written every
  1 ms unsmoothed), updated at 1 kHz; every 1 ms command passes the FR3's own
  check (:mod:`mechanic_rl_ros.control.franka_checks`); a violation is a
  reflex: the arm stops, the robot state
  (``/franka_robot_state_broadcaster/robot_state``, franka_msgs/FrankaRobotState,
  published with every joint state) says ``ROBOT_MODE_REFLEX`` with the error
  in ``current_errors``, and commands are ignored until franka_hardware's
  error-recovery action (``/action_server/error_recovery``,
  franka_msgs/action/ErrorRecovery) is called; ``/sim/inject_reflex`` forces
  one;
* plays controller_manager's part after an error, as franka_ros2 from 3.3 does
  (:mod:`mechanic_rl_ros.sim.controller_manager`): a reflex leaves the hardware
  component unconfigured and every controller inactive, so the robot state
  stops (its broadcaster is one of them) while ``/joint_states`` goes on (as
  franka_bringup's joint_state_publisher re-stamps it); after the error
  recovery, ``/controller_manager/set_hardware_component_state`` and
  ``/controller_manager/switch_controller`` (controller_manager_msgs) bring
  them back, and only an active arm controller moves the arm;
* serves franka_gripper's actions under ``gripper_namespace``
  (``/franka_gripper``): ``move``, ``grasp``, ``homing``
  (franka_msgs/action/*) and ``gripper_action``
  (control_msgs/action/GripperCommand), with franka_gripper's semantics
  (:mod:`mechanic_rl_ros.sim.gripper`), and publishes
  ``/franka_gripper/joint_states``; like franka_gripper it accepts every goal,
  and counts goals that overlap another (``gripper_goals_overlapping`` in
  /diagnostics: a client that queues goals shows there); the fingers start
  moving when a goal is accepted (before the client hears so), so in
  lock-step a goal accepted before the tick's arm trajectory moves the hand
  in the same control period as the arm;
* offers ``/sim/reset`` (mechanic_rl_ros/srv/ResetEpisode, optional seed). A
  reset is refused while the robot is in a reflex, as the real robot cannot be
  driven home before its error is recovered.

Malformed commands (wrong length, wrong joint names, NaN, outside the FR3
position limits) are rejected with a rate-limited error naming the problem and
are never applied; the arm keeps tracking its last good target. A malformed
gripper goal is aborted with the error in its result.

Two clock modes (parameter ``mode``):

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

All physics and rendering happen on one worker thread (MuJoCo's GL context
belongs to the thread that made it); ROS callbacks only hand it requests.
"""
from __future__ import annotations

import math
import queue
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.action import ActionServer, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64MultiArray
from lifecycle_msgs.msg import State as LifecycleState
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from mechanic_rl_ros.control import fr3
from mechanic_rl_ros.control.trajectory import Point, Trajectory
from mechanic_rl_ros.msg import TaskState
from mechanic_rl_ros.nodes.common import Param, RateLimitedLog, declare_parameters, publish_diagnostics, run_node
from mechanic_rl_ros.sim.clock_map import ClockMap
from mechanic_rl_ros.sim.env import REWARD_TYPES, make_env
from mechanic_rl_ros.sim import gripper as gripper_semantics
from mechanic_rl_ros.sim.controller_manager import (ARM_CONTROLLERS, ROBOT_STATE_BROADCASTER, STATE_LABELS,
                                                    ControllerManager)
from mechanic_rl_ros.sim.fr3_sim import CAMERAS
from mechanic_rl_ros.sim.tasks import TASK_STATE_FIELDS, TASKS
from mechanic_rl_ros.srv import ResetEpisode
from mechanic_rl_ros.wire import topics
from mechanic_rl_ros.wire.robot_state import robot_state_message

MODES = ("realtime", "lockstep")


class CommandError(ValueError):
    """An incoming command is malformed; the message says which field and why."""


def check_arm_command(values, field: str = "data") -> np.ndarray:
    """Validate 7 joint position targets [rad] against the FR3 position limits."""
    q = np.asarray(values, dtype=np.float64)
    if q.shape != (fr3.NUM_JOINTS,):
        raise CommandError(f"{field}: expected {fr3.NUM_JOINTS} joint positions (fr3_joint1..7), got {q.size}")
    if not np.all(np.isfinite(q)):
        raise CommandError(f"{field}: joint positions must be finite, got {np.array2string(q, precision=3)}")
    outside = np.flatnonzero((q < fr3.Q_MIN) | (q > fr3.Q_MAX))
    if outside.size:
        j = int(outside[0])
        raise CommandError(
            f"{field}: {fr3.JOINT_NAMES[j]} = {q[j]:.4f} rad is outside the FR3 limits "
            f"[{fr3.Q_MIN[j]:.4f}, {fr3.Q_MAX[j]:.4f}]"
        )
    return q


def trajectory_from_message(msg: JointTrajectory) -> Trajectory:
    """A JointTrajectory reordered by joint name into fr3_joint1..7 order, stamp in ROS seconds (None for 0).

    Positions are checked against the FR3 position limits; the JTC's own
    checks (increasing times, zero end velocity) follow when it is received.
    """
    names = list(msg.joint_names)
    missing = [n for n in fr3.JOINT_NAMES if n not in names]
    if missing:
        raise CommandError(f"joint_names: missing {missing}; expected {list(fr3.JOINT_NAMES)}, got {names}")
    if not msg.points:
        raise CommandError("points: trajectory has no points")
    order = [names.index(n) for n in fr3.JOINT_NAMES]
    points = []
    for i, p in enumerate(msg.points):
        fields = {}
        for name in ("positions", "velocities", "accelerations"):
            values = list(getattr(p, name))
            if not values and name != "positions":
                fields[name] = None
                continue
            if len(values) != len(names):
                raise CommandError(f"points[{i}].{name}: {len(values)} values for {len(names)} joint_names")
            fields[name] = np.array([values[j] for j in order], dtype=np.float64)
        check_arm_command(fields["positions"], f"points[{i}].positions")
        points.append(Point(p.time_from_start.sec + p.time_from_start.nanosec * 1e-9, **fields))
    stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
    return Trajectory(stamp if stamp != 0.0 else None, points)


def _same(a: Trajectory, b: Trajectory | None) -> bool:
    """The same message again (a hold re-sends the trajectory the controller plays)."""
    return (b is not None and a.stamp == b.stamp and len(a.points) == len(b.points)
            and all(p.time_from_start == q.time_from_start and np.array_equal(p.positions, q.positions)
                    for p, q in zip(a.points, b.points)))


def _fill_hardware_response(res, ok: bool, state: int) -> None:
    res.ok = ok
    res.state = LifecycleState(id=state, label=STATE_LABELS[state])


def _fill_switch_response(res, ok: bool, message: str) -> None:
    res.ok, res.message = ok, message


#: why a gripper goal ended when an episode reset re-opened the hand under it (expected, logged at INFO)
RESET_DURING_GOAL = "the episode was reset while the goal ran"
#: [m/s] the fingers count as stopped below this speed, and [s of sim time] for this long
FINGER_STOPPED = 1e-3
FINGER_SETTLE = 0.1


@dataclass
class _Request:
    """Work handed from ROS callbacks to the physics thread."""

    kind: str  # "arm" | "gripper" | "reset"
    value: object = None
    done: threading.Event | None = None
    result: object = None
    #: [s, wall clock] when a trajectory reached this process (real time only): the simulated controller may
    #: not read it before the simulated instant of its arrival (see ``SimNode._sim_of_ros``)
    arrived: float | None = None


#: every parameter, with what it means (``ros2 param describe sim_node <name>``); config/sim.yaml sets them
PARAMETERS = [
    Param("task", "lift", "simulated task", choices=tuple(sorted(TASKS))),
    Param("seed", 0, "seed of the first episode's randomisation (a reset may pass its own)", range=(0, None)),
    Param("reward", "shaped", "reward the task reports in its task state: sparse = 1 on success; shaped = dense",
          choices=REWARD_TYPES),
    Param("mode", "realtime", "realtime = physics follows the wall clock (times real_time_factor); lockstep = one "
          "control period per arm command, /clock published, every node on use_sim_time", choices=MODES),
    Param("real_time_factor", 1.0, "realtime mode: sim seconds per wall second", range=(0.001, None)),
    Param("publish_rate", 50.0, "[Hz of sim time] rate of joint_states and task_state, at most the 500 Hz physics "
          "rate", range=(0.1, 500.0)),
    Param("camera_rate", 10.0, "[Hz of sim time] camera frame rate, at most publish_rate", range=(0.1, 500.0)),
    Param("cameras", ["scene"], f"cameras rendered and published on /camera/<name>/image_raw: a subset of "
          f"{list(CAMERAS)}"),
    Param("image_width", 96, "[px] rendered image width", range=(1, None)),
    Param("image_height", 96, "[px] rendered image height", range=(1, None)),
    Param("arm_controller", "trajectory", "the active arm controller, both updated at 1 kHz: trajectory = "
          "JointTrajectoryController on the position interface (trajectory_topic); forward = forward position "
          "controller (command_topic), which writes each target unsmoothed, so a step is a reflex as on the FR3",
          choices=("trajectory", "forward")),
    Param("command_topic", topics.ARM_COMMAND.name, "forward controller: std_msgs/Float64MultiArray of 7 "
          "joint position targets [rad], fr3_joint1..7 order"),
    Param("trajectory_topic", topics.ARM_TRAJECTORY.name, "trajectory controller: trajectory_msgs/JointTrajectory "
          "(joints matched by name; header.stamp 0 = start on receipt)"),
    Param("robot_state_topic", topics.ROBOT_STATE.name, "franka_msgs/FrankaRobotState (robot_mode, current_errors, "
          "last_motion_errors, measured_joint_state), with every joint state"),
    Param("error_recovery_action", topics.ERROR_RECOVERY.name, "franka_msgs/action/ErrorRecovery: clear a reflex; the "
          "arm controller is active again and holds the measured position"),
    Param("controller_manager", topics.CONTROLLER_MANAGER, "namespace of the controller_manager services this "
          "node serves: set_hardware_component_state and switch_controller"),
    Param("inject_reflex_service", topics.INJECT_REFLEX.name, "std_srvs/Trigger: force a reflex now (tests, "
          "rehearsing the recovery)"),
    Param("gripper_namespace", topics.GRIPPER_NAMESPACE, "franka_gripper's node: its actions move, grasp, homing, "
          "gripper_action and its joint_states topic are served under this name"),
    Param("gripper_goal_timeout", 3.0, "[s of sim time] a gripper goal whose fingers have not stopped after this "
          "long is aborted", range=(0.01, None)),
    Param("joint_states_topic", topics.JOINT_STATES.name, "sensor_msgs/JointState of the 7 arm joints and 2 finger joints"),
    Param("task_state_topic", topics.TASK_STATE.name, "the task's privileged state (mechanic_rl_ros/TaskState), for "
          "reward_node"),
    Param("reset_service", topics.RESET.name, "mechanic_rl_ros/srv/ResetEpisode service: new episode, optional seed"),
    Param("lockstep_idle_timeout", 3.0, "[wall s] lockstep mode: without a command for this long the sim advances "
          "anyway, holding the last target, so the stack never deadlocks; keep it above policy_node's "
          "inference_timeout + input_wait, else the sim runs on while a tick's trajectory is being computed and "
          "the controller switches to it late", range=(0.001, None)),
    Param("error_log_period", 1.0, "[s] least time between two logged 'rejected command' errors of one kind (the "
          "rest are only counted); 0 logs every one", range=(0.0, None)),
    Param("diagnostics_period", 1.0, "[wall s] period of /diagnostics", range=(0.01, None)),
]


class SimNode(Node):
    def __init__(self) -> None:
        super().__init__("sim_node")
        self.cfg = cfg = declare_parameters(self, PARAMETERS)
        self.env = make_env(
            task=cfg["task"], render=False, cameras=tuple(cfg["cameras"]),
            image_size=(cfg["image_height"], cfg["image_width"]), seed=int(cfg["seed"]), reward=cfg["reward"],
        )
        self.cameras = self.env.config.cameras
        self.lockstep = cfg["mode"] == "lockstep"
        sim = self.env.sim
        self.control_dt = self.env.control_dt
        self.substeps_per_publish = max(1, int(round(1.0 / (cfg["publish_rate"] * sim.physics_dt))))
        self.publishes_per_control = max(1, int(round(self.control_dt / (self.substeps_per_publish * sim.physics_dt))))
        self.publishes_per_frame = max(1, int(round(1.0 / (cfg["camera_rate"] * self.substeps_per_publish * sim.physics_dt))))

        t = topics
        self.joint_pub = self.create_publisher(t.JOINT_STATES.type, cfg["joint_states_topic"],
                                               t.JOINT_STATES.publisher)
        self.task_pub = self.create_publisher(t.TASK_STATE.type, cfg["task_state_topic"], t.TASK_STATE.qos)
        self.diag_pub = self.create_publisher(t.DIAGNOSTICS.type, t.DIAGNOSTICS.name, t.DIAGNOSTICS.qos)
        self.clock_pub = self.create_publisher(t.CLOCK.type, t.CLOCK.name, t.CLOCK.qos) if self.lockstep else None
        self.image_pubs = {c: self.create_publisher(t.CAMERA_IMAGE.type, t.CAMERA_IMAGE.name.format(camera=c),
                                                    t.CAMERA_IMAGE.publisher) for c in self.cameras}
        self.info_pubs = {c: self.create_publisher(t.CAMERA_INFO.type, t.CAMERA_INFO.name.format(camera=c),
                                                   t.CAMERA_INFO.publisher) for c in self.cameras}
        # the controller's inputs never wait behind the node's other callbacks (diagnostics, services)
        commands = MutuallyExclusiveCallbackGroup()
        self.create_subscription(t.ARM_COMMAND.type, cfg["command_topic"], self._on_arm_array, t.ARM_COMMAND.qos,
                                 callback_group=commands)
        self.create_subscription(t.ARM_TRAJECTORY.type, cfg["trajectory_topic"], self._on_trajectory,
                                 t.ARM_TRAJECTORY.qos, callback_group=commands)
        ns = cfg["gripper_namespace"].rstrip("/")
        self.gripper_state_pub = self.create_publisher(t.GRIPPER_JOINT_STATES.type, ns + "/joint_states",
                                                       t.GRIPPER_JOINT_STATES.qos)
        # goals wait for the fingers on their own executor threads, beside the arm commands that advance time
        actions = ReentrantCallbackGroup()
        for action, execute, motion_of in (
                (t.GRIPPER_MOVE, self._execute_move, lambda g: gripper_semantics.move(g.width, g.speed)),
                (t.GRIPPER_GRASP, self._execute_grasp, lambda g: gripper_semantics.grasp(
                    g.width, g.speed, g.force, g.epsilon.inner, g.epsilon.outer)),
                (t.GRIPPER_HOMING, self._execute_homing, lambda g: gripper_semantics.homing()),
                (t.GRIPPER_ACTION, self._execute_gripper_command,
                 lambda g: gripper_semantics.gripper_command(g.command.position, self.fingers[0]))):
            ActionServer(self, action.type, ns + "/" + action.name.rsplit("/", 1)[1], execute,
                         goal_callback=lambda goal, m=motion_of: self._accept_gripper_goal(goal, m),
                         callback_group=actions)
        #: id(goal request) -> (its motion or GoalError, sim time it started, resets then), from acceptance to execution
        self._accepted_goals: dict[int, tuple[object, float, int]] = {}
        #: (finger width [m], finger speed [m/s], sim time [s]) after each physics slice, and its condition
        self.fingers = (math.nan, 0.0, 0.0)
        self.fingers_changed = threading.Condition()
        self.gripper_goals_active = 0
        self.gripper_goal: float | None = None  # [m] the width the last gripper goal drives to
        # services that wait (up to 30 s) for the physics thread get a group of their own, so that a slow
        # slice never holds up the parameter services, diagnostics and arm commands of the default group
        waits = MutuallyExclusiveCallbackGroup()
        self.create_service(t.RESET.type, cfg["reset_service"], self._on_reset, callback_group=waits)
        self.cm = ControllerManager(arm_controller=ARM_CONTROLLERS[cfg["arm_controller"]])
        cm_ns = cfg["controller_manager"].rstrip("/")
        self.create_service(t.SET_HARDWARE_STATE.type, cm_ns + "/set_hardware_component_state",
                            lambda req, res: self._physics_service("hardware", req, res), callback_group=waits)
        self.create_service(t.SWITCH_CONTROLLER.type, cm_ns + "/switch_controller",
                            lambda req, res: self._physics_service("switch", req, res), callback_group=waits)
        self.robot_state_pub = self.create_publisher(t.ROBOT_STATE.type, cfg["robot_state_topic"], t.ROBOT_STATE.qos)
        ActionServer(self, t.ERROR_RECOVERY.type, cfg["error_recovery_action"], self._execute_recovery,
                     callback_group=actions)
        self.create_service(t.INJECT_REFLEX.type, cfg["inject_reflex_service"],
                            lambda req, res: self._physics_call("inject", res), callback_group=waits)
        self.env.sim.select_interface(cfg["arm_controller"])
        self._mode_sent = ""
        self.last_motion_errors: tuple[str, ...] = ()

        self.requests: queue.Queue[_Request] = queue.Queue()
        self.arm_commands_in_step = 0
        self.stats = {"commands_applied": 0, "commands_rejected": 0, "resets": 0, "ticks": 0, "frames": 0,
                      "gripper_goals": 0, "gripper_goals_succeeded": 0, "gripper_goals_failed": 0,
                      "gripper_goals_overlapping": 0,
                      "reflexes": 0, "recoveries": 0, "commands_while_inactive": 0, "idle_periods": 0, "late_trajectories": 0, "dropped_before_reset": 0}
        self.max_trajectory_delay = 0.0  # [s] largest (sim time read - header.stamp) of a trajectory
        self._last_trajectory: Trajectory | None = None  # the last one received, stamp on the stack's clock
        self.last_error = ""
        self.failed = False
        self.log = RateLimitedLog(self, cfg["error_log_period"])
        self.time_offset = 0.0  # sim time keeps increasing across resets
        self.last_reset_stamp = -float("inf")  # [s, stack clock] a trajectory stamped before it is refused
        self._stop = threading.Event()
        self._started_wall = time.monotonic()
        self.clock = ClockMap(cfg["real_time_factor"], self._wall(), sim.time)  # real time: sim <-> stack clock
        self._early: list[_Request] = []  # trajectories that came before the simulation reached their arrival
        self.max_lag = 0.0  # [s] largest lag of the simulation behind the wall clock (real time)
        self.worker = threading.Thread(target=self._run, name="physics", daemon=True)
        self.create_timer(cfg["diagnostics_period"], self._publish_diagnostics, clock=rclpy.clock.Clock())
        self.get_logger().info(
            f"simulated FR3 ready: task={cfg['task']} mode={cfg['mode']} cameras={list(self.cameras)} "
            f"{cfg['image_width']}x{cfg['image_height']} joint_states@{1.0 / (self.substeps_per_publish * sim.physics_dt):.0f}Hz "
            f"{cfg['arm_controller']} controller on "
            f"{cfg['trajectory_topic'] if cfg['arm_controller'] == 'trajectory' else cfg['command_topic']}"
        )
        self.worker.start()

    # ------------------------------------------------------------ callbacks
    def _reject(self, source: str, exc: Exception) -> None:
        self.stats["commands_rejected"] += 1
        self.last_error = f"{source}: {exc}"
        self.log.error(source, f"rejected {source} command, not applied: {exc}")

    def _on_arm_array(self, msg: Float64MultiArray) -> None:
        try:
            self.requests.put(_Request("arm", check_arm_command(msg.data)))
        except CommandError as exc:
            self._reject(self.cfg["command_topic"], exc)

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        try:
            self.requests.put(_Request("trajectory", trajectory_from_message(msg),
                                       arrived=None if self.lockstep else self._wall()))
        except CommandError as exc:
            self._reject(self.cfg["trajectory_topic"], exc)

    def _physics_call(self, kind: str, response):
        """A Trigger service answered by the physics thread."""
        req = _Request(kind, None, threading.Event())
        self.requests.put(req)
        if not req.done.wait(timeout=30.0):
            response.success, response.message = False, "physics thread did not answer in 30 s"
        else:
            response.success, response.message = req.result
        return response

    def _physics_service(self, kind: str, request, response):
        """A controller_manager service answered by the physics thread (``req.result`` fills the response)."""
        req = _Request(kind, request, threading.Event())
        self.requests.put(req)
        if not req.done.wait(timeout=30.0):
            response.ok = False
            if hasattr(response, "message"):
                response.message = "physics thread did not answer in 30 s"
            return response
        req.result(response)
        return response

    def _execute_recovery(self, handle):
        """franka_hardware's error recovery: clears a reflex (succeeds in move mode too, as libfranka's does)."""
        done = self._physics_call("recover", Trigger.Response())
        if done.success:
            self.get_logger().info(done.message)
            handle.succeed()
        else:
            self.get_logger().error(f"error recovery failed: {done.message}")
            handle.abort()
        return topics.ERROR_RECOVERY.type.Result()

    # ------------------------------------------------------------ gripper actions
    def _accept_gripper_goal(self, goal, motion_of) -> GoalResponse:
        """Accept every goal, as franka_gripper does, and start its motion now, before the client hears "accepted".

        The fingers start moving in the control period the goal is accepted in, not when its execute callback
        gets an executor thread: a client that waits for the acceptance before it sends the tick's arm
        trajectory (policy_node on sim time) then has the hand move in the same lock-step period as the arm,
        as the real hand starts within milliseconds of its goal (an executor's delay put the grasp one 0.1 s
        period behind the arm, and the arm lifted before the fingers closed: docs/safety.md, "Arm command interface and reflexes").
        """
        try:
            motion = motion_of(goal)
        except gripper_semantics.GoalError as exc:
            motion = exc
        with self.fingers_changed:
            started, resets = self.fingers[2], self.stats["resets"]
            if isinstance(motion, gripper_semantics.Motion):
                self.stats["gripper_goals"] += 1
                if self.gripper_goals_active:
                    self.stats["gripper_goals_overlapping"] += 1
                self.gripper_goals_active += 1
                self.requests.put(_Request("gripper", motion.target))
        self._accepted_goals[id(goal)] = (motion, started, resets)
        return GoalResponse.ACCEPT

    def _execute_move(self, handle):
        return self._run_franka_goal(handle, topics.GRIPPER_MOVE.type.Result())

    def _execute_grasp(self, handle):
        return self._run_franka_goal(handle, topics.GRIPPER_GRASP.type.Result())

    def _execute_homing(self, handle):
        return self._run_franka_goal(handle, topics.GRIPPER_HOMING.type.Result())

    def _run_franka_goal(self, handle, result):
        """Move / grasp / homing: franka_msgs results (success, error); succeed or abort with them."""
        motion, started, resets = self._accepted_goals.pop(id(handle.request))
        if isinstance(motion, Exception):
            result.error = str(motion)
        else:
            result.success, result.error = self._drive_fingers(motion, started, resets)
        self._finish_gripper_goal(handle, result.success, result.error)
        return result

    def _execute_gripper_command(self, handle):
        """control_msgs/GripperCommand with franka_gripper's semantics (position = width / 2)."""
        result = topics.GRIPPER_ACTION.type.Result()
        motion, started, resets = self._accepted_goals.pop(id(handle.request))
        error = ""
        if isinstance(motion, Exception):
            error, result.reached_goal = str(motion), False
        elif motion is None:  # already there
            result.reached_goal = True
        else:
            result.reached_goal, error = self._drive_fingers(motion, started, resets)
        result.position = float(self.fingers[0]) / 2
        self._finish_gripper_goal(handle, result.reached_goal, error)
        return result

    def _finish_gripper_goal(self, handle, success: bool, error: str) -> None:
        self.stats["gripper_goals_succeeded" if success else "gripper_goals_failed"] += 1
        if success:
            handle.succeed()
        else:
            handle.abort()
            # the goal's outcome goes to its client in the result, as franka_gripper reports it; a move
            # blocked by the cube in the hand is the task going on, not a fault of the simulator
            self.get_logger().info(f"gripper goal aborted: {error}", throttle_duration_sec=1.0)

    def _drive_fingers(self, motion: gripper_semantics.Motion, started: float, resets: int) -> tuple[bool, str]:
        """Wait (on sim time) until the fingers of a goal accepted at ``started`` stop; franka_gripper's success
        and error. The motion was commanded at acceptance (:meth:`_accept_gripper_goal`)."""
        try:
            settled_at = None
            while not self._stop.is_set():
                with self.fingers_changed:
                    self.fingers_changed.wait(timeout=0.5)
                    width, speed, now = self.fingers
                if self.stats["resets"] != resets:  # the episode was reset under the goal: the hand was re-opened
                    return False, RESET_DURING_GOAL
                if now - started > self.cfg["gripper_goal_timeout"]:
                    return False, (f"{motion.kind} timed out: fingers still moving at {width:.4f} m after "
                                   f"{self.cfg['gripper_goal_timeout']} s")
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

    def _on_reset(self, request: ResetEpisode.Request, response: ResetEpisode.Response) -> ResetEpisode.Response:
        seed = int(request.seed) if request.seed >= 0 else int(np.random.SeedSequence().generate_state(1)[0])
        req = _Request("reset", seed, threading.Event())
        self.requests.put(req)
        if not req.done.wait(timeout=30.0):
            response.success, response.message, response.seed = False, "physics thread did not answer in 30 s", seed
            return response
        response.success, response.message, response.seed = req.result is None, req.result or f"seed={seed}", seed
        return response

    # ------------------------------------------------------- physics thread
    def _run(self) -> None:
        try:
            self._publish_state(frame=True)
            self.clock.anchor_at(self._wall(), self.env.sim.time)  # after the first frame (GL start-up)
            while not self._stop.is_set() and rclpy.ok(context=self.context):
                self._control_period()
        except Exception as exc:
            if self._stop.is_set() or not rclpy.ok(context=self.context):
                return  # shutting down: publishers may already be gone
            # a dead physics thread must take the node down, loudly
            self.get_logger().fatal(f"physics thread died: {exc!r}")
            self.failed = True
            self._stop.set()
            raise
        finally:
            self.env.close()  # GL contexts belong to this thread

    def _drain(self, block_for: float) -> bool:
        """Apply queued requests; wait up to ``block_for`` s for an arm command. True if one was applied.

        Other requests (gripper, reset, recovery) are applied as they come and the wait goes on: in lockstep the
        gripper command policy_node sends after a tick's trajectory must not start the next period before the
        next tick's trajectory (the sim would run ahead of the stack and read that trajectory late).
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
            sim = self.env.sim
            if req.kind == "trajectory" and req.arrived is not None and not self.clock.arrived(req.arrived, sim.time):
                self._early.append(req)  # the simulation is behind the wall clock: not there yet
                continue
            if req.kind in ("arm", "trajectory") and not self.cm.is_active(self.cm.arm_controller):
                got_arm = True  # (it still counts as the command of this lockstep period)
                self.stats["commands_while_inactive"] += 1
                self.get_logger().info(f"{self.cm.arm_controller} is not active: command not applied",
                                       throttle_duration_sec=1.0)
            elif req.kind in ("arm", "trajectory"):
                got_arm = True
                try:
                    traj = req.value
                    if req.kind == "arm":
                        sim.send_position(req.value)
                    else:
                        if traj.stamp is not None:  # ROS time -> simulator time
                            if traj.stamp < self.last_reset_stamp:
                                # the tick in flight when reward_node reset the episode: expected at an
                                # episode's end, dropped (the arm was elsewhere), counted, not an error
                                self.stats["dropped_before_reset"] += 1
                                self.get_logger().info(
                                    f"dropped a trajectory stamped {traj.stamp:.3f} s, before the last reset "
                                    f"({self.last_reset_stamp:.3f} s), where the arm was elsewhere")
                                traj = None  # (it still counts as the command of this lockstep period)
                            else:
                                start = self._sim_of_ros(traj.stamp)
                                delay = sim.time - start
                                # (a hold re-sends the trajectory being played: no switch, its stamp is old)
                                if delay > 1e-3 and not _same(traj, self._last_trajectory):
                                    self.stats["late_trajectories"] += 1
                                    self.get_logger().info(f"trajectory stamped {traj.stamp:.3f} s read "
                                                           f"{delay * 1e3:.1f} ms after its stamp",
                                                           throttle_duration_sec=1.0)
                                    self.max_trajectory_delay = max(self.max_trajectory_delay, delay)
                                self._last_trajectory = traj
                                traj = Trajectory(start, traj.points)
                    if req.kind == "arm":
                        self.stats["commands_applied"] += 1
                    elif traj is not None:
                        sim.send_trajectory(traj)
                        self.stats["commands_applied"] += 1
                except ValueError as exc:  # what the controller refuses (inactive, JTC validation)
                    self._reject(self.cfg["trajectory_topic" if req.kind == "trajectory" else "command_topic"], exc)
            elif req.kind == "gripper":
                self.gripper_goal = float(req.value)
            elif req.kind == "recover":
                was = sim.robot_mode
                sim.recover()  # the robot's error is cleared; commands wait for an active arm controller
                req.result = (True, f"error recovery done (was {was}); hardware {STATE_LABELS[self.cm.hardware_state]}, "
                                    f"active controllers {sorted(self.cm.active)}")
                self._note_mode()
                req.done.set()
            elif req.kind == "inject":
                sim.inject_reflex()
                req.result = (True, "reflex injected: joint_reflex")
                self._note_mode()
                req.done.set()
            elif req.kind == "hardware":
                ok, state = self.cm.set_hardware_state(req.value.name, int(req.value.target_state.id),
                                                       robot_error=sim.robot_mode == "reflex")
                req.result = lambda res, ok=ok, state=state: _fill_hardware_response(res, ok, state)
                self.get_logger().info(f"set_hardware_component_state {req.value.name} -> "
                                       f"{req.value.target_state.id}: {'ok' if ok else 'refused'}, now "
                                       f"{STATE_LABELS[state]}")
                req.done.set()
            elif req.kind == "switch":
                ok, message, started = self.cm.switch(list(req.value.activate_controllers),
                                                      list(req.value.deactivate_controllers),
                                                      int(req.value.strictness))
                if self.cm.arm_controller in started:
                    sim.recover()  # the arm controller starts holding the measured position
                    self.stats["recoveries"] += 1
                req.result = lambda res, ok=ok, message=message: _fill_switch_response(res, ok, message)
                self.get_logger().info(f"switch_controller: {message} (active: {sorted(self.cm.active)})")
                req.done.set()
            elif req.kind == "reset" and self._robot_mode() != "move":
                req.result = (f"robot not in move mode ({self._robot_mode()}; errors {list(sim.errors)}): recover "
                              f"it first ({self.cfg['error_recovery_action']}, then re-activate the hardware and "
                              f"the controllers), as the real arm cannot be driven home before")
                req.done.set()
            elif req.kind == "reset":
                try:
                    # the clock jumps to the next control period boundary: the stamps before and after the reset
                    # differ (a node can tell which side of it a measurement is from) and stay on the grid of the
                    # nodes' 10 Hz timers (lockstep advances one period per command)
                    end = self.time_offset + sim.time
                    self.time_offset = (math.floor(end / self.control_dt + 1e-6) + 1) * self.control_dt
                    self.env.reset(seed=req.value)
                    self.gripper_goal = None
                    if not self.lockstep:  # the lag of the last episode is not carried into the next
                        self.clock.anchor_at(self._wall(), sim.time)
                    self.last_reset_stamp = self._now_seconds()
                    self.stats["dropped_before_reset"] += len(self._early)
                    self._early = []
                    self.stats["resets"] += 1
                    self._publish_state(frame=True)
                    req.result = None
                except Exception as exc:  # report through the service, keep running
                    req.result = f"reset failed: {exc}"
                req.done.set()
            if got_arm and self.lockstep:
                return True

    def _advance_gripper(self) -> None:
        """Once per control period: drive the gripper target toward the goal width.

        The simulated hand moves its target at most its speed times one control
        period per command, so a goal width is re-commanded every period until
        the target is there (the arm's target is left as it is).
        """
        sim = self.env.sim
        if self.gripper_goal is not None:
            sim.set_gripper(self.gripper_goal)

    def _control_period(self) -> None:
        """Advance one control period in publish-sized slices."""
        if self.lockstep and not self._drain(block_for=self.cfg["lockstep_idle_timeout"]):
            self.stats["idle_periods"] += 1
        self._advance_gripper()
        sim = self.env.sim
        for i in range(self.publishes_per_control):
            if self.lockstep:
                sim.step_physics(self.substeps_per_publish)
            else:
                # commands take effect within 4 ms (of sim time) of arrival, as the 1 kHz controller picks them
                # up: the slice is run in 4 ms pieces, each followed by a look at the queue, and each piece waits
                # for the wall clock to reach its simulated instant (behind it, the pieces run back to back
                # until the simulation has caught up)
                for done in range(0, self.substeps_per_publish, 2):
                    self._drain(block_for=0.0)
                    sim.step_physics(min(2, self.substeps_per_publish - done))
                    lag = self.clock.lag(self._wall(), sim.time)
                    if lag < 0.0:
                        self._stop.wait(-lag)
                    elif lag > self.max_lag:
                        self.max_lag = lag
                        if lag > self.LAG_WARNING:
                            self.get_logger().warning(f"the simulation is {lag * 1e3:.0f} ms behind the wall clock: this "
                                                 f"machine does not simulate the FR3 in real time (the states it "
                                                 f"publishes are that old; mode lockstep has no such lag)", throttle_duration_sec=5.0)
            self.stats["ticks"] += 1
            self._publish_state(frame=self.stats["ticks"] % self.publishes_per_frame == 0)

    #: [s] a lag of the simulation behind the wall clock (real time) worth a warning
    LAG_WARNING = 0.05

    def _wall(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _ros_of_sim(self, t: float) -> float:
        """The instant [s, stack clock] that simulated time ``t`` (since the last reset) stands for.

        Lock-step: the stack's clock is simulated time (plus ``time_offset``).
        Real time: the wall clock, rigidly tied to simulated time (:class:`ClockMap`).
        """
        return self.time_offset + t if self.lockstep else self.clock.wall_of(t)

    def _sim_of_ros(self, t: float) -> float:
        """Inverse of :meth:`_ros_of_sim`: where a stamp lies on the simulated timeline."""
        return t - self.time_offset if self.lockstep else self.clock.sim_of(t)

    def _now_seconds(self) -> float:
        """The instant the simulation has reached, on the stack's clock [s]."""
        return self._ros_of_sim(self.env.sim.time)

    def _note_mode(self) -> None:
        """Count and log each new reflex; its errors stay in ``last_motion_errors`` after recovery."""
        sim = self.env.sim
        text = sim.robot_mode + (": " + ", ".join(sim.errors) if sim.errors else "")
        if text != self._mode_sent:
            if sim.robot_mode == "reflex":
                self.stats["reflexes"] += 1
                self.last_motion_errors = tuple(sim.errors)
                self.cm.on_hardware_error()
                self.get_logger().error(f"robot reflex: {sim.last_violation}; commands are ignored until "
                                        f"{self.cfg['error_recovery_action']} is called")
            self._mode_sent = text

    def _robot_mode(self) -> str:
        """libfranka's robot mode: reflex until recovered, move while the arm controller runs, else idle."""
        if self.env.sim.robot_mode == "reflex":
            return "reflex"
        return "move" if self.cm.is_active(self.cm.arm_controller) else "idle"

    def _stamp(self) -> Time:
        """When what the simulation publishes now was measured, on the stack's clock."""
        ns = int(round(self._now_seconds() * 1e9))
        return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)

    def _publish_state(self, frame: bool) -> None:
        self._note_mode()
        stamp = self._stamp()
        if self.clock_pub is not None:
            self.clock_pub.publish(Clock(clock=stamp))
        sim = self.env.sim
        js = sim.joint_state()
        msg = JointState()
        msg.header.stamp = stamp
        msg.header.frame_id = "fr3_link0"
        msg.name = list(js["name"])
        msg.position, msg.velocity, msg.effort = (js[k].tolist() for k in ("position", "velocity", "effort"))
        arm = JointState(name=msg.name[:7], position=msg.position[:7], velocity=msg.velocity[:7],
                         effort=msg.effort[:7])
        arm.header = msg.header
        # before the joint state: a node that sees a joint state has seen the mode it was measured in
        if self.cm.is_active(ROBOT_STATE_BROADCASTER):
            self.robot_state_pub.publish(robot_state_message(self._robot_mode(), sim.errors, self.last_motion_errors,
                                                             arm, sim.desired))
        self.joint_pub.publish(msg)
        fingers = JointState(name=list(fr3.FINGER_JOINT_NAMES), position=msg.position[7:9],
                             velocity=msg.velocity[7:9], effort=msg.effort[7:9])
        fingers.header = msg.header
        self.gripper_state_pub.publish(fingers)
        with self.fingers_changed:
            self.fingers = (float(sum(msg.position[7:9])), float(abs(sum(msg.velocity[7:9]))),
                            self.time_offset + sim.time)
            self.fingers_changed.notify_all()

        status = self.env.task.evaluate(sim)
        ts = TaskState()
        ts.header.stamp = stamp
        ts.header.frame_id = "world"
        ts.task = self.cfg["task"]
        ts.names = list(TASK_STATE_FIELDS)
        ts.values = self.env.task.task_state(sim).astype(np.float64).tolist()
        ts.success = bool(status.success)
        ts.failure = bool(status.failed)
        ts.shaped_reward = float(status.shaped_reward)
        self.task_pub.publish(ts)

        if frame:
            h, w = self.cfg["image_height"], self.cfg["image_width"]
            for cam in self.cameras:
                rgb = sim.render(cam, h, w)
                img = Image()
                img.header.stamp = stamp
                img.header.frame_id = f"{cam}_camera"
                img.height, img.width, img.encoding, img.is_bigendian, img.step = h, w, "rgb8", 0, 3 * w
                img.data = rgb.tobytes()
                self.image_pubs[cam].publish(img)
                self.info_pubs[cam].publish(self._camera_info(cam, stamp, h, w))
            self.stats["frames"] += 1

    def _camera_info(self, cam: str, stamp: Time, h: int, w: int) -> CameraInfo:
        model = self.env.sim.model
        fovy = math.radians(float(model.cam_fovy[model.camera(cam).id]))
        f = 0.5 * h / math.tan(0.5 * fovy)
        info = CameraInfo()
        info.header.stamp = stamp
        info.header.frame_id = f"{cam}_camera"
        info.height, info.width = h, w
        info.distortion_model = "plumb_bob"
        info.d = [0.0] * 5
        info.k = [f, 0.0, (w - 1) / 2, 0.0, f, (h - 1) / 2, 0.0, 0.0, 1.0]
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        info.p = [f, 0.0, (w - 1) / 2, 0.0, 0.0, f, (h - 1) / 2, 0.0, 0.0, 0.0, 1.0, 0.0]
        return info

    def _publish_diagnostics(self) -> None:
        wall = time.monotonic() - self._started_wall
        sim_t = self.time_offset + self.env.sim.time
        level, message = DiagnosticStatus.OK, "running"
        if not self.worker.is_alive():
            level, message = DiagnosticStatus.ERROR, "physics thread stopped"
        elif self.env.sim.robot_mode == "reflex":
            level, message = DiagnosticStatus.ERROR, f"robot reflex: {self.env.sim.last_violation}"
        elif self.stats["commands_rejected"]:
            level, message = DiagnosticStatus.WARN, f"last rejected command: {self.last_error}"
        values = {**self.stats, "sim_time_s": f"{sim_t:.3f}", "real_time_factor": f"{sim_t / max(wall, 1e-9):.2f}",
                  "max_trajectory_delay_ms": f"{self.max_trajectory_delay * 1e3:.1f}",
                  "max_lag_ms": f"{self.max_lag * 1e3:.1f}",
                  "mode": self.cfg["mode"], "task": self.cfg["task"]}
        publish_diagnostics(self, self.diag_pub, "sim_node: simulated FR3", "mujoco", level, message, values)

    def destroy_node(self) -> None:
        self._stop.set()
        if self.worker.is_alive():
            self.worker.join(timeout=5.0)
        chk = self.env.sim.checker
        self.get_logger().info(
            f"stopped: {self.stats}, max_trajectory_delay_ms={self.max_trajectory_delay * 1e3:.1f}; 1 ms commands "
            f"checked {chk.commands_checked}, peaks: velocity {chk.peaks['velocity_fraction']:.1%} of the "
            f"position-dependent limit, acceleration {chk.peaks['acceleration']:.2f} rad/s^2, jerk "
            f"{chk.peaks['jerk']:.0f} rad/s^3")
        super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    # gripper goals wait for the fingers on executor threads of their own (ReentrantCallbackGroup)
    return run_node(SimNode, argv, threads=4, failed=lambda node: node.failed)

if __name__ == "__main__":
    sys.exit(main())
