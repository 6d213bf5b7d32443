"""policy_node: the diffusion policy at control rate, behind the safety filter.

* assembles observations from the preprocessed camera image(s) and
  ``/joint_states`` (matched by joint name, time-aligned within ``max_skew``),
  keeps the T_o history, and runs inference on a worker thread, starting the
  next chunk ``replan_margin`` actions before the current one runs out; that
  chunk then executes the actions predicted for the instants it runs at
  (:meth:`DiffusionPolicy.executable` with ``lead``), not those for the
  instant of its observation, which has passed;
* executes the chunk at ``control_rate``; every command passes
  :class:`mechanic_rl_ros.control.safety.SafetyFilter`, which turns it into a
  JointTrajectory whose 1 kHz samples stay within the FR3's limits (position,
  position-dependent velocity, acceleration, jerk, TCP workspace above the
  table, TCP speed) and which ends at rest, for the JointTrajectoryController
  on the FR3's position interface (``command_type`` trajectory; ``array``
  sends only the next target, for a forward controller); the gripper width
  goes to franka_gripper's ``move`` / ``grasp`` actions, one goal at a time
  with hysteresis (:class:`mechanic_rl_ros.control.gripper.GripperCommander`),
  never a goal per tick. A stale observation, a missing chunk or a dead model
  makes it *hold* (send the committed trajectory, which brakes to rest within
  the limits) instead of guessing;
* publishes a ``Transition`` for every executed step (the chunk's observation,
  denoising chain and behaviour log-probabilities on its first step);
* hot-swaps the fine-tuned network from ``PolicyWeights`` only between chunks,
  after checking encoding, sha256, architecture id, tensor names/shapes and
  finiteness; bad weights are refused with the reason and the last good ones
  stay;
* acts only inside an episode (``EpisodeEvent`` START .. SUCCESS / FAILURE /
  TIMEOUT / ABORTED from reward_node) and is silent during resets;
* watches the robot's mode (franka_msgs/FrankaRobotState on
  ``robot_state_topic``): when the robot leaves move mode (a reflex, a user
  stop) it stops acting at once and publishes nothing more for that episode
  (its commands would not execute; reward_node aborts the episode and the
  learner drops it); the next episode's safety filter is seeded from a joint
  state measured after its reset. A robot state older than ``max_age`` makes it
  hold, as any stale input does;
* publishes the predicted TCP path as a MarkerArray for RViz and /diagnostics.
"""
from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import Point
from action_msgs.msg import GoalStatus
from rclpy.action import ActionClient
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Int64
from visualization_msgs.msg import Marker, MarkerArray

from mechanic_rl_ros.control import fr3
from mechanic_rl_ros.control.gripper import GripperCommander, GripperConfig
from mechanic_rl_ros.control.chunk_loop import BackgroundPlanning, Chunk, ChunkLoop
from mechanic_rl_ros.control.observation import ObservationAssembler
from mechanic_rl_ros.control.safety import SafetyConfig, SafetyFilter
from mechanic_rl_ros.control.tick import HOLD, INFO_PERIOD, ControlTick, TickConfig, Verdict, filter_seed
from mechanic_rl_ros.msg import EpisodeEvent, PolicyWeights, TaskState
from mechanic_rl_ros.nodes.common import (COMMAND_TYPES, Param, RateLimitedLog, command_message_type,
                                         declare_parameters, joint_command, publish_diagnostics, run_node)
from mechanic_rl_ros.policy import DiffusionPolicy, PolicyPlanner
from mechanic_rl_ros.rl.select import CriticSelector, load_select_config
from mechanic_rl_ros.vision.imgmsg import imgmsg_to_array
from mechanic_rl_ros.wire import WireError, topics
from mechanic_rl_ros.wire.robot_state import RobotStatus, read_robot_state
from mechanic_rl_ros.wire.gripper import ACTIONS as GRIPPER_ACTIONS, goal_message as gripper_goal_message
from mechanic_rl_ros.wire.transition import ExecutedStep, transition_message
from mechanic_rl_ros.wire.weights import verify_weights

ENDS = (EpisodeEvent.SUCCESS, EpisodeEvent.FAILURE, EpisodeEvent.TIMEOUT, EpisodeEvent.ABORTED)


def seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


#: every parameter, with what it means (``ros2 param describe policy_node <name>``); config/policy_node.yaml sets them
PARAMETERS = [
    Param("checkpoint", "", "policy checkpoint directory (model.safetensors + config.json, from 'mechanic-rl "
          "pretrain'); required, the launch sets it"),
    Param("algorithm", "select", "select = the frozen policy proposes select_config's N chunks per decision and "
          "the learner's critic (PolicyWeights) picks one; dppo = one chunk per decision from the fine-tuned "
          "network (PolicyWeights), sampled as 'stochastic' says; must match learner_node's",
          choices=("select", "dppo")),
    Param("select_config", "", "algorithm select: YAML of the selection settings (N, critic size), shared with "
          "learner_node; '' = config/select.yaml"),
    Param("stochastic", True, "algorithm dppo: true = sample the denoising chain (DPPO exploration; its log-probabilities go to the "
          "learner); false = deterministic DDIM"),
    Param("noise_clip", 3.0, "clip each denoising step's N(0, I) draw to +-this many standard deviations (DPPO "
          "randn_clip_value 3; as config/rl.yaml); 0 = off", range=(0.0, None)),
    Param("seed", 0, "seed of the sampling noise", range=(0, None)),
    Param("torch_threads", 1, "CPU threads torch uses for inference", range=(1, None)),
    Param("inference_niceness", 10, "the inference thread runs this much nicer than the control tick (Linux thread "
          "niceness; 0 leaves it equal): a diffusion sample may take the CPU, the 10 Hz tick must not wait for it",
          range=(0, 19)),
    Param("control_rate", 10.0, "[Hz] commands per second, one action of the chunk each", range=(0.1, 1000.0)),
    Param("replan_margin", 2, "[actions] start the next chunk's inference when this many actions of the current one "
          "remain; that chunk then executes the actions predicted for the instants it runs at "
          "(0 .. T_p - T_o + 1 - T_a, 7 for the default policy; checked against the checkpoint at start)",
          range=(0, None)),
    Param("max_age", 0.3, "[s] an observation input (image, joint state) older than this on the node's clock is "
          "stale: the arm holds instead of acting on it", range=(0.001, None)),
    Param("max_skew", 0.15, "[s] largest stamp difference between the inputs of one observation", range=(0.0, None)),
    Param("inference_timeout", 2.0, "[wall s] a chunk later than this counts as a dead model (logged; the arm holds)",
          range=(0.001, None)),
    Param("wait_for_inference", True, "on sim time only: wait for a late chunk instead of holding (waiting costs no "
          "sim time)"),
    Param("input_wait", 0.3, "[wall s] on sim time only: how long a control tick waits for the inputs of its own "
          "instant (each input's next sample at the rate it arrives, up to the tick's instant: the lock-step "
          "simulator sends the clock first), so the observation pairs a frame with the joint state of its instant "
          "as in training; after the wait it acts on the latest (counted in inputs_behind)", range=(0.0, None)),
    Param("image_topics", [topics.POLICY_IMAGE.name], "preprocessed rgb8 images (camera_node's output), one "
          "topic per policy camera, in the checkpoint's camera order"),
    Param("joint_states_topic", topics.JOINT_STATES.name, "sensor_msgs/JointState of the arm and gripper; joints are "
          "matched by name"),
    Param("stopped_topic", topics.POLICY_STOPPED.name, "std_msgs/Int64 (latched): the last episode this node has "
          "stopped commanding in, published when its end (or a robot fault) stops it; reward_node resets after it"),
    Param("robot_state_topic", topics.ROBOT_STATE.name, "franka_msgs/FrankaRobotState (franka_robot_state_broadcaster): "
          "outside move mode the episode is given up; empty = do not watch the robot's mode"),
    Param("task_state_topic", topics.TASK_STATE.name, "mechanic_rl_ros/TaskState, read only by state-only policies "
          "whose observation includes task_state"),
    Param("command_topic", topics.ARM_TRAJECTORY.name, "where the filtered arm commands go "
          "(the arm controller's topic)"),
    Param("command_type", "trajectory", "command message: trajectory = trajectory_msgs/JointTrajectory for a "
          "JointTrajectoryController on the position interface (the FR3 setup in README); array = "
          "std_msgs/Float64MultiArray of the next target for a forward command controller (the FR3 reflexes on "
          "its unsmoothed steps)", choices=COMMAND_TYPES),
    Param("gripper_namespace", topics.GRIPPER_NAMESPACE, "franka_gripper's node: the gripper width goes to its move "
          "(opening) and grasp (closing) actions under this name"),
    Param("gripper_hysteresis", 0.01, "[m] a new gripper goal only when the policy's width differs this much from "
          "the last goal's", range=(0.0, 0.08)),
    Param("gripper_speed", 0.1, "[m/s] speed of gripper move and grasp goals (Franka Hand: at most 0.1)",
          range=(0.001, 0.1)),
    Param("gripper_force", 20.0, "[N] grasp force (Franka Hand: 70 N continuous)", range=(0.001, 70.0)),
    Param("gripper_epsilon_inner", 0.005, "[m] a grasp succeeds if the fingers stop above width - this",
          range=(0.0, 0.08)),
    Param("gripper_epsilon_outer", 0.08, "[m] a grasp succeeds if the fingers stop below width + this (0.08: any "
          "object narrower than the open hand)", range=(0.0, 0.08)),
    Param("gripper_goal_timeout", 5.0, "[s on the node's clock: sim time in simulation, wall time on the robot] "
          "a gripper goal not answered after this long is given up, so the next one can go; on sim time it must "
          "exceed the simulator's own gripper_goal_timeout, or a slow simulator sees two goals at once",
          range=(0.001, None)),
    Param("transition_topic", topics.TRANSITIONS.name, "mechanic_rl_ros/Transition of every executed step, to the "
          "learner"),
    Param("weights_topic", topics.WEIGHTS.name, "mechanic_rl_ros/PolicyWeights from the learner, hot-swapped between "
          "chunks after verification"),
    Param("episode_event_topic", topics.EPISODE_EVENTS.name, "mechanic_rl_ros/EpisodeEvent from reward_node; the policy acts "
          "only between START and the episode's end"),
    Param("marker_topic", topics.PREDICTED_PATH.name, "visualization_msgs/MarkerArray: the predicted TCP path of each "
          "chunk, for RViz"),
    Param("transition_queue_depth", 1000, "[messages] reliable, transient-local history of transition_topic: a "
          "restarted learner gets this many recent steps replayed", range=(1, None)),
    Param("safety_position_margin", 0.02, "[rad] commands stay this far inside the FR3 joint position limits",
          range=(0.0, 0.5)),
    Param("safety_velocity_scale", 0.5, "fraction of the FR3's position-dependent joint velocity limits the 1 kHz "
          "commands may use (conservative while a policy explores)", range=(0.001, 1.0)),
    Param("safety_acceleration_scale", 0.5, "fraction of the FR3 joint acceleration limit (10 rad/s^2) the 1 kHz "
          "commands may use", range=(0.001, 1.0)),
    Param("safety_jerk_scale", 0.5, "fraction of the FR3 joint jerk limit (5000 rad/s^3) the 1 kHz commands may "
          "use", range=(0.001, 1.0)),
    Param("safety_tcp_speed_max", 0.5, "[m/s] largest TCP speed along the commanded trajectory", range=(0.001, 3.0)),
    Param("safety_table_clearance", 0.005, "[m] the TCP stays this far above workspace_min z (the table top)",
          range=(0.0, 0.5)),
    Param("safety_switch_lead", 0.02, "[s] each trajectory repeats the previous one this long after its stamp, so "
          "the controller may switch to it this late without any change in the commands (delivery + one 1 ms "
          "cycle)", range=(0.0, 0.09)),
    Param("send_delay", 0.05, "[s] on the wall clock (not on sim time), each trajectory is stamped this long after "
          "its tick and published at that stamp: the safety filter's computation and the process's other threads "
          "then delay the message only past a stamp it has not reached. A message ready more than half the "
          "switch_lead after its stamp is not sent (counted in sent_late); the committed trajectory plays on",
          range=(0.0, 0.09)),
    Param("workspace_min", [0.2, -0.4, 0.0], "[m] x, y, z lower corner of the box the TCP must stay in, in "
          "fr3_link0; z is the table top"),
    Param("workspace_max", [0.8, 0.4, 0.7], "[m] x, y, z upper corner of the box the TCP must stay in, in "
          "fr3_link0"),
    Param("error_log_period", 1.0, "[s] least time between two logged errors of one kind (the rest are only "
          "counted); 0 logs every one", range=(0.0, None)),
    Param("diagnostics_period", 1.0, "[wall s] period of /diagnostics", range=(0.01, None)),
]


#: the counters of ticks that sent no fresh action while an episode moved (or, on sim time, late / off the grid):
#: missed ticks, as bench_stack reports them
MISSED_TICK_COUNTS = ("hold_no_action", "hold_stale", "hold_model", "ticks_late", "ticks_off_grid")


class PolicyNode(Node):
    def __init__(self) -> None:
        super().__init__("policy_node")
        self.cfg = cfg = declare_parameters(self, PARAMETERS)
        cmd_type = command_message_type(cfg["command_type"])
        if not cfg["checkpoint"]:
            raise ValueError("parameter checkpoint: empty; expected a policy checkpoint directory "
                             "(model.safetensors + config.json, e.g. from 'mechanic-rl pretrain')")
        torch.set_num_threads(int(cfg["torch_threads"]))
        self.policy = DiffusionPolicy.from_checkpoint(Path(cfg["checkpoint"]))
        self.policy.eval()
        #: every fine-tuned network has the shapes of the pretrained one it was copied from
        self.ft_shapes = {k: tuple(v.shape) for k, v in self.policy.net.state_dict().items()}
        pcfg = self.policy.cfg
        self.cameras = tuple(pcfg.cameras)
        if len(cfg["image_topics"]) < len(self.cameras):
            raise ValueError(f"parameter image_topics: {len(cfg['image_topics'])} topics for the policy's cameras "
                             f"{list(self.cameras)}")
        self.dt = 1.0 / cfg["control_rate"]
        self.assembler = ObservationAssembler(self.cameras, pcfg.lowdim_keys, pcfg.image_size,
                                              cfg["max_age"], cfg["max_skew"])
        if not 0 <= cfg["replan_margin"] <= pcfg.max_lead:
            raise ValueError(f"parameter replan_margin: {cfg['replan_margin']}; expected 0..{pcfg.max_lead} "
                             f"(a chunk planned that early must still hold T_a = {pcfg.action_horizon} of the "
                             f"policy's T_p = {pcfg.pred_horizon} predicted actions)")
        self.selector = None
        if cfg["algorithm"] == "select":
            scfg = load_select_config(cfg["select_config"], feat_dim=self.policy.net.cond_dim,
                                      act_dim=pcfg.action_horizon * pcfg.action_dim)
            self.selector = CriticSelector(scfg, self.policy.arch_id)
            # what PolicyWeights must carry: the critic, nothing of the diffusion policy
            self.ft_shapes, self.weights_arch_id = self.selector.expected_shapes, self.selector.arch_id
        else:
            self.weights_arch_id = self.policy.arch_id
        # torch's lazy set-up before the first tick: on sim time a first chunk late by seconds lets the lockstep
        # simulator run ahead of the trajectory sent for it
        warm_s = self.policy.warm_up(self.selector.cfg.num_candidates if self.selector else 0)
        self.get_logger().info(f"model warmed up: first sample {warm_s * 1e3:.0f} ms")
        self.planner = PolicyPlanner(self.policy, stochastic=bool(cfg["stochastic"]), noise_clip=float(cfg["noise_clip"]),
                                     seed=int(cfg["seed"]), on_weights=self._on_swap, selector=self.selector)
        self.planning = BackgroundPlanning(ChunkLoop.for_policy(self.policy, int(cfg["replan_margin"])), self.planner,
                                           niceness=int(cfg["inference_niceness"]))
        self.safety = SafetyFilter(SafetyConfig(
            control_dt=self.dt, position_margin=cfg["safety_position_margin"],
            velocity_scale=cfg["safety_velocity_scale"], acceleration_scale=cfg["safety_acceleration_scale"],
            jerk_scale=cfg["safety_jerk_scale"], tcp_speed_max=cfg["safety_tcp_speed_max"],
            table_clearance=cfg["safety_table_clearance"], switch_lead=cfg["safety_switch_lead"],
            workspace_min=tuple(cfg["workspace_min"]), workspace_max=tuple(cfg["workspace_max"])))
        self.ticker = ControlTick(TickConfig(
            control_dt=self.dt, input_wait=cfg["input_wait"], inference_timeout=cfg["inference_timeout"],
            wait_for_inference=bool(cfg["wait_for_inference"]), send_delay=cfg["send_delay"],
            switch_lead=cfg["safety_switch_lead"]), sim_time=self._sim_time())
        self.episode: int | None = None
        self.episode_started = -float("inf")
        self.step = 0
        #: weights version -> (publish stamp, sha256) of verified weights waiting for the next chunk
        self.staged: dict[int, tuple[float, str]] = {}
        self.running_sha256: str | None = None  # of the adopted weights; None while running the checkpoint's own
        #: hold_* count ticks of a moving episode that sent no fresh action (missed ticks); start_wait counts the
        #: ticks of an episode before its first action (the arm at rest while its first inputs and chunk come)
        self.counts = {"commands": 0, "transitions": 0, "start_wait": 0, "hold_stale": 0, "hold_no_action": 0,
                       "hold_model": 0,
                       "clamped": 0, "weights_adopted": 0, "weights_rejected": 0, "inputs_rejected": 0,
                       "hold_robot_state": 0, "episodes_given_up": 0, "ticks_late": 0,
                       "ticks_off_grid": 0, "sent_late": 0, "inputs_behind": 0,
                       "gripper_goal_late": 0}
        #: the robot's last reported mode (None: none received yet)
        self.robot: RobotStatus | None = None
        self.robot_state_received = -float("inf")  # [s, node clock]
        #: publish stamp -> verified / -> swapped in, of the last adopted weights [ms, node clock]
        self.weights_timing: dict[str, float] = {"verified_ms": float("nan"), "swapped_ms": float("nan")}
        self.last_problem = ""
        self.log = RateLimitedLog(self, cfg["error_log_period"])

        t = topics
        arm = t.ARM_COMMAND if cmd_type is t.ARM_COMMAND.type else t.ARM_TRAJECTORY
        self.cmd_pub = self.create_publisher(cmd_type, cfg["command_topic"], arm.qos)
        self.gripper = GripperCommander(GripperConfig(
            hysteresis=cfg["gripper_hysteresis"], speed=cfg["gripper_speed"], force=cfg["gripper_force"],
            epsilon_inner=cfg["gripper_epsilon_inner"], epsilon_outer=cfg["gripper_epsilon_outer"],
            goal_timeout=cfg["gripper_goal_timeout"]))
        self.gripper_lock = threading.Lock()  # the tick and the action callbacks run on two threads
        self.finger_width: float | None = None  # [m] measured, from the finger joints of joint_states
        gripper_ns = cfg["gripper_namespace"].rstrip("/")
        self.gripper_action_names = {kind: gripper_ns + "/" + action.name.rsplit("/", 1)[1]
                                     for kind, action in GRIPPER_ACTIONS.items()}
        self.gripper_clients = {kind: ActionClient(self, GRIPPER_ACTIONS[kind].type, name,
                                                   callback_group=MutuallyExclusiveCallbackGroup())
                                for kind, name in self.gripper_action_names.items()}
        self.stopped_episode = -1
        self.stopped_pub = self.create_publisher(t.POLICY_STOPPED.type, cfg["stopped_topic"], t.POLICY_STOPPED.qos)
        self.transition_pub = self.create_publisher(t.TRANSITIONS.type, cfg["transition_topic"],
                                                    t.TRANSITIONS.profile(int(cfg["transition_queue_depth"])))
        self.marker_pub = self.create_publisher(t.PREDICTED_PATH.type, cfg["marker_topic"], t.PREDICTED_PATH.qos)
        self.diag_pub = self.create_publisher(t.DIAGNOSTICS.type, t.DIAGNOSTICS.name, t.DIAGNOSTICS.qos)
        # inputs run beside the control tick (two executor threads), so a tick
        # on sim time can wait for the inputs of its own instant. rclpy's multi-threaded executor spins (holding
        # the GIL, starving the tick and the inference thread) while a ready message waits for its busy group, so
        # the long callbacks (weights: verification) and the ones published together with the joint states
        # (robot state) have groups of their own; the tick shares its group only with the episode events, which
        # reset what it uses
        inputs = MutuallyExclusiveCallbackGroup()
        self.create_subscription(t.JOINT_STATES.type, cfg["joint_states_topic"], self._on_joint_states,
                                 t.JOINT_STATES.qos, callback_group=inputs)
        for cam, topic in zip(self.cameras, cfg["image_topics"]):
            self.create_subscription(t.POLICY_IMAGE.type, topic, lambda m, c=cam: self._on_image(c, m),
                                     t.POLICY_IMAGE.qos, callback_group=inputs)
        if "task_state" in pcfg.lowdim_keys:
            self.create_subscription(t.TASK_STATE.type, cfg["task_state_topic"], self._on_task_state,
                                     t.TASK_STATE.qos, callback_group=inputs)
        self.create_subscription(t.WEIGHTS.type, cfg["weights_topic"], self._on_weights, t.WEIGHTS.qos,
                                 callback_group=MutuallyExclusiveCallbackGroup())
        if cfg["robot_state_topic"]:
            self.create_subscription(t.ROBOT_STATE.type, cfg["robot_state_topic"], self._on_robot_state,
                                     t.ROBOT_STATE.qos, callback_group=MutuallyExclusiveCallbackGroup())
        self.create_subscription(t.EPISODE_EVENTS.type, cfg["episode_event_topic"], self._on_event,
                                 t.EPISODE_EVENTS.qos)
        self.create_timer(self.dt, self._tick)
        self.create_timer(cfg["diagnostics_period"], self._publish_diagnostics, clock=rclpy.clock.Clock(),
                          callback_group=MutuallyExclusiveCallbackGroup())
        self.get_logger().info(
            f"policy ready: {cfg['checkpoint']} arch {self.policy.arch_id} cameras={list(self.cameras)} "
            f"lowdim={list(pcfg.lowdim_keys)} T_o={pcfg.obs_horizon} T_p={pcfg.pred_horizon} T_a={pcfg.action_horizon} "
            f"K={pcfg.sampling.inference_steps} K'={pcfg.sampling.finetune_steps} at {cfg['control_rate']} Hz, "
            f"commands as {cfg['command_type']} on {cfg['command_topic']}, "
            + (f"selecting among {self.selector.cfg.num_candidates} proposals by the learner's critic"
               if self.selector else f"DPPO ({'stochastic' if cfg['stochastic'] else 'deterministic'} sampling)"))

    # ------------------------------------------------------------ logging
    def _problem(self, key: str, text: str) -> None:
        self.last_problem = text
        self.log.error(key, text)

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # ------------------------------------------------------------ inputs
    def _on_joint_states(self, msg: JointState) -> None:
        names = list(msg.name)
        if all(n in names for n in fr3.FINGER_JOINT_NAMES) and len(msg.position) == len(names):
            self.finger_width = float(sum(msg.position[names.index(n)] for n in fr3.FINGER_JOINT_NAMES))
        try:
            self.assembler.set_joint_state(msg.name, msg.position, msg.velocity, seconds(msg.header.stamp))
        except ValueError as exc:
            self.counts["inputs_rejected"] += 1
            self._problem("joints", f"{self.cfg['joint_states_topic']} refused: {exc}")

    def _on_robot_state(self, msg) -> None:
        try:
            self.robot = read_robot_state(msg)
            self.robot_state_received = self._now()
        except ValueError as exc:
            self.counts["inputs_rejected"] += 1
            self._problem("robot_state", f"{self.cfg['robot_state_topic']} refused: {exc}")

    def _robot_ready(self) -> bool:
        """False (and the episode given up, or a hold counted) unless the robot is known to be in move mode."""
        if not self.cfg["robot_state_topic"]:
            return True
        robot = self.robot
        if robot is not None and not robot.executing:
            self.counts["episodes_given_up"] += 1
            self.get_logger().warning(f"robot {robot.describe()}: episode {self.episode} given up, its commands "
                                      f"would not execute; acting again at the next episode")
            given_up, self.episode = self.episode, None
            self.planning.reset(-1)
            self.safety = SafetyFilter(self.safety.config)
            self._stopped(given_up)
            return False
        if robot is None or self._now() - self.robot_state_received > self.cfg["max_age"]:
            self.counts["hold_robot_state"] += 1
            text = ("no robot state received yet" if robot is None else
                    f"robot state {self._now() - self.robot_state_received:.3f} s old (max_age {self.cfg['max_age']})")
            # nothing is sent: without a current robot state the controller may be inactive (franka_ros2
            # deactivates it with the broadcaster on an error), and a hold arriving after its re-activation
            # would start from where the arm was before it stopped
            self.get_logger().info(f"not commanding: {text}", throttle_duration_sec=1.0)
            return False
        return True

    def _on_image(self, camera: str, msg: Image) -> None:
        try:
            if msg.encoding != "rgb8":
                raise ValueError(f"encoding: got {msg.encoding!r}; expected 'rgb8' (camera_node's output)")
            self.assembler.set_image(camera, imgmsg_to_array(msg), seconds(msg.header.stamp))
        except ValueError as exc:
            self.counts["inputs_rejected"] += 1
            self._problem(f"image:{camera}", f"image for camera {camera!r} refused: {exc}")

    def _on_task_state(self, msg: TaskState) -> None:
        try:
            self.assembler.set_task_state(msg.values, seconds(msg.header.stamp))
        except ValueError as exc:
            self.counts["inputs_rejected"] += 1
            self._problem("task_state", f"{self.cfg['task_state_topic']} refused: {exc}")

    def _on_weights(self, msg: PolicyWeights) -> None:
        version = self.planner.version
        try:
            version = self.planner.version
            if msg.version == version and self.running_sha256 in (None, msg.sha256):
                # a fresh learner's version 0 (= this checkpoint) or a restarted one re-announcing its latest
                self.get_logger().debug(f"weights version {msg.version} already running; nothing to do")
                return
            if msg.version <= version:
                raise WireError("version", f"got {msg.version} (sha256 {msg.sha256[:12]}); expected a version newer "
                                           f"than the one running, {version} (sha256 "
                                           f"{(self.running_sha256 or 'of the checkpoint')[:12]})")
            has_ft = self.policy.ft_net is not None or self.selector is not None
            weights = verify_weights(msg, architecture_id=self.weights_arch_id, expected_shapes=self.ft_shapes,
                                     finetune_steps=self.policy.cfg.sampling.finetune_steps
                                     if self.policy.ft_net is not None else None)
            if not has_ft and weights.finetune_steps is None:
                raise WireError("payload", "no finetune_steps in the metadata: for how many of the last denoising "
                                           "steps are these weights? (this policy has no fine-tuned network yet)")
        except WireError as exc:
            self.counts["weights_rejected"] += 1
            self._problem("weights", f"weights version {msg.version} refused, keeping version {version}: {exc}")
            return
        sent = seconds(msg.header.stamp)
        self.weights_timing["verified_ms"] = (self._now() - sent) * 1e3
        self.staged[weights.version] = (sent, weights.sha256)
        self.planner.stage_weights(weights.tensors, weights.version, weights.finetune_steps)
        self.get_logger().info(f"weights version {msg.version} verified; swapping in at the next chunk")

    def _on_swap(self, version: int, error: Exception | None) -> None:
        """Called by the planner between chunks, after it tried to swap in staged weights."""
        sent, sha256 = self.staged.pop(version, (float("nan"), None))
        if error is not None:
            self.counts["weights_rejected"] += 1
            self._problem("weights", f"weights version {version} failed to load, keeping {self.planner.version}: "
                                     f"{error}")
            return
        self.running_sha256 = sha256
        self.weights_timing["swapped_ms"] = (self._now() - sent) * 1e3
        self.counts["weights_adopted"] += 1
        self.get_logger().info(f"now running policy version {version}")

    def _on_event(self, msg: EpisodeEvent) -> None:
        if msg.event == EpisodeEvent.START:
            if self.episode is not None and msg.episode <= self.episode:
                return  # a replayed (transient-local) event of an episode already seen
            self.episode, self.step = int(msg.episode), 0
            self.planning.reset(self.episode)
            self.safety = SafetyFilter(self.safety.config)
            with self.gripper_lock:
                self.gripper.reset()
            #: the filter is seeded only from a joint state measured after the reset that began this episode
            self.episode_started = seconds(msg.header.stamp)
            self.get_logger().info(f"episode {msg.episode}: acting")
        elif msg.event in ENDS:
            if self.episode == msg.episode:
                self.episode = None
                self.planning.reset(-1)
            self._stopped(int(msg.episode))

    def _stopped(self, episode: int) -> None:
        """Tell reward_node that nothing more is commanded for ``episode``: the reset may move the arm."""
        if episode > self.stopped_episode:
            self.stopped_episode = episode
            self.stopped_pub.publish(Int64(data=episode))

    # ------------------------------------------------------------ control
    def _tick(self) -> None:
        """One control period: the decisions are :class:`ControlTick`'s; this sends, publishes and counts."""
        if self.episode is None:
            self.planning.poll()
            return
        if not self._robot_ready():
            return
        tick, now = self.ticker, self._now()
        tick.sim_time = self._sim_time()
        if (verdict := tick.on_grid(now)) is not None:
            return self._end_tick(verdict)
        seen = tick.observe(self.assembler, now)
        if isinstance(seen, Verdict):
            return self._end_tick(seen)
        obs, stamp, behind = seen
        self.counts["inputs_behind"] += behind
        if not self.safety.initialized:
            if (verdict := tick.seedable(self.assembler.inputs["joints"].stamp, self.episode_started)) is not None:
                return self._end_tick(verdict)
            q, settle = filter_seed(obs["qpos"], self.robot, self.episode_started)
            self.safety.reset(q, now, settle=settle)
        item = self.planning.tick(obs, stamp, tick.inference_wait())  # on sim time waiting costs no robot time
        failure = self.planning.take_failure()
        if failure is not None:
            self.counts["hold_model"] += 1
            self._problem("model", f"inference failed, holding: {failure!r}")
        verdict = tick.after_planning(item, now, self._now(), self.planning.in_flight, self.planning.flight_started)
        if verdict is not None:
            return self._end_tick(verdict)
        action, chunk, k = item
        if k == 0:
            self._publish_markers(chunk)
        stamp = tick.send_stamp(self._now())
        try:
            res = self.safety.filter(action[:7], float(action[7]), stamp)
        except ValueError as exc:
            return self._end_tick(Verdict(HOLD, "hold_model", f"policy action refused, holding: {exc}", "action"))
        verdict = tick.release(stamp, self._now, res.trajectory is not None,
                               f", action {k} of chunk {chunk.index} not executed")
        if verdict is not None:
            self.safety.unsent()  # the committed trajectory plays on (it ends at rest)
            return self._end_tick(verdict)
        self._send(res)
        self.counts["clamped"] += res.clamped
        step = ExecutedStep(self.episode, self.step, chunk.index, k, chunk.version,
                            np.append(res.q, res.gripper_width), bool(res.clamped))
        tr = transition_message(step, chunk.decision if k == 0 else None)
        tr.header.stamp = self.get_clock().now().to_msg()
        self.transition_pub.publish(tr)
        self.counts["transitions"] += 1
        self.step += 1

    def _end_tick(self, verdict: Verdict) -> None:
        """Count and log a tick that sends no fresh action, and send the hold if that is the verdict."""
        # a missed tick once the episode has moved, else a start wait (its first inputs and chunk are coming)
        self.counts[verdict.count if not verdict.missed or self.step > 0 else "start_wait"] += 1
        if verdict.problem is not None:
            self._problem(verdict.problem, verdict.text)
        elif verdict.text:
            self.log.info(verdict.count, verdict.text, period=INFO_PERIOD)
        if verdict.action == HOLD:
            self._hold()

    def _sim_time(self) -> bool:
        return bool(self.get_parameter("use_sim_time").value)

    def _hold(self) -> None:
        """Brake to the last command; before the first command, hold the measured joint positions."""
        now = self._now()
        if not self.safety.initialized:
            joints = self.assembler.inputs.get("joints")
            if joints is None:
                return  # nothing known about the arm: send nothing, its controller keeps its target
            q, settle = filter_seed(joints.value["qpos"], self.robot, self.episode_started)
            self.safety.reset(q, now, settle=settle)
        self._send(self.safety.hold(now))

    def _send(self, res) -> None:
        # the gripper goal first: on sim time the lock-step simulator advances the period once the arm's
        # trajectory is there, and a goal accepted before it moves the hand in that period, as the arm
        if np.isfinite(res.gripper_width):
            self._command_gripper(float(res.gripper_width))
        if res.trajectory is not None:  # None: settling after a reset, the controller glides on its own
            self.cmd_pub.publish(joint_command(res, self.cfg["command_type"]))
        self.counts["commands"] += 1

    # ------------------------------------------------------------ gripper
    def _command_gripper(self, width: float) -> None:
        """Send a franka_gripper goal for ``width`` [m] if the commander says one is due (one at a time)."""
        with self.gripper_lock:
            previous = self.gripper.last_goal
            goal = self.gripper.request(width, self._now(), self.finger_width)
            if goal is None:
                return
            client = self.gripper_clients[goal.kind]
            if not client.server_is_ready():
                self.gripper.unsent(previous)
                self._problem("gripper", f"gripper action {self.gripper_action_names[goal.kind]} not available; "
                                         f"{goal.kind} to {goal.width:.4f} m not sent (is franka_gripper running?)")
                return
        future = client.send_goal_async(gripper_goal_message(goal))
        future.add_done_callback(lambda f, g=goal: self._on_gripper_accepted(g, f))
        if self._sim_time():
            # lock-step: the hand starts when the simulator accepts the goal; the tick's trajectory, which lets
            # the simulator step the period, goes out only after that (waiting costs no sim time)
            answered = threading.Event()
            future.add_done_callback(lambda _f: answered.set())
            if not answered.wait(self.cfg["input_wait"]):
                self.counts["gripper_goal_late"] += 1

    def _on_gripper_accepted(self, goal, future) -> None:
        handle = future.result()
        if handle is None or not handle.accepted:
            with self.gripper_lock:
                self.gripper.done(False)
            self._problem("gripper", f"gripper {goal.kind} to {goal.width:.4f} m refused by the server")
            return
        handle.get_result_async().add_done_callback(lambda f, g=goal: self._on_gripper_result(g, f))

    def _on_gripper_result(self, goal, future) -> None:
        answer = future.result()
        success = answer is not None and answer.status == GoalStatus.STATUS_SUCCEEDED and answer.result.success
        with self.gripper_lock:
            self.gripper.done(success)
        if not success:
            error = getattr(getattr(answer, "result", None), "error", "") or "no result"
            # a grasp that closes on nothing fails by design; worth a line, not an alarm
            self.get_logger().info(f"gripper {goal.kind} to {goal.width:.4f} m did not succeed: {error}",
                                   throttle_duration_sec=5.0)

    # ------------------------------------------------------------ outputs
    def _publish_markers(self, chunk: Chunk) -> None:
        if chunk.predicted is None:
            return
        m = Marker()
        m.header.frame_id = "fr3_link0"
        m.header.stamp = self.get_clock().now().to_msg()
        m.ns, m.id, m.type, m.action = "predicted_tcp_path", 0, Marker.LINE_STRIP, Marker.ADD
        m.scale.x = 0.005
        m.color.r, m.color.g, m.color.b, m.color.a = 0.1, 0.8, 0.2, 1.0
        m.pose.orientation.w = 1.0
        for q in chunk.predicted[:, :7]:
            p = fr3.forward_kinematics(np.clip(q, fr3.Q_MIN, fr3.Q_MAX))[:3, 3]
            m.points.append(Point(x=float(p[0]), y=float(p[1]), z=float(p[2])))
        self.marker_pub.publish(MarkerArray(markers=[m]))

    def destroy_node(self) -> None:
        self.planning.close()  # never leave torch running under interpreter teardown
        super().destroy_node()

    def _publish_diagnostics(self) -> None:
        lat = np.array(self.planner.latencies) * 1e3 if self.planner.latencies else np.zeros(1)
        holds = (self.counts["hold_stale"] + self.counts["hold_no_action"] + self.counts["hold_model"]
                 + self.counts["hold_robot_state"])
        level, message = DiagnosticStatus.OK, f"version {self.planner.version}, " + ("acting" if self.episode is not None else "idle")
        if self.last_problem:
            level, message = DiagnosticStatus.WARN, f"{message}; last problem: {self.last_problem}"
        values = {**self.counts, **{f"gripper_{k}": v for k, v in self.gripper.counts.items()},
                  "policy_version": self.planner.version, "episode": self.episode, "step": self.step,
                  "holds": holds, "inference_ms_p50": f"{np.percentile(lat, 50):.1f}",
                  "inference_ms_p99": f"{np.percentile(lat, 99):.1f}",
                  **{f"weights_{k}": f"{v:.1f}" for k, v in self.weights_timing.items()}}
        publish_diagnostics(self, self.diag_pub, "policy_node: diffusion policy", self.policy.arch_id, level, message,
                            values)


def main(argv: list[str] | None = None) -> int:
    # inputs run beside the control tick: two executor threads
    return run_node(PolicyNode, argv, threads=2)

if __name__ == "__main__":
    sys.exit(main())
