"""sim_node's parameters: what each one means (``ros2 param describe sim_node <name>``), its default and range,
and the robot server's configuration they make. config/sim.yaml sets the values; the descriptions live here,
beside the code that reads them."""
from __future__ import annotations

from mechanic_rl_ros.nodes.common import REALTIME_PARAM, Param
from mechanic_rl_ros.sim.env import REWARD_TYPES
from mechanic_rl_ros.sim.fr3_sim import CAMERAS
from mechanic_rl_ros.sim.server import MODES, ServerConfig
from mechanic_rl_ros.sim.tasks import TASKS
from mechanic_rl_ros.sim.world import DEFAULT_SPEC
from mechanic_rl_ros.wire import topics

#: every parameter, with what it means (``ros2 param describe sim_node <name>``); config/sim.yaml sets them
PARAMETERS = [
    Param("task", "lift", "simulated task", choices=tuple(sorted(TASKS))),
    Param("seed", 0, "seed of the first episode's randomisation (a reset may pass its own)", range=(0, None)),
    Param("world", DEFAULT_SPEC, "scene variation (docs/world.md): default = the training scene; a preset of "
          "config/worlds/ (e.g. camera_shift_2cm, dim_light, heavy_cube, distractors), the path of a world YAML "
          "file, and/or field=value overrides separated by spaces (e.g. 'dim_light cube_mass=0.3'); a bad value "
          "stops the node at start with the field and its range"),
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
    REALTIME_PARAM,
]


def server_config(cfg: dict) -> ServerConfig:
    """The robot server's clock mode, rates, controller and gripper timeout, and the names its messages use."""
    return ServerConfig(
        mode=cfg["mode"], real_time_factor=cfg["real_time_factor"], publish_rate=cfg["publish_rate"],
        camera_rate=cfg["camera_rate"], image_height=cfg["image_height"], image_width=cfg["image_width"],
        arm_controller=cfg["arm_controller"], lockstep_idle_timeout=cfg["lockstep_idle_timeout"],
        gripper_goal_timeout=cfg["gripper_goal_timeout"], trajectory_source=cfg["trajectory_topic"],
        command_source=cfg["command_topic"], recovery_action=cfg["error_recovery_action"])
