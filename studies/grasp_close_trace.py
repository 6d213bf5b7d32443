"""How do the policy's failing grasps close, against its successful ones and the clean expert's?

Under the lift task's 8 s limit the first grasp decides the episode (docs/history.md, "Would a re-grasp after
a miss fit the 8 s episode?"). This traces, at the step where the gripper command first drops below
``--close-below`` (a closing command), where the hand is relative to the cube (in the hand's frame: along
the fingers' axis, across it, height of the TCP above the cube centre), how fast the TCP moves, how far the
hand's yaw is from the cube's (modulo 90 deg; both yaws are kept), and the step itself; and whether the episode succeeds. The
same for the clean scripted expert (``--expert``) on the same starts.

    PYTHONPATH=$PWD MUJOCO_GL=egl .venv/bin/python studies/grasp_close_trace.py \\
        --checkpoint checkpoints/lift_demos --episodes 200 --out runs/close_trace_demos.json
    PYTHONPATH=$PWD MUJOCO_GL=egl .venv/bin/python studies/grasp_close_trace.py --expert --episodes 200 \\
        --out runs/close_trace_expert.json
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _yaw(rot: np.ndarray) -> float:
    return math.atan2(rot[1, 0], rot[0, 0])


def _quat_yaw(q: np.ndarray) -> float:
    w, x, y, z = q
    return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="checkpoints/lift_demos")
    ap.add_argument("--expert", action="store_true", help="the clean scripted expert instead of a policy")
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--seed", type=int, default=100_000)
    ap.add_argument("--close-below", type=float, default=0.06, help="[m] a gripper command below this closes")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import torch

    from mechanic_rl_ros.control.chunk_loop import ChunkLoop, run_episode
    from mechanic_rl_ros.sim import make_env
    from mechanic_rl_ros.sim.expert import ExpertPlanner

    torch.set_num_threads(1)
    if args.expert:
        env = make_env(task="lift", render=False, seed=args.seed)
        planner, loop = ExpertPlanner(env.expert(noise=0.0, seed=args.seed)), ChunkLoop(obs_horizon=1)
    else:
        from mechanic_rl_ros.policy import DiffusionPolicy, PolicyPlanner

        policy = DiffusionPolicy.from_checkpoint(args.checkpoint).eval()
        env = make_env(task="lift", render=True, cameras=tuple(policy.cfg.cameras),
                       image_size=policy.cfg.image_size, seed=args.seed)
        planner, loop = PolicyPlanner(policy, seed=args.seed), ChunkLoop.for_policy(policy, 0)

    rows = []
    for i in range(args.episodes):
        state = {"step": 0, "prev_tcp": None, "close": None}

        def on_action(obs, action):
            tcp, rot = env.sim.tcp_pose()
            speed = 0.0 if state["prev_tcp"] is None else float(np.linalg.norm(tcp - state["prev_tcp"]) / env.control_dt)
            if state["close"] is None and float(action[7]) < args.close_below:
                cube = env.sim.cube_pose()
                d = cube[:3] - tcp
                along = float(abs(d[:2] @ rot[:2, 1]) / np.linalg.norm(rot[:2, 1]))
                across = float(abs(d[:2] @ rot[:2, 0]) / np.linalg.norm(rot[:2, 0]))
                dyaw = (_yaw(rot) - _quat_yaw(cube[3:7]) + math.pi / 4) % (math.pi / 2) - math.pi / 4
                state["close"] = {"step": state["step"], "cube_yaw_deg": round(math.degrees(_quat_yaw(cube[3:7])), 1),
                                  "hand_yaw_deg": round(math.degrees(_yaw(rot)), 1), "along_cm": round(100 * along, 2),
                                  "across_cm": round(100 * across, 2), "height_cm": round(-100 * d[2], 2),
                                  "speed_cm_s": round(100 * speed, 2), "yaw_deg": round(math.degrees(abs(dyaw)), 1)}
            state["prev_tcp"] = tcp
            state["step"] += 1

        rec = run_episode(env, loop, planner, seed=args.seed + i, on_action=on_action)
        rows.append({"seed": args.seed + i, "success": bool(rec.success), "steps": int(rec.steps),
                     "close": state["close"]})
        if (i + 1) % 20 == 0:
            print(f"{i + 1} episodes: {sum(r['success'] for r in rows)} successes", flush=True)
    env.close()

    def stats(group):
        out = {"n": len(group)}
        for k in ("step", "along_cm", "across_cm", "height_cm", "speed_cm_s", "yaw_deg"):
            v = np.array([r["close"][k] for r in group if r["close"] is not None], dtype=float)
            if len(v):
                out[k] = [round(float(np.percentile(v, q)), 2) for q in (10, 50, 90)]
        return out

    closes = np.array([(r["close"]["cube_yaw_deg"], r["close"]["hand_yaw_deg"]) for r in rows if r["close"]])
    slope = float(np.polyfit(closes[:, 0], closes[:, 1], 1)[0]) if len(closes) > 2 else float("nan")
    summary = {"who": "expert" if args.expert else args.checkpoint, "episodes": len(rows),
               "hand_yaw_per_cube_yaw": round(slope, 3),
               "successes": sum(r["success"] for r in rows),
               "successes_p10_p50_p90": stats([r for r in rows if r["success"]]),
               "failures": [r for r in rows if not r["success"]], "rows": rows}
    print(json.dumps({k: v for k, v in summary.items() if k not in ("rows", "failures")}))
    for r in summary["failures"]:
        print(json.dumps(r))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
