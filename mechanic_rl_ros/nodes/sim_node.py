"""sim_node: the simulated FR3 speaking the robot's ROS 2 interfaces.

Parameters, topics, services, actions and timers around
:class:`mechanic_rl_ros.sim.server.RobotServer`, which owns the
:class:`mechanic_rl_ros.sim.env.FR3Env`, the request queue, the clock modes and
the gripper goals (and is tested without ROS). It stands in for franka_ros2 +
ros2_control + a camera driver:

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
* builds the scene its ``world`` parameter names (:mod:`mechanic_rl_ros.sim.world`: camera, light, table,
  cube, loose boxes; a bad one stops the node at start naming the field);
* offers ``/sim/reset`` (mechanic_rl_ros/srv/ResetEpisode, optional seed),
  answering with the instant the new episode starts at (reward_node stamps
  START with it). A reset is refused while the robot is in a reflex, as the
  real robot cannot be driven home before its error is recovered.

Malformed commands (wrong length, wrong joint names, NaN, outside the FR3
position limits) are rejected with a rate-limited error naming the problem and
are never applied; the arm keeps tracking its last good target. A malformed
gripper goal is aborted with the error in its result.

Two clock modes (parameter ``mode``): ``realtime`` (physics follows the wall
clock, times ``real_time_factor``) and ``lockstep`` (one control period per arm
command, ``/clock`` published, every node on ``use_sim_time``); the server's
docstring (:mod:`mechanic_rl_ros.sim.server`) says what each means for stamps,
late trajectories and the idle timeout.

All physics and rendering happen on the server's one worker thread (MuJoCo's
GL context belongs to the thread that made it); ROS callbacks only convert
messages and hand it requests.
"""
from __future__ import annotations

import sys
import time
from collections import deque

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus
from lifecycle_msgs.msg import State as LifecycleState
from rclpy.action import ActionServer, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, Header
from trajectory_msgs.msg import JointTrajectory

from mechanic_rl_ros.control import fr3
from mechanic_rl_ros.msg import TaskState
from mechanic_rl_ros.nodes.common import (GC_PAUSES, RateLimitedLog, declare_parameters, pinhole_camera_info,  # noqa: F401
                                         publish_diagnostics, rgb8_image, run_node, set_realtime_priority,
                                         trajectory_from_message)
from mechanic_rl_ros.nodes.sim_params import PARAMETERS, server_config
from mechanic_rl_ros.sim import gripper as gripper_semantics
from mechanic_rl_ros.sim.controller_manager import STATE_LABELS
from mechanic_rl_ros.sim.env import make_env
from mechanic_rl_ros.sim.server import (FINGER_SETTLE, FINGER_STOPPED, RESET_DURING_GOAL,  # noqa: F401
                                        CommandError, RobotServer, check_arm_command)
from mechanic_rl_ros.sim.tasks import TASK_STATE_FIELDS
from mechanic_rl_ros.sim.world import load_world
from mechanic_rl_ros.srv import ResetEpisode
from mechanic_rl_ros.wire import topics
from mechanic_rl_ros.wire.robot_state import robot_state_message

#: [wall s] how long a service waits for the physics thread to answer
ANSWER_TIMEOUT = 30.0
#: [wall s] between two passes of the garbage collector over the young objects
GC_PERIOD = 0.1


def _time(ns: int) -> Time:
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


class SimNode(Node):
    def __init__(self) -> None:
        super().__init__("sim_node")
        self.cfg = cfg = declare_parameters(self, PARAMETERS)
        set_realtime_priority(self, int(cfg["realtime_priority"]))  # the robot's controller is real-time
        try:
            world = load_world(cfg["world"])
        except ValueError as exc:
            raise ValueError(f"parameter world: {exc}") from None
        if not world.is_default():
            self.get_logger().info(f"world {cfg['world']!r}: {world.changes()}")
        env = make_env(
            task=cfg["task"], render=False, cameras=tuple(cfg["cameras"]),
            image_size=(cfg["image_height"], cfg["image_width"]), seed=int(cfg["seed"]), reward=cfg["reward"],
            world=world,
        )
        self.log = RateLimitedLog(self, cfg["error_log_period"])
        self.server = RobotServer(env, server_config(cfg), sink=self, wall=self._wall, log=self.get_logger(),
                                  on_rejected=self.log.error)
        self.cameras = self.server.cameras

        t = topics
        self.joint_pub = self.create_publisher(t.JOINT_STATES.type, cfg["joint_states_topic"],
                                               t.JOINT_STATES.publisher)
        self.task_pub = self.create_publisher(t.TASK_STATE.type, cfg["task_state_topic"], t.TASK_STATE.qos)
        self.diag_pub = self.create_publisher(t.DIAGNOSTICS.type, t.DIAGNOSTICS.name, t.DIAGNOSTICS.qos)
        self.clock_pub = (self.create_publisher(t.CLOCK.type, t.CLOCK.name, t.CLOCK.qos) if self.server.lockstep
                          else None)
        self.image_pubs = {c: self.create_publisher(t.CAMERA_IMAGE.type, t.CAMERA_IMAGE.name.format(camera=c),
                                                    t.CAMERA_IMAGE.publisher) for c in self.cameras}
        self.info_pubs = {c: self.create_publisher(t.CAMERA_INFO.type, t.CAMERA_INFO.name.format(camera=c),
                                                   t.CAMERA_INFO.publisher) for c in self.cameras}
        self.robot_state_pub = self.create_publisher(t.ROBOT_STATE.type, cfg["robot_state_topic"], t.ROBOT_STATE.qos)
        ns = cfg["gripper_namespace"].rstrip("/")
        self.gripper_state_pub = self.create_publisher(t.GRIPPER_JOINT_STATES.type, ns + "/joint_states",
                                                       t.GRIPPER_JOINT_STATES.qos)
        # the controller's inputs never wait behind the node's other callbacks (diagnostics, services)
        commands = MutuallyExclusiveCallbackGroup()
        #: [s] per trajectory (stamp -> received by DDS here, received -> its callback), the last 1000 (real time)
        self.arrivals: deque[tuple[float, float]] = deque(maxlen=1000)
        self.newest_stamp = 0.0
        self.create_subscription(t.ARM_COMMAND.type, cfg["command_topic"], self._on_arm_array, t.ARM_COMMAND.qos,
                                 callback_group=commands)
        self.create_subscription(t.ARM_TRAJECTORY.type, cfg["trajectory_topic"], self._on_trajectory,
                                 t.ARM_TRAJECTORY.qos, callback_group=commands)
        # goals wait for the fingers on their own executor threads, beside the arm commands that advance time
        actions = ReentrantCallbackGroup()
        for action, execute, motion_of in (
                (t.GRIPPER_MOVE, self._execute_franka_goal, lambda g: gripper_semantics.move(g.width, g.speed)),
                (t.GRIPPER_GRASP, self._execute_franka_goal, lambda g: gripper_semantics.grasp(
                    g.width, g.speed, g.force, g.epsilon.inner, g.epsilon.outer)),
                (t.GRIPPER_HOMING, self._execute_franka_goal, lambda g: gripper_semantics.homing()),
                (t.GRIPPER_ACTION, self._execute_gripper_command,
                 lambda g: gripper_semantics.gripper_command(g.command.position, self.server.fingers[0]))):
            ActionServer(self, action.type, ns + "/" + action.name.rsplit("/", 1)[1],
                         lambda handle, a=action, e=execute: e(handle, a.type.Result()),
                         goal_callback=lambda goal, m=motion_of: self._accept_gripper_goal(goal, m),
                         callback_group=actions)
        ActionServer(self, t.ERROR_RECOVERY.type, cfg["error_recovery_action"], self._execute_recovery,
                     callback_group=actions)
        # services that wait (up to 30 s) for the physics thread get a group of their own, so that a slow
        # slice never holds up the parameter services, diagnostics and arm commands of the default group
        waits = MutuallyExclusiveCallbackGroup()
        self.create_service(t.RESET.type, cfg["reset_service"], self._on_reset, callback_group=waits)
        cm_ns = cfg["controller_manager"].rstrip("/")
        self.create_service(t.SET_HARDWARE_STATE.type, cm_ns + "/set_hardware_component_state",
                            self._on_set_hardware_state, callback_group=waits)
        self.create_service(t.SWITCH_CONTROLLER.type, cm_ns + "/switch_controller", self._on_switch_controller,
                            callback_group=waits)
        self.create_service(t.INJECT_REFLEX.type, cfg["inject_reflex_service"], self._on_inject_reflex,
                            callback_group=waits)
        self.create_timer(cfg["diagnostics_period"], self._publish_diagnostics, clock=rclpy.clock.Clock())
        # the simulated robot never stops for the collector mid-motion: short passes at a fixed wall rate, whole
        # ones at each reset (the arm at rest)
        GC_PAUSES.take_over()
        self.create_timer(GC_PERIOD, GC_PAUSES.young, clock=rclpy.clock.Clock())
        server, sim = self.server, env.sim
        self.get_logger().info(
            f"simulated FR3 ready: task={cfg['task']} mode={cfg['mode']} cameras={list(self.cameras)} "
            f"{cfg['image_width']}x{cfg['image_height']} "
            f"joint_states@{1.0 / (server.substeps_per_publish * sim.physics_dt):.0f}Hz "
            f"{cfg['arm_controller']} controller on "
            f"{cfg['trajectory_topic'] if cfg['arm_controller'] == 'trajectory' else cfg['command_topic']}"
        )
        server.start(keep_going=lambda: rclpy.ok(context=self.context))

    @property
    def failed(self) -> bool:
        """The physics thread died (the process exits with an error)."""
        return self.server.failed

    def _wall(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # ------------------------------------------------------------ commands
    def _on_arm_array(self, msg: Float64MultiArray) -> None:
        self.server.command_arm(msg.data)

    def _on_trajectory(self, msg: JointTrajectory, info) -> None:
        # franka_ros2's JTC takes a message in C++ as DDS hands it over; this callback may first wait for the
        # interpreter lock (the physics thread renders a frame meanwhile): the controller reads the message
        # at the instant DDS received it, not later
        received = info["received_timestamp"] * 1e-9 if info and info.get("received_timestamp") else None
        stamp = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec
        if received is not None and stamp > self.newest_stamp:  # (a hold re-sends an older stamp)
            # where a message's delay arises: DDS (stamp -> the middleware has it) or this process (-> callback)
            self.newest_stamp = stamp
            self.arrivals.append((received - stamp, time.time() - received))
        try:
            traj = trajectory_from_message(msg)
        except CommandError as exc:
            self.server.reject(self.cfg["trajectory_topic"], exc)
            return
        self.server.command_trajectory(traj, arrived=received)

    # ------------------------------------------------------------ services and actions
    def _call(self, kind: str, value=None):
        """The physics thread's answer to a request, or None if it gave none in ANSWER_TIMEOUT s."""
        try:
            return self.server.call(kind, value, timeout=ANSWER_TIMEOUT)
        except TimeoutError:
            return None

    #: what a service answers when the physics thread did not
    NO_ANSWER = f"physics thread did not answer in {ANSWER_TIMEOUT:.0f} s"

    def _on_inject_reflex(self, request, response):
        response.success, response.message = self._call("inject") or (False, self.NO_ANSWER)
        return response

    def _on_set_hardware_state(self, request, response):
        answer = self._call("hardware", (request.name, int(request.target_state.id)))
        if answer is None:
            response.ok = False
            return response
        response.ok = answer[0]
        response.state = LifecycleState(id=answer[1], label=STATE_LABELS[answer[1]])
        return response

    def _on_switch_controller(self, request, response):
        answer = self._call("switch", (list(request.activate_controllers), list(request.deactivate_controllers),
                                       int(request.strictness)))
        response.ok, response.message = answer or (False, self.NO_ANSWER)
        return response

    def _execute_recovery(self, handle):
        """franka_hardware's error recovery: clears a reflex (succeeds in move mode too, as libfranka's does)."""
        success, message = self._call("recover") or (False, self.NO_ANSWER)
        if success:
            self.get_logger().info(message)
            handle.succeed()
        else:
            self.get_logger().error(f"error recovery failed: {message}")
            handle.abort()
        return topics.ERROR_RECOVERY.type.Result()

    def _on_reset(self, request: ResetEpisode.Request, response: ResetEpisode.Response) -> ResetEpisode.Response:
        seed = int(request.seed) if request.seed >= 0 else int(np.random.SeedSequence().generate_state(1)[0])
        try:
            error = self.server.call("reset", seed, timeout=ANSWER_TIMEOUT)
        except TimeoutError:
            error = self.NO_ANSWER
        response.success, response.message, response.seed = error is None, error or f"seed={seed}", seed
        if error is None:  # (set on the simulation thread before the call returned)
            response.stamp = _time(int(round(self.server.last_reset_stamp * 1e9)))
        GC_PAUSES.full()
        return response

    def _accept_gripper_goal(self, goal, motion_of) -> GoalResponse:
        """Accept every goal, as franka_gripper does; the server starts its motion now, before the client hears
        "accepted" (:meth:`RobotServer.accept_gripper_goal`)."""
        try:
            motion = motion_of(goal)
        except gripper_semantics.GoalError as exc:
            motion = exc
        self.server.accept_gripper_goal(id(goal), motion)
        return GoalResponse.ACCEPT

    def _execute_franka_goal(self, handle, result):
        """Move / grasp / homing: franka_msgs results (success, error); succeed or abort with them."""
        result.success, result.error = self.server.run_gripper_goal(id(handle.request))
        if result.success:
            handle.succeed()
        else:
            handle.abort()
        return result

    def _execute_gripper_command(self, handle, result):
        """control_msgs/GripperCommand with franka_gripper's semantics (position = width / 2)."""
        result.reached_goal, _ = self.server.run_gripper_goal(id(handle.request))
        result.position = float(self.server.fingers[0]) / 2
        if result.reached_goal:
            handle.succeed()
        else:
            handle.abort()
        return result

    # ------------------------------------------------------------ outputs (called on the physics thread)
    def publish_robot(self, state) -> None:
        """The /clock (lock-step), the robot state, /joint_states and the gripper's joint states."""
        stamp = _time(state.stamp_ns)
        if self.clock_pub is not None:
            self.clock_pub.publish(Clock(clock=stamp))
        msg = JointState()
        msg.header.stamp = stamp
        msg.header.frame_id = "fr3_link0"
        msg.name = state.name
        msg.position, msg.velocity, msg.effort = (v.tolist() for v in (state.position, state.velocity, state.effort))
        # before the joint state: a node that sees a joint state has seen the mode it was measured in
        if state.robot is not None:
            arm = JointState(name=msg.name[:7], position=msg.position[:7], velocity=msg.velocity[:7],
                             effort=msg.effort[:7])
            arm.header = msg.header
            self.robot_state_pub.publish(robot_state_message(*state.robot[:3], arm, state.robot[3]))
        self.joint_pub.publish(msg)
        fingers = JointState(name=list(fr3.FINGER_JOINT_NAMES), position=msg.position[7:9],
                             velocity=msg.velocity[7:9], effort=msg.effort[7:9])
        fingers.header = msg.header
        self.gripper_state_pub.publish(fingers)

    def publish_task(self, report) -> None:
        ts = TaskState()
        ts.header.stamp = _time(report.stamp_ns)
        ts.header.frame_id = "world"
        ts.task = self.cfg["task"]
        ts.names = list(TASK_STATE_FIELDS)
        ts.values = report.values.tolist()
        ts.success, ts.failure, ts.shaped_reward = report.success, report.failure, report.shaped_reward
        self.task_pub.publish(ts)

    def publish_frame(self, stamp_ns: int, images: dict) -> None:
        for cam, rgb in images.items():
            header = Header(stamp=_time(stamp_ns), frame_id=f"{cam}_camera")
            self.image_pubs[cam].publish(rgb8_image(rgb, header))
            self.info_pubs[cam].publish(pinhole_camera_info(header, rgb.shape[0], rgb.shape[1],
                                                            self.server.fovy[cam]))

    def _publish_diagnostics(self) -> None:
        server, sim = self.server, self.server.env.sim
        level, message = DiagnosticStatus.OK, "running"
        if not server.alive():
            level, message = DiagnosticStatus.ERROR, "physics thread stopped"
        elif sim.robot_mode == "reflex":
            level, message = DiagnosticStatus.ERROR, f"robot reflex: {sim.last_violation}"
        elif server.stats["commands_rejected"]:
            level, message = DiagnosticStatus.WARN, f"last rejected command: {server.last_error}"
        values = {**server.stats, "sim_time_s": f"{server.sim_time():.3f}",
                  "real_time_factor": f"{server.real_time_factor():.2f}",
                  "max_trajectory_delay_ms": f"{server.max_trajectory_delay * 1e3:.1f}",
                  "max_switch_step_urad": f"{server.max_switch_step * 1e6:.1f}",
                  "max_lag_ms": f"{server.max_lag * 1e3:.1f}", "mode": self.cfg["mode"], "task": self.cfg["task"],
                  **GC_PAUSES.report()}
        if self.arrivals and self.cfg["mode"] == "realtime":
            ms = np.asarray(self.arrivals) * 1e3
            for i, name in enumerate(("delivery", "callback")):
                values.update({f"{name}_ms_p{q}": f"{np.percentile(ms[:, i], q):.1f}" for q in (50, 99)})
                values[f"{name}_ms_max"] = f"{ms[:, i].max():.1f}"
        publish_diagnostics(self, self.diag_pub, "sim_node: simulated FR3", "mujoco", level, message, values)

    def stop_waiting(self) -> None:
        """The stack is stopping: no command will move sim time on, so the gripper goals and service calls that
        wait for the physics thread end now (a goal is answered "simulator shutting down")."""
        self.server.stop()

    def destroy_node(self) -> None:
        self.server.stop()
        self.get_logger().info(f"stopped: {self.server.summary()}")
        super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    # gripper goals wait for the fingers on executor threads of their own (ReentrantCallbackGroup)
    return run_node(SimNode, argv, threads=4, failed=lambda node: node.failed)


if __name__ == "__main__":
    sys.exit(main())
