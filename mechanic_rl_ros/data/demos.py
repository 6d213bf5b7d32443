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

Each command message on the arm-command topic is one step; its observation is
the latest message of every observation topic logged at or before it. This is
how a bag recorded on the real robot (``ros2 bag record -s mcap``) is read too.
The cache is plain ``np.savez_compressed`` (no pickle) and is rebuilt whenever
its bag is newer or ``rebuild=True``.
"""
from __future__ import annotations

import json
import os
from bisect import bisect_right
from pathlib import Path
from typing import Sequence

import warnings

import numpy as np

with warnings.catch_warnings():
    # mcap_ros2.reader's module docstring is mistakenly emitted as a DeprecationWarning.
    warnings.simplefilter("ignore", DeprecationWarning)
    from mcap_ros2.reader import read_ros2_messages

from mechanic_rl_ros.control import fr3
from mechanic_rl_ros.data.rosbag import DemoTopics

CACHE_DIR_NAME = "cache"
_CAMERA_PREFIX = "image_"


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


def read_bag(path: str | os.PathLike, cameras: Sequence[str] | None = None, topics: DemoTopics | None = None) -> dict:
    """Decode one MCAP bag into an episode dict (see the module docstring)."""
    topics = topics or DemoTopics()
    path = Path(path)
    streams: dict[str, tuple[list[int], list]] = {}
    cams_seen: set[str] = set()
    for m in read_ros2_messages(str(path)):
        topic = m.channel.topic
        cam = _camera_from_topic(topic, topics)
        if cam is not None:
            if cameras is not None and cam not in cameras:
                continue
            cams_seen.add(cam)
        elif topic not in (
            topics.joint_states,
            topics.arm_command,
            topics.gripper_command,
            topics.task_state,
            topics.episode,
        ):
            continue
        times, msgs = streams.setdefault(topic, ([], []))
        times.append(m.log_time_ns)
        msgs.append(m.ros_msg)

    cams = sorted(cams_seen) if cameras is None else list(cameras)
    missing = [c for c in cams if topics.camera(c) not in streams]
    if missing:
        raise DemoFormatError(f"{path}: no images of camera(s) {missing} (topics {[topics.camera(c) for c in missing]})")
    for needed in (topics.arm_command, topics.joint_states):
        if needed not in streams:
            raise DemoFormatError(f"{path}: topic {needed} is missing")

    def latest(topic: str, t_ns: int):
        if topic not in streams:
            return None
        times, msgs = streams[topic]
        i = bisect_right(times, t_ns) - 1
        return msgs[i] if i >= 0 else None

    joint_index = None
    rows: dict[str, list] = {k: [] for k in ("qpos", "qvel", "gripper", "action", "task_state")}
    images: dict[str, list] = {c: [] for c in cams}
    state_names: list[str] | None = None
    cmd_times, cmd_msgs = streams[topics.arm_command]
    for t_ns, cmd in zip(cmd_times, cmd_msgs):
        js = latest(topics.joint_states, t_ns)
        frames = [latest(topics.camera(c), t_ns) for c in cams]
        if js is None or any(f is None for f in frames):
            continue  # commands before the first complete observation
        if joint_index is None:
            names = list(js.name)
            absent = [n for n in fr3.JOINT_NAMES if n not in names]
            if absent:
                raise DemoFormatError(f"{path}: {topics.joint_states} lacks joints {absent}")
            joint_index = [names.index(n) for n in fr3.JOINT_NAMES]
            finger_index = [names.index(n) for n in fr3.FINGER_JOINT_NAMES if n in names]
        pos = np.asarray(js.position, dtype=np.float64)
        vel = np.asarray(js.velocity, dtype=np.float64) if len(js.velocity) else np.zeros(len(pos))
        width = float(pos[finger_index].sum()) if finger_index else 0.0
        arm = np.asarray(cmd.data, dtype=np.float64)
        if arm.shape != (7,):
            raise DemoFormatError(f"{path}: {topics.arm_command} message has {arm.size} values, expected 7")
        grip_msg = latest(topics.gripper_command, t_ns)
        grip = float(grip_msg.data[0]) if grip_msg is not None and len(grip_msg.data) else width
        ts = latest(topics.task_state, t_ns)
        if ts is not None and state_names is None:
            state_names = list(ts.names)
        rows["qpos"].append(pos[joint_index])
        rows["qvel"].append(vel[joint_index])
        rows["gripper"].append([width])
        rows["action"].append(np.append(arm, grip))
        rows["task_state"].append(np.asarray(ts.values, dtype=np.float64) if ts is not None else np.zeros(0))
        for c, f in zip(cams, frames):
            images[c].append(_decode_image(f, topics.camera(c)))
    if not rows["action"]:
        raise DemoFormatError(f"{path}: no command has a complete observation before it")

    info: dict = {}
    if topics.episode in streams:
        for msg in streams[topics.episode][1]:
            try:
                info.update(json.loads(msg.data))
            except json.JSONDecodeError:
                pass
    success = info.get("success")
    if success is None and topics.task_state in streams:
        success = bool(streams[topics.task_state][1][-1].success)
    k = max(len(r) for r in rows["task_state"])
    task_state = np.array([r if len(r) == k else np.zeros(k) for r in rows["task_state"]], dtype=np.float32)
    return {
        "images": {c: np.stack(v) for c, v in images.items()},
        "qpos": np.array(rows["qpos"], dtype=np.float32),
        "qvel": np.array(rows["qvel"], dtype=np.float32),
        "gripper": np.array(rows["gripper"], dtype=np.float32),
        "action": np.array(rows["action"], dtype=np.float32),
        "task_state": task_state.reshape(len(task_state), k),
        "task_state_names": list(state_names or []),
        "success": bool(success) if success is not None else False,
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
