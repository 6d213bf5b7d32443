"""SafetyFilter: every streamed command stays inside the FR3 limits and the workspace."""
import numpy as np
import pytest

from mechanic_rl_ros.control import fr3
from mechanic_rl_ros.control.safety import SafetyConfig, SafetyFilter

DT = 0.1


def _stream(filt, targets):
    q = [filt.last_command]
    for t in targets:
        q.append(filt.filter(t, 0.04).q)
    return np.array(q)


def _check_limits(q, cfg):
    assert np.all(q >= fr3.Q_MIN + cfg.position_margin - 1e-9) and np.all(q <= fr3.Q_MAX - cfg.position_margin + 1e-9)
    v = np.diff(q, axis=0) / DT
    a = np.diff(v, axis=0) / DT
    j = np.diff(a, axis=0) / DT
    assert np.all(np.abs(v) <= fr3.DQ_MAX * cfg.velocity_scale + 1e-6), np.abs(v).max(0)
    assert np.all(np.abs(a) <= fr3.DDQ_MAX * cfg.acceleration_scale + 1e-6), np.abs(a).max(0)
    assert np.all(np.abs(j) <= fr3.DDDQ_MAX * cfg.jerk_scale + 1e-6)


def test_random_extreme_targets_respect_every_joint_limit():
    cfg = SafetyConfig(workspace_min=(-2, -2, -2), workspace_max=(2, 2, 2))
    filt = SafetyFilter(cfg)
    filt.reset(fr3.Q_HOME)
    rng = np.random.default_rng(0)
    targets = rng.uniform(fr3.Q_MIN - 1.0, fr3.Q_MAX + 1.0, size=(400, 7))
    _check_limits(_stream(filt, targets), cfg)


def test_small_steps_pass_unchanged():
    filt = SafetyFilter()
    filt.reset(fr3.Q_HOME)
    target = fr3.Q_HOME + 0.005
    res = filt.filter(target, 0.05)
    np.testing.assert_allclose(res.q, target)
    assert not res.clamped and res.gripper_width == 0.05


def test_workspace_keeps_tcp_in_the_box():
    cfg = SafetyConfig(workspace_min=(0.25, -0.3, 0.15), workspace_max=(0.7, 0.3, 0.6))
    filt = SafetyFilter(cfg)
    filt.reset(fr3.Q_HOME)
    rng = np.random.default_rng(1)
    lo, hi = np.array(cfg.workspace_min), np.array(cfg.workspace_max)
    clamped = 0
    for _ in range(300):
        res = filt.filter(fr3.Q_HOME + rng.normal(0, 0.8, 7), 0.04)
        p = fr3.forward_kinematics(res.q)[:3, 3]
        assert np.all(p >= lo - 1e-9) and np.all(p <= hi + 1e-9), p
        clamped += "workspace" in res.limited
    assert clamped > 0, "the test never pushed against the workspace"


def test_hold_brakes_within_limits_and_stops():
    cfg = SafetyConfig(workspace_min=(-2, -2, -2), workspace_max=(2, 2, 2))
    filt = SafetyFilter(cfg)
    filt.reset(fr3.Q_HOME)
    moving = [filt.filter(fr3.Q_HOME + 0.5 * (k + 1) * 0.05, 0.04).q for k in range(8)]
    held = [filt.hold().q for _ in range(40)]
    q = np.array([fr3.Q_HOME, *moving, *held])
    _check_limits(q, cfg)
    assert np.abs(np.diff(q[-5:], axis=0)).max() < 1e-6, "hold did not bring the arm to rest"


def test_bad_commands_are_refused_with_the_field_named():
    filt = SafetyFilter()
    with pytest.raises(RuntimeError, match="before reset"):
        filt.filter(fr3.Q_HOME, 0.0)
    filt.reset(fr3.Q_HOME)
    with pytest.raises(ValueError, match="q_target: must be finite"):
        filt.filter(np.full(7, np.nan), 0.0)
    with pytest.raises(ValueError, match=r"q_target: expected 7 joint positions, got shape \(6,\)"):
        filt.filter(np.zeros(6), 0.0)
    with pytest.raises(ValueError, match="gripper_width: must be finite"):
        filt.filter(fr3.Q_HOME, float("nan"))
    assert filt.filter(fr3.Q_HOME, 0.5).limited == ["gripper"]
    with pytest.raises(ValueError, match="workspace_min/workspace_max"):
        SafetyConfig(workspace_min=(1, 0, 0), workspace_max=(0, 1, 1))
