"""Every topic and service the stack uses: default name, type and QoS, stated once.

Nodes take topic *names* as parameters (so a real robot's drivers can be
remapped), but the message type and the QoS of a topic are properties of the
topic and live here only; publisher and subscribers use the same profile.

QoS, and why:

* :data:`SENSOR` -- every *subscription* to joint states: best effort,
  volatile, keep last 1; a late sample is worth nothing, so it is never
  waited for. A best-effort reader matches reliable and best-effort writers
  alike.
* :data:`DRIVER` -- what the simulator *publishes* in place of the robot's and
  the camera's drivers, with their QoS: reliable, volatile, keep last 1 for
  camera frames (usb_cam publishes reliable keep-last 100, realsense2_camera
  SYSTEM_DEFAULT, which Fast DDS makes reliable keep-last 1), and
  :data:`JOINT_STATE_PUBLISHER` reliable keep-last 10 for ``/joint_states``
  (joint_state_broadcaster's ``SystemDefaultsQoS``), so a subscriber with
  ROS's default QoS (reliable) hears the simulator as it hears the robot.
  camera_node reads the raw frames with the QoS of its parameters (reliable by
  default: large frames are fragmented, and a reliable reader gets lost
  fragments resent). camera_node's output, the policy's frames, has this QoS
  too: keep last 1 never queues an old frame, and a frame lost on a loaded
  machine is resent instead of leaving the policy the frame of the period
  before (on sim time a control tick waits for its instant's frame).
* :data:`COMMAND` -- arm commands, task state: reliable, depth 10. The
  gripper is commanded through franka_gripper's actions (:class:`Action`).
* :data:`LATCHED` -- policy weights: reliable, transient local, depth 1; a
  restarted policy gets the newest weights at once.
* :data:`EVENTS` -- episode events: reliable, transient local, depth 50.
* :func:`history` -- transitions and step rewards: reliable, transient local
  with a bounded depth (a parameter of the publishing node); a restarted
  learner gets the recent history replayed and de-duplicates it by
  (episode, step). What falls out of the depth is lost to a restarted learner
  and shows in its counters.
* :data:`MONITOR` -- statistics, diagnostics, RViz markers, the clock: reliable, depth 50.
"""
from __future__ import annotations

from dataclasses import dataclass

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState, Joy
from std_msgs.msg import Float64MultiArray, Int64, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory
from visualization_msgs.msg import MarkerArray

from control_msgs.action import GripperCommand
from controller_manager_msgs.srv import SetHardwareComponentState, SwitchController
from franka_msgs.action import ErrorRecovery, Grasp, Homing, Move
from franka_msgs.msg import FrankaRobotState

from mechanic_rl_ros.msg import EpisodeEvent, LearnerStats, PolicyWeights, StepReward, TaskState, Transition
from mechanic_rl_ros.srv import ResetEpisode

SENSOR = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                    durability=DurabilityPolicy.VOLATILE)
DRIVER = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.VOLATILE)
JOINT_STATE_PUBLISHER = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                                   reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
COMMAND = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
EVENTS = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
MONITOR = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)


def history(depth: int) -> QoSProfile:
    """Reliable, transient local, keep the last ``depth`` samples (see the module docstring)."""
    if int(depth) < 1:
        raise ValueError(f"history depth: got {depth}; expected >= 1")
    return QoSProfile(depth=int(depth), reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


@dataclass(frozen=True)
class Topic:
    """A topic's default name, message type and QoS (``qos`` is None where the depth is a parameter).

    ``qos`` is what the stack's subscribers (and, unless ``publisher_qos`` is
    given, its publishers) use. ``publisher_qos`` is set where the stack
    publishes as a driver does (the simulator's joint states and camera
    frames): the subscribers' profile is then chosen to match both the
    simulator and the real driver.
    """

    name: str
    type: type
    qos: QoSProfile | None
    publisher_qos: QoSProfile | None = None

    @property
    def publisher(self) -> QoSProfile | None:
        """The QoS a publisher of this topic uses."""
        return self.publisher_qos if self.publisher_qos is not None else self.qos

    def profile(self, depth: int | None = None) -> QoSProfile:
        """The QoS; for a :func:`history` topic the node's configured ``depth``."""
        if self.qos is not None:
            return self.qos
        if depth is None:
            raise ValueError(f"topic {self.name}: its history depth is a node parameter; pass depth")
        return history(depth)


JOINT_STATES = Topic("/joint_states", JointState, SENSOR, JOINT_STATE_PUBLISHER)
CAMERA_IMAGE = Topic("/camera/{camera}/image_raw", Image, DRIVER)   #: the simulator's cameras (format: camera=)
CAMERA_INFO = Topic("/camera/{camera}/camera_info", CameraInfo, DRIVER)
POLICY_IMAGE = Topic("/policy/camera/scene/image", Image, DRIVER)   #: camera_node's output, the policy's input
TASK_STATE = Topic("/sim/task_state", TaskState, COMMAND)
ARM_COMMAND = Topic("/fr3_position_controller/commands", Float64MultiArray, COMMAND)
#: the stack's arm command: a JointTrajectoryController on the FR3's position interface (config/franka_controllers.yaml)
ARM_TRAJECTORY = Topic("/fr3_position_trajectory_controller/joint_trajectory", JointTrajectory, COMMAND)
#: the robot's state as franka_robot_state_broadcaster publishes it (robot_mode, current_errors, measured joints);
#: it publishes with SystemDefaultsQoS (reliable, volatile, keep last 10) at the 1 kHz controller rate, the
#: simulator at its joint-state rate; the stack's subscribers keep the last 10 reliably
ROBOT_STATE = Topic("/franka_robot_state_broadcaster/robot_state", FrankaRobotState, COMMAND)
#: franka_gripper's joint states (the two finger joints, width / 2 each); it publishes them SensorDataQoS
GRIPPER_JOINT_STATES = Topic("/franka_gripper/joint_states", JointState, SENSOR)
TRANSITIONS = Topic("/learner/transitions", Transition, None)
STEP_REWARDS = Topic("/reward/step", StepReward, None)
EPISODE_EVENTS = Topic("/reward/events", EpisodeEvent, EVENTS)
WEIGHTS = Topic("/policy/weights", PolicyWeights, LATCHED)
LEARNER_STATS = Topic("/learner/stats", LearnerStats, MONITOR)
LEARNER_STATUS_TEXT = Topic("/learner/status_text", MarkerArray, MONITOR)
PREDICTED_PATH = Topic("/policy/predicted_path", MarkerArray, MONITOR)
OPERATOR_KEY = Topic("/operator/key", String, MONITOR)
#: a person's (or the simulated operator's) end-effector velocity and buttons: spacenav_node's topics (a gamepad
#: through joy_node + teleop_twist_joy remapped onto them); best-effort, so any device's QoS is heard
TELEOP_TWIST = Topic("/spacenav/twist", Twist, SENSOR)
TELEOP_JOY = Topic("/spacenav/joy", Joy, SENSOR)
#: policy_node -> reward_node: the last episode the policy has stopped commanding in; reward_node starts the next
#: reset (a simulator teleport, or its own home motion) only then, so no stale trajectory follows the reset
POLICY_STOPPED = Topic("/policy/stopped", Int64, LATCHED)
DIAGNOSTICS = Topic("/diagnostics", DiagnosticArray, MONITOR)
CLOCK = Topic("/clock", Clock, MONITOR)


@dataclass(frozen=True)
class Service:
    name: str
    type: type


RESET = Service("/sim/reset", ResetEpisode)


@dataclass(frozen=True)
class Action:
    """An action's default name and type (franka_gripper's, under its node namespace)."""

    name: str
    type: type


#: franka_gripper (franka_ros2) serves these under its node's name; a gripper node elsewhere is a parameter
GRIPPER_NAMESPACE = "/franka_gripper"
GRIPPER_MOVE = Action(GRIPPER_NAMESPACE + "/move", Move)
GRIPPER_GRASP = Action(GRIPPER_NAMESPACE + "/grasp", Grasp)
GRIPPER_HOMING = Action(GRIPPER_NAMESPACE + "/homing", Homing)
GRIPPER_ACTION = Action(GRIPPER_NAMESPACE + "/gripper_action", GripperCommand)

#: franka_hardware's error recovery (its ``action_server`` node; an empty goal clears a reflex)
ERROR_RECOVERY = Action("/action_server/error_recovery", ErrorRecovery)
#: controller_manager (ros2_control): after an error recovery, franka_ros2 >= 3.3 needs the hardware component
#: and the controllers activated again through these services
CONTROLLER_MANAGER = "/controller_manager"
SET_HARDWARE_STATE = Service(CONTROLLER_MANAGER + "/set_hardware_component_state", SetHardwareComponentState)
SWITCH_CONTROLLER = Service(CONTROLLER_MANAGER + "/switch_controller", SwitchController)
#: the simulator forces a reflex (tests; an operator rehearsing the recovery)
INJECT_REFLEX = Service("/sim/inject_reflex", Trigger)
