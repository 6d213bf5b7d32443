"""Demonstration episodes for training: MCAP bags -> a per-episode ``.npz`` cache.

:func:`load_episodes` returns a list of dicts (``T`` = number of commands)::

    "images":     {camera: uint8[T, H, W, 3]}
    "qpos":       float32[T, 7]   arm joint positions [rad]
    "qvel":       float32[T, 7]   arm joint velocities [rad/s]
    "gripper":    float32[T, 1]   finger opening width [m]
    "action":     float32[T, 8]   command issued after observing step t
    "task_state": float32[T, k]   privileged task state (k = 0 if not recorded)
    "success":    bool            episode outcome (False if not recorded)
    "task", "source": str; "seed": int (-1 if unknown)

Bags use the stack's topics (:mod:`mechanic_rl_ros.data.rosbag` lists them);
a bag recorded on the real robot (``ros2 bag record -s mcap`` of those topics)
is read the same way. Each message on the arm's trajectory topic
(``/fr3_position_trajectory_controller/joint_trajectory``,
trajectory_msgs/msg/JointTrajectory) is one step; its observation is the latest
message of every observation topic logged at or before it.

* ``action[:7]``: the positions of the message's point planned one control
  period after its start (the point whose ``time_from_start`` is nearest the
  period; the period is the median interval between the arm messages unless
  ``control_dt`` is given). That is the only point of a single-point message,
  as the collector and simple teleoperation tools send, and the target knot of
  the stack's own trajectories (:mod:`mechanic_rl_ros.control.safety`: the
  lead-in copied from the previous trajectory, the target one period later, a
  braking tail). ``joint_names`` must be the FR3's seven (any order: the values
  are reordered by name); a point with another number of values, or a
  non-finite one, is refused with :class:`DemoFormatError` naming the topic,
  message and field.
* ``action[7]``: the last ``/demo/gripper_width`` (std_msgs/msg/Float64)
  logged before the next arm message (whether a tool publishes it just before
  or just after its arm command does not matter); where the bag has none,
  :func:`derived_gripper_commands` (the width at which the fingers come to
  rest after the step).
* ``gripper``: the finger width measured on ``/franka_gripper/joint_states``,
  else from the finger joints of ``/joint_states``.

**Legacy layout** (bags written before the stack's topics were used): arm
targets as std_msgs/msg/Float64MultiArray on ``/fr3_position_controller/commands``
and the commanded width as Float64MultiArray on ``/fr3_gripper/commands``. A bag
without the trajectory topic is read this way, so older recordings keep loading.

The cache is plain ``np.savez_compressed`` (no pickle), the same for both
layouts, and is rebuilt whenever its bag is newer or ``rebuild=True``.
"""
from __future__ import annotations

import json
import math
import os
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import warnings

import numpy as np

with warnings.catch_warnings():
    # mcap_ros2.reader's module docstring is mistakenly emitted as a DeprecationWarning.
    warnings.simplefilter("ignore", DeprecationWarning)
    from mcap_ros2.reader import read_ros2_messages

from mechanic_rl_ros.control import fr3
from mechanic_rl_ros.data.rosbag import DEFAULT_CONTROL_DT, DemoTopics

CACHE_DIR_NAME = "cache"
_CAMERA_PREFIX = "image_"
#: [m] fingers whose width changes less than this from one step to the next are at rest
GRIPPER_REST_TOLERANCE = 5e-4

_TRAJECTORY = "trajectory_msgs/msg/JointTrajectory"
_WIDTH = "std_msgs/msg/Float64"
_ARRAY = "std_msgs/msg/Float64MultiArray"
_POINT_FIELDS = ("positions", "velocities", "accelerations", "effort")


class DemoFormatError(ValueError):
    """A bag or cache file lacks what an episode needs; the message names what."""


def find_bags(path: str | os.PathLike) -> list[Path]:
    """All ``.mcap`` files under ``path`` (or ``[path]`` for a file), sorted."""
    path = Path(path)
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*.mcap") if CACHE_DIR_NAME not in p.relative_to(path).parts[:-1])


def _camera_from_topic(topic: str, topics: DemoTopics) -> str | None:
    prefix, _, suffix = topics.camera_pattern.partition("{camera}")
    if topic.startswith(prefix) and topic.endswith(suffix) and len(topic) > len(prefix) + len(suffix):
        name = topic[len(prefix) : len(topic) - len(suffix)]
        return name if "/" not in name else None
    return None


def _decode_image(msg, topic: str) -> np.ndarray:
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    if msg.encoding not in ("rgb8", "bgr8"):
        raise DemoFormatError(f"{topic}: image encoding {msg.encoding!r} is not supported (rgb8 or bgr8)")
    if data.size < h * step or step < 3 * w:
        raise DemoFormatError(f"{topic}: image data has {data.size} bytes, expected {h}x{step}")
    img = data[: h * step].reshape(h, step)[:, : 3 * w].reshape(h, w, 3)
    return img[..., ::-1].copy() if msg.encoding == "bgr8" else img.copy()


class _Streams:
    """One bag's messages by topic, in log-time order, and each topic's message type."""

    def __init__(self) -> None:
        self.times: dict[str, list[int]] = {}
        self.msgs: dict[str, list] = {}
        self.types: dict[str, str] = {}

    def add(self, topic: str, t_ns: int, msg, msg_type: str) -> None:
        self.times.setdefault(topic, []).append(t_ns)
        self.msgs.setdefault(topic, []).append(msg)
        self.types[topic] = msg_type

    def __contains__(self, topic: str) -> bool:
        return topic in self.msgs

    def latest(self, topic: str, t_ns: float):
        """The last message of ``topic`` logged at or before ``t_ns`` (None if none)."""
        if topic not in self.msgs:
            return None
        i = bisect_right(self.times[topic], t_ns) - 1
        return self.msgs[topic][i] if i >= 0 else None


@dataclass(frozen=True)
class _Layout:
    """Where a bag holds its commands: the stack's topics, or the legacy layout (module docstring)."""

    arm: str
    gripper: str
    legacy: bool


def _read_streams(path: Path, cameras: Sequence[str] | None, topics: DemoTopics) -> tuple[_Streams, set[str]]:
    """The messages of the topics an episode uses, and the cameras the bag has images of."""
    wanted = {topics.joint_states, topics.gripper_joint_states, topics.arm_command, topics.gripper_command,
              topics.legacy_arm_command, topics.legacy_gripper_command, topics.task_state, topics.episode}
    streams = _Streams()
    cams_seen: set[str] = set()
    for m in read_ros2_messages(str(path)):
        topic = m.channel.topic
        cam = _camera_from_topic(topic, topics)
        if cam is not None:
            if cameras is not None and cam not in cameras:
                continue
            cams_seen.add(cam)
        elif topic not in wanted:
            continue
        streams.add(topic, m.log_time_ns, m.ros_msg, m.schema.name)
    return streams, cams_seen


def _layout(path: Path, streams: _Streams, topics: DemoTopics) -> _Layout:
    """The stack's layout if the bag has the arm's trajectory topic, else the legacy one; types checked."""
    if topics.arm_command in streams:
        layout, types = _Layout(topics.arm_command, topics.gripper_command, False), (_TRAJECTORY, _WIDTH)
    elif topics.legacy_arm_command in streams:
        layout, types = _Layout(topics.legacy_arm_command, topics.legacy_gripper_command, True), (_ARRAY, _ARRAY)
    else:
        raise DemoFormatError(f"{path}: topic {topics.arm_command} ({_TRAJECTORY}) is missing "
                              f"(and so is the legacy layout's {topics.legacy_arm_command})")
    for topic, expected in zip((layout.arm, layout.gripper), types):
        if topic in streams and streams.types[topic] != expected:
            raise DemoFormatError(f"{path}: {topic} holds {streams.types[topic]}, expected {expected}")
    return layout


def _joint_order(names: list[str], where: str) -> list[int]:
    """Indices that put ``names`` (a permutation of the FR3's seven joints) into fr3_joint1..7 order."""
    problems = {
        "unknown": [n for n in names if n not in fr3.JOINT_NAMES],
        "missing": [n for n in fr3.JOINT_NAMES if n not in names],
        "repeated": sorted({n for n in names if names.count(n) > 1}),
    }
    if any(problems.values()):
        said = ", ".join(f"{k} {v}" for k, v in problems.items() if v)
        raise DemoFormatError(f"{where}: joint_names {names} are not the FR3's {list(fr3.JOINT_NAMES)} ({said})")
    return [names.index(n) for n in fr3.JOINT_NAMES]


def _check_points(points, where: str) -> None:
    """Every point has 7 finite positions, and 0 or 7 finite values in its other fields."""
    if not points:
        raise DemoFormatError(f"{where}: points is empty")
    for i, p in enumerate(points):
        for name in _POINT_FIELDS:
            values = np.asarray(getattr(p, name), dtype=np.float64)
            if values.size != fr3.NUM_JOINTS and (name == "positions" or values.size):
                raise DemoFormatError(f"{where}: points[{i}].{name} has {values.size} values, expected "
                                      f"{fr3.NUM_JOINTS}" + ("" if name == "positions" else " or none"))
            if not np.all(np.isfinite(values)):
                raise DemoFormatError(f"{where}: points[{i}].{name} is not finite: {values.tolist()}")


def trajectory_target(msg, control_dt: float, where: str = "JointTrajectory") -> np.ndarray:
    """The 7 arm targets [rad] of a trajectory_msgs/JointTrajectory, in fr3_joint1..7 order.

    They are the positions of the point planned ``control_dt`` after the
    message's start (the nearest ``time_from_start``; the first of equals).
    :class:`DemoFormatError` naming ``where`` and the field for joint names
    that are not the FR3's, a point with the wrong number of values, or a
    non-finite value.
    """
    order = _joint_order(list(msg.joint_names), where)
    _check_points(msg.points, where)
    times = [p.time_from_start.sec + 1e-9 * p.time_from_start.nanosec for p in msg.points]
    point = msg.points[int(np.argmin(np.abs(np.asarray(times) - control_dt)))]
    return np.asarray(point.positions, dtype=np.float64)[order]


def _legacy_target(msg, where: str) -> np.ndarray:
    """The 7 arm targets of a legacy std_msgs/Float64MultiArray command."""
    arm = np.asarray(msg.data, dtype=np.float64)
    if arm.shape != (fr3.NUM_JOINTS,):
        raise DemoFormatError(f"{where}: data has {arm.size} values, expected {fr3.NUM_JOINTS}")
    if not np.all(np.isfinite(arm)):
        raise DemoFormatError(f"{where}: data is not finite: {arm.tolist()}")
    return arm


def _gripper_command(msg, legacy: bool, where: str) -> float:
    """The commanded width [m] of a gripper command message (NaN, none, for an empty legacy array)."""
    if legacy and not len(msg.data):
        return float("nan")
    width = float(msg.data[0] if legacy else msg.data)
    if not math.isfinite(width):
        raise DemoFormatError(f"{where}: data is not finite: {width}")
    return width


def _finger_width(msg) -> float | None:
    """Opening width [m] from a JointState's finger joints (their sum); None if it has none."""
    if msg is None:
        return None
    names = list(msg.name)[: len(msg.position)]
    idx = [names.index(n) for n in fr3.FINGER_JOINT_NAMES if n in names]
    return float(sum(msg.position[i] for i in idx)) if idx else None


def _measured_width(streams: _Streams, topics: DemoTopics, t_ns: float) -> float:
    """The finger width at ``t_ns``: franka_gripper's joint states, else ``/joint_states`` fingers, else 0."""
    for topic in (topics.gripper_joint_states, topics.joint_states):
        width = _finger_width(streams.latest(topic, t_ns))
        if width is not None:
            return width
    return 0.0


def derived_gripper_commands(widths, tolerance: float = GRIPPER_REST_TOLERANCE) -> np.ndarray:
    """Gripper commands of a bag without any: for each step, the width at which the fingers next rest.

    ``widths`` [T + 1]: the finger width measured at each of the T steps, then
    the last one in the bag. Step k's command is ``widths[j + 1]`` for the
    first j >= k at which the fingers do not move until the next step
    (``|widths[j + 1] - widths[j]| <= tolerance``), or the last width if they
    move until the end: the target of a motion that starts after step k, or
    the width they keep. It is what the gripper did, not what it was told
    (a grasp that stops on an object reads as a command to the object's width).
    """
    w = np.asarray(widths, dtype=np.float64)
    out = np.empty(len(w) - 1)
    rest = w[-1]
    for k in range(len(w) - 2, -1, -1):
        if abs(w[k + 1] - w[k]) <= tolerance:
            rest = w[k + 1]
        out[k] = rest
    return out


def _command_period(times_ns: list[int]) -> float:
    """The median interval between the arm commands [s] (the stack's period for fewer than two)."""
    if len(times_ns) < 2:
        return DEFAULT_CONTROL_DT
    return float(np.median(np.diff(times_ns))) * 1e-9


def _arm_joint_index(path: Path, js, topics: DemoTopics) -> list[int]:
    names = list(js.name)
    absent = [n for n in fr3.JOINT_NAMES if n not in names]
    if absent:
        raise DemoFormatError(f"{path}: {topics.joint_states} lacks joints {absent}")
    return [names.index(n) for n in fr3.JOINT_NAMES]


def _steps(path: Path, streams: _Streams, layout: _Layout, cams: list[str], topics: DemoTopics,
           control_dt: float | None) -> dict[str, list]:
    """One row per arm command that has a complete observation before it (rows of the episode arrays)."""
    times, cmds = streams.times[layout.arm], streams.msgs[layout.arm]
    period = _command_period(times) if control_dt is None else float(control_dt)
    rows: dict[str, list] = {k: [] for k in ("qpos", "qvel", "gripper", "arm", "width_command", "task_state")}
    rows["images"] = []
    joint_index = None
    for k, (t_ns, cmd) in enumerate(zip(times, cmds)):
        js = streams.latest(topics.joint_states, t_ns)
        frames = [streams.latest(topics.camera(c), t_ns) for c in cams]
        if js is None or any(f is None for f in frames):
            continue  # commands before the first complete observation
        joint_index = joint_index or _arm_joint_index(path, js, topics)
        where = f"{path}: {layout.arm} message {k}"
        rows["arm"].append(_legacy_target(cmd, where) if layout.legacy else trajectory_target(cmd, period, where))
        grip = streams.latest(layout.gripper, times[k + 1] - 1 if k + 1 < len(times) else math.inf)
        rows["width_command"].append(float("nan") if grip is None else
                                     _gripper_command(grip, layout.legacy, f"{path}: {layout.gripper}"))
        pos = np.asarray(js.position, dtype=np.float64)
        vel = np.asarray(js.velocity, dtype=np.float64) if len(js.velocity) else np.zeros(len(pos))
        rows["qpos"].append(pos[joint_index])
        rows["qvel"].append(vel[joint_index])
        rows["gripper"].append([_measured_width(streams, topics, t_ns)])
        ts = streams.latest(topics.task_state, t_ns)
        rows["task_state"].append((list(ts.names), np.asarray(ts.values, dtype=np.float64)) if ts is not None
                                  else ([], np.zeros(0)))
        rows["images"].append([_decode_image(f, topics.camera(c)) for c, f in zip(cams, frames)])
    if not rows["arm"]:
        raise DemoFormatError(f"{path}: no command has a complete observation before it")
    return rows


def _gripper_actions(rows: dict[str, list], streams: _Streams, topics: DemoTopics) -> np.ndarray:
    """The commanded widths: recorded ones, derived ones (:func:`derived_gripper_commands`) where none was."""
    commanded = np.asarray(rows["width_command"], dtype=np.float64)
    if np.all(np.isfinite(commanded)):
        return commanded
    end = max(t[-1] for t in streams.times.values())
    measured = [g[0] for g in rows["gripper"]] + [_measured_width(streams, topics, end)]
    return np.where(np.isfinite(commanded), commanded, derived_gripper_commands(measured))


def _episode_info(streams: _Streams, topics: DemoTopics) -> dict:
    """Settings and outcome: the JSON records of the episode topic, success from the task state if absent."""
    info: dict = {}
    for msg in streams.msgs.get(topics.episode, []):
        try:
            info.update(json.loads(msg.data))
        except json.JSONDecodeError:
            pass
    if info.get("success") is None and topics.task_state in streams:
        info["success"] = bool(streams.msgs[topics.task_state][-1].success)
    return info


def read_bag(path: str | os.PathLike, cameras: Sequence[str] | None = None, topics: DemoTopics | None = None,
             control_dt: float | None = None) -> dict:
    """Decode one MCAP bag into an episode dict (see the module docstring).

    ``control_dt`` [s]: the control period that picks a trajectory's target
    point (default: the median interval between the arm messages).
    """
    topics = topics or DemoTopics()
    path = Path(path)
    streams, cams_seen = _read_streams(path, cameras, topics)
    cams = sorted(cams_seen) if cameras is None else list(cameras)
    missing = [c for c in cams if topics.camera(c) not in streams]
    if missing:
        raise DemoFormatError(f"{path}: no images of camera(s) {missing} (topics {[topics.camera(c) for c in missing]})")
    if topics.joint_states not in streams:
        raise DemoFormatError(f"{path}: topic {topics.joint_states} is missing")
    layout = _layout(path, streams, topics)
    rows = _steps(path, streams, layout, cams, topics, control_dt)
    info = _episode_info(streams, topics)
    state_names = next((names for names, _ in rows["task_state"] if names), [])
    k = max(len(v) for _, v in rows["task_state"])
    task_state = np.array([v if len(v) == k else np.zeros(k) for _, v in rows["task_state"]], dtype=np.float32)
    action = np.column_stack([np.array(rows["arm"]), _gripper_actions(rows, streams, topics)])
    return {
        "images": {c: np.stack([frames[i] for frames in rows["images"]]) for i, c in enumerate(cams)},
        "qpos": np.array(rows["qpos"], dtype=np.float32),
        "qvel": np.array(rows["qvel"], dtype=np.float32),
        "gripper": np.array(rows["gripper"], dtype=np.float32),
        "action": action.astype(np.float32),
        "task_state": task_state.reshape(len(task_state), k),
        "task_state_names": state_names,
        "success": bool(info.get("success", False)),
        "task": str(info.get("task", "")),
        "seed": int(info.get("seed", -1)),
        "source": str(path),
    }


def save_cache(episode: dict, path: str | os.PathLike) -> None:
    """Write an episode as a compressed ``.npz`` (no object arrays, loads without pickle)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"{_CAMERA_PREFIX}{c}": v for c, v in episode["images"].items()}
    arrays.update({k: episode[k] for k in ("qpos", "qvel", "gripper", "action", "task_state")})
    arrays["task_state_names"] = np.array(episode.get("task_state_names", []), dtype=np.str_)
    arrays["success"] = np.array(bool(episode["success"]))
    arrays["task"] = np.array(episode.get("task", ""), dtype=np.str_)
    arrays["seed"] = np.array(int(episode.get("seed", -1)), dtype=np.int64)
    arrays["source"] = np.array(str(episode.get("source", "")), dtype=np.str_)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def load_cache(path: str | os.PathLike) -> dict:
    """Read an episode written by :func:`save_cache`."""
    with np.load(path, allow_pickle=False) as z:
        ep = {
            "images": {k[len(_CAMERA_PREFIX) :]: z[k] for k in z.files if k.startswith(_CAMERA_PREFIX)},
            "qpos": z["qpos"],
            "qvel": z["qvel"],
            "gripper": z["gripper"],
            "action": z["action"],
            "task_state": z["task_state"],
            "task_state_names": [str(s) for s in z["task_state_names"]],
            "success": bool(z["success"]),
            "task": str(z["task"]),
            "seed": int(z["seed"]),
            "source": str(z["source"]),
        }
    return ep


def cache_path_for(bag: Path, root: Path) -> Path:
    """Where the cache of ``bag`` lives: ``<root>/cache/<bag stem>.npz``."""
    stem = bag.stem[:-2] if bag.stem.endswith("_0") else bag.stem
    return root / CACHE_DIR_NAME / f"{stem}.npz"


def load_episodes(
    path: str | os.PathLike,
    cameras: Sequence[str] | None = None,
    rebuild: bool = False,
    write_cache: bool = True,
    topics: DemoTopics | None = None,
    only_successful: bool = False,
) -> list[dict]:
    """Load every episode under ``path`` (a directory of bags, one ``.mcap`` or a cache dir).

    Bags are decoded once and cached in ``<path>/cache/``; later calls read the
    cache unless the bag is newer or ``rebuild`` is set. A directory holding only
    ``.npz`` files (or a ``cache/`` of them) is loaded as is. ``cameras`` keeps
    only those cameras (default: all recorded).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"demonstrations path {path} does not exist")
    root = path if path.is_dir() else path.parent
    bags = find_bags(path)
    episodes: list[dict] = []
    if bags:
        for bag in bags:
            cache = cache_path_for(bag, root)
            ep = None
            if not rebuild and cache.exists() and cache.stat().st_mtime >= bag.stat().st_mtime:
                ep = load_cache(cache)
                if cameras is not None and not set(cameras) <= set(ep["images"]):
                    ep = None  # the cache was built with fewer cameras
            if ep is None:
                ep = read_bag(bag, cameras=None, topics=topics)
                if write_cache:
                    try:
                        save_cache(ep, cache)
                    except OSError:
                        pass  # read-only demonstrations: decode again next time
            episodes.append(ep)
    else:
        npz = sorted(path.glob("*.npz")) or sorted((path / CACHE_DIR_NAME).glob("*.npz"))
        if not npz:
            raise FileNotFoundError(f"no .mcap bags or .npz episodes under {path}")
        episodes = [load_cache(p) for p in npz]
    if cameras is not None:
        for ep in episodes:
            absent = [c for c in cameras if c not in ep["images"]]
            if absent:
                raise DemoFormatError(f"{ep['source']}: camera(s) {absent} were not recorded")
            ep["images"] = {c: ep["images"][c] for c in cameras}
    if only_successful:
        episodes = [ep for ep in episodes if ep["success"]]
    return episodes
