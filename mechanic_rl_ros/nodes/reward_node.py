"""reward_node: per-step rewards, episode bookkeeping and resets.

A thin adapter around :class:`mechanic_rl_ros.control.episodes.EpisodeBook`.

* listens to the policy's executed steps (``Transition``, only episode / step /
  stamp are used) and, in ``sim`` mode, to the simulator's privileged
  ``TaskState``; in ``real`` mode a timer at the control rate stands in for the
  task state and the operator ends episodes with keys on ``operator_topic``
  (std_msgs/String: ``success``, ``failure``, ``intervention``);
* publishes ``StepReward`` for every executed step of a running episode and
  ``EpisodeEvent`` (START, SUCCESS, FAILURE, TIMEOUT, RESET_DONE, INTERVENTION);
* resets between episodes: ``sim`` calls the simulator's ResetEpisode service
  (seed = ``seed_base`` + episode); ``real`` drives the arm to the home pose
  through the controller's command topic with the stack's safety filter
  (trajectories within the FR3's 1 kHz limits at ``home_velocity_scale``), and
  opens the gripper (franka_gripper move action);
* reads the robot's state (franka_msgs/FrankaRobotState, ``robot_state_topic``):
  when the robot leaves move mode (a reflex, a user stop) or its state stops
  coming for ``robot_state_timeout`` (franka_ros2 from 3.3 deactivates the
  broadcaster with the hardware on an error) under a running episode, the
  episode ends with ``ABORTED`` (the learner drops all of it) and no reset
  starts until the robot is back in move mode. Recovery is franka_ros2's
  sequence: franka_hardware's error-recovery action, then controller_manager's
  set_hardware_component_state (``hardware_component`` active) and
  switch_controller (``recovery_controllers``); automatically in ``sim`` mode,
  on the operator's ``recover`` key in ``real`` mode (parameter ``recovery``),
  since on a real arm someone should look at why it stopped;
* publishes ``/diagnostics`` (episodes, success rate, late steps, robot errors).
"""
from __future__ import annotations

import sys
import time
from collections import deque

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticStatus
from action_msgs.msg import GoalStatus
from lifecycle_msgs.msg import State as LifecycleState
from rclpy.action import ActionClient
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from mechanic_rl_ros.control import fr3
from mechanic_rl_ros.control.safety import SafetyConfig, SafetyFilter
from mechanic_rl_ros.msg import EpisodeEvent, StepReward, TaskState, Transition
from mechanic_rl_ros.control.episodes import REWARD_KINDS, EpisodeBook, EpisodeConfig, Outcome, StepResult, TaskSample
from mechanic_rl_ros.nodes.common import (COMMAND_TYPES, Param, command_message_type, declare_parameters, joint_command,
                                         publish_diagnostics, run_node)
from mechanic_rl_ros.wire import topics
from mechanic_rl_ros.wire.robot_state import RobotStatus, read_robot_state

MODES = ("sim", "real")
RECOVERY = ("auto", "automatic", "operator")
_EVENT = {Outcome.SUCCESS: EpisodeEvent.SUCCESS, Outcome.FAILURE: EpisodeEvent.FAILURE, Outcome.TIMEOUT: EpisodeEvent.TIMEOUT}


def stamp_seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


#: every parameter, with what it means (``ros2 param describe reward_node <name>``); config/reward.yaml sets them
PARAMETERS = [
    Param("mode", "sim", "sim = rewards from the simulator's task state, resets through its reset service; real = "
          "an operator ends episodes with keys on operator_topic, resets drive the arm home", choices=MODES),
    Param("reward", "sparse", "reward the learner gets: sparse = 1 on success, else 0; shaped = the task's dense "
          "reward (sim only)", choices=REWARD_KINDS),
    Param("max_steps", 100, "[control steps] episode time limit; the episode ends with TIMEOUT after this many",
          range=(1, None)),
    Param("control_dt", 0.1, "[s] control period: step t is rewarded by the task state one period later",
          range=(0.001, None)),
    Param("terminate_on_success", True, "end the episode at its first successful state"),
    Param("max_episodes", 0, "stop starting episodes after this many; 0 = never stop", range=(0, None)),
    Param("seed_base", 1000, "sim: episode e resets the simulator with seed seed_base + e", range=(0, None)),
    Param("success_window", 20, "[episodes] window of the success rate in /diagnostics", range=(1, None)),
    Param("history_depth", 2000, "[messages] reliable, transient-local history of step_reward_topic: a restarted "
          "learner gets this many recent rewards replayed", range=(1, None)),
    Param("transition_topic", topics.TRANSITIONS.name, "the policy's executed steps (mechanic_rl_ros/Transition; "
          "only episode, step and stamp are read)"),
    Param("task_state_topic", topics.TASK_STATE.name, "sim: the simulator's privileged task state "
          "(mechanic_rl_ros/TaskState)"),
    Param("step_reward_topic", topics.STEP_REWARDS.name, "mechanic_rl_ros/StepReward of every executed step, to the learner"),
    Param("episode_event_topic", topics.EPISODE_EVENTS.name, "mechanic_rl_ros/EpisodeEvent: START, SUCCESS, FAILURE, TIMEOUT, "
          "RESET_DONE, INTERVENTION"),
    Param("reset_service", topics.RESET.name, "sim: the simulator's mechanic_rl_ros/srv/ResetEpisode service"),
    Param("reset_timeout", 30.0, "[wall s] a reset not done after this long is logged and retried",
          range=(0.1, None)),
    Param("operator_topic", topics.OPERATOR_KEY.name, "std_msgs/String from the operator: success | failure | intervention"),
    Param("joint_states_topic", topics.JOINT_STATES.name, "real: sensor_msgs/JointState the home motion starts from"),
    Param("command_topic", topics.ARM_TRAJECTORY.name, "real: where the home motion's commands go"),
    Param("command_type", "trajectory", "real: home motion command message: trajectory = "
          "trajectory_msgs/JointTrajectory (the JTC setup in README), array = std_msgs/Float64MultiArray",
          choices=COMMAND_TYPES),
    Param("gripper_namespace", topics.GRIPPER_NAMESPACE, "real: franka_gripper's node, whose move action opens the "
          "gripper on reset"),
    Param("home_tolerance", 0.01, "[rad] real: the arm is home when every joint is this close to the home pose",
          range=(0.0001, None)),
    Param("home_velocity_scale", 0.2, "real: fraction of the FR3 joint velocity limits the home motion uses",
          range=(0.001, 1.0)),
    Param("home_workspace_min", [-2.0, -2.0, -2.0], "[m] real: x, y, z lower corner of the box the TCP must stay "
          "in during the home motion, in fr3_link0; the default is wider than the FR3's reach, so the arm goes home "
          "from wherever it stopped, bounded by its joint limits only"),
    Param("home_workspace_max", [2.0, 2.0, 2.0], "[m] real: x, y, z upper corner of the home motion's TCP box, in "
          "fr3_link0"),
    Param("home_table_clearance", 0.0, "[m] real: the home motion's TCP stays this far above home_workspace_min z",
          range=(0.0, None)),
    Param("policy_stopped_topic", topics.POLICY_STOPPED.name, "std_msgs/Int64 from policy_node: the last episode it "
          "has stopped commanding in; a reset waits for it (else a trajectory of the old episode could follow the "
          "reset and step the arm); empty = do not wait"),
    Param("policy_stop_timeout", 2.0, "[wall s] a reset waits at most this long for policy_node's stop", range=(0.0, None)),
    Param("robot_state_topic", topics.ROBOT_STATE.name, "franka_msgs/FrankaRobotState from "
          "franka_robot_state_broadcaster; empty = do not watch the robot's mode (no reflex is then seen)"),
    Param("error_recovery_action", topics.ERROR_RECOVERY.name, "franka_hardware's franka_msgs/action/ErrorRecovery"),
    Param("recovery", "auto", "after a reflex: automatic = call the error-recovery action at once; operator = on the "
          "operator's 'recover' key; auto = automatic in sim mode, operator in real mode", choices=RECOVERY),
    Param("recovery_retry", 5.0, "[wall s] an automatic error recovery that failed is tried again after this long",
          range=(0.1, None)),
    Param("robot_state_timeout", 0.5, "[s, node clock] no robot state for this long under an episode is a fault: "
          "franka_ros2 deactivates the robot state broadcaster on an error", range=(0.001, None)),
    Param("controller_manager", topics.CONTROLLER_MANAGER, "namespace of controller_manager's services, called "
          "after the error recovery (franka_ros2 >= 3.3)"),
    Param("hardware_component", "FrankaHardwareInterface", "the hardware component set_hardware_component_state "
          "re-activates after the error recovery ('ros2 control list_hardware_components')"),
    Param("recovery_controllers", ["fr3_position_trajectory_controller", "joint_state_broadcaster",
                                   "franka_robot_state_broadcaster"],
          "controllers switch_controller activates after the hardware component (those an error deactivated)"),
    Param("diagnostics_period", 1.0, "[wall s] period of /diagnostics", range=(0.01, None)),
]


def home_safety_config(cfg: dict) -> SafetyConfig:
    """The safety filter of the real mode's home motion, from the home_* parameters; ValueError naming them."""
    try:
        return SafetyConfig(control_dt=float(cfg["control_dt"]), velocity_scale=float(cfg["home_velocity_scale"]),
                            workspace_min=tuple(cfg["home_workspace_min"]),
                            workspace_max=tuple(cfg["home_workspace_max"]),
                            table_clearance=float(cfg["home_table_clearance"]))
    except ValueError as exc:
        raise ValueError(f"parameters home_workspace_min / home_workspace_max / home_table_clearance: {exc}") from exc


class RewardNode(Node):
    def __init__(self) -> None:
        super().__init__("reward_node")
        self.cfg = cfg = declare_parameters(self, PARAMETERS)
        self.book = EpisodeBook(EpisodeConfig(
            reward=cfg["reward"], max_steps=int(cfg["max_steps"]), control_dt=float(cfg["control_dt"]),
            terminate_on_success=bool(cfg["terminate_on_success"]),
        ))
        t = topics
        # transient-local: a restarted learner gets the last history_depth rewards replayed
        self.reward_pub = self.create_publisher(t.STEP_REWARDS.type, cfg["step_reward_topic"],
                                                t.STEP_REWARDS.profile(int(cfg["history_depth"])))
        self.event_pub = self.create_publisher(t.EPISODE_EVENTS.type, cfg["episode_event_topic"], t.EPISODE_EVENTS.qos)
        self.diag_pub = self.create_publisher(t.DIAGNOSTICS.type, t.DIAGNOSTICS.name, t.DIAGNOSTICS.qos)
        self.create_subscription(t.TRANSITIONS.type, cfg["transition_topic"], self._on_transition,
                                 t.TRANSITIONS.profile(int(cfg["history_depth"])))
        self.create_subscription(t.OPERATOR_KEY.type, cfg["operator_topic"], self._on_operator, t.OPERATOR_KEY.qos)
        self.sim = cfg["mode"] == "sim"
        if self.sim:
            self.create_subscription(t.TASK_STATE.type, cfg["task_state_topic"], self._on_task_state, t.TASK_STATE.qos)
            self.reset_client = self.create_client(t.RESET.type, cfg["reset_service"])
        else:
            self.create_timer(cfg["control_dt"], self._on_real_tick)
            self.create_subscription(t.JOINT_STATES.type, cfg["joint_states_topic"], self._on_joint_states,
                                     t.JOINT_STATES.qos)
            self.cmd_pub = self.create_publisher(command_message_type(cfg["command_type"]), cfg["command_topic"],
                                                 t.ARM_COMMAND.qos)
            self.gripper_open = ActionClient(self, t.GRIPPER_MOVE.type, cfg["gripper_namespace"].rstrip("/") + "/move")
            self.create_timer(cfg["control_dt"], self._home_motion_tick)
        #: the home motion's limits (real mode), checked at start-up
        self.home_config = home_safety_config(cfg)
        self.q: np.ndarray | None = None
        #: the home motion's safety filter while homing (real mode), else None
        self.homing: SafetyFilter | None = None
        self.next_episode = 0
        self.resetting = False
        self.reset_started = 0.0
        self.outcomes: deque[bool] = deque(maxlen=int(cfg["success_window"]))
        self.counts = {"episodes": 0, "successes": 0, "rewards_published": 0, "resets_failed": 0,
                       "episodes_aborted": 0, "robot_errors": 0, "recoveries": 0, "recoveries_failed": 0,
                       "resets_without_policy_stop": 0}
        #: the last robot state and when it came [s, node clock]; what stopped the robot while it is stopped
        self.robot: RobotStatus | None = None
        self.robot_received = -float("inf")
        self.robot_fault: str | None = None
        self.recovering = False
        self.last_recovery = -float("inf")
        #: the last episode that ended and when [monotonic s]; the last one policy_node stopped commanding in
        self.ended: tuple[int, float] | None = None
        self.policy_stopped = -1
        if cfg["policy_stopped_topic"]:
            self.create_subscription(t.POLICY_STOPPED.type, cfg["policy_stopped_topic"], self._on_policy_stopped,
                                     t.POLICY_STOPPED.qos)
        self.watch_robot = bool(cfg["robot_state_topic"])
        self.automatic_recovery = cfg["recovery"] == "automatic" or (cfg["recovery"] == "auto" and self.sim)
        if self.watch_robot:
            self.create_subscription(t.ROBOT_STATE.type, cfg["robot_state_topic"], self._on_robot_state,
                                     t.ROBOT_STATE.qos)
            self.recovery_client = ActionClient(self, t.ERROR_RECOVERY.type, cfg["error_recovery_action"])
            cm = cfg["controller_manager"].rstrip("/")
            self.hardware_client = self.create_client(t.SET_HARDWARE_STATE.type, cm + "/set_hardware_component_state")
            self.switch_client = self.create_client(t.SWITCH_CONTROLLER.type, cm + "/switch_controller")
        self.create_timer(cfg["diagnostics_period"], self._publish_diagnostics, clock=rclpy.clock.Clock())
        self.create_timer(0.05, self._drive_episodes, clock=rclpy.clock.Clock())
        self.get_logger().info(f"reward node ready: mode={cfg['mode']} reward={cfg['reward']} max_steps={cfg['max_steps']}")

    # ----------------------------------------------------------- episodes
    def _drive_episodes(self) -> None:
        """Start the next episode's reset whenever none is running or resetting and the robot is in move mode."""
        if self.watch_robot and not self._watch_robot():
            return
        if self.book.running or self.resetting:
            if self.resetting and time.monotonic() - self.reset_started > self.cfg["reset_timeout"]:
                self.counts["resets_failed"] += 1
                self.get_logger().error(f"reset of episode {self.next_episode} timed out after "
                                        f"{self.cfg['reset_timeout']} s; retrying")
                self.resetting = False
            return
        if self.cfg["max_episodes"] and self.next_episode >= self.cfg["max_episodes"]:
            return
        if not self._policy_stopped():
            return
        self.resetting, self.reset_started = True, time.monotonic()
        if self.sim:
            if not self.reset_client.service_is_ready():
                self.resetting = False
                self.get_logger().info(f"waiting for {self.cfg['reset_service']}", throttle_duration_sec=5.0)
                return
            seed = int(self.cfg["seed_base"]) + self.next_episode
            future = self.reset_client.call_async(topics.RESET.type.Request(seed=seed))
            future.add_done_callback(self._on_reset_done)
        else:
            self._open_gripper()
            self.homing = SafetyFilter(self.home_config)

    def _on_policy_stopped(self, msg) -> None:
        self.policy_stopped = max(self.policy_stopped, int(msg.data))

    def _policy_stopped(self) -> bool:
        """True once policy_node has stopped commanding in the episode that ended last (or after the timeout)."""
        if not self.cfg["policy_stopped_topic"] or self.ended is None or self.policy_stopped >= self.ended[0]:
            return True
        waited = time.monotonic() - self.ended[1]
        if waited < self.cfg["policy_stop_timeout"]:
            return False
        self.counts["resets_without_policy_stop"] += 1
        self.get_logger().warning(f"policy_node did not say it stopped commanding in episode {self.ended[0]} within "
                                  f"{self.cfg['policy_stop_timeout']} s ({self.cfg['policy_stopped_topic']}); "
                                  f"resetting anyway")
        self.policy_stopped = self.ended[0]
        return True

    def _open_gripper(self) -> None:
        """Real mode, on reset: one franka_gripper move goal to the open width (not awaited: the home motion runs
        meanwhile; a gripper that is not up is logged and the episode starts anyway)."""
        if not self.gripper_open.server_is_ready():
            self.get_logger().error(f"{self.cfg['gripper_namespace']}/move not available: gripper not opened "
                                    f"(is franka_gripper running? franka_bringup load_gripper:=true)")
            return
        self.gripper_open.send_goal_async(topics.GRIPPER_MOVE.type.Goal(width=fr3.GRIPPER_MAX_WIDTH,
                                                                        speed=fr3.GRIPPER_MAX_SPEED))

    def _on_reset_done(self, future) -> None:
        res = future.result()
        if res is None or not res.success:
            self.counts["resets_failed"] += 1
            self.get_logger().error(f"reset failed: {getattr(res, 'message', 'no answer')}; retrying")
            self.resetting = False
            return
        self._begin(detail=f"seed={res.seed}")

    def _begin(self, detail: str) -> None:
        e = self.next_episode
        self.next_episode += 1
        self.book.start(e)
        self.resetting = False
        self._event(EpisodeEvent.RESET_DONE, detail)
        self._event(EpisodeEvent.START, detail)
        self.get_logger().info(f"episode {e} started ({detail})")

    def _event(self, kind: int, detail: str = "") -> None:
        ev = EpisodeEvent()
        ev.header.stamp = self.get_clock().now().to_msg()
        ev.episode, ev.event, ev.steps = max(self.book.episode, 0), kind, self.book.steps_done
        ev.episode_return, ev.detail = float(self.book.episode_return), detail
        self.event_pub.publish(ev)

    def _publish(self, results: list[StepResult], stamp) -> None:
        for r in results:
            msg = StepReward()
            msg.header.stamp = stamp
            msg.episode, msg.step, msg.reward, msg.sparse_reward = r.episode, r.step, r.reward, r.sparse_reward
            msg.success, msg.terminal, msg.truncated = r.success, r.terminal, r.truncated
            self.reward_pub.publish(msg)
            self.counts["rewards_published"] += 1
            if r.outcome is not None:
                self.ended = (r.episode, time.monotonic())
                self.counts["episodes"] += 1
                self.counts["successes"] += r.outcome is Outcome.SUCCESS
                self.outcomes.append(r.outcome is Outcome.SUCCESS)
                self._event(_EVENT[r.outcome], f"return={self.book.episode_return:.3f}")
                rate = sum(self.outcomes) / len(self.outcomes)
                self.get_logger().info(
                    f"episode {r.episode} {r.outcome.value} after {r.step + 1} steps, return "
                    f"{self.book.episode_return:.3f}; success rate {rate:.2f} over last {len(self.outcomes)}")

    # ----------------------------------------------------------- callbacks
    def _on_transition(self, msg: Transition) -> None:
        try:
            self.book.step_executed(int(msg.episode), int(msg.step), stamp_seconds(msg.header.stamp))
        except ValueError as exc:
            self.get_logger().error(f"transition refused: {exc}", throttle_duration_sec=1.0)

    def _on_task_state(self, msg: TaskState) -> None:
        sample = TaskSample(stamp_seconds(msg.header.stamp), bool(msg.success), bool(msg.failure), float(msg.shaped_reward))
        self._publish(self.book.task_state(sample), msg.header.stamp)

    def _on_real_tick(self) -> None:
        now = self.get_clock().now()
        sample = TaskSample(now.nanoseconds * 1e-9, False, False, 0.0)
        self._publish(self.book.task_state(sample), now.to_msg())

    def _on_operator(self, msg: String) -> None:
        key = msg.data.strip().lower()
        if key == "recover":
            if self.watch_robot and self.robot_fault is not None and not self.recovering and self._policy_stopped():
                self._recover()
            else:
                self.get_logger().info(f"operator 'recover': nothing to recover from (robot fault: "
                                       f"{self.robot_fault}, recovery running: {self.recovering})")
            return
        if key == "intervention":
            self._event(EpisodeEvent.INTERVENTION, "operator")
            return
        outcome = {"success": Outcome.SUCCESS, "failure": Outcome.FAILURE}.get(key)
        if outcome is None:
            self.get_logger().error(f"{self.cfg['operator_topic']}: data {msg.data!r} is not one of "
                                    "'success', 'failure', 'intervention', 'recover'")
            return
        result = self.book.operator(outcome)
        if result is not None:
            self._publish([result], self.get_clock().now().to_msg())
        elif not self.book.running and not self.resetting:
            self.ended = (self.book.episode, time.monotonic())
            self._event(_EVENT[outcome], "operator, no step pending")

    def _on_robot_state(self, msg) -> None:
        try:
            status = read_robot_state(msg)
        except ValueError as exc:
            self.get_logger().error(f"{self.cfg['robot_state_topic']}: {exc}", throttle_duration_sec=1.0)
            return
        self.robot, self.robot_received = status, self._clock_now()
        if not status.executing:
            self._watch_robot()  # a reflex ends the episode at once, not at the next timer

    def _clock_now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _robot_problem(self) -> str | None:
        """Why the robot cannot act now, or None."""
        if self.robot is None:
            return "no robot state received yet"
        age = self._clock_now() - self.robot_received
        if age > self.cfg["robot_state_timeout"]:
            return (f"robot state silent for {age:.2f} s (franka_ros2 deactivates its broadcaster on an error; "
                    f"last mode {self.robot.describe()})")
        return None if self.robot.executing else f"robot {self.robot.describe()}"

    def _watch_robot(self) -> bool:
        """True when the robot is in move mode. Else: a fault under an episode or a reset ends it (ABORTED);
        an automatic recovery starts when due."""
        problem = self._robot_problem()
        if problem is None:
            if self.robot_fault is not None:
                last = ", ".join(self.robot.last_errors) or "none"
                self.get_logger().info(f"robot back in move mode after: {self.robot_fault}; last motion errors: "
                                       f"{last}; episodes resume")
                self.robot_fault = None
            return True
        idle = self.robot is not None and self.robot.mode == "idle" and not self.robot.errors
        if self.robot_fault is None and (self.book.running or self.resetting or not (idle or self.robot is None)):
            self._on_fault(problem)
        if self.robot_fault is None:
            # before the first robot state, or idle between episodes (a controller not started yet): wait
            self.get_logger().info(f"waiting for the robot: {problem}", throttle_duration_sec=5.0)
        elif (self.automatic_recovery and not self.recovering
              and time.monotonic() - self.last_recovery > self.cfg["recovery_retry"] and self._policy_stopped()):
            self._recover()  # (only once policy_node stopped: a command after re-activation would be stale)
        return False

    def _on_fault(self, problem: str) -> None:
        self.robot_fault = problem
        self.counts["robot_errors"] += 1
        if self.book.running:
            e = self.book.episode
            self.book.abort()
            self.ended = (e, time.monotonic())
            self.counts["episodes_aborted"] += 1
            self._event(EpisodeEvent.ABORTED, problem)
            self.get_logger().error(f"{problem}; episode {e} aborted, nothing of it is learned from")
        else:
            self.get_logger().error(f"{problem} (no episode running)")
        self.resetting, self.homing = False, None  # a reset under way restarts once the robot moves again
        if not self.automatic_recovery:
            self.get_logger().warning(f"press 'recover' on {self.cfg['operator_topic']} once the arm is clear, to run "
                                      f"{self.cfg['error_recovery_action']} and re-activate "
                                      f"{self.cfg['hardware_component']} and {list(self.cfg['recovery_controllers'])}")

    # -------------------------------------------------------- error recovery
    def _recover(self) -> None:
        """franka_ros2's recovery, in order: error recovery, hardware component active, controllers active."""
        self.last_recovery = time.monotonic()
        missing = [name for name, ready in (
            (self.cfg["error_recovery_action"], self.recovery_client.server_is_ready()),
            ("set_hardware_component_state", self.hardware_client.service_is_ready()),
            ("switch_controller", self.switch_client.service_is_ready())) if not ready]
        if missing:
            self.counts["recoveries_failed"] += 1
            self.get_logger().error(f"recovery impossible, not available: {missing}; the robot stays stopped "
                                    f"(retrying in {self.cfg['recovery_retry']} s)", throttle_duration_sec=5.0)
            return
        self.recovering = True
        self.get_logger().info(f"recovery 1/3: {self.cfg['error_recovery_action']}")
        self.recovery_client.send_goal_async(topics.ERROR_RECOVERY.type.Goal()).add_done_callback(
            self._on_recovery_accepted)

    def _recovery_failed(self, why: str) -> None:
        self.recovering = False
        self.counts["recoveries_failed"] += 1
        self.get_logger().error(f"recovery failed: {why}")

    def _on_recovery_accepted(self, future) -> None:
        handle = future.result()
        if handle is None or not handle.accepted:
            self._recovery_failed("the error recovery goal was rejected")
            return
        handle.get_result_async().add_done_callback(self._on_error_cleared)

    def _on_error_cleared(self, future) -> None:
        res = future.result()
        if res is None or res.status != GoalStatus.STATUS_SUCCEEDED:
            self._recovery_failed(f"error recovery ended with status {getattr(res, 'status', None)}")
            return
        self.get_logger().info(f"recovery 2/3: {self.cfg['hardware_component']} active")
        req = topics.SET_HARDWARE_STATE.type.Request(name=self.cfg["hardware_component"])
        req.target_state.id, req.target_state.label = LifecycleState.PRIMARY_STATE_ACTIVE, "active"
        self.hardware_client.call_async(req).add_done_callback(self._on_hardware_active)

    def _on_hardware_active(self, future) -> None:
        res = future.result()
        if res is None or not res.ok:
            self._recovery_failed(f"set_hardware_component_state {self.cfg['hardware_component']} active refused "
                                  f"(state {getattr(getattr(res, 'state', None), 'label', None)})")
            return
        self.get_logger().info(f"recovery 3/3: activate {list(self.cfg['recovery_controllers'])}")
        req = topics.SWITCH_CONTROLLER.type.Request(activate_controllers=list(self.cfg["recovery_controllers"]),
                                                   strictness=topics.SWITCH_CONTROLLER.type.Request.BEST_EFFORT,
                                                   activate_asap=True)
        self.switch_client.call_async(req).add_done_callback(self._on_controllers_active)

    def _on_controllers_active(self, future) -> None:
        res = future.result()
        if res is None or not res.ok:
            self._recovery_failed(f"switch_controller refused: {getattr(res, 'message', 'no answer')}")
            return
        self.recovering = False
        self.counts["recoveries"] += 1
        self.get_logger().info("recovery done; waiting for the robot state in move mode")

    def _on_joint_states(self, msg: JointState) -> None:
        try:
            idx = [list(msg.name).index(n) for n in fr3.JOINT_NAMES]
        except ValueError:
            self.get_logger().error(f"{self.cfg['joint_states_topic']}: name must contain {list(fr3.JOINT_NAMES)}, "
                                    f"got {list(msg.name)}", throttle_duration_sec=1.0)
            return
        self.q = np.array([msg.position[i] for i in idx])

    def _home_motion_tick(self) -> None:
        """Real robot reset: step towards home within the FR3 limits, then start."""
        if self.homing is None or self.q is None:
            return
        if np.abs(self.q - fr3.Q_HOME).max() < self.cfg["home_tolerance"]:
            self.homing = None
            self._begin(detail="home")
            return
        now = self.get_clock().now().nanoseconds * 1e-9
        if not self.homing.initialized:
            self.homing.reset(self.q, now)
        res = self.homing.filter(fr3.Q_HOME, None, now)
        if res.trajectory is not None:  # None: settling from the measured position
            self.cmd_pub.publish(joint_command(res, self.cfg["command_type"]))

    def _publish_diagnostics(self) -> None:
        rate = sum(self.outcomes) / len(self.outcomes) if self.outcomes else 0.0
        values = {**self.counts, "episode": self.book.episode, "late_steps": self.book.late_steps,
                  "pending_steps": self.book.pending_steps(), "success_rate": f"{rate:.3f}"}
        message = f"episode {self.book.episode} {'running' if self.book.running else 'resetting'}"
        publish_diagnostics(self, self.diag_pub, "reward_node: episodes", self.cfg["mode"], DiagnosticStatus.OK,
                            message, values)


def main(argv: list[str] | None = None) -> int:
    return run_node(RewardNode, argv)

if __name__ == "__main__":
    sys.exit(main())
