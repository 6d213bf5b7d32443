"""Shared fixtures for tests that run nodes of the stack: a small policy
checkpoint made on the spot (random weights, FR3-sized normaliser), and a
probe node that records what the stack publishes."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy

from mechanic_rl_ros.control import fr3
from mechanic_rl_ros.policy import DiffusionPolicy, MinMaxNormalizer, PolicyNormalizer
from fixtures_policy import tiny_config
from mechanic_rl_ros.wire import topics

#: a probe's queue for volatile reliable topics (commands): deep, so a loaded test process loses nothing
RELIABLE = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = topics.WEIGHTS.qos
#: the transitions / step rewards topics: a late subscriber gets the history replayed
HISTORY = topics.history(2000)
EVENTS = topics.EPISODE_EVENTS.qos


def make_checkpoint(directory: Path, image_size: int = 96, finetune_steps: int = 5, seed: int = 0) -> DiffusionPolicy:
    """A tiny random-weight policy whose actions stay near the FR3 home pose."""
    import torch

    torch.manual_seed(seed)
    cfg = tiny_config(image_size=image_size)
    lo = np.append(fr3.Q_HOME - 0.05, 0.0).astype(np.float32)
    hi = np.append(fr3.Q_HOME + 0.05, 0.08).astype(np.float32)
    norm = PolicyNormalizer(MinMaxNormalizer(lo, hi), {
        "qpos": MinMaxNormalizer(fr3.Q_MIN.astype(np.float32), fr3.Q_MAX.astype(np.float32)),
        "gripper": MinMaxNormalizer(np.zeros(1, np.float32), np.full(1, 0.08, np.float32))})
    policy = DiffusionPolicy(cfg, norm)
    policy.save(directory)
    policy.make_finetune_copy(finetune_steps)
    return policy


class Probe:
    """A node in the test process that records messages per topic."""

    def __init__(self, domain: int, name: str = "probe"):
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain)
        self.node = rclpy.create_node(name, context=self.ctx)
        self.ex = rclpy.executors.SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.node)
        self.msgs: dict[str, list] = {}

    def record(self, typ, topic: str, qos=RELIABLE) -> list:
        box = self.msgs.setdefault(topic, [])
        self.node.create_subscription(typ, topic, box.append, qos)
        return box

    def spin_until(self, pred, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.ex.spin_once(timeout_sec=0.02)
            if pred():
                return True
        return False

    def publish_until(self, publisher, make_msg, pred, timeout: float, period: float = 0.1) -> bool:
        """Publish ``make_msg()`` every ``period`` s until ``pred()`` holds.

        The stack reads sensors with best-effort, keep-last QoS: on a loaded
        machine a single message can be overwritten in the reader's history
        before its callback runs. A test of how a node treats a bad input
        therefore keeps the input coming, as a real faulty sensor would.
        """
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            publisher.publish(make_msg())
            if self.spin_until(pred, period):
                return True
        return False

    def close(self) -> None:
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)


def start_lockstep_stack(tmp: Path, domain: int, checkpoint: Path, max_steps: int,
                         policy_params: tuple[str, ...] = ()) -> dict:
    """sim_node (lock-step), reward_node (``max_steps``) and policy_node (DPPO weights, reading the simulator's
    raw frames) as processes on sim time, logging to ``tmp/<name>.log``; ``policy_params``: more ``-p`` values."""
    from rosenv import start_python

    sim_time = ["-p", "use_sim_time:=true"]
    policy = [f for p in ("algorithm:=dppo", "image_topics:=[/camera/scene/image_raw]", *policy_params)
              for f in ("-p", p)]
    return {
        "sim": start_python(["-m", "mechanic_rl_ros.nodes.sim_node", "--ros-args", "--params-file", "config/sim.yaml",
                             "-p", "mode:=lockstep", *sim_time], domain, tmp / "sim.log"),
        "reward": start_python(["-m", "mechanic_rl_ros.nodes.reward_node", "--ros-args", "--params-file",
                                "config/reward.yaml", "-p", f"max_steps:={max_steps}", *sim_time], domain,
                               tmp / "reward.log"),
        "policy": start_python(["-m", "mechanic_rl_ros.nodes.policy_node", "--ros-args", "--params-file",
                                "config/policy_node.yaml", "-p", f"checkpoint:={checkpoint}", *policy, *sim_time],
                               domain, tmp / "policy.log"),
    }
