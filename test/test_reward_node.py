"""reward_node + sim_node as separate processes (lock-step sim time); the test
plays the policy: executes steps, publishes a Transition per step, and checks
that every step gets exactly one reward, episodes time out and are reset."""
from __future__ import annotations

import time

import rclpy
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from std_msgs.msg import Float64MultiArray

from mechanic_rl_ros import fr3
from mechanic_rl_ros.msg import EpisodeEvent, StepReward, Transition

from rosenv import fresh_domain_id, start_python

RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
MAX_STEPS = 5


def test_rewards_episodes_and_resets(tmp_path):
    domain = fresh_domain_id()
    sim = start_python(["-m", "mechanic_rl_ros.nodes.sim_node", "--ros-args", "--params-file", "config/sim.yaml",
                        "-p", "mode:=lockstep", "-p", "lockstep_idle_timeout:=0.2", "-p", "use_sim_time:=true"],
                       domain, tmp_path / "sim.log")
    reward = start_python(["-m", "mechanic_rl_ros.nodes.reward_node", "--ros-args", "--params-file", "config/reward.yaml",
                           "-p", f"max_steps:={MAX_STEPS}", "-p", "reward:=shaped", "-p", "use_sim_time:=true"],
                          domain, tmp_path / "reward.log")
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    node = rclpy.create_node("fake_policy_harness", context=ctx)
    ex = rclpy.executors.SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    clock: list = []
    events: list[EpisodeEvent] = []
    rewards: list[StepReward] = []
    node.create_subscription(Clock, "/clock", lambda m: clock.append(m.clock), 10)
    node.create_subscription(EpisodeEvent, "/reward/events", events.append, LATCHED)
    node.create_subscription(StepReward, "/reward/step", rewards.append, RELIABLE)
    cmd = node.create_publisher(Float64MultiArray, "/fr3_position_controller/commands", RELIABLE)
    trans = node.create_publisher(Transition, "/learner/transitions", RELIABLE)

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
        for episode in range(2):
            assert spin_until(lambda: clock and any(e.event == EpisodeEvent.START and e.episode == episode for e in events), 60), logs()
            for step in range(MAX_STEPS):
                stamp = clock[-1]
                t0 = stamp.sec + stamp.nanosec * 1e-9
                tr = Transition(episode=episode, step=step, chunk=step, chunk_step=0, policy_version=0)
                tr.header.stamp = stamp
                trans.publish(tr)
                cmd.publish(Float64MultiArray(data=[float(v) for v in fr3.Q_HOME]))
                assert spin_until(lambda: clock[-1].sec + clock[-1].nanosec * 1e-9 >= t0 + 0.1 - 1e-6, 10), logs()
            assert spin_until(lambda: any(e.event == EpisodeEvent.TIMEOUT and e.episode == episode for e in events), 20), logs()
        spin_until(lambda: len(rewards) >= 2 * MAX_STEPS, 5)  # rewards and events travel on different topics
        ours = [(r.episode, r.step) for r in rewards]
        assert ours == [(e, s) for e in range(2) for s in range(MAX_STEPS)], ours
        assert [r.truncated for r in rewards] == ([False] * (MAX_STEPS - 1) + [True]) * 2
        assert all(0.0 <= r.reward <= 1.0 and not r.terminal for r in rewards)
        assert sum(e.event == EpisodeEvent.RESET_DONE for e in events) >= 2
        assert sim.poll() is None and reward.poll() is None, logs()
    finally:
        node.destroy_node()
        rclpy.shutdown(context=ctx)
        for p in (sim, reward):
            p.terminate()
        for p in (sim, reward):
            p.wait(15)
    assert reward.returncode == 0, logs()
