"""Would turning the hand to the cube's yaw fix `lift_demos`' failures? An oracle edit of the hand's yaw.

`studies/grasp_close_trace.py` finds that `lift_demos` barely turns its hand to the cube (the hand's yaw at
the closing command follows the cube's with a slope of about 0.16; the expert's: 1) and that its failures
are the grasps with the largest yaw error. This oracle asks whether that is the cause: at every decision
whose chunk ends within ``--radius`` of the cube in the plane and less than ``--height`` above its centre,
with the gripper open, every joint target of the chunk is turned about the vertical, by inverse kinematics,
so that the hand's yaw at the chunk's end matches the cube's (modulo 90 deg); the TCP's position is kept.
The cube's pose is the simulator's, which no policy sees: this bounds what a learned yaw correction could
give, it is not a method. ``--off`` runs the same script without the edit.

    PYTHONPATH=$PWD MUJOCO_GL=egl .venv/bin/python studies/grasp_yaw_oracle.py \\
        --checkpoint checkpoints/lift_demos --episodes 400 --out runs/yaw_oracle.json
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _rotz(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="checkpoints/lift_demos")
    ap.add_argument("--episodes", type=int, default=400)
    ap.add_argument("--seed", type=int, default=100_000)
    ap.add_argument("--radius", type=float, default=0.06, help="[m] edit chunks ending this close in the plane")
    ap.add_argument("--height", type=float, default=0.15, help="[m] ... and this close above the cube centre")
    ap.add_argument("--off", action="store_true", help="no edit (the policy alone, same script)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    from mechanic_rl_ros.control.chunk_loop import ChunkLoop, run_episode
    from mechanic_rl_ros.policy import DiffusionPolicy, PolicyPlanner
    from mechanic_rl_ros.sim import make_env
    from mechanic_rl_ros.sim.expert import quat_yaw, wrap
    from mechanic_rl_ros.sim.ik import DLSIK

    torch.set_num_threads(1)
    policy = DiffusionPolicy.from_checkpoint(args.checkpoint).eval()
    env = make_env(task="lift", render=True, cameras=tuple(policy.cfg.cameras), image_size=policy.cfg.image_size,
                   seed=args.seed)
    planner = PolicyPlanner(policy, seed=args.seed)
    loop = ChunkLoop.for_policy(policy, 0)
    ik = DLSIK(env.sim.model)
    edited = {"chunks": 0, "turn_deg": []}

    def plan(req):
        chunk = planner(req)
        if args.off:
            return chunk
        acts = np.array(chunk.actions, dtype=np.float64)
        end, end_rot = ik.forward(acts[-1, :7])
        cube = env.sim.cube_pose()
        off = cube[:2] - end[:2]
        if env.sim.gripper_width() > 0.07 and np.linalg.norm(off) < args.radius and end[2] - cube[2] < args.height:
            turn = wrap(quat_yaw(cube[3:7]) - math.atan2(end_rot[1, 0], end_rot[0, 0]), math.pi / 2)
            for t in range(len(acts)):
                p, rot = ik.forward(acts[t, :7])
                acts[t, :7] = ik.solve(p, _rotz(turn) @ rot, acts[t, :7], q_posture=acts[t, :7])
            edited["chunks"] += 1
            edited["turn_deg"].append(abs(math.degrees(turn)))
            chunk.actions = acts
        return chunk

    outcomes = []
    for i in range(args.episodes):
        rec = run_episode(env, loop, plan, seed=args.seed + i)
        outcomes.append(bool(rec.success))
        if (i + 1) % 20 == 0:
            print(f"{i + 1} episodes: {sum(outcomes)} successes; {edited['chunks']} chunks edited", flush=True)
    env.close()
    turns = np.array(edited["turn_deg"]) if edited["turn_deg"] else np.zeros(1)
    summary = {"checkpoint": args.checkpoint, "oracle": not args.off, "episodes": args.episodes,
               "successes": int(sum(outcomes)), "eval_seed": args.seed, "outcomes": [int(o) for o in outcomes],
               "chunks_edited": edited["chunks"],
               "turn_deg_p50_p90_max": [round(float(np.percentile(turns, q)), 1) for q in (50, 90, 100)]}
    print(json.dumps({k: v for k, v in summary.items() if k != "outcomes"}))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
