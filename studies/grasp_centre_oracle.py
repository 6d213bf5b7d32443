"""Would centring the grasp fix `lift_demos`' failures? An oracle edit in the plane, with the cube's true pose.

Most of `lift_demos`' failures are grasps closed 1.5-3 cm off the cube centre (docs/history.md, "Round 8").
Before a learner is built to move the grasp point, this oracle asks whether moving it would be enough: at
each decision whose chunk ends near the cube (the chunk's last joint targets put the TCP within ``--radius``
of the cube in the plane and less than ``--height`` above its centre), every joint target of the chunk is
moved by inverse kinematics so that the TCP shifts by the chunk-end offset to the cube centre in x and y
(orientation and height kept). The cube's pose is the simulator's, which no policy sees: this bounds what an
edit of the grasp point in the plane can give, it is not a method.

    PYTHONPATH=$PWD MUJOCO_GL=egl .venv/bin/python studies/grasp_centre_oracle.py \\
        --checkpoint checkpoints/lift_demos --episodes 200 --out runs/grasp_oracle.json

``--turn`` asks the same of the hand's yaw instead (docs/history.md, "How the grasps close"): each joint
target of such a chunk is turned about the vertical, by inverse kinematics, so that the hand's yaw at the
chunk's end matches the cube's (modulo 90 deg), the TCP's position kept:

    PYTHONPATH=$PWD MUJOCO_GL=egl .venv/bin/python studies/grasp_centre_oracle.py --turn --open-only \\
        --radius 0.06 --height 0.15 --episodes 400 --out runs/yaw_oracle.json
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
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--seed", type=int, default=100_000)
    ap.add_argument("--radius", type=float, default=0.04, help="[m] correct chunks ending this close in the plane")
    ap.add_argument("--height", type=float, default=0.06, help="[m] ... and this close above the cube centre")
    ap.add_argument("--open-only", action="store_true",
                    help="correct only while the gripper is open (wider than 7 cm): never a grasp in progress")
    ap.add_argument("--turn", action="store_true",
                    help="turn the hand to the cube's yaw instead of centring the grasp point")
    ap.add_argument("--off", action="store_true", help="no correction (the policy alone, same script)")
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
    corrected = {"chunks": 0, "shift": []}

    def plan(req):
        chunk = planner(req)
        if args.off:
            return chunk
        acts = np.array(chunk.actions, dtype=np.float64)
        end, end_rot = ik.forward(acts[-1, :7])
        pose = env.sim.cube_pose()
        cube = pose[:3]
        off = cube[:2] - end[:2]
        is_open = env.sim.gripper_width() > 0.07 or not args.open_only
        if is_open and np.linalg.norm(off) < args.radius and end[2] - cube[2] < args.height:
            turn = wrap(quat_yaw(pose[3:7]) - math.atan2(end_rot[1, 0], end_rot[0, 0]), math.pi / 2)
            for t in range(len(acts)):
                p, rot = ik.forward(acts[t, :7])
                if args.turn:
                    p, rot = p, _rotz(turn) @ rot
                else:
                    p = p + np.array([off[0], off[1], 0.0])
                acts[t, :7] = ik.solve(p, rot, acts[t, :7], q_posture=acts[t, :7])
            corrected["chunks"] += 1
            corrected["shift"].append(abs(math.degrees(turn)) if args.turn else float(np.linalg.norm(off) * 100))
            chunk.actions = acts
        return chunk

    def at_close(trace: list) -> tuple:
        """(step, TCP-to-cube distance in the plane [cm]) when the gripper first closes below 7 cm, and that
        distance 8 steps later."""
        t = np.array(trace)
        k = int(np.argmax(t[:, 0] < 0.07)) if (t[:, 0] < 0.07).any() else -1
        return (k, round(t[k, 1] * 100, 1), round(t[min(k + 8, len(t) - 1), 1] * 100, 1)) if k >= 0 else (-1,)

    outcomes, failures = [], []
    for i in range(args.episodes):
        trace: list = []

        def observe(obs, info, success):
            tcp, cube = env.sim.tcp_pose()[0], env.sim.cube_pose()[:3]
            trace.append((env.sim.gripper_width(), float(np.linalg.norm((tcp - cube)[:2]))))

        rec = run_episode(env, loop, plan, seed=args.seed + i, on_observation=observe)
        outcomes.append(bool(rec.success))
        if not rec.success:
            failures.append({"seed": args.seed + i, "close_step_xy_cm_xy8_cm": at_close(trace)})
        if (i + 1) % 20 == 0:
            print(f"{i + 1} episodes: {sum(outcomes)} successes; {corrected['chunks']} chunks corrected", flush=True)
    shifts = np.array(corrected["shift"]) if corrected["shift"] else np.zeros(1)
    summary = {"checkpoint": args.checkpoint, "oracle": not args.off, "turn": args.turn, "open_only": args.open_only,
               "episodes": args.episodes,
               "successes": int(sum(outcomes)), "eval_seed": args.seed, "outcomes": [int(o) for o in outcomes],
               "chunks_corrected": corrected["chunks"], "failures": failures,
               ("turn_deg" if args.turn else "shift_cm") + "_p50_p90_max":
                   [float(np.percentile(shifts, q)) for q in (50, 90, 100)]}
    print(json.dumps({k: v for k, v in summary.items() if k != "outcomes"}))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
