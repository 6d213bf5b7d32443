"""Demonstrations of a re-grasp: does showing the policy a recovery from a missed grasp lift it above 95 %?

`lift_demos`' failures are grasps closed 1.5-3 cm off the cube's centre; the policy then lifts the empty
gripper and never tries again, because none of its demonstrations does (docs/history.md, "Round 8"). This
study records the clean scripted expert made to miss: on its first attempt it perceives the cube
``--offset-min``..``--offset-max`` away from its true centre in a random direction in the plane, closes
off-centre, and from the moment it finds its fingers closed on nothing (its ``retry`` phase) it sees the
true centre and grasps again from ``--retry-height`` above the cube. Each such episode is written as an ordinary bag (``mechanic-rl collect``'s
format) and, in ``<out>/recoveries/``, as a training episode cut to start ``--lead`` steps before the
retry: the policy is taught the way out of a miss, not the off-centre approach that led to it.

    PYTHONPATH=$PWD MUJOCO_GL=egl .venv/bin/python studies/recovery_demos.py --episodes 60 --out runs/recover60
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=60)
    ap.add_argument("--seed", type=int, default=7000, help="reset seed of episode 0 (episode i: seed + i)")
    ap.add_argument("--offset-min", type=float, default=0.02, help="[m]")
    ap.add_argument("--offset-max", type=float, default=0.035, help="[m]")
    ap.add_argument("--lead", type=int, default=2, help="steps kept before the retry begins")
    ap.add_argument("--retry-height", type=float, default=0.03,
                    help="[m] above the cube's top that the retry rises to and approaches at (the first attempt: "
                         "the expert's approach_height, 0.10): a re-grasp from 10 cm does not fit the 8 s episode")
    ap.add_argument("--image-size", type=int, default=96)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    from mechanic_rl_ros.data.demos import read_bag, save_cache
    from mechanic_rl_ros.jobs.collect import record_episode
    from mechanic_rl_ros.sim.env import make_env
    from mechanic_rl_ros.sim.expert import ExpertPlanner

    out = Path(args.out)
    (out / "recoveries").mkdir(parents=True, exist_ok=True)
    env = make_env(task="lift", render=True, cameras=("scene",), image_size=args.image_size, seed=args.seed)
    expert = env.expert(noise=0.0, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    state = {"calls": 0, "retry_at": None}
    reset, act = expert.reset, expert.act

    approach_height = expert.config.approach_height

    def reset_missing(obs=None):
        expert.config.approach_height = approach_height
        reset(obs)
        angle, r = rng.uniform(0, 2 * math.pi), rng.uniform(args.offset_min, args.offset_max)
        expert._cube_offset = np.array([r * math.cos(angle), r * math.sin(angle), 0.0])
        state.update(calls=0, retry_at=None)

    def act_then_see(obs):
        a = act(obs)
        if expert.phase == "retry" and state["retry_at"] is None:
            state["retry_at"] = state["calls"]
            expert._cube_offset = np.zeros(3)
            expert.config.approach_height = args.retry_height
        state["calls"] += 1
        return a

    expert.reset, expert.act = reset_missing, act_then_see
    planner = ExpertPlanner(expert)
    meta = {"task": "lift", "noise": 0.0, "cameras": ["scene"], "image_size": [args.image_size] * 2,
            "control_dt": env.control_dt, "expert": "LiftExpert, first grasp missed on purpose"}
    rows, t0 = [], time.time_ns()
    for i in range(args.episodes):
        d = out / f"episode_{i:05d}"
        outcome = record_episode(env, planner, d, args.seed + i, t0 + i * 3_600_000_000_000, meta)
        ep = read_bag(d / f"{d.name}_0.mcap")
        retry = state["retry_at"]
        kept = 0
        if retry is not None and outcome["success"]:
            k = max(0, retry - args.lead)
            cut = dict(ep, images={c: v[k:] for c, v in ep["images"].items()},
                       **{f: ep[f][k:] for f in ("qpos", "qvel", "gripper", "action", "task_state")})
            save_cache(cut, out / "recoveries" / f"episode_{i:05d}.npz")
            kept = len(cut["action"])
        rows.append({"seed": args.seed + i, "success": bool(outcome["success"]), "steps": int(outcome["steps"]),
                     "retry_at": retry, "kept_steps": kept})
        print(json.dumps(rows[-1]), flush=True)
    env.close()
    summary = {"episodes": len(rows), "missed_first": sum(r["retry_at"] is not None for r in rows),
               "recovered": sum(r["kept_steps"] > 0 for r in rows),
               "successes": sum(r["success"] for r in rows), "rows": rows, "args": vars(args)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print({k: v for k, v in summary.items() if k not in ("rows", "args")})
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
