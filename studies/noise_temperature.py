"""Study: where in the initial noise do the failures of a behaviour-cloned policy live?

Evaluates a checkpoint alone (one deterministic DDIM sample per decision, the ``train-select --eval-only``
protocol, 8 simulators) with x_K ~ N(0, t^2 I) for a few temperatures t, on held-out reset seeds, and
prints the success per temperature. If the failures of ``lift_demos`` (about 4 %, on different seeds for
different noise streams) sit in the tails of x_K, a lower temperature removes them.

    PYTHONPATH=$PWD MUJOCO_GL=egl .venv/bin/python studies/noise_temperature.py --checkpoint checkpoints/lift_demos \
        --temperatures 1.0 0.5 --episodes 400 --out runs/noise_temperature
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="checkpoints/lift_demos")
    ap.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.5])
    ap.add_argument("--episodes", type=int, default=400)
    ap.add_argument("--seed", type=int, default=100000)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    from mechanic_rl_ros.jobs.train_select import FrozenPolicy, SelectPlanner, first_proposal
    from mechanic_rl_ros.control.chunk_loop import ChunkLoop
    from mechanic_rl_ros.jobs.rollouts import count_successes, sim_runner
    from mechanic_rl_ros.policy import DiffusionPolicy

    torch.set_num_threads(1)
    policy = DiffusionPolicy.from_checkpoint(args.checkpoint).eval().requires_grad_(False)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res = {}
    for t in args.temperatures:
        gen = torch.Generator().manual_seed(args.seed)
        planner = SelectPlanner(FrozenPolicy(policy), 1, gen, first_proposal)
        draw = torch.randn

        def scaled(*a, t=t, **k):
            return draw(*a, **k) * t
        outcomes: list[int] = []
        torch.randn = scaled  # the planner's x_K draw, scaled
        try:
            with sim_runner(policy, "lift", 8, args.seed) as runner:
                loops = [ChunkLoop.for_policy(policy) for _ in range(8)]
                wins = count_successes(runner, loops, planner, args.episodes, args.seed, outcomes)
        finally:
            torch.randn = draw
        res[str(t)] = {"successes": wins, "episodes": args.episodes, "outcomes": outcomes}
        print(f"temperature {t}: {wins}/{args.episodes}", flush=True)
    (out / "study.json").write_text(json.dumps(res))


if __name__ == "__main__":
    main()
