"""Faults with real processes: the learner (the default, selection) is killed
(SIGKILL) and restarted mid-run. The policy keeps controlling with its last
critic, the learner resumes from its checkpoint (critic, replay, pending
decisions) and publishes critics the policy adopts (versions past any it ran,
although the checkpoint is older), and no transition the policy executed is
lost (transient-local replay + de-duplication by episode/step)."""
from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

import stack_checks as checks
from mechanic_rl_ros.stack import description
from mechanic_rl_ros.stack.runner import node_command
from rosenv import REPO, fresh_domain_id, ros_env
from stack_checks import StackObserver
from stack_fixtures import make_checkpoint
from test_finetune_stack import fast_settings

EPISODES = 16


def _specs(tmp: Path, algorithm: str = "select") -> dict[str, description.NodeSpec]:
    specs = {s.name: s for s in description.nodes(
        {"checkpoint": str(tmp / "ckpt"), "run_dir": str(tmp / "run")}, REPO / "config")}
    opts = fast_settings(tmp, EPISODES, algorithm=algorithm)
    for item in opts[1::2]:
        key, value = item.split("=", 1)
        node, param = key.split(".", 1)
        specs[node].overrides[param] = int(value) if value.isdigit() else value
    return specs


@pytest.mark.slow
def test_learner_killed_and_restarted(tmp_path):
    make_checkpoint(tmp_path / "ckpt")
    specs = _specs(tmp_path)
    domain = fresh_domain_id()
    env = ros_env(domain)
    procs: dict[str, subprocess.Popen] = {}

    def start(name: str, log: str) -> None:
        procs[name] = subprocess.Popen(node_command(specs[name]), cwd=REPO, env=env, start_new_session=True,
                                       stdout=open(tmp_path / log, "wb"), stderr=subprocess.STDOUT)

    for name in specs:
        start(name, f"{name}.log")
    obs = StackObserver(domain)

    def logs() -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-2500:]}" for p in sorted(tmp_path.glob("*.log")))

    try:
        checks.wait_for_learning(obs, versions=1, timeout=600)
        assert obs.spin_until(lambda: (tmp_path / "run" / "learner" / "node_state.json").is_file(), 120), logs()
        procs["learner_node"].send_signal(signal.SIGKILL)
        procs["learner_node"].wait(10)
        # weights published just before the kill may still be on their way and may be adopted at the next
        # chunk boundary: the newest version that existed is the newest one seen once they have arrived
        obs.spin_until(lambda: False, 3.0)
        last = max([*obs.versions_in_use(), *(w.version for w in obs.weights)])
        n = len(obs.transitions)
        assert obs.spin_until(lambda: len(obs.transitions) > n + 30, 120), "the policy stopped without its learner"
        assert max(obs.versions_in_use()) <= last, "a version nobody published was used while no learner ran"
        assert all(p.poll() is None for k, p in procs.items() if k != "learner_node"), logs()

        start("learner_node", "learner_node.restarted.log")
        restarted = (tmp_path / "learner_node.restarted.log").read_text
        assert obs.spin_until(lambda: "resumed from" in restarted(), 60), logs()
        assert obs.spin_until(lambda: max(w.version for w in obs.weights) > last, 300), logs()
        assert obs.spin_until(lambda: max(obs.versions_in_use()) > last, 300), logs()  # and the policy runs it
        assert obs.spin_until(lambda: obs.ended_episodes() >= EPISODES, 600), logs()
        checks.check_every_step_reached_learner(obs)
        checks.check_no_reflex(obs, tmp_path)
    finally:
        obs.close()
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        codes = {}
        for k, p in procs.items():
            try:
                codes[k] = p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                codes[k] = "killed"
    assert all(c == 0 for k, c in codes.items()), (codes, logs())
