"""Signals during shutdown, with real processes: the first SIGINT / SIGTERM
stops a node; any further one while it cleans up (a second Ctrl-C, a
supervisor or `timeout` signalling the process group after `ros2 launch`
already did) is logged and ignored, so every node still exits 0 and the
learner's final checkpoint is complete."""
from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from mechanic_rl_ros.rl.buffer import RolloutBuffer
from mechanic_rl_ros.rl.dppo import DPPO
from mechanic_rl_ros.stack.runner import node_command
from rosenv import fresh_domain_id, start_python
from stack_checks import StackObserver
from stack_fixtures import make_checkpoint
from test_finetune_faults import _specs as fast_stack_specs

IGNORED = "while already shutting down"


def _wait(pred, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def test_signals_during_cleanup_are_logged_and_ignored(tmp_path):
    """run_node: once cleanup has begun, SIGINT and SIGTERM do not cut it short (test/peers/slow_cleanup_node.py
    cleans up until the test releases it, so every signal below lands inside destroy_node)."""
    release, done, log = tmp_path / "release", tmp_path / "done", tmp_path / "node.log"
    proc = start_python(["test/peers/slow_cleanup_node.py", str(release), str(done)], fresh_domain_id(), log)
    text = log.read_text
    try:
        assert _wait(lambda: "ready" in text(), 120), text()
        proc.send_signal(signal.SIGINT)
        assert _wait(lambda: "cleanup started" in text(), 60), text()
        for i, sig in enumerate((signal.SIGINT, signal.SIGTERM, signal.SIGINT)):
            proc.send_signal(sig)
            assert _wait(lambda: text().count(IGNORED) == i + 1, 60), text()
        assert proc.poll() is None, f"a signal during cleanup ended the node\n{text()}"
        release.touch()
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, text()
    assert done.read_text() == "cleanup finished\n", text()


@pytest.mark.slow
def test_repeated_signals_while_the_stack_stops_lose_no_checkpoint(tmp_path):
    """The five nodes with data in the learner: each gets SIGINT and SIGTERM at once, then SIGINT every 50 ms
    until it is gone; every node exits 0 and the learner's checkpoint holds the data it had."""
    make_checkpoint(tmp_path / "ckpt")
    specs = fast_stack_specs(tmp_path, algorithm="dppo")  # DPPO's checkpoint in the stack (selection's: the faults test)
    domain = fresh_domain_id()
    procs: dict[str, subprocess.Popen] = {name: start_python(node_command(spec)[1:], domain, tmp_path / f"{name}.log")
                                          for name, spec in specs.items()}
    obs = StackObserver(domain)

    def logs() -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-2500:]}" for p in sorted(tmp_path.glob("*.log")))

    received = 30
    try:
        learner = lambda: obs.diagnostics.get("learner_node", {})  # noqa: E731
        assert obs.spin_until(lambda: int(learner().get("rewards_received", 0)) >= received, 600), logs()
    finally:
        obs.close()
        for p in procs.values():
            p.send_signal(signal.SIGINT)
            p.send_signal(signal.SIGTERM)  # handled after the SIGINT: Python runs pending handlers by number
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and any(p.poll() is None for p in procs.values()):
            for p in procs.values():
                p.send_signal(signal.SIGINT)  # no-op once the process is gone
            time.sleep(0.05)
        codes = {}
        for name, p in procs.items():
            if p.poll() is None:
                p.kill()
            codes[name] = p.wait()
    assert all(c == 0 for c in codes.values()), (codes, logs())
    learner_log = (tmp_path / "learner_node.log").read_text()
    assert IGNORED in learner_log and "checkpoint written to" in learner_log, learner_log[-3000:]

    saved = tmp_path / "run" / "learner"
    DPPO.load(saved)
    RolloutBuffer.load(saved / "buffer.npz")
    counts = json.loads((saved / "node_state.json").read_text())["counts"]
    assert counts["rewards_received"] >= received, counts
    assert not any(Path(f"{saved}{suffix}").exists() for suffix in (".tmp", ".old"))
