"""The stack as a ROS user runs it, without `ros2 launch` (not installable here): the five node
executables of a colcon install, with the installed parameter files and the overrides the stack
description gives (what finetune.launch.py passes), from a directory outside the source tree and
with the checkout off the Python path. Catches a node that reads a file from the source tree
(issue 33: policy_node and learner_node died at start looking for config/select.yaml in
site-packages).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rosenv import REPO, fresh_domain_id, ros_env
from stack_checks import StackObserver
from test_colcon_build import PKG

#: control steps per episode: a short episode, so one ends soon on 2 cores
MAX_STEPS = 24

#: run in the installed environment: the stack description's nodes for argv[1]'s launch ``values`` (plus
#: ``extra`` parameter overrides per node), each with the ROS arguments the runner and launch_ros pass
PLAN = """
import json, sys
from mechanic_rl_ros import resources
from mechanic_rl_ros.stack import description, runner
req = json.loads(sys.argv[1])
out = []
for spec in description.nodes(req["values"], resources.config_dir()):
    spec.overrides.update(req["extra"].get(spec.name, {}))
    ros_args = runner.node_command(spec)[3:]  # without [python, -m, module]: the executable takes the rest
    out.append(dict(name=spec.name, executable=spec.executable, params_file=str(spec.params_file),
                    overrides=spec.overrides, env=spec.env, ros_args=ros_args))
print(json.dumps(out))
"""


def installed_env(install: Path, domain: int) -> dict[str, str]:
    """The environment of a shell that sourced the install's setup.sh, without the checkout on PYTHONPATH;
    the venv's interpreter first on PATH (the node executables run `/usr/bin/env python3`)."""
    base = ros_env(domain, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    base.pop("PYTHONPATH", None)
    out = subprocess.run(["sh", "-c", f". '{install}/setup.sh' && env -0"], env=base, capture_output=True,
                         check=True, timeout=60).stdout
    env = dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)
    assert str(REPO) not in env.get("PYTHONPATH", ""), env.get("PYTHONPATH")
    return env


def stop_all(procs: dict[str, subprocess.Popen], timeout: float = 90.0) -> dict[str, int | None]:
    """One SIGINT to every node, as launch sends; their exit codes (None: killed after ``timeout``)."""
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    codes: dict[str, int | None] = {}
    for name, p in procs.items():
        try:
            codes[name] = p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            codes[name] = None
    return codes


@pytest.mark.integration
@pytest.mark.slow
def test_installed_executables_run_an_episode_outside_the_source_tree(colcon_install, tmp_path):
    install = colcon_install
    share = install / PKG / "share" / PKG
    libdir = install / PKG / "lib" / PKG
    domain = fresh_domain_id()
    env = installed_env(install, domain)
    work = tmp_path / "elsewhere"
    work.mkdir()

    # the package the nodes import is the installed one, and so are the files it finds
    probe = subprocess.run(
        [sys.executable, "-c", "import mechanic_rl_ros, mechanic_rl_ros.resources as r; "
         "print(mechanic_rl_ros.__file__); print(r.share_dir())"],
        cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    module, found_share = probe.stdout.split()
    assert module.startswith(str(install)) and found_share == str(share), probe.stdout

    # what finetune.launch.py starts, as the *installed* description gives it (default checkpoint: the
    # installed one), with one short episode
    plan = subprocess.run([sys.executable, "-c", PLAN, json.dumps({
        "values": {"run_dir": str(tmp_path / "run"), "episodes": "1"},
        "extra": {"reward_node": {"max_steps": MAX_STEPS}}})],
        cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert plan.returncode == 0, plan.stderr
    specs = json.loads(plan.stdout)
    assert [s["name"] for s in specs] == ["sim_node", "camera_node", "policy_node", "reward_node", "learner_node"]
    for spec in specs:
        assert spec["params_file"].startswith(str(share / "config")), spec
    checkpoint = next(s for s in specs if s["name"] == "policy_node")["overrides"]["checkpoint"]
    assert checkpoint == str(share / "checkpoints" / "lift_pretrained")

    procs: dict[str, subprocess.Popen] = {}
    logs: dict[str, Path] = {}

    def text() -> str:
        return "\n".join(f"--- {n}\n{p.read_text()[-2500:]}" for n, p in logs.items())

    obs = StackObserver(domain)
    try:
        for spec in specs:
            name = spec["name"]
            logs[name] = tmp_path / f"{name}.log"
            procs[name] = subprocess.Popen([str(libdir / spec["executable"]), *spec["ros_args"]], cwd=work,
                                           env={**env, **spec["env"]}, stdout=open(logs[name], "wb"),
                                           stderr=subprocess.STDOUT, start_new_session=True)

        def ended_or_dead() -> bool:  # an episode aborted at a loaded start-up may end before any step
            return (obs.ended_episodes() >= 1 and bool(obs.transitions)) or any(p.poll() is not None
                                                                                for p in procs.values())

        obs.spin_until(ended_or_dead, 300)
        dead = {n: p.returncode for n, p in procs.items() if p.poll() is not None}
        assert not dead, f"nodes died: {dead}\n{text()}"
        assert obs.ended_episodes() >= 1, f"no episode ended in 300 s\n{text()}"
        assert obs.transitions, "no transition reached the learner's topic"
    finally:
        obs.close()
        codes = stop_all(procs)
    assert codes == {s["name"]: 0 for s in specs}, f"{codes}\n{text()}"
    assert not any("Traceback" in p.read_text() for p in logs.values()), text()
