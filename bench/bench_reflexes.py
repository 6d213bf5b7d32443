"""Reflexes of the shipped policy on the reflex-checking simulator; prints the count (docs/sim.md quotes it).

    MUJOCO_GL=egl .venv/bin/python bench/bench_reflexes.py [--episodes 200] [--checkpoint DIR] [--deterministic]

Runs the policy headless through the same loop as ``mechanic-rl eval``
(control/chunk_loop.py) on ``sim/env.py``: every 10 Hz action goes through the
stack's safety filter (control/safety.py) into the simulated
JointTrajectoryController, and every 1 ms command it writes through the FR3's
own check (control/franka_checks.py: libfranka's position, position-dependent
velocity, acceleration and jerk limits). Besides the episodes' own resets it
exercises what the node stack does around them: every 4th episode holds for
``--hold`` control periods mid-episode (a stale input or a late chunk), and
every 8th re-seeds the filter from the measured position after the hold (a
restarted policy node, which first lets the controller glide from its own
command). Prints episodes, successes, reflexes (with the first violations)
and the peaks of the 1 ms command stream against the robot's limits.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mechanic_rl_ros.control.chunk_loop import ChunkLoop  # noqa: E402
from mechanic_rl_ros.policy import DiffusionPolicy, PolicyPlanner  # noqa: E402
from mechanic_rl_ros.sim import make_env  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--checkpoint", default="checkpoints/lift_pretrained")
    ap.add_argument("--deterministic", action="store_true", help="DDIM without sampling noise (default: the RL sampler)")
    ap.add_argument("--seed", type=int, default=7000, help="episode i resets with seed + i")
    ap.add_argument("--hold", type=int, default=5, help="control periods of each injected hold")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    policy = DiffusionPolicy.from_checkpoint(args.checkpoint).eval()
    cfg = policy.cfg
    env = make_env(task="lift", render=bool(cfg.cameras), cameras=tuple(cfg.cameras) or ("scene",),
                   image_size=cfg.image_size, seed=args.seed)
    planner = PolicyPlanner(policy, stochastic=not args.deterministic, seed=args.seed)
    loop = ChunkLoop.for_policy(policy, 2)
    sim = env.sim
    successes = steps = holds = restarts = 0
    violations: list[str] = []
    start = time.perf_counter()
    for ep in range(args.episodes):
        obs, _ = env.reset(seed=args.seed + ep)
        loop.reset(ep)
        done, success, k = False, False, 0
        while not done:
            if ep % 4 == 3 and k == 30:  # a hold mid-motion, as a stale input makes policy_node do
                for _ in range(args.hold):
                    sim.hold()
                    sim.step_physics()
                holds += 1
                if ep % 8 == 7:  # a restarted policy node: a new filter from the measured position
                    sim.safety.reset(sim.qpos(), sim.time)
                    restarts += 1
                loop.reset(ep)  # the chunk in flight is stale after the pause
                obs = env.observation()
            action = np.asarray(loop.act(obs, planner)[0], dtype=np.float64)
            obs, _, terminated, truncated, info = env.step(action)
            success = success or bool(info.get("success", False))
            done = bool(terminated or truncated)
            k += 1
            if sim.robot_mode == "reflex":
                violations.append(f"episode {ep} step {k}: {sim.last_violation}")
                sim.recover()
        steps += k
        successes += success
        if (ep + 1) % 20 == 0:
            print(f"  {ep + 1} episodes: {successes} successes, {sim.reflex_count} reflexes "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    peaks = sim.checker.peaks
    print(f"episodes {args.episodes} ({'deterministic' if args.deterministic else 'stochastic'} policy "
          f"{args.checkpoint}), control steps {steps}, holds {holds}, restarts {restarts}, "
          f"1 ms commands checked {sim.checker.commands_checked}")
    print(f"successes {successes}/{args.episodes} = {successes / args.episodes:.1%}")
    print(f"reflexes {sim.reflex_count}" + "".join(f"\n  {v}" for v in violations[:10]))
    print(f"peaks of the 1 ms commands: velocity {peaks['velocity_fraction']:.1%} of the position-dependent limit, "
          f"acceleration {peaks['acceleration']:.2f} rad/s^2 (limit 10), jerk {peaks['jerk']:.0f} rad/s^3 (limit 5000)")
    print(f"wall time {time.perf_counter() - start:.0f} s")
    return 0 if sim.reflex_count == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
