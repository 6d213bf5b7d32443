"""Whole selection-learner update with Mechanic against the same update with Adam.

One :meth:`SelectLearner.update` (critic ensemble scored on the N = 8 proposals of each next state, one
loss, one optimizer step, the targets' Polyak step) with ``Mechanic(Adam(lr=1))`` against the same
learner with ``Adam(lr=3e-4)``, at one torch thread as the learner runs. Both learners see the same
batches (drawn from a replay buffer of random decisions of the stack's sizes); their updates are
interleaved one by one, alternating which goes first, and the ratio of the medians is printed with the
ratio of the paired per-step times.

    .venv/bin/python bench/bench_learner_update.py            # 2 critics, 2 x 256

Issue target: Mechanic <= 1.03 x Adam for the whole update.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from mechanic_rl_ros.rl.selection import CandidateReplay, SelectConfig, SelectLearner


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--steps", type=int, default=300, help="timed updates per learner")
    ap.add_argument("--warmup", type=int, default=30, help="untimed updates per learner first")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--num-critics", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--num-candidates", type=int, default=8, help="proposals per next state")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    common = dict(feat_dim=144, act_dim=64, num_candidates=args.num_candidates, hidden=args.hidden,
                  num_critics=args.num_critics, batch_size=args.batch_size, seed=0)
    learners = {"Mechanic(Adam)": SelectLearner(SelectConfig(optimizer="mechanic", **common)),
                "Adam lr 3e-4": SelectLearner(SelectConfig(optimizer="adam", lr=3e-4, **common))}
    replay = CandidateReplay(4096, 144, 64, args.num_candidates)
    for j in range(4096):
        replay.add(rng.standard_normal(144), rng.standard_normal(64), float(rng.random() < 0.1),
                   bool(rng.random() < 0.1), rng.standard_normal(144),
                   rng.standard_normal((args.num_candidates, 64)), j, 0)
    what = f"select, N {args.num_candidates}"
    ref = learners["Adam lr 3e-4"]
    n_params = sum(p.numel() for p in ref.critic.parameters())
    print(f"learner {what}: {n_params:,} trained parameters ({args.num_critics} critics, hidden {args.hidden}), "
          f"batch {args.batch_size}, {args.threads} thread(s)")

    names = list(learners)
    times: dict[str, list[float]] = {k: [] for k in names}
    for i in range(args.warmup + args.steps):
        batch = replay.sample(args.batch_size, rng)
        order = names if i % 2 == 0 else names[::-1]
        for name in order:
            t0 = time.perf_counter()
            learners[name].update(batch)
            dt = time.perf_counter() - t0
            if i >= args.warmup:
                times[name].append(dt)
    mech, adam = (times[k] for k in names)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k in names:
        print(f"  {k:<16} median {med[k] * 1e3:7.2f} ms per update")
    paired = statistics.median(m / a for m, a in zip(mech, adam))
    print(f"Mechanic / Adam, whole update: {med[names[0]] / med[names[1]]:.3f} (median of paired ratios "
          f"{paired:.3f}); target <= 1.03")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
