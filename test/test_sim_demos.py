"""Demonstration recording: ``mechanic-rl collect`` writes rosbag2 MCAP that the
``mcap`` readers decode as ROS 2 messages, and ``load_episodes`` round-trips it."""
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
from mechanic_rl_ros.sim import TASK_STATE_FIELDS, make_env
from mechanic_rl_ros.data.demos import load_cache, load_episodes, read_bag
from mechanic_rl_ros.data.rosbag import MSG_DEFINITIONS

from mcap_ros2.reader import read_ros2_messages  # noqa: E402  (after demos, which silences its import warning)

REPO = Path(__file__).resolve().parents[1]
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
    cmds = by_topic["/fr3_position_controller/commands"]
    assert cmds[0].schema.name == "std_msgs/msg/Float64MultiArray" and len(cmds[0].ros_msg.data) == 7
    assert len(by_topic["/fr3_gripper/commands"]) == len(cmds)
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
    """A real-robot bag has no task state or episode record: the loader still reads it."""
    from mcap_ros2.writer import Writer

    src = demo_dir / "episode_00000" / "episode_00000_0.mcap"
    dst = tmp_path / "robot.mcap"
    keep = {"/camera/scene/image_raw", "/joint_states", "/fr3_position_controller/commands"}
    with open(dst, "wb") as f:
        writer = Writer(f)
        schemas = {}
        for m in read_ros2_messages(str(src)):
            if m.channel.topic not in keep:
                continue
            name = m.schema.name
            if name not in schemas:
                schemas[name] = writer.register_msgdef(name, m.schema.data.decode())
            writer.write_message(m.channel.topic, schemas[name], _to_dict(m.ros_msg), log_time=m.log_time_ns + 5_000_000)
        writer.finish()
    ep = read_bag(dst)
    full = read_bag(src)
    assert set(ep["images"]) == {"scene"} and ep["task_state"].shape == (len(full["action"]), 0)
    np.testing.assert_array_equal(ep["qpos"], full["qpos"])
    # No gripper command topic: the commanded width falls back to the measured one.
    np.testing.assert_array_equal(ep["action"][:, :7], full["action"][:, :7])
    np.testing.assert_array_equal(ep["action"][:, 7:], ep["gripper"])
    assert ep["success"] is False


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
    main = {name: text.split("=" * 80)[0] for name, text in MSG_DEFINITIONS.items()}
    own = (REPO / "msg" / "TaskState.msg").read_text()
    assert _fields(main["mechanic_rl_ros/msg/TaskState"]) == _fields(own)
    share = Path(sys.prefix) / "share"
    for name in ("sensor_msgs/msg/Image", "sensor_msgs/msg/JointState", "std_msgs/msg/Float64MultiArray",
                 "std_msgs/msg/String"):  # fmt: skip
        ros_file = share / f"{name}.msg"
        assert ros_file.exists(), f"ROS 2 interface file {ros_file} not installed"
        assert _fields(main[name]) == _fields(ros_file.read_text()), name


def test_collect_rejects_bad_arguments(tmp_path, capsys):
    assert cli.main(["collect", "--episodes", "0", "--out", str(tmp_path)]) == 2
    assert "--episodes" in capsys.readouterr().err
    assert cli.main(["collect", "--noise", "nan", "--out", str(tmp_path), "--episodes", "1"]) == 2
    with pytest.raises(SystemExit):
        cli.main(["collect", "--task", "stack", "--out", str(tmp_path)])
