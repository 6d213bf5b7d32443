"""reward_node's parameters: what each one means (``ros2 param describe reward_node <name>``), its default and
range, and the home motion's safety filter they configure. config/reward.yaml sets the values; the
descriptions live here, beside the code that reads them."""
from __future__ import annotations

from mechanic_rl_ros.control.episodes import REWARD_KINDS
from mechanic_rl_ros.control.safety import SafetyConfig
from mechanic_rl_ros.nodes.common import COMMAND_TYPES, REALTIME_PARAM, Param
from mechanic_rl_ros.wire import topics

MODES = ("sim", "real")
RECOVERY = ("auto", "automatic", "operator")

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
    Param("max_episodes", 0, "stop starting episodes once this many have ended with an outcome (one aborted by a "
          "robot fault does not count: nothing of it is learned from); 0 = never stop", range=(0, None)),
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
    Param("wait_for_policy", False, "start no episode before policy_node says on policy_stopped_topic that it is "
          "ready (-1: it holds the first episode for the learner's offline stage, start_after_updates); the launch "
          "sets it"),
    Param("learner_pace", 0.0, "[gradient steps per robot minute] hold each episode's start (the arm at rest) "
          "until the learner has made this many gradient steps per robot minute since the first episode, while it "
          "still owes steps (control/pace.py): a simulated run then learns as much per robot minute on any machine, "
          "as a robot with a learner of that speed would; on the arm it makes the arm wait at home. 0 = never hold",
          range=(0.0, None)),
    Param("learner_stats_topic", topics.LEARNER_STATS.name, "mechanic_rl_ros/LearnerStats: the learner's gradient "
          "steps made and owed, for learner_pace"),
    Param("learner_pace_max_wait", 600.0, "[wall s] learner_pace holds one episode's start at most this long (a "
          "learner that stopped reporting does not stop the episodes)", range=(0.001, None)),
    Param("policy_stop_timeout", 2.0, "[wall s] a reset waits at most this long for policy_node's stop", range=(0.0, None)),
    Param("robot_state_topic", topics.ROBOT_STATE.name, "franka_msgs/FrankaRobotState from "
          "franka_robot_state_broadcaster; empty = do not watch the robot's mode (no reflex is then seen)"),
    Param("error_recovery_action", topics.ERROR_RECOVERY.name, "franka_hardware's franka_msgs/action/ErrorRecovery"),
    Param("recovery", "auto", "after a reflex: automatic = call the error-recovery action at once; operator = on the "
          "operator's 'recover' key; auto = automatic in sim mode, operator in real mode", choices=RECOVERY),
    Param("recovery_retry", 5.0, "[wall s] the least time between two automatic error recoveries: one that failed "
          "is tried again after this long, and a new reflex this soon after the last recovery waits for it (a robot "
          "that keeps reflexing is not re-activated in a tight loop)", range=(0.1, None)),
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
    REALTIME_PARAM,
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
