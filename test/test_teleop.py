"""A person's device stream as an intervention (control/teleop.py) and the chunk loop around a takeover. No ROS."""
from __future__ import annotations

import numpy as np
import pytest

from mechanic_rl_ros.control import fr3
from mechanic_rl_ros.control.chunk_loop import BackgroundPlanning, Chunk, ChunkLoop
from mechanic_rl_ros.control.teleop import (ACTIVE, IDLE, LOST, OPERATOR, POLICY, CartesianJog, Takeover,
                                            TeleopConfig, TeleopInput, rotation_matrix, rotation_vector)

HOME = np.array([0.0, -0.4, 0.0, -2.2, 0.0, 1.8, 0.785])


def test_the_stream_takes_over_on_motion_or_a_button_and_hands_back_after_release():
    cfg = TeleopConfig(release=0.5, timeout=0.5, deadband=0.05)
    dev = TeleopInput(cfg)
    dev.on_twist((0.03, -0.02, 0.0), (0.0, 0.0, 0.04), 0.0)  # a mouse at rest drifts within the deadband
    assert dev.mode(0.0) == IDLE
    dev.on_twist((0.5, 0.0, 0.0), (0, 0, 0), 1.0)
    assert dev.mode(1.0) == ACTIVE
    for t in (1.1, 1.2, 1.3):  # streaming, at rest, holding close: still the operator's
        dev.on_twist((0, 0, 0), (0, 0, 0), t)
        dev.on_joy([1, 0], t)
    assert dev.mode(1.3) == ACTIVE and dev.gripper == "close"
    for t in np.arange(1.4, 2.0, 0.1):  # released, still streaming
        dev.on_twist((0, 0, 0), (0, 0, 0), t)
        dev.on_joy([0, 0], t)
    assert dev.mode(1.75) == ACTIVE and dev.mode(1.85) == IDLE


def test_a_silent_stream_while_active_is_lost_until_the_next_episode():
    dev = TeleopInput(TeleopConfig(release=0.5, timeout=0.3))
    dev.on_twist((0.0, 0.8, 0.0), (0, 0, 0), 0.0)
    assert dev.mode(0.2) == ACTIVE
    assert dev.mode(0.35) == LOST
    dev.on_twist((0.0, 0.0, 0.0), (0, 0, 0), 0.4)  # it comes back: still lost in this episode
    assert dev.mode(2.0) == LOST
    dev.reset()
    assert dev.mode(2.0) == IDLE
    quiet = TeleopInput(TeleopConfig(timeout=0.3))
    quiet.on_twist((0, 0, 0), (0, 0, 0), 0.0)  # a device at rest that stops publishing is not lost
    assert quiet.mode(5.0) == IDLE


def test_silence_and_release_count_on_both_clocks():
    """A steady stream is neither lost nor released while only one clock runs fast: a person's device
    publishes on the wall clock while the lock-step simulator's clock may run 4x faster, and the simulated
    operator publishes on simulated time while the wall clock runs 4x faster (a loaded machine)."""
    cfg = TeleopConfig(release=0.5, timeout=0.5)
    for sim_per_wall in (4.0, 0.25):
        dev = TeleopInput(cfg)
        fast = max(sim_per_wall, 1 / sim_per_wall)
        for i in range(40):  # every 0.04 s on the publisher's clock; a hiccup of 0.15 s there is 0.6 s on the other
            sim, wall = (0.04 * i * sim_per_wall, 0.04 * i) if sim_per_wall > 1 else (0.04 * i, 0.04 * i / sim_per_wall)
            dev.on_twist((0.0, 0.8, 0.0), (0, 0, 0), sim, wall)
            dev.on_joy([0, 0], sim, wall)
            later = (sim + 0.15 * fast, wall + 0.15) if sim_per_wall > 1 else (sim + 0.15, wall + 0.15 * fast)
            assert dev.mode(*later) == ACTIVE, (sim_per_wall, i)
            assert dev.velocity(*later)[0][1] > 0
        # unplugged: silent on both clocks -> lost
        assert dev.mode(sim + 0.6 * fast, wall + 0.6 * fast) == LOST
    # released: no activity on both clocks -> idle; on one clock only -> still the operator's
    dev = TeleopInput(cfg)
    dev.on_twist((0.0, 0.8, 0.0), (0, 0, 0), 0.0, 0.0)
    dev.on_twist((0.0, 0.0, 0.0), (0, 0, 0), 0.1, 0.1)
    assert dev.mode(2.0, 0.3) == ACTIVE and dev.mode(0.3, 2.0) == ACTIVE and dev.mode(0.7, 0.7) == IDLE


def test_a_twist_beyond_the_limits_is_scaled_down_and_bad_input_changes_nothing():
    cfg = TeleopConfig(linear_scale=0.15, max_linear_speed=0.1, angular_scale=0.8, max_angular_speed=0.5)
    dev = TeleopInput(cfg)
    dev.on_twist((1.0, 1.0, 0.0), (0.0, 0.0, 1.0), 0.0)
    v, w, clamped = dev.velocity(0.1)
    assert clamped and np.linalg.norm(v) == pytest.approx(0.1) and np.linalg.norm(w) == pytest.approx(0.5)
    np.testing.assert_allclose(v / np.linalg.norm(v), [2 ** -0.5, 2 ** -0.5, 0.0])  # direction kept
    with pytest.raises(ValueError, match="twist linear"):
        dev.on_twist((np.nan, 0.0, 0.0), (0, 0, 0), 0.2)
    with pytest.raises(ValueError, match="close .* and open"):
        dev.on_joy([1, 1], 0.2)
    v2, _, _ = dev.velocity(0.2)
    np.testing.assert_allclose(v2, v)  # the last good Twist stands
    assert dev.velocity(1.0)[0].tolist() == [0.0, 0.0, 0.0]  # older than the timeout: no motion
    with pytest.raises(ValueError, match="teleop_max_linear_speed"):
        TeleopConfig(max_linear_speed=0.0)


def test_the_jog_moves_the_tcp_at_the_commanded_velocity_and_keeps_the_orientation():
    jog = CartesianJog(TeleopConfig())
    q = HOME.copy()
    start = fr3.forward_kinematics(q)
    jog.start(q)
    for _ in range(20):  # 2 s at 5 cm/s along x and -2 cm/s along z
        q = jog.step(q, np.array([0.05, 0.0, -0.02]), np.zeros(3), 0.1)
    end = fr3.forward_kinematics(q)
    np.testing.assert_allclose(end[:3, 3] - start[:3, 3], [0.1, 0.0, -0.04], atol=2e-3)
    assert np.linalg.norm(rotation_vector(end[:3, :3] @ start[:3, :3].T)) < 1e-2
    for _ in range(10):  # a yaw of 0.3 rad/s for 1 s
        q = jog.step(q, np.zeros(3), np.array([0.0, 0.0, 0.3]), 0.1)
    turned = fr3.forward_kinematics(q)
    np.testing.assert_allclose(rotation_vector(turned[:3, :3] @ end[:3, :3].T), [0, 0, 0.3], atol=1e-2)
    assert np.all(q >= fr3.Q_MIN) and np.all(q <= fr3.Q_MAX)


def test_the_target_pose_does_not_wind_up_when_the_arm_does_not_follow():
    cfg = TeleopConfig(max_pose_lead=0.02)
    jog = CartesianJog(cfg)
    jog.start(HOME)
    for _ in range(50):  # the command never changes (a limit holds the arm): the target stays near it
        jog.step(HOME, np.array([0.15, 0.0, 0.0]), np.zeros(3), 0.1)
    p = fr3.forward_kinematics(HOME)[:3, 3]
    assert np.linalg.norm(jog.target_p - p) <= 0.02 + 1e-9


def test_rotation_vector_and_matrix_are_inverse():
    rng = np.random.default_rng(0)
    for _ in range(20):
        rv = rng.normal(size=3)
        rv *= rng.uniform(0.0, 3.1) / np.linalg.norm(rv)
        np.testing.assert_allclose(rotation_vector(rotation_matrix(rv)), rv, atol=1e-9)


def test_takeover_continues_the_last_command_and_reports_each_change():
    t = Takeover(TeleopConfig(release=0.5), control_dt=0.1)
    assert t.who(0.0) == (POLICY, None)
    t.input.on_joy([1, 0], 0.05)
    assert t.who(0.1) == (OPERATOR, "takeover")
    a = t.action(HOME, 0.08, 0.1)
    np.testing.assert_allclose(a[:7], HOME, atol=1e-9)  # at rest: the command goes on where it was
    assert a[7] == fr3.GRIPPER_MIN_WIDTH  # the button closes the gripper
    assert t.who(0.2) == (OPERATOR, None)
    t.input.on_joy([0, 0], 0.25)  # released, then silent: a device at rest, not a lost one
    assert t.who(0.5) == (OPERATOR, None) and t.who(0.6) == (POLICY, "handback")  # 0.5 s after the press
    t.input.on_twist((0.0, 0.5, 0.0), (0, 0, 0), 2.0)  # a later takeover: the earlier press does not count
    assert t.who(2.0) == (OPERATOR, "takeover")
    assert t.action(HOME, 0.08, 2.0)[7] == 0.08
    assert t.who(2.6) == (LOST, "lost") and t.who(2.7) == (LOST, None)
    assert t.counts == {"interventions": 2, "intervened_steps": 2, "teleop_clamped": 0, "teleop_lost": 1}


class Echo:
    """A planner whose chunk repeats the newest joint position (numbered as the loop asked)."""

    def __call__(self, req):
        return Chunk(np.repeat(req.history["qpos"][-1:], 4, axis=0), req.index)


def test_the_loop_plans_a_fresh_chunk_from_the_current_state_after_a_takeover():
    planning = BackgroundPlanning(ChunkLoop(2, (), ("qpos",)), Echo())
    try:
        planning.reset(0)
        obs = lambda x: {"qpos": np.full(7, float(x))}  # noqa: E731
        _, chunk, k = planning.tick(obs(0), 0.0, wait=5.0)
        assert (chunk.index, k) == (0, 0)
        planning.suspend()
        history, stamps, index = planning.observe(obs(1), 0.1)  # the person's steps
        assert index == 1 and history["qpos"][:, 0].tolist() == [0.0, 1.0] and stamps.tolist() == [0.0, 0.1]
        assert planning.observe(obs(2), 0.2)[2] == 2
        action, chunk, k = planning.tick(obs(3), 0.3, wait=5.0)  # handed back
        assert (chunk.index, k) == (3, 0) and action[0] == 3.0
    finally:
        planning.close()


def test_each_intervention_is_saved_as_a_demonstration_bag_that_loads(tmp_path):
    from mechanic_rl_ros.data.demos import load_episodes
    from mechanic_rl_ros.data.interventions import InterventionRecorder

    rec = InterventionRecorder(tmp_path, control_dt=0.1)
    rng = np.random.default_rng(0)
    for step in (3, 4, 5, 9, 10):  # two interventions
        obs = {"qpos": rng.normal(size=(2, 7)), "gripper": np.full((2, 1), 0.03),
               "images": {"scene": rng.integers(0, 255, (2, 16, 16, 3), dtype=np.uint8)}}
        rec.add(7, step, obs, np.append(HOME + 0.01 * step, 0.0))
    rec.add(8, 0, obs, np.append(HOME, 0.08))
    rec.drop(8)  # aborted: not written
    written = rec.end_episode(7, success=True)
    assert [p.name for p in written] == ["episode_000007_step_0003", "episode_000007_step_0009"]
    assert rec.end_episode(8, success=False) == []
    episodes = load_episodes(tmp_path, cameras=("scene",))
    assert sorted(len(e["action"]) for e in episodes) == [2, 3]
    three = next(e for e in episodes if len(e["action"]) == 3)
    np.testing.assert_allclose(three["action"][:, :7], [HOME + 0.03, HOME + 0.04, HOME + 0.05], atol=1e-9)
    assert three["images"]["scene"].shape == (3, 16, 16, 3)
