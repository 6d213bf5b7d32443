"""The stack description (read by the runner and finetune.launch.py): where a run goes."""
from __future__ import annotations

from pathlib import Path

import pytest

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


def test_real_time_priority_goes_to_the_control_nodes_of_a_robot_only():
    specs = {s.name: s for s in description.nodes({"sim": "false", "realtime_priority": "40"}, REPO / "config")}
    assert {n: s.overrides.get("realtime_priority") for n, s in specs.items()} == {
        "camera_node": 35, "policy_node": 40, "reward_node": 40, "learner_node": None}
    sim = description.nodes({"realtime_priority": "40"}, REPO / "config")  # lock-step: nothing waits on the clock
    assert all("realtime_priority" not in s.overrides for s in sim)
    for bad in ("99", "-1", "high"):
        try:
            description.resolve({"realtime_priority": bad})
        except ValueError as exc:
            assert "launch argument realtime_priority" in str(exc)
        else:
            raise AssertionError(f"realtime_priority {bad} was accepted")


def test_a_node_on_real_time_priority_puts_every_thread_there_or_says_what_is_missing():
    """set_realtime_priority in a process of its own: every thread (DDS's included) on SCHED_RR where the
    system allows it (root, CAP_SYS_NICE, an rtprio limit), else a warning naming the parameter and the fix."""
    import subprocess
    import sys

    from rosenv import fresh_domain_id, ros_env

    code = """
import os, rclpy
from mechanic_rl_ros.nodes.common import set_realtime_priority
rclpy.init()
node = rclpy.create_node('rt_probe')
ok = set_realtime_priority(node, 3)
policies = {os.sched_getscheduler(int(t)) for t in os.listdir('/proc/self/task')}
print('RESULT', ok, sorted(policies) == [os.SCHED_RR], len(os.listdir('/proc/self/task')) > 1)
rclpy.shutdown()
"""
    out = subprocess.run([sys.executable, "-c", code], env=ros_env(fresh_domain_id()), cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    result = next(line for line in out.stdout.splitlines() if line.startswith("RESULT")).split()[1:]
    if result[0] == "True":
        assert result == ["True", "True", "True"], out.stdout
    else:
        assert "parameter realtime_priority: 3 refused" in out.stderr and "rtprio" in out.stderr, out.stderr


def test_the_simulated_operator_runs_in_the_lift_simulation_only():
    names = [s.name for s in description.nodes({"interventions": "sim"}, REPO / "config")]
    assert "operator_node" in names and "operator_node" not in [
        s.name for s in description.nodes({}, REPO / "config")]
    for bad, why in (({"interventions": "sim", "sim": "false"}, "sim:=true"),
                     ({"interventions": "sim", "task": "push"}, "lift task only"),
                     ({"interventions": "person"}, "expected one of")):
        try:
            description.nodes(bad, REPO / "config")
        except ValueError as exc:
            assert "launch argument interventions" in str(exc) and why in str(exc), exc
        else:
            raise AssertionError(f"{bad} was accepted")


def test_world_reaches_the_simulator_and_what_depends_on_the_table_and_cube(tmp_path, monkeypatch):
    specs = {s.name: s for s in description.nodes({"world": "table_up_3cm cube_size=0.04", "interventions": "sim"},
                                                  REPO / "config")}
    assert specs["sim_node"].overrides["world"] == "table_up_3cm cube_size=0.04"
    assert specs["policy_node"].overrides["workspace_min"] == [0.2, -0.4, 0.03]  # the floor is the table top
    op = specs["operator_node"].overrides
    assert op["table_height"] == 0.03 and op["cube_half_size"] == 0.02
    default = {s.name: s for s in description.nodes({"interventions": "sim"}, REPO / "config")}
    assert "world" not in default["sim_node"].overrides and "workspace_min" not in default["policy_node"].overrides
    assert not {"table_height", "cube_half_size"} & set(default["operator_node"].overrides)
    # a world file given relative to the current directory reaches sim_node as an absolute path
    (tmp_path / "w.yaml").write_text("cube_mass: 0.3\n")
    monkeypatch.chdir(tmp_path)
    sim = next(s for s in description.nodes({"world": "w.yaml"}, REPO / "config") if s.name == "sim_node")
    assert sim.overrides["world"] == str(tmp_path / "w.yaml")


def test_a_bad_world_or_a_world_on_a_real_robot_is_refused_before_any_node_starts():
    for bad, why in (({"world": "dim_light", "sim": "false"}, "a real robot's world is the real one"),
                     ({"world": "cube_mass=5"}, "world field cube_mass: got 5; expected a number in [0.01, 2] kg"),
                     ({"world": "no_such_world"}, "no such preset")):
        try:
            description.nodes(bad, REPO / "config")
        except ValueError as exc:
            assert str(exc).startswith("launch argument world: ") and why in str(exc), exc
        else:
            raise AssertionError(f"{bad} was accepted")
    assert description.nodes({"world": "default", "sim": "false"}, REPO / "config")


def test_the_runner_refuses_a_bad_world_with_one_line(capsys):
    from mechanic_rl_ros.stack import runner

    assert runner.main(["world:=dim_light cube_size=0.2", "run_dir:=/nonexistent/run"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("mechanic-rl finetune: launch argument world: world file "
                           f"'{REPO / 'config' / 'worlds' / 'dim_light.yaml'}' with overrides ['cube_size']: world "
                           "field cube_size: got 0.2; expected a number in [0.03, 0.07] m"), err


def test_distill_config_goes_to_learner_and_policy_alike_and_a_bad_one_stops_the_launch(tmp_path, monkeypatch):
    shipped = str((REPO / "config" / "distill_encoder.yaml").resolve())
    for given in ("distill_encoder.yaml", str(REPO / "config" / "distill_encoder.yaml")):
        specs = {s.name: s for s in description.nodes({"algorithm": "distill", "distill_config": given},
                                                      REPO / "config")}
        assert specs["learner_node"].overrides["distill_config"] == shipped
        assert specs["policy_node"].overrides["distill_config"] == shipped
    default = {s.name: s for s in description.nodes({}, REPO / "config")}
    assert "distill_config" not in default["learner_node"].overrides
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text("train_params: [encoders]\nbatch_sise: 3\n")
    for given, words in (("bad.yaml", ["launch argument distill_config", "batch_sise"]),
                         ("missing.yaml", ["launch argument distill_config", "'missing.yaml' is not a file"])):
        try:
            description.nodes({"algorithm": "distill", "distill_config": given}, REPO / "config")
        except ValueError as exc:
            assert all(w in str(exc) for w in words), str(exc)
        else:
            raise AssertionError(f"distill_config {given} was accepted")


def test_distill_config_overrides_reach_both_nodes_and_the_offline_stage_hold(tmp_path):
    aug = str((REPO / "config" / "distill_augmented.yaml").resolve())
    for given, sent in (("distill_augmented.yaml augment_warp=0.5 offline_steps=40",
                         f"{aug} augment_warp=0.5 offline_steps=40"),
                        ("offline_steps=40", f"{(REPO / 'config' / 'distill.yaml').resolve()} offline_steps=40")):
        specs = {s.name: s for s in description.nodes({"algorithm": "distill", "distill_config": given,
                                                       "demos": str(tmp_path)}, REPO / "config")}
        assert specs["learner_node"].overrides["distill_config"] == sent
        assert specs["policy_node"].overrides["distill_config"] == sent
        assert specs["policy_node"].overrides["start_after_updates"] == 40
    with pytest.raises(ValueError, match="launch argument distill_config.*augment_warp: got 3"):
        description.nodes({"algorithm": "distill", "distill_config": "distill_augmented.yaml augment_warp=3"},
                          REPO / "config")


def test_policy_node_holds_the_first_episode_for_the_learners_offline_stage_with_demonstrations(tmp_path):
    aug = str(REPO / "config" / "distill_augmented.yaml")
    cases = [({"algorithm": "distill", "distill_config": aug, "demos": str(tmp_path)}, 1000),
             ({"algorithm": "distill", "distill_config": aug, "demos": ""}, 0),  # nothing to learn offline from
             ({"algorithm": "distill", "demos": str(tmp_path)}, 0),             # config/distill.yaml: no stage
             ({"algorithm": "select", "distill_config": aug, "demos": str(tmp_path)}, 0)]
    for values, steps in cases:
        specs = {s.name: s for s in description.nodes(values, REPO / "config")}
        assert specs["policy_node"].overrides["start_after_updates"] == steps, values
        assert specs["reward_node"].overrides["wait_for_policy"] is True


def test_learner_pace_reaches_reward_node_and_a_bad_one_stops_the_launch():
    specs = {s.name: s for s in description.nodes({"learner_pace": "120"}, REPO / "config")}
    assert specs["reward_node"].overrides["learner_pace"] == 120.0
    assert {s.name: s for s in description.nodes({}, REPO / "config")}["reward_node"].overrides["learner_pace"] == 0.0
    for bad in ("-5", "fast", "nan", "inf"):
        with pytest.raises(ValueError, match=f"launch argument learner_pace: got '{bad}'; expected gradient steps"):
            description.nodes({"learner_pace": bad}, REPO / "config")
