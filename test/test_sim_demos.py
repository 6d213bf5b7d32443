"""Demonstration recording: ``mechanic-rl collect`` writes rosbag2 MCAP that the
``mcap`` readers decode as ROS 2 messages, on the topics and types of the stack
on an FR3, and ``load_episodes`` round-trips it. Bags written by hand the way
``ros2 bag record`` writes them (schemas from the installed interface files,
the stack's own trajectories) and legacy-layout bags load too."""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from mcap.reader import make_reader

from mechanic_rl_ros import cli
from mechanic_rl_ros.control import fr3
from mechanic_rl_ros.control.safety import SafetyFilter
from mechanic_rl_ros.sim import TASK_STATE_FIELDS, make_env
from mechanic_rl_ros.data.demos import (DemoFormatError, derived_gripper_commands, load_cache, load_episodes,
                                        read_bag)
from mechanic_rl_ros.data.rosbag import MSG_DEFINITIONS, DemoTopics

from mcap_ros2.reader import read_ros2_messages  # noqa: E402  (after demos, which silences its import warning)

REPO = Path(__file__).resolve().parents[1]
SHARE = Path(sys.prefix) / "share"
JTC = "/fr3_position_trajectory_controller/joint_trajectory"
CAMS = ("scene", "wrist")
SIZE = 32
NOISE = 0.5


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demos")
    argv = ["collect", "--task", "lift", "--episodes", "2", "--out", str(out), "--noise", str(NOISE),
            "--image-size", str(SIZE), "--cameras", ",".join(CAMS), "--seed", "7", "--quiet"]  # fmt: skip
    assert cli.main(argv) == 0
    return out


def _rollout(seed: int, expert_seed: int, episodes_before: int = 0) -> dict:
    """The episode ``collect`` should have recorded, re-simulated in memory."""
    env = make_env("lift", render=True, cameras=CAMS, image_size=SIZE, seed=expert_seed)
    expert = env.expert(noise=NOISE, seed=expert_seed)
    rec: dict = {"images": {c: [] for c in CAMS}, "qpos": [], "gripper": [], "action": [], "task_state": []}
    for k in range(episodes_before + 1):
        obs, info = env.reset(seed=seed - episodes_before + k)
        record = k == episodes_before
        while True:
            action = expert.act(obs)
            if record:
                for c in CAMS:
                    rec["images"][c].append(obs["images"][c])
                for key in ("qpos", "gripper", "task_state"):
                    rec[key].append(obs[key])
                rec["action"].append(action)
            obs, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                break
    rec["success"] = info["success"]
    return rec


def test_collect_layout_and_summary(demo_dir, capsys):
    names = sorted(p.name for p in demo_dir.iterdir())
    assert names == ["cache", "episode_00000", "episode_00001", "summary.json"]
    for ep in ("episode_00000", "episode_00001"):
        assert sorted(p.name for p in (demo_dir / ep).iterdir()) == [f"{ep}_0.mcap", "metadata.yaml"]
    summary = json.loads((demo_dir / "summary.json").read_text())
    assert summary["episodes"] == 2 and 0.0 <= summary["success_rate"] <= 1.0
    assert summary["cameras"] == list(CAMS) and summary["image_size"] == [SIZE, SIZE]


def test_mcap_is_ros2_profile_with_full_schemas(demo_dir):
    bag = demo_dir / "episode_00000" / "episode_00000_0.mcap"
    with open(bag, "rb") as f:
        reader = make_reader(f)
        assert reader.get_header().profile == "ros2"
        summary = reader.get_summary()
        schemas = {s.name: s for s in summary.schemas.values()}
        for ch in summary.channels.values():
            assert ch.message_encoding == "cdr"
            assert schemas[summary.schemas[ch.schema_id].name].encoding == "ros2msg"
    image_schema = schemas["sensor_msgs/msg/Image"].data.decode()
    assert "\nMSG: std_msgs/Header\n" in image_schema and "\nMSG: builtin_interfaces/Time\n" in image_schema
    assert ("=" * 80) in image_schema
    meta = yaml.safe_load((bag.parent / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["storage_identifier"] == "mcap" and meta["relative_file_paths"] == [bag.name]
    counts = {t["topic_metadata"]["name"]: t["message_count"] for t in meta["topics_with_message_count"]}
    assert sum(counts.values()) == meta["message_count"] == summary.statistics.message_count


def test_mcap_messages_decode_as_ros2_types(demo_dir):
    bag = demo_dir / "episode_00000" / "episode_00000_0.mcap"
    by_topic: dict[str, list] = {}
    for m in read_ros2_messages(str(bag)):
        by_topic.setdefault(m.channel.topic, []).append(m)
    for cam in CAMS:
        msgs = by_topic[f"/camera/{cam}/image_raw"]
        assert msgs[0].schema.name == "sensor_msgs/msg/Image"
        img = msgs[0].ros_msg
        assert (img.height, img.width, img.encoding, img.step) == (SIZE, SIZE, "rgb8", 3 * SIZE)
        assert len(img.data) == SIZE * SIZE * 3 and img.header.frame_id == f"{cam}_camera"
    joints = by_topic["/joint_states"]
    assert joints[0].schema.name == "sensor_msgs/msg/JointState"
    js = joints[0].ros_msg
    assert list(js.name) == list(fr3.ALL_JOINT_NAMES)
    assert len(js.position) == len(js.velocity) == len(js.effort) == 9
    np.testing.assert_allclose(js.position[:7], fr3.Q_HOME, atol=0.03)
    assert js.header.stamp.sec * 10**9 + js.header.stamp.nanosec == joints[0].log_time_ns
    fingers = by_topic["/franka_gripper/joint_states"]
    assert fingers[0].schema.name == "sensor_msgs/msg/JointState" and len(fingers) == len(joints)
    assert list(fingers[0].ros_msg.name) == list(fr3.FINGER_JOINT_NAMES)
    assert list(fingers[0].ros_msg.position) == list(js.position[7:])
    assert fingers[0].log_time_ns == joints[0].log_time_ns
    cmds = by_topic[JTC]
    assert cmds[0].schema.name == "trajectory_msgs/msg/JointTrajectory"
    traj = cmds[0].ros_msg
    assert list(traj.joint_names) == list(fr3.JOINT_NAMES) and len(traj.points) == 1
    assert (traj.header.stamp.sec, traj.header.stamp.nanosec) == (0, 0)  # the controller starts it on receipt
    point = traj.points[0]
    assert len(point.positions) == 7 and not point.velocities and not point.accelerations
    assert (point.time_from_start.sec, point.time_from_start.nanosec) == (0, 100_000_000)  # one control period
    widths = by_topic["/demo/gripper_width"]
    assert widths[0].schema.name == "std_msgs/msg/Float64" and len(widths) == len(cmds)
    assert not {"/fr3_position_controller/commands", "/fr3_gripper/commands"} & set(by_topic)
    # One observation per step plus the final one.
    assert len(joints) == len(cmds) + 1 == len(by_topic["/camera/scene/image_raw"])
    state = by_topic["/sim/task_state"][-1].ros_msg
    assert list(state.names) == list(TASK_STATE_FIELDS) and len(state.values) == len(TASK_STATE_FIELDS)
    outcome = json.loads(by_topic["/demo/episode"][-1].ros_msg.data)
    assert outcome["event"] == "end" and outcome["success"] == state.success


def test_loader_round_trips_the_recorded_episodes(demo_dir):
    episodes = load_episodes(demo_dir)
    assert len(episodes) == 2
    for i, ep in enumerate(episodes):
        expected = _rollout(seed=7 + i, expert_seed=7, episodes_before=i)
        t = len(expected["action"])
        assert ep["action"].shape == (t, 8) and ep["action"].dtype == np.float32
        assert ep["qpos"].shape == (t, 7) and ep["gripper"].shape == (t, 1)
        assert ep["task_state"].shape == (t, len(TASK_STATE_FIELDS))
        for c in CAMS:
            assert ep["images"][c].dtype == np.uint8 and ep["images"][c].shape == (t, SIZE, SIZE, 3)
            np.testing.assert_array_equal(ep["images"][c], np.stack(expected["images"][c]))
        np.testing.assert_allclose(ep["qpos"], np.stack(expected["qpos"]), atol=1e-6)
        np.testing.assert_allclose(ep["gripper"], np.stack(expected["gripper"]), atol=1e-6)
        np.testing.assert_allclose(ep["task_state"], np.stack(expected["task_state"]), atol=1e-6)
        np.testing.assert_allclose(ep["action"], np.stack(expected["action"]).astype(np.float32), atol=1e-6)
        assert ep["success"] == expected["success"] and ep["task"] == "lift" and ep["seed"] == 7 + i


def test_cache_is_pickle_free_and_rebuilds_from_mcap(demo_dir, tmp_path):
    copy = tmp_path / "demos"
    shutil.copytree(demo_dir, copy)
    cached = load_episodes(copy)
    for f in (copy / "cache").glob("*.npz"):
        with np.load(f, allow_pickle=False) as z:
            assert all(z[k].dtype != object for k in z.files)
    shutil.rmtree(copy / "cache")
    rebuilt = load_episodes(copy, cameras=("wrist",))
    assert sorted(p.name for p in (copy / "cache").iterdir()) == ["episode_00000.npz", "episode_00001.npz"]
    for a, b in zip(cached, rebuilt):
        assert set(b["images"]) == {"wrist"}
        np.testing.assert_array_equal(a["images"]["wrist"], b["images"]["wrist"])
        for k in ("qpos", "qvel", "gripper", "action", "task_state"):
            np.testing.assert_array_equal(a[k], b[k])
    # A directory of caches alone (no bags) loads too.
    only_npz = tmp_path / "npz"
    shutil.copytree(copy / "cache", only_npz)
    assert len(load_episodes(only_npz)) == 2
    assert load_cache(only_npz / "episode_00000.npz")["success"] == cached[0]["success"]
    with pytest.raises(ValueError, match="camera"):
        load_episodes(copy, cameras=("left",))


def test_reads_a_bag_without_sim_only_topics(demo_dir, tmp_path):
    """A real-robot bag has no task state, episode record or gripper command: the loader still reads it."""
    src = demo_dir / "episode_00000" / "episode_00000_0.mcap"
    dst = tmp_path / "robot.mcap"
    keep = {"/camera/scene/image_raw", "/joint_states", "/franka_gripper/joint_states", JTC}
    _copy_bag(src, dst, keep, delay_ns=5_000_000)
    ep = read_bag(dst)
    full = read_bag(src)
    assert set(ep["images"]) == {"scene"} and ep["task_state"].shape == (len(full["action"]), 0)
    np.testing.assert_array_equal(ep["qpos"], full["qpos"])
    np.testing.assert_array_equal(ep["gripper"], full["gripper"])
    np.testing.assert_array_equal(ep["action"][:, :7], full["action"][:, :7])
    # No gripper command topic: the command is the width at which the fingers next come to rest.
    last = [m.ros_msg for m in read_ros2_messages(str(src), topics=["/franka_gripper/joint_states"])][-1]
    derived = derived_gripper_commands(np.append(ep["gripper"][:, 0], sum(last.position)))
    np.testing.assert_allclose(ep["action"][:, 7], derived, atol=1e-7)
    closing = np.flatnonzero(full["action"][:, 7] < full["gripper"][:, 0] - 0.01)
    assert closing.size and np.all(ep["action"][closing[-1]:, 7] < 0.07)  # the expert's grasp reads as a close
    assert ep["success"] is False


def _copy_bag(src: Path, dst: Path, keep: set[str], delay_ns: int = 0) -> None:
    """The messages of ``keep`` from ``src`` re-written by a plain mcap_ros2 writer, ``delay_ns`` later."""
    from mcap_ros2.writer import Writer

    with open(dst, "wb") as f:
        writer = Writer(f)
        schemas = {}
        for m in read_ros2_messages(str(src)):
            if m.channel.topic not in keep:
                continue
            name = m.schema.name
            if name not in schemas:
                schemas[name] = writer.register_msgdef(name, m.schema.data.decode())
            writer.write_message(m.channel.topic, schemas[name], _to_dict(m.ros_msg),
                                 log_time=m.log_time_ns + delay_ns)
        writer.finish()


_PRIMITIVES = {"bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32",
               "int64", "uint64", "string"}


def _recorded_schema(msg_type: str, seen: set | None = None) -> str:
    """The schema rosbag2 (Jazzy) stores for ``msg_type``: the installed .msg file, comments and all, then each
    dependency's after the delimiter, depth first, every message's dependencies in sorted order."""
    seen = set() if seen is None else seen
    package, name = msg_type.split("/")[0], msg_type.split("/")[-1]
    text = (SHARE / package / "msg" / f"{name}.msg").read_text()
    deps = set()
    for line in text.splitlines():
        tokens = line.split("#", 1)[0].split()
        field_type = re.sub(r"\[.*\]$", "", tokens[0]) if len(tokens) >= 2 else None
        if field_type and field_type.split("<")[0] not in _PRIMITIVES:
            deps.add(field_type if "/" in field_type else f"{package}/{field_type}")
    for dep in sorted(deps - seen):
        seen.add(dep)
        text += "\n" + "=" * 80 + "\nMSG: " + dep + "\n" + _recorded_schema(dep, seen)
    return text


class _RecordedBag:
    """A bag written the way ``ros2 bag record -s mcap`` writes one: a plain mcap_ros2 writer, the schemas
    rosbag2 stores, messages as the robot's drivers publish them."""

    def __init__(self, path: Path, start_ns: int = 1_700_000_000 * 10**9):
        from mcap_ros2.writer import Writer

        self._file = open(path, "wb")
        self._writer = Writer(self._file)
        self._schemas: dict = {}
        self.start_ns = start_ns

    def write(self, topic: str, msg_type: str, msg: dict, t: float) -> None:
        if msg_type not in self._schemas:
            self._schemas[msg_type] = self._writer.register_msgdef(msg_type, _recorded_schema(msg_type))
        t_ns = self.start_ns + int(round(t * 1e9))
        self._writer.write_message(topic, self._schemas[msg_type], msg, log_time=t_ns, publish_time=t_ns)

    def stamp(self, t: float) -> dict:
        ns = self.start_ns + int(round(t * 1e9))
        return {"sec": ns // 10**9, "nanosec": ns % 10**9}

    def observation(self, t: float, rgb: np.ndarray, qpos, width: float, arm_names=fr3.JOINT_NAMES) -> None:
        """A camera frame, the arm's joint states and franka_gripper's finger joint states at ``t``."""
        header = {"stamp": self.stamp(t), "frame_id": ""}
        h, w, _ = rgb.shape
        self.write("/camera/scene/image_raw", "sensor_msgs/msg/Image",
                   {"header": header, "height": h, "width": w, "encoding": "rgb8", "is_bigendian": 0,
                    "step": 3 * w, "data": rgb.tobytes()}, t)
        order = [list(fr3.JOINT_NAMES).index(n) for n in arm_names]
        self.write("/joint_states", "sensor_msgs/msg/JointState",
                   {"header": header, "name": list(arm_names), "position": [float(qpos[i]) for i in order],
                    "velocity": [0.0] * 7, "effort": [0.0] * 7}, t)
        self.write("/franka_gripper/joint_states", "sensor_msgs/msg/JointState",
                   {"header": header, "name": list(fr3.FINGER_JOINT_NAMES), "position": [width / 2] * 2,
                    "velocity": [0.0] * 2, "effort": [0.0] * 2}, t)

    def trajectory(self, t: float, traj: dict) -> None:
        self.write(JTC, "trajectory_msgs/msg/JointTrajectory", traj, t)

    def gripper_width(self, t: float, width: float) -> None:
        self.write("/demo/gripper_width", "std_msgs/msg/Float64", {"data": float(width)}, t)

    def close(self) -> None:
        self._writer.finish()
        self._file.close()


def _trajectory_msg(points: list[tuple[float, list]], names=fr3.JOINT_NAMES, stamp=None) -> dict:
    """trajectory_msgs/JointTrajectory fields: ``points`` (time_from_start [s], positions) in ``names`` order."""
    def point(t, q, v=None, a=None):
        ns = int(round(t * 1e9))
        return {"positions": [float(x) for x in q], "velocities": [] if v is None else [float(x) for x in v],
                "accelerations": [] if a is None else [float(x) for x in a], "effort": [],
                "time_from_start": {"sec": ns // 10**9, "nanosec": ns % 10**9}}
    return {"header": {"stamp": stamp or {"sec": 0, "nanosec": 0}, "frame_id": ""}, "joint_names": list(names),
            "points": [point(*p) for p in points]}


def test_reads_a_bag_recorded_from_the_stack(demo_dir, tmp_path):
    """The stack's own trajectories (the safety filter's: lead-in, target knot, braking tail), 7-joint
    /joint_states, franka_gripper's finger states and the gripper width topic, with rosbag2's schemas."""
    episode = read_bag(demo_dir / "episode_00000" / "episode_00000_0.mcap")
    bag = _RecordedBag(tmp_path / "stack.mcap")
    safety = SafetyFilter()
    safety.reset(episode["qpos"][0].astype(np.float64), now=0.0, settle=0.0)
    targets = []
    for k, action in enumerate(episode["action"].astype(np.float64)):
        t = 0.1 * k
        bag.observation(t, episode["images"]["scene"][k], episode["qpos"][k], float(episode["gripper"][k, 0]))
        res = safety.filter(action[:7], float(action[7]), now=t)
        assert "hold" not in res.limited and len(res.trajectory.points) >= 3
        targets.append(res.q)
        tr = res.trajectory
        bag.trajectory(t + 1e-4, _trajectory_msg([(p.time_from_start, p.positions, p.velocities, p.accelerations)
                                                  for p in tr.points], stamp=bag.stamp(tr.stamp)))
        bag.gripper_width(t + 2e-4, res.gripper_width)
    bag.close()
    ep = read_bag(tmp_path / "stack.mcap")
    assert set(ep["images"]) == {"scene"} and len(ep["action"]) == len(targets)
    np.testing.assert_allclose(ep["action"][:, :7], np.array(targets, dtype=np.float32), atol=1e-6)
    np.testing.assert_allclose(ep["qpos"], episode["qpos"], atol=1e-6)
    np.testing.assert_allclose(ep["gripper"], episode["gripper"], atol=1e-6)
    # the width published just after the step's arm message is that step's gripper command
    np.testing.assert_allclose(ep["action"][:, 7], np.clip(episode["action"][:, 7], 0.0, 0.08), atol=1e-6)
    assert ep["task_state"].shape == (len(targets), 0) and ep["success"] is False


def _small_bag(path: Path, trajectories: list[dict], widths=None, arm_names=fr3.JOINT_NAMES) -> Path:
    """A bag of len(trajectories) steps: observation at 0.1 k, then the k-th arm message (and gripper width)."""
    bag = _RecordedBag(path)
    for k, traj in enumerate(trajectories):
        bag.observation(0.1 * k, np.full((4, 4, 3), k, np.uint8), fr3.Q_HOME, 0.08, arm_names)
        bag.trajectory(0.1 * k + 1e-6, traj)
        if widths is not None:
            bag.gripper_width(0.1 * k + 1e-6, widths[k])
    bag.close()
    return path


def test_joint_names_are_matched_by_name(tmp_path):
    targets = [fr3.Q_HOME + 0.01 * k * np.arange(1, 8) for k in range(3)]
    perm = [6, 0, 5, 1, 4, 2, 3]
    names = [fr3.JOINT_NAMES[i] for i in perm]
    permuted = _small_bag(tmp_path / "perm.mcap", [_trajectory_msg([(0.1, q[perm])], names) for q in targets],
                          widths=[0.08, 0.05, 0.0], arm_names=names[::-1])
    ep = read_bag(permuted)
    np.testing.assert_allclose(ep["action"][:, :7], np.array(targets, dtype=np.float32), atol=1e-6)
    np.testing.assert_allclose(ep["action"][:, 7], [0.08, 0.05, 0.0], atol=1e-7)
    np.testing.assert_allclose(ep["qpos"], np.tile(fr3.Q_HOME.astype(np.float32), (3, 1)), atol=1e-6)


@pytest.mark.parametrize("names, points, match", [
    (["panda_joint1", *fr3.JOINT_NAMES[1:]], [(0.1, fr3.Q_HOME)], r"joint_names .*unknown \['panda_joint1'\]"),
    (fr3.JOINT_NAMES[:6], [(0.1, fr3.Q_HOME[:6])], r"joint_names .*missing \['fr3_joint7'\]"),
    ([*fr3.JOINT_NAMES[:6], "fr3_joint1"], [(0.1, fr3.Q_HOME)], r"joint_names .*repeated \['fr3_joint1'\]"),
    (fr3.JOINT_NAMES, [(0.1, fr3.Q_HOME[:6])], r"points\[0\]\.positions has 6 values, expected 7"),
    (fr3.JOINT_NAMES, [(0.0, fr3.Q_HOME), (0.1, fr3.Q_HOME, [0.0] * 3)], r"points\[1\]\.velocities has 3 values"),
    (fr3.JOINT_NAMES, [(0.1, [np.nan, *fr3.Q_HOME[1:]])], r"points\[0\]\.positions is not finite"),
    (fr3.JOINT_NAMES, [], r"points is empty"),
])  # fmt: skip
def test_a_bad_arm_trajectory_is_refused_naming_it(tmp_path, names, points, match):
    good = _trajectory_msg([(0.1, fr3.Q_HOME)])
    bag = _small_bag(tmp_path / "bad.mcap", [good, _trajectory_msg(points, names)])
    with pytest.raises(DemoFormatError, match=f"{JTC} message 1: {match}"):
        read_bag(bag)


def test_a_wrong_message_type_on_the_arm_topic_is_refused(demo_dir, tmp_path):
    """Float64MultiArray on the trajectory topic (a forward controller's command) is named, not misread."""
    src = demo_dir / "episode_00000" / "episode_00000_0.mcap"
    legacy = tmp_path / "legacy.mcap"
    _legacy_bag(src, legacy)
    topics = DemoTopics(legacy_arm_command="/nowhere", arm_command="/fr3_position_controller/commands")
    with pytest.raises(DemoFormatError, match="holds std_msgs/msg/Float64MultiArray, expected trajectory_msgs"):
        read_bag(legacy, topics=topics)


def _legacy_bag(src: Path, dst: Path) -> None:
    """``src`` re-written in the legacy layout: Float64MultiArray arm and gripper commands on the old topics."""
    from mcap_ros2.writer import Writer

    with open(dst, "wb") as f:
        writer = Writer(f)
        schemas = {}
        for m in read_ros2_messages(str(src)):
            topic, name, msg = m.channel.topic, m.schema.name, _to_dict(m.ros_msg)
            if topic == "/franka_gripper/joint_states":
                continue  # legacy bags had the fingers in /joint_states only
            if topic == JTC:
                topic, name, msg = "/fr3_position_controller/commands", "std_msgs/msg/Float64MultiArray", \
                    {"layout": {"dim": [], "data_offset": 0}, "data": msg["points"][0]["positions"]}
            elif topic == "/demo/gripper_width":
                topic, name, msg = "/fr3_gripper/commands", "std_msgs/msg/Float64MultiArray", \
                    {"layout": {"dim": [], "data_offset": 0}, "data": [msg["data"]]}
            if name not in schemas:
                schemas[name] = writer.register_msgdef(name, MSG_DEFINITIONS[name])
            writer.write_message(topic, schemas[name], msg, log_time=m.log_time_ns)
        writer.finish()


def test_a_legacy_layout_bag_still_loads(demo_dir, tmp_path):
    src = demo_dir / "episode_00001" / "episode_00001_0.mcap"
    legacy = tmp_path / "legacy.mcap"
    _legacy_bag(src, legacy)
    topics = {m.channel.topic for m in read_ros2_messages(str(legacy))}
    assert {"/fr3_position_controller/commands", "/fr3_gripper/commands"} <= topics and JTC not in topics
    old, new = read_bag(legacy), read_bag(src)
    for key in ("qpos", "qvel", "gripper", "action", "task_state"):
        np.testing.assert_array_equal(old[key], new[key], err_msg=key)
    for c in CAMS:
        np.testing.assert_array_equal(old["images"][c], new["images"][c])
    assert (old["success"], old["seed"], old["task"]) == (new["success"], new["seed"], new["task"])


def test_derived_gripper_commands_are_where_the_fingers_come_to_rest():
    # open at rest; the command after step 2 closes on a 5 cm object (2 periods of motion); it opens at the end
    widths = [0.08, 0.08, 0.08, 0.065, 0.05, 0.05, 0.05, 0.065, 0.08]
    np.testing.assert_allclose(derived_gripper_commands(widths), [0.08, 0.08, 0.05, 0.05, 0.05, 0.05, 0.08, 0.08])
    # still moving when the bag ends: the last width
    np.testing.assert_allclose(derived_gripper_commands([0.08, 0.07, 0.06]), [0.06, 0.06])
    # sensor noise below the tolerance is rest
    np.testing.assert_allclose(derived_gripper_commands([0.0800, 0.0802, 0.0801]), [0.0802, 0.0801])


def _to_dict(msg):
    if hasattr(msg, "__slots__"):
        return {k: _to_dict(getattr(msg, k)) for k in msg.__slots__}
    if isinstance(msg, list):
        return [_to_dict(v) for v in msg]
    return msg


def _fields(text: str) -> list[str]:
    """Field lines of a .msg text, comments and blank lines dropped."""
    lines = [re.sub(r"\s+", " ", ln.split("#", 1)[0]).strip() for ln in text.splitlines()]
    return [ln for ln in lines if ln]


def test_embedded_definitions_match_the_interface_files():
    """Every section (main definition and each dependency) has the fields of the installed Jazzy .msg file."""
    for name, text in MSG_DEFINITIONS.items():
        sections = text.split("=" * 80 + "\n")
        if name == "mechanic_rl_ros/msg/TaskState":
            assert _fields(sections[0]) == _fields((REPO / "msg" / "TaskState.msg").read_text())
        else:
            _assert_matches_installed(name, sections[0])
        for section in sections[1:]:
            header, _, body = section.partition("\n")
            assert header.startswith("MSG: "), (name, header)
            _assert_matches_installed(header[len("MSG: "):], body)
    recorded = _recorded_schema("trajectory_msgs/msg/JointTrajectory")
    assert [_fields(s) for s in recorded.split("=" * 80 + "\n")] == \
        [_fields(s) for s in MSG_DEFINITIONS["trajectory_msgs/msg/JointTrajectory"].split("=" * 80 + "\n")]


def _assert_matches_installed(msg_type: str, text: str) -> None:
    package, name = msg_type.split("/")[0], msg_type.split("/")[-1]
    ros_file = SHARE / package / "msg" / f"{name}.msg"
    assert ros_file.exists(), f"ROS 2 interface file {ros_file} not installed"
    assert _fields(text) == _fields(ros_file.read_text()), msg_type


def test_demo_topics_are_the_stacks(demo_dir):
    """The bag's topics carry the names and message types the stack's nodes use (wire/topics.py)."""
    wire = pytest.importorskip("mechanic_rl_ros.wire.topics")  # (needs rclpy's message packages)
    demo = DemoTopics()
    assert demo.camera_pattern == wire.CAMERA_IMAGE.name
    stack = {demo.arm_command: wire.ARM_TRAJECTORY, demo.joint_states: wire.JOINT_STATES,
             demo.gripper_joint_states: wire.GRIPPER_JOINT_STATES, demo.task_state: wire.TASK_STATE}
    meta = yaml.safe_load((demo_dir / "episode_00000" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    types = {t["topic_metadata"]["name"]: t["topic_metadata"]["type"] for t in meta["topics_with_message_count"]}
    for name, topic in stack.items():
        assert name == topic.name
        assert types[name] == f"{topic.type.__module__.split('.')[0]}/msg/{topic.type.__name__}", name


def test_collect_rejects_bad_arguments(tmp_path, capsys):
    assert cli.main(["collect", "--episodes", "0", "--out", str(tmp_path)]) == 2
    assert "--episodes" in capsys.readouterr().err
    assert cli.main(["collect", "--noise", "nan", "--out", str(tmp_path), "--episodes", "1"]) == 2
    with pytest.raises(SystemExit):
        cli.main(["collect", "--task", "stack", "--out", str(tmp_path)])
