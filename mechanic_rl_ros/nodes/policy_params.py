"""policy_node's parameters: what each one means (``ros2 param describe policy_node <name>``), its default and
range, and how they become the ROS-free configurations of the safety filter, the gripper commander and the
control tick. config/policy_node.yaml sets the values; the descriptions live here, beside the code that reads
them."""
from __future__ import annotations

from mechanic_rl_ros.control.gripper import GripperConfig
from mechanic_rl_ros.control.safety import SafetyConfig
from mechanic_rl_ros.control.teleop import TeleopConfig
from mechanic_rl_ros.control.tick import TickConfig
from mechanic_rl_ros.nodes.common import COMMAND_TYPES, REALTIME_PARAM, Param
from mechanic_rl_ros.wire import topics

#: every parameter, with what it means (``ros2 param describe policy_node <name>``); config/policy_node.yaml sets them
PARAMETERS = [
    Param("checkpoint", "", "policy checkpoint directory (model.safetensors + config.json, from 'mechanic-rl "
          "pretrain'); required, the launch sets it"),
    Param("algorithm", "select", "select = the frozen policy proposes select_config's N chunks per decision and "
          "the learner's critic (PolicyWeights) picks one; dppo = one chunk per decision from the fine-tuned "
          "network (PolicyWeights), sampled as 'stochastic' says; distill = one deterministic DDIM chunk per "
          "decision from the policy whose trained layers (distill_config's train_params) the learner publishes; "
          "must match learner_node's", choices=("select", "dppo", "distill")),
    Param("distill_config", "", "algorithm distill: YAML of the distillation settings (which layers cross the "
          "wire) and/or key=value overrides, shared with learner_node; '' = config/distill.yaml"),
    Param("select_config", "", "algorithm select: YAML of the selection settings (N, critic size), shared with "
          "learner_node; '' = config/select.yaml"),
    Param("stochastic", True, "algorithm dppo: true = sample the denoising chain (DPPO exploration; its log-probabilities go to the "
          "learner); false = deterministic DDIM"),
    Param("noise_clip", 3.0, "clip each denoising step's N(0, I) draw to +-this many standard deviations (DPPO "
          "randn_clip_value 3; as config/rl.yaml); 0 = off", range=(0.0, None)),
    Param("seed", 0, "seed of the sampling noise", range=(0, None)),
    Param("torch_threads", 1, "CPU threads torch uses for inference", range=(1, None)),
    Param("inference_niceness", 10, "inference (its thread, or its process with inference_process) runs this much "
          "nicer than the control tick (Linux niceness; 0 leaves it equal): a diffusion sample may take the CPU, "
          "the 10 Hz tick must not wait for it", range=(0, 19)),
    Param("inference_process", True, "on the wall clock (not on sim time) plan in a child process: the denoiser "
          "never holds the interpreter lock the control tick needs; false plans on a thread of the node"),
    Param("control_rate", 10.0, "[Hz] commands per second, one action of the chunk each", range=(0.1, 1000.0)),
    Param("replan_margin", 2, "[actions] start the next chunk's inference when this many actions of the current one "
          "remain; that chunk then executes the actions predicted for the instants it runs at "
          "(0 .. T_p - T_o + 1 - T_a, 7 for the default policy; checked against the checkpoint at start)",
          range=(0, None)),
    Param("adaptive_replan_margin", True, "on the wall clock (not on sim time) the margin grows beyond "
          "replan_margin to cover the inference time measured here (95th percentile of the last 50 chunks plus a "
          "quarter period), up to the policy's largest lead: a slow or loaded machine plans earlier instead of "
          "holding the arm for want of a chunk"),
    Param("chunk_tail", True, "on the wall clock (not on sim time), when the next chunk is late the arm runs on "
          "with the current chunk's predicted actions past its T_a (the instants after it, T_p - T_o + 1 - T_a - "
          "margin of them) instead of holding; counted in ticks_on_tail; false holds at once (hold_no_action)"),
    Param("max_age", 0.3, "[s] an observation input (image, joint state) older than this on the node's clock is "
          "stale: the arm holds instead of acting on it", range=(0.001, None)),
    Param("max_skew", 0.15, "[s] largest stamp difference between the inputs of one observation", range=(0.0, None)),
    Param("inference_timeout", 2.0, "[wall s] a chunk later than this counts as a dead model (logged; the arm holds)",
          range=(0.001, None)),
    Param("wait_for_inference", True, "on sim time only: wait for a late chunk instead of holding (waiting costs no "
          "sim time)"),
    Param("input_wait", 0.8, "[wall s] on sim time only: how long a control tick waits for the inputs of its own "
          "instant (each input's next sample at the rate it arrives, up to the tick's instant: the lock-step "
          "simulator sends the clock first), so the observation pairs a frame with the joint state of its instant "
          "as in training; after the wait it acts on the latest (counted in inputs_behind)", range=(0.0, None)),
    Param("image_topics", [topics.POLICY_IMAGE.name], "preprocessed rgb8 images (camera_node's output), one "
          "topic per policy camera, in the checkpoint's camera order"),
    Param("joint_states_topic", topics.JOINT_STATES.name, "sensor_msgs/JointState of the arm and gripper; joints are "
          "matched by name"),
    Param("stopped_topic", topics.POLICY_STOPPED.name, "std_msgs/Int64 (latched): the last episode this node has "
          "stopped commanding in, published when its end (or a robot fault) stops it; reward_node resets after it"),
    Param("start_after_updates", 0, "before the first episode, hold the arm until weights the learner made with at "
          "least this many gradient steps are verified (its offline stage on the demonstrations: the launch sets "
          "distill_config's offline_steps when there are demonstrations), then say so on stopped_topic (-1); 0 = "
          "ready at once", range=(0, None)),
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
    Param("delivery_budget", 0.075, "[s] on the wall clock (not on sim time) each trajectory is stamped when the "
          "safety filter starts on it, sent as soon as it is made, and repeats the committed trajectory for "
          "delivery_budget + safety_switch_lead after its stamp: the filter's computation, the process's other "
          "threads and DDS delivery may take that long before the controller reads it without any change in the "
          "commands. A message ready more than delivery_budget + half the switch_lead after its stamp is not sent "
          "(counted in sent_late); the committed trajectory plays on. The sum must stay below one control period",
          range=(0.0, 0.09)),
    Param("workspace_min", [0.2, -0.4, 0.0], "[m] x, y, z lower corner of the box the TCP must stay in, in "
          "fr3_link0; z is the table top"),
    Param("workspace_max", [0.8, 0.4, 0.7], "[m] x, y, z upper corner of the box the TCP must stay in, in "
          "fr3_link0"),
    Param("error_log_period", 1.0, "[s] least time between two logged errors of one kind (the rest are only "
          "counted); 0 logs every one", range=(0.0, None)),
    Param("diagnostics_period", 1.0, "[wall s] period of /diagnostics", range=(0.01, None)),
    Param("teleop", True, "listen to teleop_twist_topic / teleop_joy_topic: a person (SpaceMouse via spacenav, a "
          "gamepad via joy + teleop_twist_joy) or the simulated operator takes over by moving or pressing a gripper "
          "button, and hands back after teleop_release without either (control/teleop.py)"),
    Param("teleop_twist_topic", topics.TELEOP_TWIST.name, "geometry_msgs/Twist in device units, base frame fr3_link0"),
    Param("teleop_joy_topic", topics.TELEOP_JOY.name, "sensor_msgs/Joy: the gripper buttons"),
    Param("teleop_linear_scale", 0.15, "[m/s per device unit] TCP speed of a full deflection", range=(0.001, 1.0)),
    Param("teleop_angular_scale", 0.8, "[rad/s per device unit]", range=(0.001, 5.0)),
    Param("teleop_max_linear_speed", 0.15, "[m/s] a faster Twist is scaled down to this (counted in "
          "teleop_clamped); the safety filter's limits apply after it", range=(0.001, 1.0)),
    Param("teleop_max_angular_speed", 0.8, "[rad/s]", range=(0.001, 5.0)),
    Param("teleop_deadband", 0.05, "[device units] Twist components below this count as zero (a device at rest "
          "drifts)", range=(0.0, 0.99)),
    Param("teleop_release", 0.5, "[s] without motion or a gripper button before the policy takes over again, with "
          "a fresh chunk", range=(0.01, 10.0)),
    Param("teleop_timeout", 0.5, "[s] no Twist or Joy for this long while the operator is active: the stream is "
          "lost (a device unplugged): the arm holds and the episode is given up (reward_node aborts it)", range=(0.01, 10.0)),
    Param("teleop_close_button", 0, "Joy button index that closes the gripper (SpaceMouse: left)", range=(0, 31)),
    Param("teleop_open_button", 1, "Joy button index that opens the gripper (SpaceMouse: right)", range=(0, 31)),
    REALTIME_PARAM,
]


def safety_config(cfg: dict, control_dt: float) -> SafetyConfig:
    """The safety filter's limits from the safety_* and workspace_* parameters."""
    return SafetyConfig(
        control_dt=control_dt, position_margin=cfg["safety_position_margin"],
        velocity_scale=cfg["safety_velocity_scale"], acceleration_scale=cfg["safety_acceleration_scale"],
        jerk_scale=cfg["safety_jerk_scale"], tcp_speed_max=cfg["safety_tcp_speed_max"],
        table_clearance=cfg["safety_table_clearance"], switch_lead=cfg["safety_switch_lead"],
        workspace_min=tuple(cfg["workspace_min"]), workspace_max=tuple(cfg["workspace_max"]))


def gripper_config(cfg: dict) -> GripperConfig:
    """The gripper commander's goals from the gripper_* parameters."""
    return GripperConfig(
        hysteresis=cfg["gripper_hysteresis"], speed=cfg["gripper_speed"], force=cfg["gripper_force"],
        epsilon_inner=cfg["gripper_epsilon_inner"], epsilon_outer=cfg["gripper_epsilon_outer"],
        goal_timeout=cfg["gripper_goal_timeout"])


def teleop_config(cfg: dict) -> TeleopConfig:
    """The operator's device mapping from the teleop_* parameters."""
    return TeleopConfig(
        linear_scale=cfg["teleop_linear_scale"], angular_scale=cfg["teleop_angular_scale"],
        max_linear_speed=cfg["teleop_max_linear_speed"], max_angular_speed=cfg["teleop_max_angular_speed"],
        deadband=cfg["teleop_deadband"], release=cfg["teleop_release"], timeout=cfg["teleop_timeout"],
        close_button=int(cfg["teleop_close_button"]), open_button=int(cfg["teleop_open_button"]))


def tick_config(cfg: dict, control_dt: float) -> TickConfig:
    """The control tick's waits and delays."""
    return TickConfig(control_dt=control_dt, input_wait=cfg["input_wait"], inference_timeout=cfg["inference_timeout"],
                      wait_for_inference=bool(cfg["wait_for_inference"]),
                      delivery_budget=cfg["delivery_budget"],
                      switch_lead=cfg["safety_switch_lead"])
