"""Signal-to-noise ratio of the DPPO policy gradient at the pretrained policy, per batch size.

Why: fine-tuning runs at the batch sizes this machine affords (80-480
decisions per update; DPPO's Robomimic runs use ~15 000) drift instead of
climbing. This measures how much of a batch's policy gradient is signal.

How: ``--batches`` independent batches of rollouts of the pretrained policy
(the stochastic DPPO sampler, real simulator). For each, the gradient of the
DPPO surrogate at the behaviour weights (ratio 1, so the clip is inactive:
the policy gradient ``-E[A * sum_k d log pi_k]`` with DPPO's per-step
discount and normalised advantages) with respect to the fine-tuned network.
Advantages are Monte-Carlo returns of complete episodes (decisions of an
episode still running at the end of a batch are dropped) minus their batch
mean: the critic is left out so the figure does not depend on how far a
critic has trained. If every batch gradient is ``g + n_b`` with noise of
variance ``sigma^2 / N``, the expected cosine between two of them is
``1 / (1 + r / N)`` with ``r = sigma^2 / |g|^2``; ``r`` (printed) is the
number of decisions at which signal and noise are equal, i.e. where the
cosine between independent batches reaches 0.5.

Both log-probability windows are measured on the same rollouts: the whole
predicted chunk (T_p x A elements) and only the executed actions
(indices [T_o - 1, T_o - 1 + T_a), what DPPO backpropagates through).

Usage::

    .venv/bin/python studies/pg_snr.py --checkpoint checkpoints/lift_pretrained --batches 4 \\
        --num-envs 24 --steps 20
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mechanic_rl_ros.rl import DPPO, RolloutBuffer  # noqa: E402
from mechanic_rl_ros.rl.config import DPPOConfig  # noqa: E402
from mechanic_rl_ros.rl.gae import denoising_advantages, denoising_discount, normalize_advantages  # noqa: E402
from mechanic_rl_ros.jobs.rollouts import Collector  # noqa: E402


def complete_episode_returns(batch, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows of decisions whose episode ended inside the batch, and their discounted returns-to-go."""
    rows, rets = [], []
    for ep in np.unique(batch.episode):
        idx = np.nonzero(batch.episode == ep)[0]
        idx = idx[np.argsort(batch.chunk[idx])]
        chunks = batch.chunk[idx]
        ended = bool(batch.terminated[idx[-1]] or batch.truncated[idx[-1]])
        if not ended or chunks[0] != 0 or np.any(np.diff(chunks) != 1):
            continue
        g, out = 0.0, []
        for i in idx[::-1]:
            g = float(batch.reward[i]) + gamma * g
            out.append(g)
        rows.extend(idx.tolist())
        rets.extend(out[::-1])
    return np.asarray(rows, dtype=np.int64), np.asarray(rets, dtype=np.float64)


def policy_gradients(learner: DPPO, batch, rows: np.ndarray, returns: np.ndarray) -> dict[str, torch.Tensor]:
    """Flattened gradient of the DPPO surrogate at ratio 1 for each log-probability window."""
    from mechanic_rl_ros.control.decision import index_obs

    policy, cfg = learner.policy, learner.cfg
    obs = index_obs(batch.obs, rows)
    chain = torch.as_tensor(batch.chain[rows])
    adv = normalize_advantages(torch.as_tensor(returns - returns.mean(), dtype=torch.float32))
    a_k = denoising_advantages(adv, denoising_discount(cfg.finetune_steps, cfg.gamma_denoising).float())
    a0, ta = policy.cfg.action_start, policy.cfg.action_horizon
    out = {}
    for window in ("chunk", "executed"):
        for p in learner.actor_params:
            p.grad = None
        # as DPPO.log_probs: only the K' fine-tuned steps are evaluated
        lp = policy.chain_log_prob(obs, chain, step_indices=learner.ft_indices, reduce=False)  # [B, K', T_p, A]
        lp = lp.sum(dim=(-1, -2)) if window == "chunk" else lp[:, :, a0:a0 + ta].sum(dim=(-1, -2))
        loss = -(a_k * (lp - lp.detach())).mean()   # d/dtheta of -A * ratio at ratio 1
        loss.backward()
        out[window] = torch.cat([p.grad.flatten() for p in learner.actor_params if p.grad is not None]).double()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="checkpoints/lift_pretrained", help="pretrained policy directory")
    ap.add_argument("--task", default="lift")
    ap.add_argument("--batches", type=int, default=4, help="independent batches (>= 2)")
    ap.add_argument("--num-envs", type=int, default=24)
    ap.add_argument("--steps", type=int, default=20, help="decisions per environment per batch")
    ap.add_argument("--finetune-steps", type=int, default=None, help="K' (default: config/rl.yaml)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args(argv)
    if args.batches < 2:
        ap.error("--batches must be >= 2")
    torch.set_num_threads(args.threads)
    from mechanic_rl_ros.rl.config import load_config

    cfg: DPPOConfig = load_config(None, [f"learner.finetune_steps={args.finetune_steps}"] if args.finetune_steps else []).learner
    learner = DPPO.from_checkpoint(args.checkpoint, cfg)
    k = learner.policy.cfg.sampling.inference_steps
    print(f"pg_snr: {args.checkpoint}, K'={cfg.finetune_steps} of K={k}, {args.batches} batches of "
          f"{args.num_envs} envs x {args.steps} decisions", flush=True)
    col = Collector(learner, args.task, args.num_envs, args.seed, "sparse")
    gen = torch.Generator().manual_seed(args.seed)
    grads: dict[str, list[torch.Tensor]] = {"chunk": [], "executed": []}
    sizes, succ = [], []
    t0 = time.perf_counter()
    try:
        for b in range(args.batches):
            buf = RolloutBuffer(action_horizon=learner.policy.cfg.action_horizon, capacity=100000)
            stats = col.collect(buf, args.steps, gen)
            batch = buf.take_batch()
            rows, rets = complete_episode_returns(batch, cfg.gamma)
            g = policy_gradients(learner, batch, rows, rets)
            for w in grads:
                grads[w].append(g[w])
            sizes.append(len(rows))
            succ.append(stats["train_success"])
            print(f"batch {b + 1}/{args.batches}: {len(rows)} decisions of complete episodes, "
                  f"success {stats['train_success']:.2f}, {time.perf_counter() - t0:.0f} s", flush=True)
    finally:
        col.close()
    n = float(np.mean(sizes))
    result = {"checkpoint": args.checkpoint, "finetune_steps": cfg.finetune_steps, "inference_steps": k,
              "decisions_per_batch": n, "batches": args.batches, "success": float(np.mean(succ)),
              "wall_s": time.perf_counter() - t0}
    for w, gs in grads.items():
        cos = [float(torch.dot(a, b) / (a.norm() * b.norm())) for a, b in itertools.combinations(gs, 2)]
        c = float(np.mean(cos))
        r = n * (1.0 / c - 1.0) if c > 0 else math.inf
        se = float(np.std(cos, ddof=1) / math.sqrt(len(cos))) if len(cos) > 1 else float("nan")
        result[w] = {"cosine_mean": c, "cosine_se": se,
                     "decisions_for_snr_1": r}
        print(f"window {w:8s}: cosine between independent batches {c:+.4f} +- {result[w]['cosine_se']:.4f} "
              f"at {n:.0f} decisions -> signal = noise at about {r:,.0f} decisions per batch")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
