"""The robot server behind sim_node, alone (no ROS): requests, lock-step periods, stamps and late trajectories,
resets and their clock arithmetic, reflexes and the controller_manager sequence, gripper goals."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from mechanic_rl_ros.control.trajectory import Point, Trajectory
from mechanic_rl_ros.sim import gripper as gripper_semantics
from mechanic_rl_ros.sim import make_env
from mechanic_rl_ros.sim.controller_manager import ACTIVE, BEST_EFFORT, HARDWARE_COMPONENT
from mechanic_rl_ros.sim.server import (RESET_DURING_GOAL, CommandError, RobotServer, ServerConfig,
                                        check_arm_command, reset_offset, same_trajectory)


class Sink:
    """Keeps what the server publishes."""

    def __init__(self):
        self.robot, self.task, self.frames = [], [], []

    def publish_robot(self, state):
        self.robot.append(state)

    def publish_task(self, report):
        self.task.append(report)

    def publish_frame(self, stamp_ns, images):
        self.frames.append((stamp_ns, images))


def make_server(mode: str = "lockstep", idle: float = 0.05, **kw) -> tuple[RobotServer, Sink, list]:
    env = make_env(task="lift", cameras=("scene",), image_size=(24, 32), seed=0, reward="shaped")
    sink, rejected = Sink(), []
    config = ServerConfig(mode=mode, image_height=24, image_width=32, lockstep_idle_timeout=idle, **kw)
    server = RobotServer(env, config, sink, on_rejected=lambda source, text: rejected.append((source, text)))
    return server, sink, rejected


@pytest.fixture
def running():
    """A lock-step server on its physics thread (idle periods of 50 ms keep it moving)."""
    server, sink, rejected = make_server()
    server.start()
    yield server, sink, rejected
    server.stop()


def hold_trajectory(q: np.ndarray, stamp: float | None) -> Trajectory:
    """Stay at ``q``: a valid JTC trajectory (ends at rest)."""
    zero = np.zeros(7)
    return Trajectory(stamp, [Point(1.0, q.copy(), zero, zero)])


def wait_for(pred, timeout: float = 20.0) -> bool:
    done = threading.Event()
    end = threading.Timer(timeout, done.set)
    end.start()
    try:
        while not done.is_set():
            if pred():
                return True
            done.wait(0.01)
        return pred()
    finally:
        end.cancel()


def test_reset_offset_jumps_to_the_next_control_period_boundary():
    assert reset_offset(0.0, 0.1) == pytest.approx(0.1)
    assert reset_offset(0.95, 0.1) == pytest.approx(1.0)
    assert reset_offset(1.0, 0.1) == pytest.approx(1.1)  # on the boundary: the next one, stamps differ
    assert reset_offset(1.0 - 1e-9, 0.1) == pytest.approx(1.1)  # float noise below a boundary counts as on it


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="mode"):
        ServerConfig(mode="fast")
    with pytest.raises(ValueError, match="arm_controller"):
        ServerConfig(arm_controller="velocity")
    with pytest.raises(ValueError, match="publish_rate"):
        ServerConfig(publish_rate=0.0)


def test_arm_command_check_names_the_problem():
    with pytest.raises(CommandError, match="expected 7"):
        check_arm_command([0.0] * 6)
    with pytest.raises(CommandError, match="finite"):
        check_arm_command([np.nan] * 7)
    with pytest.raises(CommandError, match="fr3_joint4"):
        check_arm_command([0.0] * 7)  # joint 4's upper limit is -0.15 rad


def test_same_trajectory_is_a_repeat_of_the_same_message():
    q = np.linspace(0.1, 0.7, 7)
    a = hold_trajectory(q, 1.0)
    assert same_trajectory(a, hold_trajectory(q, 1.0))
    assert not same_trajectory(a, hold_trajectory(q, 1.1))
    assert not same_trajectory(a, hold_trajectory(q + 0.01, 1.0))
    assert not same_trajectory(a, None)


def test_lockstep_advances_one_control_period_per_command_or_idle_timeout():
    server, sink, rejected = make_server(mode="lockstep", idle=0.05)
    try:
        server._publish_state(frame=True)
        t0 = server.env.sim.time
        q = server.env.sim.joint_state()["position"][:7]
        server.command_trajectory(hold_trajectory(q, server.now_seconds()))
        server.control_period()
        assert server.env.sim.time - t0 == pytest.approx(server.control_dt)
        assert server.stats["commands_applied"] == 1 and server.stats["idle_periods"] == 0
        server.control_period()  # no command: the idle timeout advances it anyway
        assert server.env.sim.time - t0 == pytest.approx(2 * server.control_dt)
        assert server.stats["idle_periods"] == 1
        # the published stamps are on the stack's clock (sim time in lock-step), 50 Hz joint states, 10 Hz frames
        stamps = [s.stamp_ns for s in sink.robot]
        assert stamps[-1] == round(2 * server.control_dt * 1e9)
        assert len(sink.robot) == 1 + 2 * server.publishes_per_control and len(sink.task) == len(sink.robot)
        assert len(sink.frames) == 3 and sink.frames[-1][1]["scene"].shape == (24, 32, 3)
        assert sink.robot[-1].robot is not None and sink.robot[-1].robot[0] == "move"
        assert not rejected
    finally:
        server.env.close()


def test_a_reset_late_in_the_idle_wait_gives_the_new_episodes_first_command_the_whole_wait():
    """The stack held the arm between episodes for most of the wait (learner_pace); the reset then comes, and
    the policy's first trajectory a little later: the period must not have run on without it."""
    server, _, _ = make_server(mode="lockstep", idle=1.0)
    ended: list[float] = []

    def one_period():  # on its own thread, which renders, so the renderer is closed there too
        try:
            server.control_period()
            ended.append(server.env.sim.time)
        finally:
            server.env.close()

    period = threading.Thread(target=one_period)
    period.start()
    threading.Event().wait(0.8)
    assert server.call("reset", 7, timeout=5.0) is None
    t_reset = server.env.sim.time
    threading.Event().wait(0.5)  # past the wait counted from before the reset
    running, idle = period.is_alive(), server.stats["idle_periods"]
    q = server.env.sim.joint_state()["position"][:7]
    server.command_trajectory(hold_trajectory(q, server.last_reset_stamp))
    period.join(5.0)
    assert running and idle == 0, "the period ran on without the new episode's first command"
    assert server.stats["commands_applied"] == 1 and server.stats["idle_periods"] == 0
    assert server.stats["late_trajectories"] == 0
    assert ended[0] - t_reset == pytest.approx(server.control_dt)


def test_a_malformed_arm_command_is_rejected_with_its_source():
    server, _, rejected = make_server(mode="lockstep", arm_controller="forward", command_source="/cmd")
    try:
        server.command_arm([0.0, 1.0])
        assert server.stats["commands_rejected"] == 1 and server.requests.empty()
        assert rejected[0][0] == "/cmd" and "expected 7" in rejected[0][1]
        assert "expected 7" in server.last_error
    finally:
        server.env.close()


def test_late_trajectories_are_counted_once_and_repeats_are_not(running):
    server, _, _ = running
    assert wait_for(lambda: server.stats["ticks"] > 0)
    q = server.env.sim.joint_state()["position"][:7]
    traj = hold_trajectory(q, server.now_seconds() - 0.05)  # 50 ms before the simulation's instant
    server.command_trajectory(traj)
    assert wait_for(lambda: server.stats["commands_applied"] == 1)
    assert server.stats["late_trajectories"] == 1
    assert 0.05 <= server.max_trajectory_delay < 0.05 + 0.2  # (the idle timeout may run a period on)
    server.command_trajectory(hold_trajectory(q, traj.stamp))  # a hold's repeat of the one playing
    assert wait_for(lambda: server.stats["commands_applied"] == 2)
    assert server.stats["late_trajectories"] == 1


def test_reset_moves_the_clock_to_the_grid_and_drops_trajectories_from_before(running):
    server, sink, _ = running
    assert wait_for(lambda: server.stats["ticks"] >= 3)
    before = server.now_seconds()
    assert server.call("reset", 7) is None
    assert server.stats["resets"] == 1
    assert server.last_reset_stamp > before
    assert server.last_reset_stamp / server.control_dt == pytest.approx(round(server.last_reset_stamp
                                                                              / server.control_dt), abs=1e-6)
    q = server.env.sim.joint_state()["position"][:7]
    server.command_trajectory(hold_trajectory(q, before))  # the tick in flight at the reset
    assert wait_for(lambda: server.stats["dropped_before_reset"] == 1)
    assert server.stats["commands_applied"] == 0 and server.stats["late_trajectories"] == 0


def test_reflex_refuses_reset_until_the_recovery_sequence(running):
    server, sink, _ = running
    assert server.call("inject") == (True, "reflex injected: joint_reflex")
    assert server.robot_mode() == "reflex"
    assert wait_for(lambda: server.stats["reflexes"] == 1)
    error = server.call("reset", 1)
    assert error is not None and "not in move mode" in error
    # the controllers went down with the hardware: the robot state is no longer published
    assert wait_for(lambda: sink.robot[-1].robot is None)
    ok, message = server.call("recover")
    assert ok and "was reflex" in message
    assert server.call("hardware", (HARDWARE_COMPONENT, ACTIVE))[0]
    ok, message = server.call("switch", ([server.cm.arm_controller, "franka_robot_state_broadcaster"], [],
                                         BEST_EFFORT))
    assert ok, message
    assert server.robot_mode() == "move" and server.stats["recoveries"] == 1
    assert server.call("reset", 1) is None
    with pytest.raises(ValueError, match="kind"):
        server.call("teleport")
    with pytest.raises(ValueError, match="command_arm"):
        server.call("arm", np.zeros(7))  # a command has no answer to wait for


def test_gripper_goal_runs_until_the_fingers_stop(running):
    server, _, _ = running
    assert wait_for(lambda: server.stats["ticks"] > 0)
    server.accept_gripper_goal("a", gripper_semantics.move(0.02, 0.1))
    assert server.stats["gripper_goals"] == 1 and server.gripper_goals_active == 1
    success, error = server.run_gripper_goal("a")
    assert success, error
    assert abs(server.fingers[0] - 0.02) < 2e-3
    assert server.stats["gripper_goals_succeeded"] == 1 and server.gripper_goals_active == 0


def test_gripper_goals_without_motion_and_goals_overlapping(running):
    server, _, _ = running
    server.accept_gripper_goal("bad", gripper_semantics.GoalError("width: -1 m"))
    assert server.run_gripper_goal("bad") == (False, "width: -1 m")
    server.accept_gripper_goal("there", None)
    assert server.run_gripper_goal("there") == (True, "")
    server.accept_gripper_goal("one", gripper_semantics.move(0.03, 0.1))
    server.accept_gripper_goal("two", gripper_semantics.move(0.05, 0.1))
    assert server.stats["gripper_goals_overlapping"] == 1
    results = {}
    threads = [threading.Thread(target=lambda k=k: results.__setitem__(k, server.run_gripper_goal(k)))
               for k in ("one", "two")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert set(results) == {"one", "two"} and server.gripper_goals_active == 0
    # the hand goes where the last goal sends it: the first goal ends away from its width
    assert results["two"] == (True, "") and not results["one"][0] and "move failed" in results["one"][1]


def test_a_reset_under_a_gripper_goal_ends_it(running):
    server, _, _ = running
    assert wait_for(lambda: server.stats["ticks"] > 0)
    server.accept_gripper_goal("g", gripper_semantics.move(0.0, 0.1))  # closing: still moving at the reset
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", server.run_gripper_goal("g")))
    t.start()
    assert server.call("reset", 2) is None
    t.join(30)
    assert result["r"] == (False, RESET_DURING_GOAL)
