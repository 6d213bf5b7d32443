"""Tests of the simulated FR3: kinematics, controller, limits, tasks, experts,
rendering and the gym-style / batched APIs. Real MuJoCo, real rendering."""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import pytest

from mechanic_rl_ros.control import fr3
from mechanic_rl_ros.control.chunk_loop import ChunkLoop, run_episode
from mechanic_rl_ros.sim import (
    DEFAULT_NOISE,
    TASK_STATE_DIM,
    TASKS,
    BatchedEnv,
    FR3Sim,
    LiftConfig,
    make_env,
    ExpertPlanner,
)


# ---------------------------------------------------------------- the robot
def test_limits_module_is_consistent():
    assert fr3.JOINT_NAMES == tuple(f"fr3_joint{i}" for i in range(1, 8))
    assert fr3.FINGER_JOINT_NAMES == ("fr3_finger_joint1", "fr3_finger_joint2")
    for arr in (fr3.Q_MIN, fr3.Q_MAX, fr3.DQ_MAX, fr3.TAU_MAX, fr3.DDQ_MAX, fr3.DDDQ_MAX, fr3.Q_HOME):
        assert arr.shape == (7,)
    assert np.all(fr3.Q_MIN < fr3.Q_HOME) and np.all(fr3.Q_HOME < fr3.Q_MAX)
    assert fr3.TAU_MAX.tolist() == [87.0] * 4 + [12.0] * 3
    with pytest.raises(ValueError):
        fr3.Q_MAX[0] = 0.0  # read-only shared constant


def test_mjcf_kinematics_match_dh_table():
    sim = FR3Sim()
    rng = np.random.default_rng(0)
    for q in [fr3.Q_HOME, np.zeros(7), *rng.uniform(fr3.Q_MIN, fr3.Q_MAX, (5, 7))]:
        sim.reset(q=q)
        pos, rot = sim.tcp_pose()
        expected = fr3.forward_kinematics(q)
        np.testing.assert_allclose(pos, expected[:3, 3], atol=1e-6)
        np.testing.assert_allclose(rot, expected[:3, :3], atol=1e-6)
    # Home pose: hand pointing straight down above the table.
    home = fr3.forward_kinematics(fr3.Q_HOME)
    np.testing.assert_allclose(home[:3, :3], np.diag([1.0, -1.0, -1.0]), atol=1e-9)


def test_controller_holds_home_and_tracks_a_smooth_motion():
    sim = FR3Sim()
    sim.step_physics(sim.n_substeps * 10)  # 1 s with no new command
    np.testing.assert_allclose(sim.qpos(), fr3.Q_HOME, atol=1e-3)
    assert sim.physics_dt <= 0.002 and sim.n_substeps == 50
    worst = 0.0
    for k in range(20):
        q = fr3.Q_HOME + 0.4 * np.sin(np.pi * k / 20) * np.array([1, 0.5, -1, 0.5, 1, -0.5, 1])
        sim.command(q, 0.04)
        for _ in range(5):
            sim.step_physics(10)
            worst = max(worst, np.abs(sim.qpos() - sim.target[:7]).max())
    assert worst < 0.01, f"tracking error {worst:.4f} rad"
    assert abs(sim.gripper_width() - 0.04) < 2e-3


def test_joint_limits_never_exceeded_under_random_and_extreme_commands():
    sim = FR3Sim()
    for seed in range(2):
        rng = np.random.default_rng(seed)
        sim.reset()
        for k in range(150):
            if k % 3 == 0:  # bang-bang far outside the limits
                q = np.where(rng.random(7) < 0.5, fr3.Q_MIN - 5.0, fr3.Q_MAX + 5.0)
            else:
                q = rng.uniform(fr3.Q_MIN - 1.0, fr3.Q_MAX + 1.0)
            applied = sim.command(q, rng.uniform(-1.0, 1.0))
            assert np.all(applied[:7] >= fr3.Q_MIN) and np.all(applied[:7] <= fr3.Q_MAX)
            assert fr3.GRIPPER_MIN_WIDTH <= applied[7] <= fr3.GRIPPER_MAX_WIDTH
            for _ in range(10):
                sim.step_physics(5)
                q_meas = sim.qpos()
                assert np.all(q_meas >= fr3.Q_MIN) and np.all(q_meas <= fr3.Q_MAX), (seed, k, q_meas)
                assert np.all(np.abs(sim.effort()) <= fr3.TAU_MAX + 1e-9)
                # Finger end stops are stiff but not rigid: allow 2.5 mm under impacts.
                assert -2.5e-3 <= sim.gripper_width() <= fr3.GRIPPER_MAX_WIDTH + 2.5e-3
        # the safety filter's trajectories never trip the robot's 1 kHz check
        assert sim.reflex_count == 0 and sim.robot_mode == "move", sim.last_violation
        assert sim.checker.commands_checked >= 150 * 100


def test_an_unsmoothed_target_step_is_a_reflex_as_on_the_robot():
    """A forward position controller writes a 10 Hz target step within one 1 ms tick: the FR3's
    velocity/acceleration check stops the arm, commands are ignored until error recovery."""
    sim = FR3Sim()
    sim.select_interface("forward")
    sim.step_physics(5)
    assert sim.reflex_count == 0  # holding the measured position is fine
    sim.send_position(fr3.Q_HOME + 0.0005)  # half a milliradian in one tick
    sim.step_physics(5)
    assert sim.robot_mode == "reflex"
    assert sim.errors == ["joint_motion_generator_velocity_discontinuity"], sim.last_violation
    held = sim.qpos()
    sim.send_position(fr3.Q_HOME + 0.1)
    sim.step_physics(50)
    np.testing.assert_allclose(sim.qpos(), held, atol=2e-3)
    assert sim.commands_ignored == 1
    sim.recover()
    sim.select_interface("trajectory")
    assert sim.robot_mode == "move" and sim.errors == []
    for _ in range(10):
        sim.command(fr3.Q_HOME + 0.1, 0.04)
        sim.step_physics()
    assert sim.reflex_count == 1 and np.abs(sim.qpos() - sim.commanded[:7]).max() < 0.02


def test_an_injected_reflex_stops_the_arm_until_recovery():
    sim = FR3Sim()
    for _ in range(3):
        sim.command(fr3.Q_HOME + 0.2, 0.04)
        sim.step_physics()
    sim.inject_reflex()
    assert sim.robot_mode == "reflex" and sim.errors == ["joint_reflex"]
    q = sim.qpos()
    sim.command(fr3.Q_HOME - 0.2, 0.04)
    sim.step_physics()
    assert np.abs(sim.qpos() - q).max() < 0.03
    sim.recover()
    for _ in range(10):
        sim.command(fr3.Q_HOME, 0.04)
        sim.step_physics()
    assert sim.reflex_count == 1 and sim.robot_mode == "move"


def test_clamp_joint_command_limits_velocity_and_acceleration():
    q_prev = fr3.Q_HOME.copy()
    out = fr3.clamp_joint_command(q_prev + 10.0, q_prev, 0.1)
    np.testing.assert_allclose(out - q_prev, np.minimum(fr3.DQ_MAX * 0.1, fr3.Q_MAX - q_prev))
    out = fr3.clamp_joint_command(q_prev + 10.0, q_prev, 0.1, dq_previous=np.zeros(7))
    np.testing.assert_allclose(out - q_prev, fr3.DDQ_MAX * 0.1 * 0.1)
    with pytest.raises(ValueError, match="shape"):
        fr3.clamp_joint_command(np.zeros(6), q_prev, 0.1)


# -------------------------------------------------------------- environment
@pytest.mark.parametrize(
    "bad, match",
    [
        (np.full(8, np.nan), "finite"),
        (np.zeros(7), r"shape \(8,\)"),
        (np.zeros((2, 8)), r"shape \(8,\)"),
        ("open", "numeric"),
        ([0.0] * 7 + [np.inf], "finite"),
    ],
)
def test_bad_actions_raise_value_error(bad, match):
    env = make_env("lift", seed=0)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.step(bad)


def test_bad_config_raises_value_error():
    with pytest.raises(ValueError, match="task"):
        make_env("stack")
    with pytest.raises(ValueError, match="cameras"):
        make_env("lift", cameras=("top",))
    with pytest.raises(ValueError, match="image_size"):
        make_env("lift", image_size=(0, 5))


def test_observation_layout_and_step_contract():
    env = make_env("lift", seed=0)
    obs, info = env.reset(seed=0)
    assert env.control_dt == pytest.approx(0.1) and env.physics_dt <= 0.002
    assert set(obs) == {"qpos", "qvel", "gripper", "task_state"}
    assert obs["qpos"].dtype == np.float32 and obs["qpos"].shape == (7,)
    assert obs["qvel"].shape == (7,) and obs["gripper"].shape == (1,)
    assert obs["task_state"].shape == (TASK_STATE_DIM,) and obs["task_state"].dtype == np.float32
    assert obs["gripper"][0] == pytest.approx(fr3.GRIPPER_MAX_WIDTH, abs=1e-4)
    action = np.append(obs["qpos"], 0.08)
    obs, reward, terminated, truncated, info = env.step(action)
    assert isinstance(reward, float) and not terminated and not truncated
    assert {"success", "sparse_reward", "shaped_reward"} <= set(info)
    assert info["success"] is False and info["sparse_reward"] == 0.0
    assert 0.0 <= info["shaped_reward"] <= 1.0


def test_time_limit_truncates():
    env = make_env("lift", seed=0, task_config=LiftConfig(max_steps=3))
    obs, _ = env.reset(seed=1)
    flags = []
    for _ in range(3):
        obs, _, terminated, truncated, _ = env.step(np.append(obs["qpos"], 0.08))
        flags.append((terminated, truncated))
    assert flags == [(False, False), (False, False), (False, True)]


def test_reset_with_seed_is_reproducible():
    env_a, env_b = make_env("push", seed=0), make_env("push", seed=99)
    obs_a, _ = env_a.reset(seed=5)
    obs_b, _ = env_b.reset(seed=5)
    for k in obs_a:
        np.testing.assert_array_equal(obs_a[k], obs_b[k])
    rng = np.random.default_rng(0)
    for _ in range(5):
        action = np.append(obs_a["qpos"] + rng.normal(0, 0.05, 7), rng.uniform(0, 0.08))
        obs_a, *_ = env_a.step(action)
        obs_b, *_ = env_b.step(action)
    for k in obs_a:
        np.testing.assert_array_equal(obs_a[k], obs_b[k])
    other, _ = env_a.reset(seed=6)
    assert not np.allclose(other["task_state"][:3], env_b.reset(seed=5)[0]["task_state"][:3])


def test_images_have_the_right_size_and_content():
    env = make_env("lift", render=True, cameras=("scene", "wrist"), image_size=(48, 64), seed=0)
    obs, _ = env.reset(seed=0)
    assert set(obs["images"]) == {"scene", "wrist"}
    for cam, img in obs["images"].items():
        assert img.dtype == np.uint8 and img.shape == (48, 64, 3), cam
        assert img.std() > 10, f"{cam} image looks blank"
    assert not np.array_equal(obs["images"]["scene"], obs["images"]["wrist"])
    obs2, *_ = env.step(np.append(obs["qpos"], 0.08))
    assert obs2["images"]["scene"].shape == (48, 64, 3)
    # Same state renders the same image.
    np.testing.assert_array_equal(env.reset(seed=0)[0]["images"]["scene"], obs["images"]["scene"])
    assert env.render("wrist", 32).shape == (32, 32, 3)
    env.close()
    square = make_env("lift", render=True, cameras=("wrist",), image_size=96, seed=0)
    assert square.reset(seed=0)[0]["images"]["wrist"].shape == (96, 96, 3)
    square.close()


# ------------------------------------------------------------------ experts
@pytest.mark.parametrize("task", sorted(TASKS))
def test_clean_expert_succeeds_95_percent(task):
    env = make_env(task, seed=0)
    expert = env.expert(noise=0.0, seed=0)
    results = [run_episode(env, ChunkLoop(1), ExpertPlanner(expert), seed=seed) for seed in range(20)]
    rate = np.mean([r.success for r in results])
    assert rate >= 0.95, f"{task} expert success {rate:.2f}"
    assert max(r.steps for r in results if r.success) < env.max_steps


def test_noisy_expert_is_imperfect_but_useful():
    env = make_env("lift", seed=0)
    expert = env.expert(noise=DEFAULT_NOISE, seed=0)
    rate = np.mean([run_episode(env, ChunkLoop(1), ExpertPlanner(expert), seed=100 + s).success for s in range(20)])
    assert 0.3 <= rate <= 0.95, rate


def test_expert_commands_are_smooth():
    env = make_env("lift", seed=0)
    expert = env.expert(noise=0.0)
    obs, _ = env.reset(seed=3)
    actions = []
    for _ in range(env.max_steps):
        actions.append(expert.act(obs))
        obs, _, terminated, truncated, _ = env.step(actions[-1])
        if terminated or truncated:
            break
    q = np.array(actions)[:, :7]
    velocity = np.diff(q, axis=0) / env.control_dt
    accel = np.diff(velocity, axis=0) / env.control_dt
    assert np.all(np.abs(velocity) < 0.5 * fr3.DQ_MAX)
    assert np.all(np.abs(accel) < fr3.DDQ_MAX)


# ------------------------------------------------------------------ batched
def test_batched_env_stacks_and_auto_resets():
    benv = BatchedEnv("lift", num_envs=3, render=True, image_size=32, seed=10, task_config=LiftConfig(max_steps=2))
    obs, info = benv.reset(seed=10)
    assert obs["qpos"].shape == (3, 7) and obs["task_state"].shape == (3, TASK_STATE_DIM)
    assert obs["images"]["scene"].shape == (3, 32, 32, 3)
    single, _ = make_env("lift", seed=0, task_config=LiftConfig(max_steps=2)).reset(seed=11)
    np.testing.assert_array_equal(obs["task_state"][1], single["task_state"])
    actions = np.concatenate([obs["qpos"], np.full((3, 1), 0.08)], axis=1)
    obs, rewards, terminated, truncated, info = benv.step(actions)
    assert rewards.shape == (3,) and not truncated.any() and all(f is None for f in info["final_obs"])
    obs, rewards, terminated, truncated, info = benv.step(actions)
    assert truncated.all()
    assert all(f is not None and f["qpos"].shape == (7,) for f in info["final_obs"])
    assert not np.allclose(obs["task_state"][:, :3], info["final_obs"][0]["task_state"][:3])
    with pytest.raises(ValueError, match=r"shape \(3, 8\)"):
        benv.step(actions[:2])
    nan_actions = actions.copy()
    nan_actions[2, 0] = np.nan
    with pytest.raises(ValueError, match=r"actions\[2\]"):
        benv.step(nan_actions)
    benv.close()


def test_batched_expert_solves_lift():
    benv = BatchedEnv("lift", num_envs=4, seed=0)
    expert = benv.expert(noise=0.0, seed=0)
    obs, _ = benv.reset(seed=0)
    done_success = []
    for _ in range(benv.max_steps):
        obs, _, terminated, truncated, info = benv.step(expert.act(obs))
        done_success += [bool(s) for s, d in zip(info["final_success"], terminated | truncated) if d]
        if len(done_success) >= 4:
            break
    assert len(done_success) >= 4 and all(done_success)


def test_re_activation_after_a_reflex_starts_where_the_arm_is_now():
    """The recovery loop of issue 32: franka_ros2's recovery is the error recovery, then (some milliseconds
    later) the controllers' activation. Between the two the arm still settles from the reflex and sags under
    gravity by microradians; a controller that starts from the command of the error recovery's instant jumps
    by that much in its first 1 ms command, a jerk the FR3 answers with a new reflex -- at every retry. The
    motion must start at rest where the arm is at the activation."""
    sim = FR3Sim()
    rng = np.random.default_rng(32)
    for trial in range(8):
        target = sim.qpos() + rng.normal(0.0, 0.15, 7)
        for _ in range(3):  # moving when the reflex comes
            sim.command(target, 0.04)
            sim.step_physics()
        sim.inject_reflex()
        sim.step_physics(150)  # 0.3 s stopped (reward_node waits for the robot state to go silent)
        sim.recover()  # /action_server/error_recovery
        sim.step_physics(5)  # 10 ms until switch_controller
        sim.recover()  # the arm controller activated
        sim.step_physics(50)
        assert sim.robot_mode == "move", f"trial {trial}: {sim.last_violation}"
    assert sim.reflex_count == 8
