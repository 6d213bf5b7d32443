"""The stack's own messages over real DDS between separate processes."""
from __future__ import annotations

import time

import numpy as np
import pytest
import rclpy

from mechanic_rl_ros.msg import PolicyWeights
from mechanic_rl_ros.wire import topics
from mechanic_rl_ros.wire.transition import decision_from_transition
from mechanic_rl_ros.wire.weights import verify_weights

from msg_samples import samples
from rosenv import fresh_domain_id, start_python

LATCHED = topics.WEIGHTS.qos


@pytest.fixture
def ros_node():
    domain = fresh_domain_id()
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    node = rclpy.create_node("test_subscriber", context=ctx)
    executor = rclpy.executors.SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    yield domain, node, executor
    node.destroy_node()
    rclpy.shutdown(context=ctx)


def _stop(proc):
    proc.terminate()
    try:
        proc.wait(10)
    except Exception:
        proc.kill()


def _spin_until(executor, predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.1)
        if predicate():
            return True
    return False


def test_every_message_round_trips_between_processes(ros_node, tmp_path):
    domain, node, executor = ros_node
    expected = samples()
    got: dict[str, object] = {}
    for name, msg in expected.items():
        node.create_subscription(type(msg), f"/samples/{name}", lambda m, n=name: got.__setitem__(n, m), LATCHED)
    peer = start_python(["test/peers/publish_samples.py"], domain, tmp_path / "peer.log")
    try:
        assert _spin_until(executor, lambda: len(got) == len(expected), 30), (
            f"received only {sorted(got)} of {sorted(expected)}; peer log:\n{(tmp_path / 'peer.log').read_text()}"
        )
    finally:
        _stop(peer)
    for name, msg in expected.items():
        assert got[name] == msg, f"{name} changed in transit:\n sent {msg}\n got  {got[name]}"
    # The decoded content, not only the message equality, survives.
    d = decision_from_transition(got["Transition"])
    assert d.chain.shape == (3, 16, 8) and d.chain.dtype == np.float32 and d.finetune_steps == 2
    assert d.obs["images"]["scene"].shape == (2, 8, 8, 3) and (d.episode, d.chunk, d.policy_version) == (3, 2, 7)
    np.testing.assert_array_equal(d.stamps, [99.9, 100.0])
    w = verify_weights(got["PolicyWeights"], architecture_id="arch-0123abcd", finetune_steps=2)
    np.testing.assert_array_equal(w.tensors["b"], np.arange(4, dtype=np.float32))


def test_20mb_weights_reach_a_late_joiner(ros_node, tmp_path):
    domain, node, executor = ros_node
    peer = start_python(["test/peers/publish_weights.py", "20", "3"], domain, tmp_path / "peer.log")
    try:
        deadline = time.monotonic() + 60
        while b"published" not in (tmp_path / "peer.log").read_bytes():
            assert peer.poll() is None, (tmp_path / "peer.log").read_text()
            assert time.monotonic() < deadline, "weights publisher never finished publishing"
            time.sleep(0.2)
        time.sleep(1.0)  # the subscriber joins well after the last publish
        got: list[PolicyWeights] = []
        node.create_subscription(PolicyWeights, "/policy_weights", got.append, LATCHED)
        assert _spin_until(executor, lambda: len(got) >= 1, 60), (
            f"late joiner got no weights; peer log:\n{(tmp_path / 'peer.log').read_text()}"
        )
        _spin_until(executor, lambda: False, 1.0)
    finally:
        _stop(peer)
    assert [m.version for m in got] == [3], "transient-local depth 1 must deliver exactly the latest version"
    tensors = verify_weights(got[0], architecture_id="arch-test", expected_shapes={"w": (5_000_000,)}).tensors
    assert len(got[0].payload) > 20_000_000
    assert float(tensors["w"][0]) == 3.0 and float(tensors["w"][-1]) == 3.0
