"""rosbag2-compatible MCAP episodes: embedded ROS 2 message definitions, an
episode writer and the ``metadata.yaml`` that ``ros2 bag info/play`` expect.

No ROS installation is needed: messages are CDR-serialised by ``mcap_ros2``
from the definitions below (the fields of the ROS 2 Jazzy interface files, in
the concatenated ``ros2msg`` schema format that rosbag2 itself writes: the main
definition, then each dependency after a line of 80 ``=`` and ``MSG: pkg/Type``).

Topics of a recorded episode: the names and types the ROS 2 stack uses on an
FR3 (franka_ros2 with ``load_gripper:=true``), so a bag recorded on the real
robot with ``ros2 bag record -s mcap`` of these topics loads the same way:

======================================================== ===========================================
``/camera/<cam>/image_raw``                              sensor_msgs/msg/Image, rgb8
``/joint_states``                                        sensor_msgs/msg/JointState (arm + fingers)
``/franka_gripper/joint_states``                         sensor_msgs/msg/JointState (2 finger joints)
``/fr3_position_trajectory_controller/joint_trajectory`` trajectory_msgs/msg/JointTrajectory
``/demo/gripper_width``                                  std_msgs/msg/Float64, commanded width [m]
``/sim/task_state``                                      mechanic_rl_ros/msg/TaskState
``/demo/episode``                                        std_msgs/msg/String, JSON (start / outcome)
======================================================== ===========================================

The arm command of a step is one JointTrajectory for the stack's
JointTrajectoryController: ``joint_names`` fr3_joint1..7, ``header.stamp`` 0
(the controller starts it when it receives it) and one point, the 7 joint
targets, with ``time_from_start`` one control period.

The gripper. franka_gripper takes its commands as action goals (``move``,
``grasp``), and rosbag2 on Jazzy records topics, not action goals, so a bag
cannot hold what the gripper was told unless someone publishes it. The
convention is therefore:

* **measured width**: ``/franka_gripper/joint_states``, the two finger joints
  as franka_gripper (and the simulator) publish them, width = their sum;
* **commanded width**: ``/demo/gripper_width`` (std_msgs/msg/Float64, metres),
  published by whoever commands the gripper, every control step or whenever
  the width changes (the latest one holds): the collector writes one per step;
  a lab's teleoperation tool publishes the width it sends to franka_gripper
  there, and ``ros2 bag record`` captures it beside the arm's trajectory
  topic. The ROS 2 stack's policy_node does not publish it.
* a bag without ``/demo/gripper_width`` still loads: the reader then derives
  the command from the measured width, as the width at which the fingers
  come to rest after the step (:func:`mechanic_rl_ros.data.demos.derived_gripper_commands`).
  That is only what the gripper *did*: a grasp that stopped on an object reads
  as a command to the object's width, and a goal that started late shows one
  step late.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mcap_ros2.writer import Writer

from mechanic_rl_ros.control import fr3

_SEP = "=" * 80

_TIME = "int32 sec\nuint32 nanosec\n"
_HEADER = "builtin_interfaces/Time stamp\nstring frame_id\n"
_MULTI_ARRAY_LAYOUT = "MultiArrayDimension[] dim\nuint32 data_offset\n"
_MULTI_ARRAY_DIMENSION = "string label\nuint32 size\nuint32 stride\n"
_DURATION = "int32 sec\nuint32 nanosec\n"
_TRAJECTORY_POINT = (
    "float64[] positions\nfloat64[] velocities\nfloat64[] accelerations\nfloat64[] effort\n"
    "builtin_interfaces/Duration time_from_start\n"
)


def _with_deps(main: str, *deps: tuple[str, str]) -> str:
    parts = [main]
    for name, text in deps:
        parts.append(f"{_SEP}\nMSG: {name}\n{text}")
    return "\n".join(parts)


#: Full ros2msg schema text per message type.
MSG_DEFINITIONS: dict[str, str] = {
    "sensor_msgs/msg/Image": _with_deps(
        "std_msgs/Header header\nuint32 height\nuint32 width\nstring encoding\n"
        "uint8 is_bigendian\nuint32 step\nuint8[] data\n",
        ("std_msgs/Header", _HEADER),
        ("builtin_interfaces/Time", _TIME),
    ),
    "sensor_msgs/msg/JointState": _with_deps(
        "std_msgs/Header header\nstring[] name\nfloat64[] position\nfloat64[] velocity\nfloat64[] effort\n",
        ("std_msgs/Header", _HEADER),
        ("builtin_interfaces/Time", _TIME),
    ),
    "std_msgs/msg/Float64MultiArray": _with_deps(
        "MultiArrayLayout layout\nfloat64[] data\n",
        ("std_msgs/MultiArrayLayout", _MULTI_ARRAY_LAYOUT),
        ("std_msgs/MultiArrayDimension", _MULTI_ARRAY_DIMENSION),
    ),
    "std_msgs/msg/Float64": "float64 data\n",
    "std_msgs/msg/String": "string data\n",
    # Dependencies in rosbag2's order: depth first, each message's dependencies sorted by name.
    "trajectory_msgs/msg/JointTrajectory": _with_deps(
        "std_msgs/Header header\nstring[] joint_names\nJointTrajectoryPoint[] points\n",
        ("std_msgs/Header", _HEADER),
        ("builtin_interfaces/Time", _TIME),
        ("trajectory_msgs/JointTrajectoryPoint", _TRAJECTORY_POINT),
        ("builtin_interfaces/Duration", _DURATION),
    ),
    # Fields of msg/TaskState.msg of this package (a test keeps the two in step).
    "mechanic_rl_ros/msg/TaskState": _with_deps(
        "std_msgs/Header header\nstring task\nstring[] names\nfloat64[] values\nbool success\n"
        "bool failure\nfloat32 shaped_reward\n",
        ("std_msgs/Header", _HEADER),
        ("builtin_interfaces/Time", _TIME),
    ),
}


@dataclass(frozen=True)
class DemoTopics:
    """Topic names of a demonstration bag (defaults: the ROS 2 stack's on an FR3, see the module docstring).

    ``legacy_arm_command`` / ``legacy_gripper_command``: the layout of bags
    written before the stack's topics were used (std_msgs/msg/Float64MultiArray,
    7 targets / 1 width); they are read when a bag has no arm trajectory topic.
    """

    camera_pattern: str = "/camera/{camera}/image_raw"
    joint_states: str = "/joint_states"
    gripper_joint_states: str = "/franka_gripper/joint_states"
    arm_command: str = "/fr3_position_trajectory_controller/joint_trajectory"
    gripper_command: str = "/demo/gripper_width"
    task_state: str = "/sim/task_state"
    episode: str = "/demo/episode"
    legacy_arm_command: str = "/fr3_position_controller/commands"
    legacy_gripper_command: str = "/fr3_gripper/commands"

    def camera(self, name: str) -> str:
        return self.camera_pattern.format(camera=name)


#: [s] the stack's control period (policy_node ``control_rate`` 10 Hz)
DEFAULT_CONTROL_DT = 0.1


def _stamp(t_ns: int) -> dict:
    return {"sec": int(t_ns // 1_000_000_000), "nanosec": int(t_ns % 1_000_000_000)}


def _duration(seconds: float) -> dict:
    ns = int(round(seconds * 1e9))
    return {"sec": ns // 1_000_000_000, "nanosec": ns % 1_000_000_000}


def arm_trajectory(q_target, control_dt: float) -> dict:
    """7 joint targets as the arm command message (trajectory_msgs/msg/JointTrajectory fields).

    ``joint_names`` fr3_joint1..7, ``header.stamp`` 0 (the controller starts it
    on receipt), one point holding ``q_target`` ``control_dt`` seconds later.
    """
    q = [float(v) for v in np.asarray(q_target, dtype=np.float64).reshape(-1)]
    if len(q) != len(fr3.JOINT_NAMES):
        raise ValueError(f"q_target: expected {len(fr3.JOINT_NAMES)} joint targets, got {len(q)}")
    point = {"positions": q, "velocities": [], "accelerations": [], "effort": [],
             "time_from_start": _duration(control_dt)}
    return {"header": {"stamp": _stamp(0), "frame_id": ""}, "joint_names": list(fr3.JOINT_NAMES), "points": [point]}


class EpisodeBagWriter:
    """Writes one episode as a rosbag2 directory: ``<dir>/<name>_0.mcap`` + ``metadata.yaml``.

    Times are given in seconds of episode time and stored as
    ``start_time_ns + t``; observation messages use it as both log time and
    header stamp. ``control_dt`` [s] is the control period, the
    ``time_from_start`` of each arm command's point. Call :meth:`close` (or use
    it as a context manager) to finish.
    """

    def __init__(self, directory: str | os.PathLike, start_time_ns: int, topics: DemoTopics | None = None,
                 control_dt: float = DEFAULT_CONTROL_DT):
        if not control_dt > 0.0:
            raise ValueError(f"control_dt: expected a period > 0 s, got {control_dt}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.topics = topics or DemoTopics()
        self.control_dt = float(control_dt)
        self.path = self.directory / f"{self.directory.name}_0.mcap"
        self._file = open(self.path, "wb")
        self._writer = Writer(self._file)
        self._schemas: dict[str, object] = {}  # message type -> its registered schema
        self._start = int(start_time_ns)
        self._counts: dict[str, list] = {}  # topic -> [type, count]
        self._first: int | None = None
        self._last = 0
        self._closed = False

    def _write(self, topic: str, msg_type: str, message: dict, t_ns: int) -> None:
        if msg_type not in self._schemas:
            self._schemas[msg_type] = self._writer.register_msgdef(msg_type, MSG_DEFINITIONS[msg_type])
        self._writer.write_message(topic, self._schemas[msg_type], message, log_time=t_ns, publish_time=t_ns)
        entry = self._counts.setdefault(topic, [msg_type, 0])
        entry[1] += 1
        self._first = t_ns if self._first is None else min(self._first, t_ns)
        self._last = max(self._last, t_ns)

    def time_ns(self, t: float) -> int:
        return self._start + int(round(t * 1e9))

    def write_image(self, t: float, camera: str, rgb: np.ndarray) -> None:
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"image of camera {camera!r} must be uint8[H, W, 3], got shape {rgb.shape}")
        t_ns = self.time_ns(t)
        h, w, _ = rgb.shape
        msg = {
            "header": {"stamp": _stamp(t_ns), "frame_id": f"{camera}_camera"},
            "height": h,
            "width": w,
            "encoding": "rgb8",
            "is_bigendian": 0,
            "step": 3 * w,
            "data": rgb.tobytes(),
        }
        self._write(self.topics.camera(camera), "sensor_msgs/msg/Image", msg, t_ns)

    def write_joint_state(self, t: float, joint_state: dict) -> None:
        """``joint_state`` (sensor_msgs/JointState fields) on ``/joint_states``, and its finger joints, if it
        has both, on ``/franka_gripper/joint_states`` with the same stamp, as the simulator publishes them."""
        t_ns = self.time_ns(t)
        header = {"stamp": _stamp(t_ns), "frame_id": "fr3_link0"}
        names = list(joint_state["name"])
        fields = {k: [float(v) for v in joint_state[k]] for k in ("position", "velocity", "effort")}
        self._write(self.topics.joint_states, "sensor_msgs/msg/JointState", {"header": header, "name": names,
                                                                              **fields}, t_ns)
        if all(n in names for n in fr3.FINGER_JOINT_NAMES):
            idx = [names.index(n) for n in fr3.FINGER_JOINT_NAMES]
            fingers = {k: [v[i] for i in idx] if len(v) == len(names) else [] for k, v in fields.items()}
            self._write(self.topics.gripper_joint_states, "sensor_msgs/msg/JointState",
                        {"header": header, "name": list(fr3.FINGER_JOINT_NAMES), **fingers}, t_ns)

    def write_task_state(
        self, t: float, task: str, names, values, success: bool, failure: bool = False, shaped_reward: float = 0.0
    ) -> None:
        t_ns = self.time_ns(t)
        msg = {
            "header": {"stamp": _stamp(t_ns), "frame_id": "world"},
            "task": task,
            "names": list(names),
            "values": [float(v) for v in values],
            "success": bool(success),
            "failure": bool(failure),
            "shaped_reward": float(shaped_reward),
        }
        self._write(self.topics.task_state, "mechanic_rl_ros/msg/TaskState", msg, t_ns)

    def write_command(self, t: float, action: np.ndarray) -> None:
        """The 8-float action: the arm's JointTrajectory (7 targets) and the commanded gripper width (1).

        Logged 1 us after the observation of the same step, so "the latest
        observation at or before each command" pairs them unambiguously.
        """
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (8,):
            raise ValueError(f"action must have 8 values, got shape {action.shape}")
        t_ns = self.time_ns(t) + 1000
        self._write(self.topics.arm_command, "trajectory_msgs/msg/JointTrajectory",
                    arm_trajectory(action[:7], self.control_dt), t_ns)
        self._write(self.topics.gripper_command, "std_msgs/msg/Float64", {"data": float(action[7])}, t_ns)

    def write_episode_info(self, t: float, info: dict) -> None:
        """A JSON record (episode metadata at the start, outcome at the end)."""
        self._write(self.topics.episode, "std_msgs/msg/String", {"data": json.dumps(info, sort_keys=True)}, self.time_ns(t))

    def add_metadata(self, name: str, data: dict) -> None:
        """MCAP metadata record (string key/values), e.g. the episode's settings."""
        self._writer.add_metadata(name, {str(k): str(v) for k, v in data.items()})

    def close(self) -> None:
        if self._closed:
            return
        self._writer.finish()
        self._file.close()
        self._closed = True
        self._write_metadata_yaml()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _write_metadata_yaml(self) -> None:
        """rosbag2 ``metadata.yaml`` (format version 8, as written by ROS 2 Jazzy)."""
        start = self._first or self._start
        duration = self._last - start
        total = sum(c for _, c in self._counts.values())
        lines = [
            "rosbag2_bagfile_information:",
            "  version: 8",
            "  storage_identifier: mcap",
            "  duration:",
            f"    nanoseconds: {duration}",
            "  starting_time:",
            f"    nanoseconds_since_epoch: {start}",
            f"  message_count: {total}",
            "  topics_with_message_count:",
        ]
        for topic, (msg_type, count) in sorted(self._counts.items()):
            lines += [
                "    - topic_metadata:",
                f"        name: {topic}",
                f"        type: {msg_type}",
                "        serialization_format: cdr",
                '        offered_qos_profiles: ""',
                '        type_description_hash: ""',
                f"      message_count: {count}",
            ]
        lines += [
            '  compression_format: ""',
            '  compression_mode: ""',
            "  relative_file_paths:",
            f"    - {self.path.name}",
            "  files:",
            f"    - path: {self.path.name}",
            "      starting_time:",
            f"        nanoseconds_since_epoch: {start}",
            "      duration:",
            f"        nanoseconds: {duration}",
            f"      message_count: {total}",
            "  custom_data: {}",
            "  ros_distro: jazzy",
        ]
        (self.directory / "metadata.yaml").write_text("\n".join(lines) + "\n")
