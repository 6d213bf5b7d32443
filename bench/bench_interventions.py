"""Benchmark: the stack with the simulated operator taking over and handing back, in the reflex-checking simulator.

Runs the whole node stack (``mechanic-rl finetune``: sim_node in lock-step, whose FR3 checks every 1 ms command
against libfranka's limits and reflexes where the real robot would; camera, policy, reward, learner and
operator_node) with ``interventions:=sim`` for a number of robot minutes, then reads what the run left in its
directory and prints:

* episodes, takeovers and hand-backs (policy_node's log), reflexes and rejected commands (sim_node's final
  statistics): every switch into and out of an intervention passes the safety filter, so the reflex count
  is the figure to watch;
* per block of robot minutes: episodes, success, autonomous success (no intervention) and the share of the
  control steps the operator commanded;
* over the last 50 episodes and the last 10 robot minutes: the same figures (issue acceptance).

Usage: python bench/bench_interventions.py [--robot-minutes 20] [--run-dir DIR] [--set NODE.PARAM=VALUE ...]
       [name:=value ...]
(the launch arguments go to the stack; default: checkpoint:=checkpoints/lift_pretrained algorithm:=distill).
"""
from __future__ import annotations

import argparse
import ast
import csv
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEPS_PER_MINUTE = 600


def episodes(run_dir: Path) -> list[dict]:
    with open(run_dir / "episodes.csv") as fh:
        return [{**r, "steps": int(r["steps"]), "intervened_steps": int(r["intervened_steps"]),
                 "robot_min": float(r["robot_min"]), "success": r["outcome"] == "success"} for r in csv.DictReader(fh)]


def figures(eps: list[dict]) -> str:
    n = len(eps)
    steps = sum(e["steps"] for e in eps)
    wins = sum(e["success"] for e in eps)
    auto = sum(e["success"] and e["intervened_steps"] == 0 for e in eps)
    touched = sum(e["intervened_steps"] > 0 for e in eps)
    rate = sum(e["intervened_steps"] for e in eps) / steps if steps else 0.0
    return (f"{n:4d} episodes | success {wins}/{n} | autonomous {auto}/{n} = {auto / max(n, 1):.3f} | "
            f"episodes with an intervention {touched} | intervention rate {rate:.3f} of the steps")


def sim_stats(log: Path) -> dict:
    """sim_node's final statistics (its "stopped: {...}" line)."""
    for line in reversed(log.read_text(errors="replace").splitlines()):
        m = re.search(r"stopped: (\{.*?\})", line)
        if m:
            return ast.literal_eval(m.group(1))
    return {}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--robot-minutes", type=float, default=20.0)
    ap.add_argument("--run-dir", type=Path, default=None, help="where the run goes (default: a temporary directory)")
    ap.add_argument("--block", type=float, default=5.0, help="[robot minutes] block of the printed table")
    ap.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE",
                    help="a node parameter, passed to the runner (e.g. learner_node.distill_config=FILE)")
    ap.add_argument("launch_args", nargs="*", metavar="name:=value")
    args = ap.parse_args()
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="bench_interventions_"))
    launch = {"checkpoint": str(REPO / "checkpoints" / "lift_pretrained"), "algorithm": "distill",
              **dict(a.split(":=", 1) for a in args.launch_args), "interventions": "sim", "run_dir": str(run_dir)}
    cmd = [sys.executable, "-m", "mechanic_rl_ros.stack.runner", *(f"{k}:={v}" for k, v in launch.items()),
           "--robot-minutes", str(args.robot_minutes), *(f"--set={item}" for item in args.set)]
    print(f"[bench] {' '.join(cmd)}", flush=True)
    code = subprocess.call(cmd, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
    eps = episodes(run_dir)
    logs = run_dir / "logs"
    policy_log = (logs / "policy_node.log").read_text(errors="replace")
    sim = sim_stats(logs / "sim_node.log")
    print(f"\n[bench] run {run_dir} (exit {code}): {len(eps)} episodes in {sum(e['steps'] for e in eps) / 600:.1f} "
          f"robot minutes")
    operator_log = logs / "operator_node.log"
    finished = operator_log.read_text(errors="replace").count("-> finish") if operator_log.is_file() else 0
    print(f"[bench] takeovers {policy_log.count('the operator takes over')}, hand-backs "
          f"{policy_log.count('the operator hands back')} (the operator lifted to the goal itself {finished} times), "
          f"lost streams {policy_log.count('no teleop message')}")
    print(f"[bench] reflexes {sim.get('reflexes', '?')}, commands rejected {sim.get('commands_rejected', '?')}, "
          f"1 ms commands checked by the simulated FR3: {sim.get('ticks', '?')} control periods")
    print(f"[bench] per block of {args.block:g} robot minutes:")
    end = max((e["robot_min"] for e in eps), default=0.0)
    t = 0.0
    while t < end:
        block = [e for e in eps if t < e["robot_min"] <= t + args.block]
        print(f"  {t:5.1f}-{t + args.block:5.1f} min: {figures(block)}")
        t += args.block
    print(f"[bench] last 50 episodes:        {figures(eps[-50:])}")
    print(f"[bench] last 10 robot minutes:   {figures([e for e in eps if e['robot_min'] > end - 10])}")
    return code


if __name__ == "__main__":
    sys.exit(main())
