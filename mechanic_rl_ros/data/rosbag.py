"""rosbag2-compatible MCAP episodes: embedded ROS 2 message definitions, an
episode writer and the ``metadata.yaml`` that ``ros2 bag info/play`` expect.

No ROS installation is needed: messages are CDR-serialised by ``mcap_ros2``
from the definitions below (the fields of the ROS 2 Jazzy interface files, in
the concatenated ``ros2msg`` schema format that rosbag2 itself writes: the main
definition, then each dependency after a line of 80 ``=`` and ``MSG: pkg/Type``).

Topics of a recorded episode (the same names the ROS 2 stack uses, so a bag
recorded on the real FR3 with ``ros2 bag record -s mcap`` loads the same way):

===================================== ========================================
``/camera/<cam>/image_raw``           sensor_msgs/msg/Image, rgb8
``/joint_states``                     sensor_msgs/msg/JointState (9 joints)
``/fr3_position_controller/commands`` std_msgs/msg/Float64MultiArray, 7 targets
``/fr3_gripper/commands``             std_msgs/msg/Float64MultiArray, 1 width
``/sim/task_state``                   mechanic_rl_ros/msg/TaskState
``/demo/episode``                     std_msgs/msg/String, JSON (start / outcome)
===================================== ========================================
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mcap_ros2.writer import Writer

_SEP = "=" * 80

_TIME = "int32 sec\nuint32 nanosec\n"
_HEADER = "builtin_interfaces/Time stamp\nstring frame_id\n"
_MULTI_ARRAY_LAYOUT = "MultiArrayDimension[] dim\nuint32 data_offset\n"
_MULTI_ARRAY_DIMENSION = "string label\nuint32 size\nuint32 stride\n"


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
    "std_msgs/msg/String": "string data\n",
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
    """Topic names of a demonstration bag (defaults match the ROS 2 stack)."""

    camera_pattern: str = "/camera/{camera}/image_raw"
    joint_states: str = "/joint_states"
    arm_command: str = "/fr3_position_controller/commands"
    gripper_command: str = "/fr3_gripper/commands"
    task_state: str = "/sim/task_state"
    episode: str = "/demo/episode"

    def camera(self, name: str) -> str:
        return self.camera_pattern.format(camera=name)


def _stamp(t_ns: int) -> dict:
    return {"sec": int(t_ns // 1_000_000_000), "nanosec": int(t_ns % 1_000_000_000)}


def _multi_array(values, label: str) -> dict:
    data = [float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1)]
    return {
        "layout": {"dim": [{"label": label, "size": len(data), "stride": len(data)}], "data_offset": 0},
        "data": data,
    }


class EpisodeBagWriter:
    """Writes one episode as a rosbag2 directory: ``<dir>/<name>_0.mcap`` + ``metadata.yaml``.

    Times are given in seconds of episode time and stored as
    ``start_time_ns + t``; observation messages use it as both log time and
    header stamp. Call :meth:`close` (or use it as a context manager) to finish.
    """

    def __init__(self, directory: str | os.PathLike, start_time_ns: int, topics: DemoTopics | None = None):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.topics = topics or DemoTopics()
        self.path = self.directory / f"{self.directory.name}_0.mcap"
        self._file = open(self.path, "wb")
        self._writer = Writer(self._file)
        self._schemas = {name: self._writer.register_msgdef(name, text) for name, text in MSG_DEFINITIONS.items()}
        self._start = int(start_time_ns)
        self._counts: dict[str, list] = {}  # topic -> [type, count]
        self._first: int | None = None
        self._last = 0
        self._closed = False

    def _write(self, topic: str, msg_type: str, message: dict, t_ns: int) -> None:
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
        t_ns = self.time_ns(t)
        msg = {
            "header": {"stamp": _stamp(t_ns), "frame_id": "fr3_link0"},
            "name": list(joint_state["name"]),
            **{k: [float(v) for v in joint_state[k]] for k in ("position", "velocity", "effort")},
        }
        self._write(self.topics.joint_states, "sensor_msgs/msg/JointState", msg, t_ns)

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
        """The 8-float action as an arm command (7) and a gripper command (1).

        Stamped 1 us after the observation of the same step, so "the latest
        observation at or before each command" pairs them unambiguously.
        """
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (8,):
            raise ValueError(f"action must have 8 values, got shape {action.shape}")
        t_ns = self.time_ns(t) + 1000
        self._write(self.topics.arm_command, "std_msgs/msg/Float64MultiArray", _multi_array(action[:7], "joints"), t_ns)
        self._write(
            self.topics.gripper_command, "std_msgs/msg/Float64MultiArray", _multi_array(action[7:], "width"), t_ns
        )

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
