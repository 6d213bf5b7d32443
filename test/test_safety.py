"""SafetyFilter: every 1 ms command the trajectory controller plays from its messages is within the FR3
limits (checked by the robot's own check, franka_checks), the TCP stays in the workspace above the
table and below the speed limit, and holds brake to rest."""
import numpy as np
import pytest

from mechanic_rl_ros.control import fr3
from mechanic_rl_ros.control.franka_checks import CommandChecker, first_violation
from mechanic_rl_ros.control.safety import SafetyConfig, SafetyFilter
from mechanic_rl_ros.control.trajectory import TrajectoryController

DT = 0.1
OPEN_BOX = dict(workspace_min=(-2, -2, -2), workspace_max=(2, 2, 2), table_clearance=0.0, tcp_speed_max=100.0)


def _play(filt, targets, rng=None, hold_every=0, max_delay_ms=15):
    """Stream targets through the filter into a JTC model; each message reaches the controller after a
    random delay up to max_delay_ms (< the filter's switch lead + ...). Returns all 1 ms commands."""
    q0 = filt.last_command
    jtc = TrajectoryController()
    jtc.activate(q0, q0)
    out = [np.repeat(q0[None], 3, axis=0)]
    for k, target in enumerate(targets):
        now = k * DT
        if hold_every and k % hold_every == hold_every - 1:
            res = filt.hold(now)
        else:
            res = filt.filter(target, 0.04, now)
        delay = int(rng.integers(0, max_delay_ms + 1)) if rng is not None else 0
        ticks = now + 1e-3 * np.arange(100)
        if delay:
            out.append(jtc.update(ticks[:delay])[0])
        jtc.receive(res.trajectory, ticks[delay])
        out.append(jtc.update(ticks[delay:])[0])
    return np.concatenate(out)


def _assert_within(cmds, cfg):
    """The FR3's check at the configured scales, and the position margin."""
    v = first_violation(cmds[:3], cmds[3:], velocity_scale=cfg.velocity_scale,
                        acceleration_scale=cfg.acceleration_scale, jerk_scale=cfg.jerk_scale, tolerance=1e-6)
    assert v is None, str(v)
    assert np.all(cmds >= fr3.Q_MIN + cfg.position_margin - 1e-9)
    assert np.all(cmds <= fr3.Q_MAX - cfg.position_margin + 1e-9)


@pytest.mark.parametrize("seed", [0, 1])
def test_random_extreme_targets_give_1khz_commands_within_every_limit(seed):
    cfg = SafetyConfig(**OPEN_BOX)
    filt = SafetyFilter(cfg)
    filt.reset(fr3.Q_HOME, settle=0.0)
    rng = np.random.default_rng(seed)
    targets = []
    for k in range(150):  # bang-bang far outside the limits, uniform, and small random walks
        if k % 3 == 0:
            targets.append(np.where(rng.random(7) < 0.5, fr3.Q_MIN - 1.0, fr3.Q_MAX + 1.0))
        elif k % 3 == 1:
            targets.append(rng.uniform(fr3.Q_MIN - 1.0, fr3.Q_MAX + 1.0))
        else:
            targets.append(fr3.Q_HOME + rng.normal(0, 0.05, 7))
    _assert_within(_play(filt, targets, rng, hold_every=7), cfg)


def test_full_limits_are_never_exceeded_at_scale_one():
    cfg = SafetyConfig(**OPEN_BOX, velocity_scale=1.0, acceleration_scale=1.0, jerk_scale=1.0)
    filt = SafetyFilter(cfg)
    filt.reset(fr3.Q_HOME, settle=0.0)
    rng = np.random.default_rng(3)
    cmds = _play(filt, rng.uniform(fr3.Q_MIN - 1.0, fr3.Q_MAX + 1.0, (100, 7)), rng)
    checker = CommandChecker()
    checker.start(cmds[0])
    assert checker.check(cmds[1:]) is None


def test_braking_before_a_position_limit_respects_the_acceleration_limit():
    """Driving fast into a joint limit: the stop happens within the acceleration limit (the old
    10 Hz filter braked 2.62 -> 0.37 rad/s in one 0.1 s period here)."""
    cfg = SafetyConfig(**OPEN_BOX, velocity_scale=1.0, acceleration_scale=1.0, jerk_scale=1.0)
    filt = SafetyFilter(cfg)
    start = fr3.Q_HOME.copy()
    filt.reset(start, settle=0.0)
    far = start.copy()
    far[0] = 10.0  # joint 1 towards its upper limit
    cmds = _play(filt, [far] * 40)
    v = np.diff(cmds[:, 0]) / 1e-3
    assert v.max() > 1.0, "the test never got the joint moving"
    assert np.abs(np.diff(v) / 1e-3).max() <= fr3.DDQ_MAX[0] * cfg.acceleration_scale + 1e-6
    assert cmds[:, 0].max() <= fr3.Q_MAX[0] - cfg.position_margin + 1e-9
    assert abs(v[-1]) < 1e-9, "not at rest at the limit"


def test_small_steps_pass_unchanged():
    filt = SafetyFilter()
    filt.reset(fr3.Q_HOME, settle=0.0)
    target = fr3.Q_HOME + 0.002
    res = filt.filter(target, 0.05)
    np.testing.assert_allclose(res.q, target)
    assert not res.clamped and res.gripper_width == 0.05 and res.alpha == 1.0


def test_every_message_ends_at_rest_and_starts_where_the_last_one_was():
    filt = SafetyFilter(SafetyConfig(**OPEN_BOX))
    filt.reset(fr3.Q_HOME, settle=0.0)
    prev = None
    for k in range(20):
        res = filt.filter(fr3.Q_HOME + 0.3 * np.sin(0.3 * k), 0.04, now=k * DT)
        last = res.trajectory.points[-1]
        assert np.all(last.velocities == 0) and np.all(last.accelerations == 0)
        res.trajectory.validate()  # what the JTC checks (no nonzero velocity at the end)
        if prev is not None:  # the new message repeats the committed trajectory at its stamp
            first = res.trajectory.points[0]
            from mechanic_rl_ros.control.trajectory import sample
            q, v, a = sample(prev, prev.stamp, k * DT)
            np.testing.assert_allclose(first.positions, q[0], atol=1e-12)
            np.testing.assert_allclose(first.velocities, v[0], atol=1e-9)
        prev = res.trajectory


def test_workspace_and_table_clearance_keep_the_tcp_in_the_box():
    cfg = SafetyConfig(workspace_min=(0.25, -0.3, 0.15), workspace_max=(0.7, 0.3, 0.6), table_clearance=0.02)
    filt = SafetyFilter(cfg)
    filt.reset(fr3.Q_HOME, settle=0.0)
    rng = np.random.default_rng(1)
    lo, hi = cfg.box()
    assert lo[2] == pytest.approx(0.17)
    cmds = []
    jtc = TrajectoryController()
    jtc.activate(fr3.Q_HOME, fr3.Q_HOME)
    for k in range(150):
        res = filt.filter(fr3.Q_HOME + rng.normal(0, 0.8, 7), 0.04, now=k * DT)
        jtc.receive(res.trajectory, k * DT)
        cmds.append(jtc.update(k * DT + 1e-3 * np.arange(0, 100, 5))[0])
    p = fr3.tcp_positions(np.concatenate(cmds))
    assert np.all(p >= lo - 1e-6) and np.all(p <= hi + 1e-6), (p.min(0), p.max(0))
    gap = np.minimum(p - lo, hi - p).min(axis=1)
    assert gap.min() < 0.03, "the test never came near the workspace's faces"


def test_table_clearance_stops_the_tcp_above_the_table():
    cfg = SafetyConfig(table_clearance=0.01)
    filt = SafetyFilter(cfg)
    filt.reset(fr3.Q_HOME, settle=0.0)
    below = fr3.Q_HOME.copy()
    below[1] += 1.4
    below[5] += 1.4  # the TCP 3 cm under the table top
    assert fr3.forward_kinematics(below)[2, 3] < 0
    cmds = _play(filt, [below] * 60)
    z = fr3.tcp_positions(cmds[::5])[:, 2]
    assert z.min() >= 0.01 - 1e-6, z.min()
    assert z[-1] < 0.03, f"stopped at z = {z[-1]:.3f} m, far above the clearance"


def test_tcp_speed_limit():
    cfg = SafetyConfig(**{**OPEN_BOX, "tcp_speed_max": 0.2}, velocity_scale=1.0, acceleration_scale=1.0,
                       jerk_scale=1.0)
    filt = SafetyFilter(cfg)
    filt.reset(fr3.Q_HOME, settle=0.0)
    cmds = _play(filt, [fr3.Q_HOME + np.array([1.0, 0.5, 0, 0.5, 0, 0, 0])] * 30)
    p = fr3.tcp_positions(cmds[::10])
    speed = np.linalg.norm(np.diff(p, axis=0), axis=1) / 0.01
    assert 0.1 < speed.max() <= 0.2 * 1.05, speed.max()


def test_hold_brakes_within_limits_and_stops():
    cfg = SafetyConfig(**OPEN_BOX)
    filt = SafetyFilter(cfg)
    filt.reset(fr3.Q_HOME, settle=0.0)
    targets = [fr3.Q_HOME + 0.05 * (k + 1) for k in range(8)]
    jtc = TrajectoryController()
    jtc.activate(fr3.Q_HOME, fr3.Q_HOME)
    cmds = [np.repeat(fr3.Q_HOME[None], 3, axis=0)]
    for k in range(30):
        res = filt.filter(targets[k], 0.04, k * DT) if k < len(targets) else filt.hold(k * DT)
        jtc.receive(res.trajectory, k * DT)
        cmds.append(jtc.update(k * DT + 1e-3 * np.arange(100))[0])
    cmds = np.concatenate(cmds)
    _assert_within(cmds, cfg)
    assert np.abs(np.diff(cmds[-500:], axis=0)).max() < 1e-12, "hold did not bring the arm to rest"


def test_a_stream_seeded_from_a_measured_position_glides_from_the_controllers_own_command():
    """Handover (reward_node's home motion -> policy_node, or after an error recovery): the controller's
    last command and the measured position differ by the tracking error; a trajectory stamped at the
    measured one would step the command in one tick. The settling message avoids that."""
    q_cmd = fr3.Q_HOME.copy()
    q_meas = q_cmd + np.array([5e-4, -3e-4, 2e-4, 4e-4, -1e-4, 3e-4, -2e-4])
    rng = np.random.default_rng(5)
    targets = [q_meas + 0.02 * k for k in range(20)]
    for seed_settle, expect_ok in [(None, True), (0.0, False)]:
        filt = SafetyFilter(SafetyConfig(**OPEN_BOX))
        filt.reset(q_meas, now=0.0, settle=seed_settle)
        settle_end = SafetyConfig().settle_time + SafetyConfig().settle_margin - 1e-9

        def random_delay(k: int, res) -> int:
            assert ("settling" in res.limited) == (seed_settle is None and k * DT < settle_end)
            return int(rng.integers(0, 10))

        cmds = _stream_through_jtc(filt, q_cmd, targets, random_delay)
        checker = CommandChecker()
        checker.start(q_cmd)
        assert (checker.check(cmds[3:]) is None) == expect_ok


def _stream_through_jtc(filt: SafetyFilter, q_cmd, targets, delay_ms) -> np.ndarray:
    """The 1 ms commands of a JTC (commanding ``q_cmd`` at first) fed ``filt``'s trajectory for each 10 Hz
    target, each read ``delay_ms(k, result)`` ms after its tick (nothing is sent while the filter settles)."""
    jtc = TrajectoryController()
    jtc.activate(q_cmd, q_cmd)
    cmds = [np.repeat(q_cmd[None], 3, axis=0)]
    for k, target in enumerate(targets):
        res = filt.filter(target, 0.04, k * DT)
        delay = delay_ms(k, res)
        ticks = k * DT + 1e-3 * np.arange(100)
        if res.trajectory is None:
            cmds.append(jtc.update(ticks)[0])
            continue
        if delay:
            cmds.append(jtc.update(ticks[:delay])[0])
        jtc.receive(res.trajectory, ticks[delay])
        cmds.append(jtc.update(ticks[delay:])[0])
    return np.concatenate(cmds)


def _glide_then_stream(cfg: SafetyConfig, glide_delay_ms: int, q_cmd, q_meas, targets) -> np.ndarray:
    """The 1 ms commands of a JTC that reads the glide message ``glide_delay_ms`` late, the others 3 ms late."""
    filt = SafetyFilter(cfg)
    filt.reset(q_meas, now=0.0, settle=None)
    return _stream_through_jtc(filt, q_cmd, targets, lambda k, res: glide_delay_ms
                               if res.trajectory is not None and res.trajectory.stamp is None else 3)


def test_a_glide_message_read_late_is_over_before_streaming_starts():
    """The glide (stamp 0) starts when the controller reads it, so it ends as late as it was delivered; a
    stamped message read before that switches mid-glide, off the path by the glide's motion (a reflex).
    Streaming starts ``settle_margin`` after the glide's nominal end. Found on the real-time stack, where
    the glide message was read 10-60 ms later than the first streamed one."""
    q_cmd = fr3.Q_HOME.copy()
    q_meas = q_cmd + 0.05  # e.g. after a reset that moved the arm while the controller held its command
    targets = [q_meas + 0.01 * k for k in range(12)]
    for delay in (0, 10, 30, 60):
        cmds = _glide_then_stream(SafetyConfig(**OPEN_BOX), delay, q_cmd, q_meas, targets)
        checker = CommandChecker()
        checker.start(q_cmd)
        assert checker.check(cmds[3:]) is None, f"glide read {delay} ms late"
    cmds = _glide_then_stream(SafetyConfig(**OPEN_BOX, settle_margin=0.0), 30, q_cmd, q_meas, targets)
    checker = CommandChecker()
    checker.start(q_cmd)
    assert checker.check(cmds[3:]) is not None, "without the margin the switch mid-glide should be a reflex"


def test_a_message_not_sent_leaves_the_committed_trajectory_as_it_was():
    """policy_node drops a message ready too late to be read within switch_lead; the filter forgets it."""
    filt = SafetyFilter(SafetyConfig(**OPEN_BOX))
    filt.reset(fr3.Q_HOME, now=0.0, settle=0.0)
    first = filt.filter(fr3.Q_HOME + 0.01, 0.04, 0.0).trajectory
    second = filt.filter(fr3.Q_HOME + 0.02, 0.04, DT).trajectory
    assert filt.committed is second
    filt.unsent()
    assert filt.committed is first
    filt.unsent()  # once only
    assert filt.committed is first
    again = filt.filter(fr3.Q_HOME + 0.02, 0.04, DT)
    assert np.allclose(again.trajectory.points[-1].positions, second.points[-1].positions)


def test_a_settling_message_not_sent_is_given_again_by_the_next_tick():
    """The settling message goes out once; one that was not sent (its instant passed) comes with the next tick,
    gliding to the same end, else the controller would never leave its last command."""
    filt = SafetyFilter(SafetyConfig(**OPEN_BOX))
    filt.reset(fr3.Q_HOME + 0.001, now=0.0, settle=None)
    first = filt.filter(fr3.Q_HOME, 0.04, 0.0)
    assert "settling" in first.limited and first.trajectory is not None
    filt.unsent()
    again = filt.filter(fr3.Q_HOME, 0.04, DT)
    assert again.trajectory is not None and again.trajectory.stamp is None
    assert again.trajectory.points[0].time_from_start == pytest.approx(first.trajectory.points[0].time_from_start - DT)
    assert filt.filter(fr3.Q_HOME, 0.04, 2 * DT).trajectory is None  # sent: once only


def test_bad_commands_are_refused_with_the_field_named():
    filt = SafetyFilter()
    with pytest.raises(RuntimeError, match="before reset"):
        filt.filter(fr3.Q_HOME, 0.0)
    filt.reset(fr3.Q_HOME, settle=0.0)
    with pytest.raises(ValueError, match="q_target: must be finite"):
        filt.filter(np.full(7, np.nan), 0.0)
    with pytest.raises(ValueError, match=r"q_target: expected 7 joint positions, got shape \(6,\)"):
        filt.filter(np.zeros(6), 0.0)
    with pytest.raises(ValueError, match="gripper_width: must be finite"):
        filt.filter(fr3.Q_HOME, float("nan"))
    assert filt.filter(fr3.Q_HOME, 0.5).limited == ["gripper"]
    with pytest.raises(ValueError, match="workspace_min/workspace_max"):
        SafetyConfig(workspace_min=(1, 0, 0), workspace_max=(0, 1, 1))
    with pytest.raises(ValueError, match="velocity_scale: a fraction of the FR3 limit, must be <= 1"):
        SafetyConfig(velocity_scale=1.5)


def test_a_hold_always_ends_in_the_controllers_future():
    """Seeded at rest with no settling (the robot's own command) and holding from the first tick on: every
    hold message still ends after the instant it is sent (the JTC drops one that has ended)."""
    f = SafetyFilter(SafetyConfig())
    f.reset(fr3.Q_HOME, 5.0, settle=0.0)
    for k in range(4):
        now = 5.0 + 0.1 * k
        traj = f.hold(now).trajectory
        assert traj.end_time() > now + 1e-3
        np.testing.assert_array_equal(traj.points[-1].positions, fr3.Q_HOME)


def _switch_steps(lead: float, delay_ms: int) -> tuple[np.ndarray, list[float]]:
    """Random targets through a filter with ``lead``; every message read ``delay_ms`` after its stamp."""
    cfg = SafetyConfig(switch_lead=lead, **OPEN_BOX)
    filt = SafetyFilter(cfg)
    filt.reset(fr3.Q_HOME, settle=0.0)
    rng = np.random.default_rng(3)
    jtc = TrajectoryController()
    jtc.activate(fr3.Q_HOME, fr3.Q_HOME)
    out, steps = [np.repeat(np.asarray(fr3.Q_HOME, float)[None], 3, axis=0)], []
    for k in range(40):
        res = filt.filter(fr3.Q_HOME + rng.normal(0, 0.05, 7), 0.04, k * DT)
        ticks = k * DT + 1e-3 * np.arange(100)
        out.append(jtc.update(ticks[:delay_ms])[0])
        jtc.receive(res.trajectory, ticks[delay_ms])
        steps.append(jtc.last_switch_step)
        out.append(jtc.update(ticks[delay_ms:])[0])
    return np.concatenate(out), steps[1:]


def test_a_lead_that_covers_the_delivery_delay_switches_on_the_path():
    """A wall-clock lead (delivery_budget + switch_lead, here 70 ms): a message read 65 ms after its stamp
    changes no command at the switch; with the 20 ms lead of sim time the same delay is a step the
    controller reports (sim_node counts it in off_path_switches) and the FR3's check refuses."""
    cmds, steps = _switch_steps(0.07, 65)
    assert max(steps) < 1e-9
    _assert_within(cmds, SafetyConfig())
    cmds, steps = _switch_steps(0.02, 65)
    assert min(steps) > 1e-6
    assert first_violation(cmds[:3], cmds[3:]) is not None
