"""How much can steering the initial noise x_K of the frozen policy gain at most? Per reset seed,
the success of the pretrained policy (deterministic DDIM) over K independent draws of x_K ~ N(0, I).

For each reset seed s the K repeats give an estimate of p(s), the policy's success probability from
that start when the noise is not chosen. Their mean is the pretrained policy's success rate; the share
of seeds with at least one success is what an oracle that picks one whole episode's noise per seed
would reach (a lower bound on what a perfect noise-space actor could reach, since the actor chooses
per decision and sees the state); seeds with no success in K draws are where noise steering has
little to work with and a change of the actions themselves (a residual, or fine-tuning the
diffusion policy) would be needed.

    PYTHONPATH=$PWD MUJOCO_GL=egl .venv/bin/python studies/noise_oracle.py --seeds 48 --repeats 6 \\
        --out runs/noise_oracle.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--checkpoint", default="checkpoints/lift_pretrained")
    ap.add_argument("--task", default="lift")
    ap.add_argument("--seeds", type=int, default=48, help="reset seeds eval_seed .. eval_seed + seeds - 1")
    ap.add_argument("--repeats", type=int, default=6, help="independent x_K draws per seed (K)")
    ap.add_argument("--eval-seed", type=int, default=100000)
    ap.add_argument("--num-envs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="JSON with the per-seed outcomes")
    args = ap.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    torch.set_num_threads(args.threads)
    from mechanic_rl_ros.jobs.evaluate import wilson_interval
    from mechanic_rl_ros.jobs.train_offpolicy import NoisePolicy, base_chooser, evaluate
    from mechanic_rl_ros.policy import DiffusionPolicy

    policy = DiffusionPolicy.from_checkpoint(args.checkpoint).eval().requires_grad_(False)
    npol = NoisePolicy(policy)
    nd = policy.cfg.pred_horizon * policy.cfg.action_dim
    runs = []
    t0 = time.perf_counter()
    for r in range(args.repeats):
        out: list[int] = []
        wins = evaluate(npol, base_chooser(nd, 7919 * (r + 1)), args.task, args.seeds, args.eval_seed,
                        args.num_envs, outcomes=out)
        runs.append(out)
        print(f"repeat {r + 1}/{args.repeats}: {wins}/{args.seeds} | {time.perf_counter() - t0:.0f} s", flush=True)
    per_seed = [sum(run[j] for run in runs) for j in range(args.seeds)]
    total = sum(per_seed)
    n = args.seeds * args.repeats
    lo, hi = wilson_interval(total, n)
    oracle = sum(1 for c in per_seed if c > 0)
    hist = Counter(per_seed)
    print(f"pretrained policy over {args.seeds} seeds x {args.repeats} draws: {total}/{n} = {total / n:.1%} "
          f"(95 % Wilson {lo:.1%}-{hi:.1%})")
    print("successes per seed (out of K): " + ", ".join(f"{k}: {hist.get(k, 0)} seeds"
                                                       for k in range(args.repeats + 1)))
    print(f"seeds with >= 1 success (best-of-{args.repeats} noise oracle): {oracle}/{args.seeds} = "
          f"{oracle / args.seeds:.1%}; with 0: {hist.get(0, 0)}; always: {hist.get(args.repeats, 0)}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"seeds": list(range(args.eval_seed, args.eval_seed + args.seeds)),
                                              "repeats": runs, "per_seed": per_seed}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
