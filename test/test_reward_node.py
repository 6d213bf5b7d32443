"""reward_node as a separate process. With sim_node (lock-step sim time) the test plays the policy:
executes steps, publishes a Transition per step, and checks that every step gets exactly one reward, episodes
time out and are reset. In real mode it plays the arm and checks the home motion commands."""
from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np
import pytest

import rclpy
from std_msgs.msg import Int64
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from rclpy.duration import Duration
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from mechanic_rl_ros.control import fr3
from mechanic_rl_ros.msg import EpisodeEvent, LearnerStats, StepReward, Transition
from mechanic_rl_ros.wire import topics

from rosenv import fresh_domain_id, start_python

RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = topics.EPISODE_EVENTS.qos
MAX_STEPS = 5


@contextmanager
def sim_and_reward(tmp_path, *reward_params):
    """sim_node (lock-step) and reward_node (``reward_params``: its -p overrides) as processes, and a harness node
    that plays policy_node: yields (node, events seen on /reward/events, spin_until, logs); reward_node must
    exit 0 at the end."""
    domain = fresh_domain_id()
    sim = start_python(["-m", "mechanic_rl_ros.nodes.sim_node", "--ros-args", "--params-file", "config/sim.yaml",
                        "-p", "mode:=lockstep", "-p", "lockstep_idle_timeout:=0.2", "-p", "use_sim_time:=true"],
                       domain, tmp_path / "sim.log")
    params = [x for p in (*reward_params, "use_sim_time:=true") for x in ("-p", p)]
    reward = start_python(["-m", "mechanic_rl_ros.nodes.reward_node", "--ros-args", "--params-file",
                           "config/reward.yaml", *params], domain, tmp_path / "reward.log")
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    node = rclpy.create_node("fake_policy_harness", context=ctx)
    ex = rclpy.executors.SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    events: list[EpisodeEvent] = []
    node.create_subscription(EpisodeEvent, "/reward/events", events.append, LATCHED)

    def spin_until(pred, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            ex.spin_once(timeout_sec=0.02)
            if pred():
                return True
        return False

    def logs():
        return f"sim:\n{(tmp_path / 'sim.log').read_text()}\nreward:\n{(tmp_path / 'reward.log').read_text()}"

    try:
        yield node, events, spin_until, logs
        assert sim.poll() is None and reward.poll() is None, logs()
    finally:
        node.destroy_node()
        rclpy.shutdown(context=ctx)
        for p in (sim, reward):
            p.terminate()
        for p in (sim, reward):
            p.wait(15)
    assert reward.returncode == 0, logs()


class PolicyHarness:
    """The harness's policy_node: waits for an episode's START, executes MAX_STEPS steps of it on sim time (a
    Transition and a command each) until the TIMEOUT, and says when it stopped commanding."""

    def __init__(self, node, events, spin_until, logs):
        self.events, self.spin_until, self.logs = events, spin_until, logs
        self.clock: list = []
        node.create_subscription(Clock, "/clock", lambda m: self.clock.append(m.clock), 10)
        self.cmd = node.create_publisher(JointTrajectory, "/fr3_position_trajectory_controller/joint_trajectory",
                                         RELIABLE)
        self.trans = node.create_publisher(Transition, "/learner/transitions", topics.TRANSITIONS.profile(100))
        self.stopped = node.create_publisher(Int64, "/policy/stopped", LATCHED)

    def started(self, episode: int) -> bool:
        return any(e.event == EpisodeEvent.START and e.episode == episode for e in self.events)

    def play(self, episode: int) -> None:
        """Everything of ``episode`` up to its TIMEOUT, the stop not yet said (:meth:`stop`)."""
        clock, spin_until = self.clock, self.spin_until
        assert spin_until(lambda: clock and self.started(episode), 60), self.logs()
        for step in range(MAX_STEPS):
            stamp = clock[-1]
            t0 = stamp.sec + stamp.nanosec * 1e-9
            tr = Transition(episode=episode, step=step, chunk=step, chunk_step=0, policy_version=0)
            tr.header.stamp = stamp
            self.trans.publish(tr)
            self.cmd.publish(JointTrajectory(joint_names=list(fr3.JOINT_NAMES), points=[JointTrajectoryPoint(
                positions=[float(v) for v in fr3.Q_HOME], velocities=[0.0] * 7, accelerations=[0.0] * 7,
                time_from_start=Duration(seconds=0.1).to_msg())]))
            assert spin_until(lambda: clock[-1].sec + clock[-1].nanosec * 1e-9 >= t0 + 0.1 - 1e-6, 10), self.logs()
        assert spin_until(lambda: any(e.event == EpisodeEvent.TIMEOUT and e.episode == episode
                                      for e in self.events), 20), self.logs()

    def stop(self, episode: int) -> None:
        self.stopped.publish(Int64(data=episode))


def test_rewards_episodes_and_resets(tmp_path):
    with sim_and_reward(tmp_path, f"max_steps:={MAX_STEPS}", "reward:=shaped") as (node, events, spin_until, logs):
        rewards: list[StepReward] = []
        node.create_subscription(StepReward, "/reward/step", rewards.append, RELIABLE)
        policy = PolicyHarness(node, events, spin_until, logs)
        for episode in range(2):
            policy.play(episode)
            if episode == 0:
                # the next reset waits for the policy's stop (policy_stop_timeout 2 s); the harness says it late
                assert not spin_until(lambda: policy.started(1), 1.0), \
                    "a reset started before the policy said it stopped commanding"
            policy.stop(episode)
        spin_until(lambda: len(rewards) >= 2 * MAX_STEPS, 5)  # rewards and events travel on different topics
        ours = [(r.episode, r.step) for r in rewards]
        assert ours == [(e, s) for e in range(2) for s in range(MAX_STEPS)], ours
        assert [r.truncated for r in rewards] == ([False] * (MAX_STEPS - 1) + [True]) * 2
        assert all(0.0 <= r.reward <= 1.0 and not r.terminal for r in rewards)
        assert sum(e.event == EpisodeEvent.RESET_DONE for e in events) >= 2


def test_with_wait_for_policy_the_first_episode_waits_until_policy_node_says_it_is_ready(tmp_path):
    with sim_and_reward(tmp_path, "wait_for_policy:=true") as (node, events, spin_until, logs):
        stopped = node.create_publisher(Int64, "/policy/stopped", LATCHED)

        def started():
            return any(e.event == EpisodeEvent.START for e in events)

        # the reset service is up and reward_node says what it waits for; no episode starts
        assert spin_until(lambda: "waiting for policy_node to be ready" in (tmp_path / "reward.log").read_text(),
                          60), logs()
        assert not spin_until(started, 3.0), logs()
        stopped.publish(Int64(data=-1))  # policy_node: ready, no episode commanded yet
        assert spin_until(started, 30), logs()
        assert [e.episode for e in events if e.event == EpisodeEvent.START] == [0]


def test_learner_pace_holds_an_episode_start_until_the_learner_caught_up_or_owes_nothing(tmp_path):
    """learner_pace 600 per robot minute: one gradient step per control step. The harness plays the policy and
    the learner (its LearnerStats on the wire)."""
    with sim_and_reward(tmp_path, f"max_steps:={MAX_STEPS}", "learner_pace:=600.0", "wait_for_policy:=true") as (
            node, events, spin_until, logs):
        policy = PolicyHarness(node, events, spin_until, logs)
        stats = node.create_publisher(LearnerStats, "/learner/stats", topics.LEARNER_STATS.qos)

        def learner(updates, owed):
            stats.publish(LearnerStats(num_updates=updates, updates_owed=owed))

        assert spin_until(lambda: stats.get_subscription_count() > 0, 60), logs()
        learner(40, 100)  # an offline stage of 40 steps before the first episode: not the online phase's
        spin_until(lambda: False, 1.0)
        policy.stop(-1)  # policy_node: ready
        policy.play(0)  # the first episode is never held
        policy.stop(0)
        learner(42, 100)  # 2 of the 5 steps 5 control steps call for, and steps owed: episode 1 waits
        assert spin_until(lambda: "episode 1 waits: the learner made 2 of 5 gradient steps" in
                          (tmp_path / "reward.log").read_text(), 30), logs()
        assert not spin_until(lambda: policy.started(1), 2.0), logs()
        learner(45, 95)  # caught up
        policy.play(1)
        policy.stop(1)
        learner(47, 0)  # behind (7 of 10) but nothing owed: the learner has nothing to learn, the arm goes on
        assert spin_until(lambda: policy.started(2), 30), logs()
        text = (tmp_path / "reward.log").read_text()
        assert "episode 1 starts: the learner has caught up" in text and "episode 2 waits" not in text, logs()


def test_real_mode_homes_the_arm_with_the_configured_command_type(tmp_path):
    """mode=real: the home motion goes out as JointTrajectory messages (named FR3 joints) for the JTC: first
    a settling message (stamp 0) from the controller's own command, then stamped trajectories that end at
    rest and whose 1 kHz samples stay within the FR3 limits at the home velocity scale, approaching home."""
    from franka_msgs.msg import FrankaRobotState
    from sensor_msgs.msg import JointState

    from mechanic_rl_ros.wire.robot_state import robot_state_message

    from mechanic_rl_ros.control.franka_checks import first_violation
    from mechanic_rl_ros.control.trajectory import sample
    from mechanic_rl_ros.nodes.sim_node import trajectory_from_message

    domain = fresh_domain_id()
    dt, scale = 0.1, 0.2
    reward = start_python(["-m", "mechanic_rl_ros.nodes.reward_node", "--ros-args", "--params-file", "config/reward.yaml",
                           "-p", "mode:=real", "-p", f"control_dt:={dt}",
                           "-p", f"home_velocity_scale:={scale}"], domain, tmp_path / "reward.log")
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    node = rclpy.create_node("fake_arm", context=ctx)
    ex = rclpy.executors.SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    got: list[JointTrajectory] = []
    topic = "/fr3_position_trajectory_controller/joint_trajectory"
    node.create_subscription(JointTrajectory, topic, got.append, RELIABLE)
    js_pub = node.create_publisher(JointState, "/joint_states", 10)
    state_pub = node.create_publisher(FrankaRobotState, "/franka_robot_state_broadcaster/robot_state", 10)
    start = fr3.Q_HOME.copy()
    start[0] += 0.5
    q = start.copy()

    def follow(msg: JointTrajectory) -> None:  # a perfect controller: the arm is where it was told to go next
        q[:] = msg.points[-2].positions if len(msg.points) > 1 else msg.points[0].positions

    node.create_subscription(JointTrajectory, topic, follow, RELIABLE)
    end = time.monotonic() + 60
    try:
        while len(got) < 10 and time.monotonic() < end:
            js = JointState(name=list(fr3.ALL_JOINT_NAMES), position=[*q.tolist(), 0.02, 0.02])
            js.header.stamp = node.get_clock().now().to_msg()
            state_pub.publish(robot_state_message("move", (), (), js))  # the controller runs: move mode
            js_pub.publish(js)
            ex.spin_once(timeout_sec=0.02)
        log = (tmp_path / "reward.log").read_text()
        assert len(got) >= 10, log
        assert got[0].header.stamp.sec == 0 and got[0].header.stamp.nanosec == 0, "first: the settling message"
        trajs = [trajectory_from_message(m) for m in got[1:10]]
        prev = start
        for m, traj in zip(got[1:10], trajs):
            assert list(m.joint_names) == list(fr3.JOINT_NAMES)
            assert traj.stamp is not None and np.all(traj.points[-1].velocities == 0)
            times = traj.stamp + 1e-3 * np.arange(int(traj.points[-1].time_from_start * 1e3) + 1)
            cmds = sample(traj, traj.stamp, times)[0]
            v = first_violation(cmds[:3], cmds[3:], velocity_scale=scale, tolerance=1e-6)
            assert v is None, str(v)
            prev = np.asarray(traj.points[-2].positions)
        assert abs(prev[0] - fr3.Q_HOME[0]) < 0.5, "the home motion must approach home"
        assert reward.poll() is None, log
    finally:
        node.destroy_node()
        rclpy.shutdown(context=ctx)
        reward.terminate()
        reward.wait(15)


def test_the_home_motions_workspace_comes_from_the_parameters():
    """The real mode's home motion is bounded by home_workspace_min/max and home_table_clearance; bad values stop
    the node at start-up with the parameters named."""
    from mechanic_rl_ros.nodes.reward_params import PARAMETERS, home_safety_config

    cfg = {p.name: p.default for p in PARAMETERS}
    lo, hi = home_safety_config(cfg).box()
    assert lo.tolist() == [-2.0, -2.0, -2.0] and hi.tolist() == [2.0, 2.0, 2.0]
    cfg.update(home_workspace_min=[0.1, -0.5, 0.0], home_table_clearance=0.01)
    lo, hi = home_safety_config(cfg).box()
    assert lo.tolist() == pytest.approx([0.1, -0.5, 0.01])
    cfg["home_workspace_max"] = [0.0, 0.5, 0.5]  # x max below x min
    with pytest.raises(ValueError, match="home_workspace_min / home_workspace_max"):
        home_safety_config(cfg)
