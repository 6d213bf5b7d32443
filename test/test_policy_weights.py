"""policy_node's weights intake alone (no node): which PolicyWeights are new, refusals and the swap bookkeeping.
The verification of the payload itself is wire.weights' (test_wire.py); the whole path runs in
test_policy_node.py."""
from __future__ import annotations

from types import SimpleNamespace

from mechanic_rl_ros.msg import PolicyWeights
from mechanic_rl_ros.nodes.policy_weights import WeightsIntake


def intake(version: int = 3):
    problems, lines = [], []
    log = SimpleNamespace(info=lines.append, debug=lines.append)
    w = WeightsIntake(SimpleNamespace(ft_net=None), None, "arch", {}, lambda: 10.0, log,
                      lambda key, text: problems.append((key, text)))
    w.planner = SimpleNamespace(version=version)
    return w, problems, lines


def message(version: int, sha256: str = "ab" * 32) -> PolicyWeights:
    msg = PolicyWeights(version=version, sha256=sha256)
    msg.header.stamp.sec = 9
    return msg


def test_the_running_version_again_is_nothing_to_do():
    w, problems, lines = intake(version=3)
    w.on_message(message(3))
    assert not problems and w.counts == {"weights_adopted": 0, "weights_rejected": 0}
    assert "already running" in lines[0]


def test_an_older_version_is_refused_naming_the_field():
    w, problems, _ = intake(version=3)
    w.running_sha256 = "cd" * 32
    w.on_message(message(2))
    assert w.counts["weights_rejected"] == 1
    key, text = problems[0]
    assert key == "weights" and "version: got 2" in text and "keeping version 3" in text


def test_a_swap_records_its_timing_and_a_failed_one_is_counted():
    w, problems, lines = intake(version=3)
    w.staged[4] = (9.5, "ef" * 32)
    w.on_swap(4, None)
    assert w.running_sha256 == "ef" * 32 and w.counts["weights_adopted"] == 1
    assert w.timing["swapped_ms"] == 500.0 and "now running policy version 4" in lines[-1]
    w.staged[5] = (9.9, "00" * 32)
    w.on_swap(5, RuntimeError("bad tensor"))
    assert w.counts["weights_rejected"] == 1 and w.running_sha256 == "ef" * 32 and "bad tensor" in problems[0][1]
