"""The stack description (read by the runner and finetune.launch.py): where a run goes."""
from __future__ import annotations

from pathlib import Path

from mechanic_rl_ros.stack import description
from rosenv import REPO


def test_a_relative_run_dir_is_taken_from_the_current_directory_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    values = description.resolve({})
    assert values["run_dir"] == str(tmp_path / "runs" / "finetune")
    assert description.resolve(values) == values, "resolving twice must not move the run"
    learner = next(s for s in description.nodes({}, REPO / "config") if s.name == "learner_node")
    assert learner.overrides["run_dir"] == str(tmp_path / "runs" / "finetune")
    assert description.resolve({"run_dir": "other/../mine"})["run_dir"] == str(tmp_path / "mine")
    assert description.resolve({"run_dir": "~/r"})["run_dir"] == str(Path.home() / "r")

    message = description.run_dir_message(None, values["run_dir"])
    assert message == f"run_dir: {tmp_path / 'runs' / 'finetune'} ('runs/finetune' taken from the current directory {tmp_path})"
    assert description.run_dir_message("/abs/run", "/abs/run") == "run_dir: /abs/run"


def test_frame_moving_nodes_get_the_large_frames_dds_profile(tmp_path):
    specs = {s.name: s for s in description.nodes({}, REPO / "config")}
    profile = str((REPO / "config" / "fastdds_large_frames.xml").resolve())
    for name in ("sim_node", "camera_node"):
        assert specs[name].env == {"FASTRTPS_DEFAULT_PROFILES_FILE": profile}, name
    assert all(not specs[n].env for n in ("policy_node", "reward_node", "learner_node"))
    assert all(not s.env for s in description.nodes({"dds_profile": "default"}, REPO / "config"))
    own = tmp_path / "mine.xml"
    own.write_text("<profiles/>")
    camera = next(s for s in description.nodes({"dds_profile": str(own)}, REPO / "config") if s.name == "camera_node")
    assert camera.env == {"FASTRTPS_DEFAULT_PROFILES_FILE": str(own)}
    try:
        description.nodes({"dds_profile": str(tmp_path / "missing.xml")}, REPO / "config")
    except ValueError as exc:
        assert "launch argument dds_profile:" in str(exc) and "missing.xml" in str(exc)
    else:
        raise AssertionError("a missing profile was accepted")
