"""``mechanic-rl finetune``: start the node stack without ``ros2 launch``.

``launch`` and ``launch_ros`` are not installable from the package index, so
in the venv this runner starts the *same* nodes with the *same* parameters as
``launch/finetune.launch.py`` -- both read :mod:`mechanic_rl_ros.stack.description`.
Each node is a separate OS process (``python -m mechanic_rl_ros.nodes.<node>
--ros-args ...``) whose output is prefixed with its name and written to
``<run_dir>/logs/<node>.log``.

Ctrl-C (SIGINT) and SIGTERM are forwarded to every node; the runner exits 0
when all nodes then exit cleanly, and non-zero as soon as any node dies on its
own: one ``[finetune] ERROR: node <name> exited with code <n> (<its last output
line>)`` line, then the others are stopped. Parameter files and the default
checkpoint come from the package's share directory (:mod:`mechanic_rl_ros.resources`).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

import yaml

from mechanic_rl_ros import resources
from mechanic_rl_ros.stack import description
from mechanic_rl_ros.stack.monitor import MonitorNode, Progress


def default_config_dir() -> Path:
    """The package's ``config/``: source checkout, colcon or pip install alike (:mod:`mechanic_rl_ros.resources`).

    Raises ``FileNotFoundError`` naming every place looked in.
    """
    return resources.share_dir() / "config"


def node_command(spec: description.NodeSpec) -> list[str]:
    """The command line that starts one node, as launch_ros would pass its parameters."""
    cmd = [sys.executable, "-m", f"mechanic_rl_ros.nodes.{spec.executable}", "--ros-args",
           "-r", f"__node:={spec.name}", "--params-file", str(spec.params_file)]
    for key, value in spec.overrides.items():
        cmd += ["-p", f"{key}:={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"]
    return cmd


def parse_args(argv: Sequence[str]) -> tuple[dict[str, str], argparse.Namespace]:
    """Launch-style ``name:=value`` arguments plus the runner's own options."""
    args_help = "\n".join(
        f"  {a.name}:=<{'|'.join(a.choices) if a.choices else 'value'}>  {a.description} (default: {a.default!r})"
        for a in description.ARGUMENTS)
    parser = argparse.ArgumentParser(
        prog="mechanic-rl finetune",
        description="Run the fine-tuning node stack (the venv equivalent of "
                    "'ros2 launch mechanic_rl_ros finetune.launch.py').",
        epilog="launch arguments (same as finetune.launch.py):\n" + args_help,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("launch_args", nargs="*", metavar="name:=value", help="launch arguments, see below")
    parser.add_argument("--duration", type=float, default=0.0,
                        help="stop the stack after this many wall seconds (0 = run until Ctrl-C)")
    parser.add_argument("--robot-minutes", type=float, default=0.0,
                        help="stop the stack once the finished episodes hold this many robot minutes (control "
                             "steps / 600, at 10 Hz; sim time, whatever the wall clock) (0 = no limit)")
    parser.add_argument("--config-dir", type=Path, default=None, help="parameter files (default: the package's config/)")
    parser.add_argument("--stop-timeout", type=float, default=60.0, help="seconds nodes get to exit after SIGINT")
    parser.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE",
                        help="override one node parameter (YAML value), e.g. --set learner_node.batch_size=8; repeatable")
    ns = parser.parse_intermixed_args(argv)  # name:=value before or after the options
    ns.param_overrides = {}
    for item in ns.set:
        key, sep, value = item.partition("=")
        node, dot, param = key.partition(".")
        if not sep or not dot or not node or not param:
            parser.error(f"--set {item!r} must look like NODE.PARAM=VALUE")
        ns.param_overrides.setdefault(node, {})[param] = yaml.safe_load(value)
    values: dict[str, str] = {}
    for item in ns.launch_args:
        if ":=" not in item:
            parser.error(f"launch argument {item!r} must look like name:=value")
        key, value = item.split(":=", 1)
        values[key] = value
    ns.given_run_dir = values.get("run_dir")
    try:
        return description.resolve(values), ns
    except ValueError as exc:
        parser.error(str(exc))
        raise  # unreachable


class Stack:
    """The running node processes."""

    def __init__(self, specs: list[description.NodeSpec], log_dir: Path, env: dict[str, str]):
        self.specs = specs
        self.log_dir = log_dir
        self.env = env
        self.procs: dict[str, subprocess.Popen] = {}
        self._threads: dict[str, threading.Thread] = {}
        #: each node's last non-blank output line: the cause, when it dies
        self.last_line: dict[str, str] = {}

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for spec in self.specs:
            proc = subprocess.Popen(node_command(spec), env={**self.env, **spec.env}, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            self.procs[spec.name] = proc
            t = threading.Thread(target=self._pump, args=(spec.name, proc), daemon=True)
            t.start()
            self._threads[spec.name] = t
            print(f"[finetune] started {spec.name} (pid {proc.pid})", flush=True)

    def _pump(self, name: str, proc: subprocess.Popen) -> None:
        with open(self.log_dir / f"{name}.log", "wb") as log:
            for line in iter(proc.stdout.readline, b""):  # type: ignore[union-attr]
                log.write(line)
                log.flush()
                if line.strip():
                    self.last_line[name] = line.decode(errors="replace").strip()
                sys.stdout.write(f"[{name}] {line.decode(errors='replace')}")
                sys.stdout.flush()

    def dead(self) -> list[tuple[str, int]]:
        return [(n, p.returncode) for n, p in self.procs.items() if p.poll() is not None]

    def death_message(self, name: str, code: int) -> str:
        """The one ERROR line for a node that exited on its own: its name, exit code, last words and log."""
        self._threads[name].join(timeout=2.0)  # the rest of its output, up to its last line
        cause = self.last_line.get(name, "no output")
        return (f"[finetune] ERROR: node {name} exited with code {code} ({cause}); stopping the stack; "
                f"its log: {self.log_dir / (name + '.log')}")

    def stop(self, timeout: float) -> dict[str, int]:
        """SIGINT every node, wait, then escalate; returns the exit codes."""
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        start = time.monotonic()
        deadline = start + timeout
        for name, p in self.procs.items():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
                print(f"[finetune] {name} exited with {p.returncode} ({time.monotonic() - start:.1f} s after SIGINT)",
                      flush=True)
            except subprocess.TimeoutExpired:
                print(f"[finetune] {name} ignored SIGINT for {timeout:.0f} s; killing it", flush=True)
                p.kill()
                p.wait()
        for t in self._threads.values():
            t.join(timeout=2.0)
        return {n: p.returncode for n, p in self.procs.items()}


def main(argv: Sequence[str] | None = None) -> int:
    values, ns = parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        config_dir = ns.config_dir or default_config_dir()
    except FileNotFoundError as exc:
        print(f"mechanic-rl finetune: {exc}; or pass --config-dir DIR", file=sys.stderr)
        return 2
    try:
        specs = description.nodes(values, config_dir)
    except ValueError as exc:  # an argument that only the whole stack can check (world, interventions, dds_profile)
        print(f"mechanic-rl finetune: {exc}", file=sys.stderr)
        return 2
    policy_ckpt = next((Path(str(s.overrides["checkpoint"])) for s in specs if s.name == "policy_node"), None)
    if policy_ckpt is not None and not (policy_ckpt / "model.safetensors").is_file():
        print(f"mechanic-rl finetune: no policy checkpoint at {policy_ckpt} (model.safetensors + config.json); pass "
              "checkpoint:=DIR from 'mechanic-rl pretrain', or run 'make run', which pretrains one first",
              file=sys.stderr)
        return 2
    names = {s.name for s in specs}
    for node, params in ns.param_overrides.items():
        if node not in names:
            print(f"mechanic-rl finetune: --set names node {node!r}; the stack has {sorted(names)}", file=sys.stderr)
            return 2
        next(s for s in specs if s.name == node).overrides.update(params)
    run_dir = Path(values["run_dir"])
    if values["sim"] == "true":
        os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    stack = Stack(specs, run_dir / "logs", env)
    progress = Progress()

    stopping = threading.Event()

    def on_signal(signum, _frame):
        if stopping.is_set():
            return
        print(f"\n[finetune] {signal.Signals(signum).name}: stopping the stack", flush=True)
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"[finetune] {description.run_dir_message(ns.given_run_dir, str(run_dir))}", flush=True)
    print(f"[finetune] {len(specs)} nodes: {', '.join(s.name for s in specs)}; logs in {run_dir / 'logs'}", flush=True)
    stack.start()
    monitor = MonitorNode(progress)
    started = time.monotonic()
    failed: list[tuple[str, int]] = []
    while not stopping.is_set():
        failed = stack.dead()
        if failed:
            for name, code in failed:
                print(stack.death_message(name, code), flush=True)
            break
        if ns.duration and time.monotonic() - started >= ns.duration:
            print(f"[finetune] --duration {ns.duration:g} s reached; stopping the stack", flush=True)
            break
        if ns.robot_minutes and progress.robot_minutes >= ns.robot_minutes:
            print(f"[finetune] --robot-minutes {ns.robot_minutes:g} reached ({progress.control_steps} control "
                  f"steps); stopping the stack", flush=True)
            break
        stopping.wait(0.2)
    codes = stack.stop(ns.stop_timeout)
    monitor.close()
    summary = ", ".join(f"{n}={c}" for n, c in codes.items())
    print(f"[finetune] stopped: {summary}", flush=True)
    for path in progress.write(run_dir):
        print(f"[finetune] wrote {path}", flush=True)
    n = len(progress.episodes)
    print(f"[finetune] {n} episodes in {progress.robot_minutes:.1f} robot minutes ({progress.control_steps} control "
          f"steps), success rate {progress.success_rate():.2f} over the last {min(n, progress.window)}"
          + (f", {progress.success_rate(50):.2f} over the last 50" if n >= 50 else "")
          + f", policy version {progress.policy_version}", flush=True)
    if any(e.intervened_steps for e in progress.episodes):
        print(f"[finetune] with interventions: autonomous success {progress.success_rate(50, autonomous=True):.2f} "
              f"and intervention rate {progress.intervention_rate(50):.3f} of the steps over the last "
              f"{min(n, 50)} episodes", flush=True)
    if failed:
        return failed[0][1] or 1
    bad = [c for c in codes.values() if c != 0]
    return bad[0] if bad else 0


if __name__ == "__main__":
    sys.exit(main())
