"""The control tick's decisions alone (no ROS): grid, input waits, filter seeding, late ticks, send delays."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from mechanic_rl_ros.control import fr3
from mechanic_rl_ros.control.observation import ObservationAssembler
from mechanic_rl_ros.control.tick import GIVE_UP, HOLD, SKIP, WAIT, ControlTick, TickConfig, Verdict, filter_seed

NAMES = list(fr3.ALL_JOINT_NAMES)


class FakeClock:
    """A wall clock that moves only when slept on (so waits take no test time)."""

    def __init__(self):
        self.t, self.slept = 100.0, []

    def monotonic(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.t += s


def ticker(sim_time: bool, clock: FakeClock | None = None, **kw) -> ControlTick:
    clock = clock or FakeClock()
    return ControlTick(TickConfig(control_dt=0.1, **kw), sim_time, monotonic=clock.monotonic, sleep=clock.sleep)


def assembler_with_joints(*stamps: float) -> ObservationAssembler:
    a = ObservationAssembler((), ("qpos", "gripper"), 96, max_age=0.3, max_skew=0.15)
    for s in stamps:
        a.set_joint_state(NAMES, list(fr3.Q_HOME) + [0.04, 0.04], [0.0] * 9, s)
    return a


def test_config_names_a_bad_field():
    with pytest.raises(ValueError, match="control_dt"):
        TickConfig(control_dt=0.0)
    with pytest.raises(ValueError, match="delivery_budget"):
        TickConfig(control_dt=0.1, delivery_budget=-0.01)
    with pytest.raises(ValueError, match="delivery_budget.*less than the control period"):
        TickConfig(control_dt=0.1, delivery_budget=0.08, switch_lead=0.02)


def test_only_ticks_on_the_grid_act_on_sim_time():
    assert ticker(True).on_grid(1.2) is None
    v = ticker(True).on_grid(1.23)
    assert v.action == SKIP and v.count == "ticks_off_grid" and "off the 0.1 s grid" in v.text
    assert ticker(False).on_grid(1.23) is None  # on the wall clock every tick acts


def test_on_sim_time_the_tick_waits_for_the_inputs_of_its_instant():
    clock = FakeClock()
    a = assembler_with_joints(0.9, 1.0)  # one period apart: the sample for 1.1 is due at 1.1
    obs, stamp, behind = ticker(True, clock, input_wait=0.3).observe(a, 1.1)
    assert behind and stamp == 1.0 and sum(clock.slept) >= 0.3  # waited the whole input_wait, then the latest
    clock = FakeClock()
    obs, stamp, behind = ticker(True, clock, input_wait=0.3).observe(a, 1.0)
    assert not behind and stamp == 1.0 and not clock.slept
    clock = FakeClock()
    obs, stamp, behind = ticker(False, clock, input_wait=0.3).observe(a, 1.1)
    assert not behind and not clock.slept  # the wall clock never waits


def test_a_stale_or_missing_input_is_a_hold():
    missing = ticker(False).observe(assembler_with_joints(), 1.0)
    assert isinstance(missing, Verdict) and missing.action == HOLD and missing.count == "hold_stale"
    assert missing.problem is None and missing.missed  # not received yet: waiting, not a fault
    stale = ticker(False).observe(assembler_with_joints(0.0), 1.0)
    assert stale.action == HOLD and stale.problem == "stale" and stale.text.startswith("holding: ")


def test_the_filter_is_seeded_only_after_the_episodes_reset():
    v = ControlTick.seedable(inputs_stamp=4.9, episode_started=5.0)
    assert v.action == WAIT and v.count == "hold_stale" and v.missed
    assert ControlTick.seedable(inputs_stamp=5.0, episode_started=5.0) is None  # the state published at the reset
    assert ControlTick.seedable(inputs_stamp=5.1, episode_started=5.0) is None


def test_an_episode_starts_only_once_every_input_is_from_after_its_reset():
    a = assembler_with_joints(5.0)
    assert a.oldest() == 5.0
    cam = ObservationAssembler(("scene",), ("qpos", "gripper"), 96, max_age=0.3, max_skew=0.15)
    cam.set_joint_state(NAMES, list(fr3.Q_HOME) + [0.04, 0.04], [0.0] * 9, 5.0)
    assert cam.oldest() == -float("inf")  # no frame yet
    cam.set_image("scene", np.zeros((96, 96, 3), np.uint8), 4.9)  # the last episode's frame
    assert cam.oldest() == 4.9 and ControlTick.seedable(cam.oldest(), episode_started=5.0) is not None


def test_a_start_after_its_own_instants_tick_is_acted_on_only_on_sim_time():
    assert ticker(True).start_missed(idle_tick_at=5.0, episode_started=5.0)
    assert ticker(True).start_missed(idle_tick_at=5.1, episode_started=5.0)
    assert not ticker(True).start_missed(idle_tick_at=4.9, episode_started=5.0)  # its tick is still to come
    assert not ticker(False).start_missed(idle_tick_at=5.0, episode_started=5.0)


def test_inference_wait_only_on_sim_time():
    assert ticker(True, inference_timeout=2.0).inference_wait() == 2.0
    assert ticker(True, inference_timeout=2.0, wait_for_inference=False).inference_wait() == 0.0
    assert ticker(False, inference_timeout=2.0).inference_wait() == 0.0


def test_after_planning_holds_without_an_action_and_skips_a_late_tick():
    clock = FakeClock()
    t = ticker(True, clock, inference_timeout=2.0)
    v = t.after_planning(None, 1.0, 1.0, in_flight=True, flight_started=clock.t - 0.5)
    assert v.action == HOLD and v.count == "hold_no_action" and v.problem is None and not v.text
    v = t.after_planning(None, 1.0, 1.0, in_flight=True, flight_started=clock.t - 2.5)
    assert v.problem == "model" and "no chunk after 2.0 s" in v.text
    item = (np.zeros(8), SimpleNamespace(index=3), 1)
    assert t.after_planning(item, 1.0, 1.0, False, 0.0) is None
    v = t.after_planning(item, 1.0, 1.1, False, 0.0)  # the simulator ran on while the tick waited
    assert v.action == SKIP and v.count == "ticks_late" and "action 1 of chunk 3" in v.text
    assert ticker(False).after_planning(item, 1.0, 1.1, False, 0.0) is None  # the wall clock always moves


def test_on_the_wall_clock_a_message_goes_at_once_and_its_lead_covers_the_delivery_budget():
    clock = FakeClock()
    t = ticker(False, clock, delivery_budget=0.05, switch_lead=0.02)
    assert t.lead() == pytest.approx(0.07)
    assert t.release(10.0, lambda: 10.02, True) is None and clock.slept == []  # never waits
    assert t.release(10.0, lambda: 10.059, True) is None  # within the budget + half the switch_lead: sent
    v = t.release(10.0, lambda: 10.07, True, ", action 2")
    assert v.action == SKIP and v.count == "sent_late" and v.text.endswith("not sent, action 2")
    assert t.release(10.0, lambda: 10.07, False) is None  # a settling message has no stamp to miss
    sim = ticker(True, delivery_budget=0.05, switch_lead=0.02)
    assert sim.lead() == pytest.approx(0.02) and sim.release(10.0, lambda: 10.0, True) is None


def test_on_sim_time_a_message_whose_instant_the_simulator_left_is_not_sent():
    """The lock-step simulator ran out its idle timeout while the tick waited (for a gripper goal's acceptance):
    the trajectory for the instant it left would be read a period late, off the path playing."""
    sim = ticker(True, delivery_budget=0.05, switch_lead=0.02)
    assert sim.release(10.0, lambda: 10.0, True) is None
    v = sim.release(10.0, lambda: 10.1, True, ", action 2 of chunk 3 not executed")
    assert v.action == SKIP and v.count == "ticks_late" and v.text.endswith("action 2 of chunk 3 not executed")
    assert sim.release(10.0, lambda: 10.1, False) is None  # nothing to send


def test_a_hold_is_not_resent_on_the_wall_clock_when_it_would_arrive_after_its_end():
    wall = ticker(False, delivery_budget=0.05, switch_lead=0.02)
    assert wall.worth_resending(10.2, now=10.0) and wall.worth_resending(None, now=10.0)
    assert not wall.worth_resending(10.05, now=10.0), "ends within the lead: the JTC would refuse it"
    sim = ticker(True, delivery_budget=0.05, switch_lead=0.02)
    assert sim.worth_resending(10.005, now=10.0), "lock-step: read at once, and the simulator waits for it"


def test_filter_seed_continues_the_robots_command_only_when_it_is_current():
    q = np.array(fr3.Q_HOME, dtype=float)
    robot = SimpleNamespace(desired_q=q + 1e-3, desired_dq=np.zeros(7), measured_q=q.copy(), stamp=2.0)
    seed, settle = filter_seed(q, robot, episode_started=1.0)
    assert np.array_equal(seed, robot.desired_q) and settle == 0.0
    assert filter_seed(q, robot, episode_started=3.0)[1] is None  # a robot state from before the reset
    assert filter_seed(q, robot, episode_started=2.0)[1] == 0.0  # the one published at the reset
    moving = SimpleNamespace(**{**vars(robot), "desired_dq": np.full(7, 0.1)})
    assert filter_seed(q, moving, 1.0)[1] is None
    elsewhere = SimpleNamespace(**{**vars(robot), "measured_q": q + 0.1})
    seed, settle = filter_seed(q, elsewhere, 1.0)
    assert np.array_equal(seed, q) and settle is None
    assert filter_seed(q, None)[1] is None


def test_robot_out_of_move_mode_gives_the_episode_up_and_a_silent_robot_sends_nothing():
    moving = SimpleNamespace(executing=True, describe=lambda: "in move mode")
    stopped = SimpleNamespace(executing=False, describe=lambda: "in reflex (joint_reflex)")
    assert ControlTick.robot_ready(moving, age=0.01, max_age=0.3) is None
    v = ControlTick.robot_ready(stopped, age=0.01, max_age=0.3)
    assert v.action == GIVE_UP and v.count == "episodes_given_up" and "reflex" in v.text
    v = ControlTick.robot_ready(moving, age=0.5, max_age=0.3)
    assert v.action == WAIT and v.count == "hold_robot_state" and "0.500 s old" in v.text and not v.missed
    v = ControlTick.robot_ready(None, age=float("inf"), max_age=0.3)
    assert v.action == WAIT and "no robot state received yet" in v.text


def test_a_node_takes_over_the_garbage_collector():
    """policy_node and sim_node switch automatic collection off (a pass holds the interpreter lock, so a
    control tick would wait for one started in any thread) and collect where they choose; the passes are
    timed for /diagnostics."""
    import gc

    from mechanic_rl_ros.nodes.common import GcPauses

    pauses = GcPauses()
    try:
        pauses.take_over()
        assert not gc.isenabled()
        pauses.young()
        pauses.full()
        report = pauses.report()
        assert int(report["gc_pauses"]) == 2 and float(report["gc_pause_ms_max"]) >= 0.0
    finally:
        gc.enable()
        gc.callbacks.remove(pauses._on_gc)


def _lost_first_message(recover: bool) -> tuple[np.ndarray, list[str]]:
    """Six ticks on sim time into the JTC model; the first message never reaches the controller (published
    before DDS matched its subscription). Each tick compares the robot's q_d with the filter first and, with
    ``recover``, seeds a fresh filter as policy_node does. The 1 ms commands played, and what was found off."""
    from mechanic_rl_ros.control.safety import SafetyConfig, SafetyFilter
    from mechanic_rl_ros.control.trajectory import TrajectoryController
    from mechanic_rl_ros.wire.robot_state import RobotStatus

    cfg = SafetyConfig(workspace_min=(-2, -2, -2), workspace_max=(2, 2, 2), table_clearance=0.0,
                       tcp_speed_max=100.0)
    tick, q0 = ticker(True), fr3.Q_HOME.copy()
    filt = SafetyFilter(cfg)
    filt.reset(q0, now=0.0, settle=0.0)
    jtc = TrajectoryController()
    jtc.activate(q0, q0)
    out, found = [np.repeat(q0[None], 3, axis=0)], []
    for k in range(6):
        now = k * 0.1
        last = jtc.last_command  # the command of the last 1 ms update: the robot's q_d at ``now``
        robot = RobotStatus("move", (), now, last.positions.copy(), np.asarray(last.velocities, float), (),
                            last.positions.copy())
        off = tick.controller_follows(robot, filt.commanded)
        if off:
            found.append(off)
        if off and recover:
            filt = SafetyFilter(cfg)
            q, settle = filter_seed(robot.measured_q, robot, 0.0)
            filt.reset(q, now, settle=settle)
        res = filt.filter(q0 + 0.02 * (k + 1), 0.04, now)
        ticks = now + 1e-3 * np.arange(100)
        if k > 0:
            jtc.receive(res.trajectory, ticks[0])
        out.append(jtc.update(ticks)[0])
    return np.concatenate(out), found


def test_a_message_the_controller_never_got_is_seen_in_its_command_and_the_filter_starts_again_there():
    """A CI run reflexed (fr3_joint1 at 4.65 rad/s) on the message after a lost first one: it continued the
    lost trajectory, 11 mrad off the controller's hold. The robot's q_d shows the loss at the next tick; a
    filter seeded there streams within the FR3's 1 kHz checks."""
    from mechanic_rl_ros.control.franka_checks import CommandChecker

    cmds, found = _lost_first_message(recover=False)
    checker = CommandChecker()
    checker.start(fr3.Q_HOME)
    assert checker.check(cmds[3:]) is not None, "going on from the lost trajectory should be a reflex"
    assert found and "a message did not reach it" in found[0]
    cmds, found = _lost_first_message(recover=True)
    checker = CommandChecker()
    checker.start(fr3.Q_HOME)
    assert checker.check(cmds[3:]) is None
    assert len(found) == 1 and "mrad off the trajectory last sent" in found[0]  # once: then they agree
    assert ticker(False).controller_follows(SimpleNamespace(desired_q=np.ones(7), stamp=1.0),
                                            lambda t: np.zeros(7)) is None  # not judged on the wall clock
    v = ControlTick.controller_listening(0, "/fr3_position_trajectory_controller/joint_trajectory")
    assert v.action == WAIT and v.count == "hold_no_controller" and "nothing subscribes to /fr3_" in v.text
    assert ControlTick.controller_listening(1, "/x") is None
