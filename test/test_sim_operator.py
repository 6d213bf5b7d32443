"""The simulated operator (mechanic_rl_ros.sim.operator): when it takes over, how fast it moves, and that its
correction, turned into joint targets by policy_node's own takeover logic (control.teleop), saves lift episodes
that a bad scripted policy fails in the MuJoCo simulator. No ROS."""
from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import yaml

from mechanic_rl_ros.control import fr3
from mechanic_rl_ros.control.teleop import OPERATOR, CartesianJog, Takeover, TeleopConfig
from mechanic_rl_ros.sim.env import make_env
from mechanic_rl_ros.sim.expert import quat_yaw, wrap
from mechanic_rl_ros.sim.operator import OperatorConfig, SimulatedOperator

CONFIG = Path(__file__).resolve().parents[1] / "config" / "operator.yaml"
DT = 0.05  #: [s] the node's default period (20 Hz)
TCP = fr3.forward_kinematics(fr3.Q_HOME)[:3, 3]  #: where the hand is at the home pose


def _state(cube, tcp=TCP, yaw=0.0):
    """A 13-float task state with the cube centre at ``cube`` (the operator reads the hand from q, not from here)."""
    quat = [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]
    return np.concatenate([cube, quat, [cube[0], cube[1], cube[2] + 0.1], tcp])


def _run(op, times, width, cube, q=fr3.Q_HOME):
    """Commands at ``times``; ``width`` and ``cube`` are functions of time."""
    return [(t, op.act(t, q, width(t), _state(cube(t)))) for t in times]


def _first_takeover(trace):
    return next(((t, c) for t, c in trace if c.event == "takeover"), (None, None))


# the hand down at the cube: the cube centre 1 cm below the TCP, ``offset`` beside it along the base y axis
def _cube_beside(offset):
    return lambda t: TCP + np.array([0.0, offset, -0.01])


def test_config_defaults_match_policy_node_and_errors_name_the_field():
    c, teleop = OperatorConfig(), TeleopConfig()
    assert (c.linear_scale, c.angular_scale, c.close_button, c.open_button) == (
        teleop.linear_scale, teleop.angular_scale, teleop.close_button, teleop.open_button)
    assert c.max_speed <= teleop.max_linear_speed and c.max_angular_speed <= teleop.max_angular_speed
    for bad, field in ((dict(max_speed=0.0), "max_speed"), (dict(reaction_delay=float("nan")), "reaction_delay"),
                       (dict(max_takeovers=1.5), "max_takeovers"), (dict(open_button=0), "open_button"),
                       (dict(handback_lift=0.01), "handback_lift")):
        with pytest.raises(ValueError, match=field):
            OperatorConfig(**bad)
    # config/operator.yaml sets every tunable, at its documented default
    params = yaml.safe_load(CONFIG.read_text())["operator_node"]["ros__parameters"]
    assert {f.name: f.default for f in fields(OperatorConfig)} == {f.name: params[f.name] for f in fields(c)}


def test_bad_inputs_are_refused_by_name():
    op = SimulatedOperator()
    op.reset(0.0)
    with pytest.raises(ValueError, match="q"):
        op.act(0.0, fr3.Q_HOME[:6], 0.08, _state(TCP))
    with pytest.raises(ValueError, match="task_state"):
        op.act(0.0, fr3.Q_HOME, 0.08, np.full(13, np.nan))
    with pytest.raises(ValueError, match="finger_width"):
        op.act(0.0, fr3.Q_HOME, float("inf"), _state(TCP))


def test_off_centre_close_fires_after_the_reaction_delay():
    op = SimulatedOperator()
    op.reset(0.0)
    times = np.arange(0.0, 1.0, DT)
    trace = _run(op, times, lambda t: 0.0, _cube_beside(0.025))  # closed 2.5 cm beside the cube from t = 0
    t, cmd = _first_takeover(trace)
    assert t == pytest.approx(0.3)
    assert cmd.reason == "off_centre_grasp" and cmd.intervening and cmd.phase == "rise"
    assert all(not c.intervening and not np.any(c.linear) and c.buttons == (0, 0) for tt, c in trace if tt < t)
    # it holds a gripper button through the intervention (activity even while the hand stands still)
    assert all(c.buttons == (0, 1) for tt, c in trace if tt >= t)
    assert trace[-1][1].intervening_for == pytest.approx(times[-1] - t)
    assert op.stop(times[-1]) == pytest.approx(times[-1] - t)
    assert not op.act(1.0, fr3.Q_HOME, 0.0, _state(_cube_beside(0.025)(1.0))).intervening  # stopped: at rest


def test_without_the_off_centre_rule_a_closed_grasp_is_left_until_it_fails():
    # closed on the cube's edge (opening about its width), 3 cm beside it: off-centre, but not failed yet
    for rule, reason in ((True, "off_centre_grasp"), (False, None)):
        op = SimulatedOperator(OperatorConfig(off_centre_rule=rule))
        op.reset(0.0)
        t, cmd = _first_takeover(_run(op, np.arange(0.0, 1.5, DT), lambda t: 0.05, _cube_beside(0.03)))
        assert (cmd.reason if cmd else None) == reason, rule
    # the fingers close on nothing: that grasp failed, and the operator steps in with the rule off too
    op = SimulatedOperator(OperatorConfig(off_centre_rule=False))
    op.reset(0.0)
    t, cmd = _first_takeover(_run(op, np.arange(0.0, 1.0, DT), lambda t: 0.0, _cube_beside(0.03)))
    assert cmd.reason == "missed_grasp" and t == pytest.approx(0.3)
    with pytest.raises(ValueError, match="off_centre_rule"):
        OperatorConfig(off_centre_rule=1)


def test_the_rule_must_hold_without_a_break():
    op = SimulatedOperator()
    op.reset(0.0)
    # closed beside the cube for 0.25 s, open again for 0.1 s, closed again from t = 0.4: the delay restarts
    width = lambda t: 0.08 if 0.25 <= t < 0.35 else 0.0  # noqa: E731
    t, cmd = _first_takeover(_run(op, np.arange(0.0, 1.2, DT), width, _cube_beside(0.025)))
    assert t == pytest.approx(0.35 + 0.3) and cmd.reason == "off_centre_grasp"


def test_a_centred_grasp_in_progress_is_left_alone():
    op = SimulatedOperator()
    op.reset(0.0)
    # the fingers close from t = 1 s over 0.3 s; the cube starts 1.5 cm off along the finger axis and the
    # closing fingers push it under the TCP within 0.15 s, then hold it (opening = the cube's width)
    width = lambda t: float(np.clip(0.08 - 0.1 * (t - 1.0), 0.05, 0.08))  # noqa: E731
    cube = lambda t: _cube_beside(0.015 * float(np.clip(1.0 - (t - 1.0) / 0.15, 0.2, 1.0)))(t)  # noqa: E731
    trace = _run(op, np.arange(0.0, 3.9, DT), width, cube)
    assert not any(c.intervening for _, c in trace)
    # ... also when that grasp then lifts slowly past the progress deadline, as long as it keeps rising
    lift = lambda t: cube(t) + np.array([0.0, 0.0, 0.03 * max(0.0, t - 4.8)])  # noqa: E731
    trace = _run(op, np.arange(3.9, 6.0, DT), width, lift)
    assert not any(c.intervening for _, c in trace)
    # held but never lifted: no progress once the grace for a held cube is over; the operator only lifts
    op.reset(10.0)
    t, cmd = _first_takeover(_run(op, 10.0 + np.arange(0.0, 6.0, DT), width, cube))
    c = OperatorConfig()
    assert t - 10.0 == pytest.approx(c.progress_deadline + c.held_grace + c.reaction_delay)
    assert cmd.reason == "no_progress" and cmd.phase == "lift" and cmd.buttons == (1, 0)


def test_no_takeover_too_late_and_a_late_lift_is_finished():
    c = OperatorConfig()
    op = SimulatedOperator(OperatorConfig(progress_deadline=100.0))  # (the hand waits still: it has stalled)
    op.reset(0.0)
    # closed beside the cube from 5.6 s: due at 5.9 s, with 2.1 s left: too late for a re-grasp
    width = lambda t: 0.08 if t < 5.6 else 0.0  # noqa: E731
    assert not any(cmd.intervening for _, cmd in _run(op, np.arange(0.0, 8.0, DT), width, _cube_beside(0.025)))
    # a held cube that does not rise: the operator lifts it; with under finish_time left at the handback height
    # it lifts on to finish_lift itself instead of handing back
    op = SimulatedOperator(OperatorConfig(episode_duration=6.6))
    op.reset(0.0)
    held = _cube_beside(0.002)
    rising = lambda t: held(t) + np.array([0.0, 0.0, 0.1 * max(0.0, t - 5.4)])  # noqa: E731
    trace = _run(op, np.arange(0.0, 6.6, DT), lambda t: 0.05, rising)
    t, cmd = _first_takeover(trace)
    assert t == pytest.approx(c.progress_deadline + c.held_grace + c.reaction_delay) and cmd.phase == "lift"
    lifted = lambda tt: 0.1 * max(0.0, tt - 5.4)  # noqa: E731
    assert {cmd.phase for tt, cmd in trace if t <= tt and lifted(tt) < c.handback_lift - 0.005} == {"lift"}
    assert {cmd.phase for tt, cmd in trace if c.handback_lift + 0.005 < lifted(tt) < c.finish_lift} == {"finish"}
    back = [(tt, cmd) for tt, cmd in trace if cmd.event == "handback"]
    assert back and 0.1 * (back[0][0] - 5.4) >= c.finish_lift - 1e-9
    assert all(cmd.buttons == (1, 0) and cmd.linear[2] > 0 for tt, cmd in trace if t < tt < back[0][0])


def test_a_pushed_cube_and_no_progress_fire():
    op = SimulatedOperator()
    op.reset(0.0)
    high = lambda t: TCP + np.array([0.0, 0.0, -0.3]) + np.array([0.03 * min(t, 1.0), 0.0, 0.0])  # noqa: E731
    t, cmd = _first_takeover(_run(op, np.arange(0.0, 2.0, DT), lambda t: 0.08, high))
    assert cmd.reason == "cube_pushed" and t == pytest.approx(2 / 3 + 0.3, abs=DT)
    op.reset(10.0)  # a new episode: nothing happens, the hand waits open above the cube
    still = lambda t: TCP + np.array([0.0, 0.0, -0.3])  # noqa: E731
    t, cmd = _first_takeover(_run(op, 10.0 + np.arange(0.0, 5.0, DT), lambda t: 0.08, still))
    assert cmd.reason == "no_progress" and t - 10.0 == pytest.approx(4.0 + 0.3)
    op = SimulatedOperator(OperatorConfig(max_takeovers=0))
    op.reset(0.0)
    assert not any(c.intervening for _, c in _run(op, np.arange(0.0, 5.0, DT), lambda t: 0.08, still))


# ----------------------------------------------------------------------------------------------------------------
# closed loop in MuJoCo


class OffCentrePolicy:
    """A bad scripted policy: approaches a point ``offset`` [m] (cube frame, x across the fingers, y along them)
    beside the cube, descends, closes and lifts whatever it holds -- the policy's known failure. It steers a
    TCP velocity through its own CartesianJog (open loop on the joint targets it sent, as a policy is) and
    restarts the jog from the last command when it gets the arm back."""

    def __init__(self, offset):
        self.offset = np.asarray(offset, dtype=np.float64)
        self.jog = CartesianJog(TeleopConfig(max_pose_lead=0.04))
        self.phase, self.v, self.steps, self.resume = "approach", np.zeros(3), 0, True

    def act(self, q_sent, obs):
        if self.resume:
            self.jog.start(q_sent)
            self.resume = False
        state = obs["task_state"].astype(np.float64)
        pose = fr3.forward_kinematics(q_sent)
        tcp, hand_yaw = pose[:3, 3], math.atan2(pose[1, 0], pose[0, 0])
        grasp_yaw = wrap(quat_yaw(state[3:7]), math.pi / 2)
        c, s = math.cos(grasp_yaw), math.sin(grasp_yaw)
        ox, oy = self.offset
        aim = state[:3] + np.array([c * ox - s * oy, s * ox + c * oy, 0.0])
        width, speed, self.steps = fr3.GRIPPER_MAX_WIDTH, 0.1, self.steps + 1
        if self.phase == "approach":
            target, speed = np.array([aim[0], aim[1], 0.125]), 0.3
            if np.linalg.norm(target - tcp) < 0.01:
                self.phase, self.steps = "descend", 0
        elif self.phase == "descend":
            target = np.array([aim[0], aim[1], 0.0175])
            if abs(tcp[2] - target[2]) < 0.005 or self.steps > 10:
                self.phase, self.steps = "close", 0
        elif self.phase == "close":
            target, width = tcp, 0.0
            if self.steps > 5:
                self.phase = "lift"
        else:
            target, speed, width = np.array([tcp[0], tcp[1], 0.2]), 0.15, 0.0
        wanted = (target - tcp) / 0.3
        wanted *= min(1.0, speed / max(np.linalg.norm(wanted), 1e-9))
        dv = wanted - self.v
        self.v = self.v + dv * min(1.0, 0.05 / max(np.linalg.norm(dv), 1e-9))  # 0.5 m/s^2
        w = np.array([0.0, 0.0, float(np.clip(wrap(grasp_yaw - hand_yaw, math.pi / 2) / 0.3, -1.0, 1.0))])
        return np.append(self.jog.step(q_sent, self.v, w, 0.1), width)


def _episode(seed, offset, operator: SimulatedOperator | None):
    """One lift episode at 10 Hz: the operator's device output goes through policy_node's Takeover (TeleopInput
    + CartesianJog) exactly as policy_node applies it. Returns (success, seconds, operator commands, events)."""
    env = make_env(task="lift", seed=seed)
    try:
        obs, _ = env.reset(seed=seed)
        dt = env.control_dt
        policy, takeover = OffCentrePolicy(offset), Takeover(TeleopConfig(), dt)
        q_sent, width_sent = obs["qpos"].astype(np.float64), fr3.GRIPPER_MAX_WIDTH
        if operator is not None:
            operator.reset(0.0)
        commands, events = [], []
        for k in range(env.max_steps):
            now = k * dt
            if operator is not None:
                cmd = operator.act(now, obs["qpos"], float(obs["gripper"][0]), obs["task_state"])
                commands.append((now, cmd))
                takeover.input.on_twist(cmd.linear.copy(), cmd.angular.copy(), now)  # (it zeroes the deadband in place)
                takeover.input.on_joy(list(cmd.buttons), now)
            who, event = takeover.who(now)
            if event:
                events.append((round(now, 1), event))
            if event == "handback":
                policy.resume = True
            action = takeover.action(q_sent, width_sent, now) if who == OPERATOR else policy.act(q_sent, obs)
            q_sent, width_sent = action[:7], float(action[7])
            obs, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                break
        return bool(info["success"]), (k + 1) * dt, commands, events
    finally:
        env.close()


#: (seed, offset): a finger lands on the cube's top (2.5 cm along the finger axis), or the pads close beside it
CASES = [(0, (0.0, 0.025)), (1, (0.0, 0.025)), (2, (0.0, 0.025)), (0, (0.035, 0.0)), (1, (0.035, 0.0))]


@pytest.mark.parametrize("seed,offset", CASES)
def test_the_correction_saves_an_off_centre_grasp(seed, offset):
    fails, _, _, _ = _episode(seed, offset, None)
    assert not fails, "the bad policy alone must fail this episode"
    cfg = OperatorConfig()
    success, seconds, commands, events = _episode(seed, offset, SimulatedOperator(cfg))
    took = [(t, c) for t, c in commands if c.event]
    assert success, f"episode failed after {seconds:.1f} s; operator {[(t, c.event, c.reason) for t, c in took]}"
    assert took[0][1].event == "takeover" and took[0][1].reason in ("off_centre_grasp", "missed_grasp")
    # handed back for the policy to finish (policy_node saw one intervention, and let go), or too close to the
    # end for that: finished by the operator
    finished = commands[-1][1].phase == "finish"
    assert [c.event for _, c in took] == (["takeover"] if finished else ["takeover", "handback"])
    assert [e for _, e in events] == [c.event for _, c in took]
    # within the speed limits, finite, smooth, and one gripper button held throughout the intervention
    previous = np.zeros(3)
    for _, c in commands:
        v, w = c.linear * cfg.linear_scale, c.angular * cfg.angular_scale
        assert np.all(np.isfinite(v)) and np.all(np.isfinite(w))
        assert np.linalg.norm(v) <= cfg.max_speed + 1e-9 and np.linalg.norm(w) <= cfg.max_angular_speed + 1e-9
        if c.event != "handback":  # (where the operator lets go of the device, which springs back to zero)
            assert np.linalg.norm(v - previous) <= cfg.max_acceleration * 0.1 + 1e-9
        assert sum(c.buttons) == (1 if c.intervening else 0)
        previous = v
    print(f"seed {seed} offset {offset}: success at {seconds:.1f} s; {took[0][1].reason} at {took[0][0]:.1f} s, "
          + ("finished by the operator" if finished else f"handback after {took[1][1].intervening_for:.1f} s"))
