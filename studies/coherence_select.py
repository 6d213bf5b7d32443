"""Training-free selection among the frozen policy's proposals by backward coherence.

Diagnostic for the selection learner (``rl/select.py``, docs/offpolicy.md round 3): how much of what
the learned critic gains over the pretrained policy does a rule with no learning gain? At every
decision the frozen policy denoises N proposals (deterministic DDIM from x_K ~ N(0, I), as the
selection learner does), and the rule keeps the one whose first actions agree best with what the
previously executed proposal had predicted for the same instants: the backward-coherence criterion of
Bidirectional Decoding (Liu et al., "Bidirectional Decoding: Improving Action Chunking via Closed-Loop
Resampling", 2024; its forward-contrast half, which needs a second policy, is not used). A chunk
predicts T_p actions from index T_o - 1 (the newest observation's instant); T_a of them run, so the
next decision's proposals cover the previous prediction's last T_p - T_o + 1 - T_a instants
(7 for T_p = 16, T_o = 2, T_a = 8). The first decision of an episode has no previous prediction and
takes the first proposal (``coh``) or the critic's choice (``topk``, ``blend``).

Rules (``--rule``): ``first`` the pretrained policy as it is (one proposal); ``coh`` the most coherent
proposal; ``critic`` the critic's argmax (as ``mechanic-rl train-select --eval-only``); ``topk`` the
most coherent of the critic's best ``--k``; ``blend`` the argmax of z(Q) - lam z(distance) (z: standard
score over the state's proposals). Reset seeds eval_seed + j, proposals from a generator seeded with
eval_seed, as the selection learner's evaluation.

    PYTHONPATH=$PWD MUJOCO_GL=egl .venv/bin/python studies/coherence_select.py --rule coh --episodes 100
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RULES = ("first", "coh", "critic", "topk", "blend")
CRITIC_RULES = ("critic", "topk", "blend")  #: the rules that read a critic's scores


def coherence_distance(prev: torch.Tensor, props: torch.Tensor, start: int, executed: int) -> torch.Tensor:
    """Squared distance [N] between each proposal ``props`` [N, T_p, A] and the previous decision's
    prediction ``prev`` [T_p, A] over the instants both cover: proposal indices [start, T_p - executed)
    against the previous one's [start + executed, T_p) (``start`` = T_o - 1, ``executed`` = T_a; the
    previous observation was ``executed`` control periods before this one)."""
    overlap = prev.shape[0] - start - executed
    if overlap <= 0:
        raise ValueError(f"no overlap: T_p {prev.shape[0]}, start {start}, executed {executed}")
    tail = prev[start + executed:start + executed + overlap]
    return ((props[:, start:start + overlap] - tail) ** 2).sum(dim=(1, 2))


def zscore(v: torch.Tensor) -> torch.Tensor:
    return (v - v.mean()) / (v.std() + 1e-6)


class CoherencePlanner:
    """Batch planner (:data:`~mechanic_rl_ros.jobs.rollouts.BatchPlanner`) applying one rule of ``RULES``.

    ``record``, if a list, receives ``(episode, features [F], chosen proposal [T_p, A] normalised)`` per
    decision (``studies/distill_selected.py``)."""

    def __init__(self, policy, rule: str, n: int, seed: int, learner=None, k: int = 3, lam: float = 1.0,
                 record: list | None = None):
        from mechanic_rl_ros.jobs.train_offpolicy import NoisePolicy

        if rule not in RULES:
            raise ValueError(f"rule: {rule!r}; expected one of {RULES}")
        if rule in CRITIC_RULES and learner is None:
            raise ValueError(f"rule {rule!r} needs a critic")
        self.policy, self.npol, self.rule, self.n = policy, NoisePolicy(policy), rule, n
        self.learner, self.k, self.lam = learner, k, lam
        self.gen = torch.Generator().manual_seed(seed)
        self.prev: dict[int, torch.Tensor] = {}
        self.record = record

    @torch.no_grad()
    def __call__(self, reqs):
        from mechanic_rl_ros.control.chunk_loop import Chunk
        from mechanic_rl_ros.policy.planner import propose

        if any(r.lead for r in reqs):
            raise ValueError("coherence_select assumes lead 0 (the headless chunk loop)")
        pc, b, n = self.policy.cfg, len(reqs), self.n
        feat = self.npol.features([r.history for r in reqs])
        x = torch.randn((b * n, pc.pred_horizon, pc.action_dim), generator=self.gen)
        out, cands = propose(self.policy, feat, x, [r.lead for r in reqs])
        norm = out.actions_norm.view(b, n, pc.pred_horizon, pc.action_dim)
        acts = out.actions.view(b, n, pc.pred_horizon, pc.action_dim).cpu().numpy()
        q = (self.learner.scores(feat, cands, torch.tensor([r.index for r in reqs]))
             if self.learner is not None else None)
        chunks = []
        for i, r in enumerate(reqs):
            prev = self.prev.get(r.episode) if r.index > 0 else None
            j = self._pick(q[i] if q is not None else None,
                           None if prev is None else
                           coherence_distance(prev, norm[i], pc.action_start, pc.action_horizon))
            self.prev[r.episode] = norm[i, j].clone()
            if self.record is not None:
                self.record.append((r.episode, feat[i].clone(), norm[i, j].clone()))
            chunks.append(Chunk(self.policy.executable(acts[i, j], r.lead).astype(np.float64), r.index))
        return chunks

    def _pick(self, q, dist) -> int:
        if self.rule == "first" or (dist is None and q is None):
            return 0
        if self.rule == "critic" or dist is None:
            return int(q.argmax())
        if self.rule == "coh":
            return int(dist.argmin())
        if self.rule == "topk":
            top = torch.topk(q, min(self.k, q.numel())).indices
            return int(top[dist[top].argmin()])
        return int((zscore(q) - self.lam * zscore(dist)).argmax())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--checkpoint", default="checkpoints/lift_pretrained")
    ap.add_argument("--critic", default="checkpoints/lift_select", help="for --rule critic, topk, blend")
    ap.add_argument("--rule", default="coh", choices=RULES)
    ap.add_argument("--candidates", type=int, default=8, help="proposals per decision (N)")
    ap.add_argument("--k", type=int, default=3, help="--rule topk: the critic's best k")
    ap.add_argument("--lam", type=float, default=1.0, help="--rule blend: weight of the distance's z-score")
    ap.add_argument("--task", default="lift")
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--eval-seed", type=int, default=100000)
    ap.add_argument("--num-envs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    torch.set_num_threads(args.threads)
    from mechanic_rl_ros.control.chunk_loop import ChunkLoop
    from mechanic_rl_ros.jobs.evaluate import wilson_interval
    from mechanic_rl_ros.jobs.rollouts import count_successes
    from mechanic_rl_ros.jobs.train_offpolicy import _runner
    from mechanic_rl_ros.jobs.train_select import load_learner
    from mechanic_rl_ros.policy import DiffusionPolicy

    policy = DiffusionPolicy.from_checkpoint(args.checkpoint).eval().requires_grad_(False)
    learner = load_learner(args.critic, policy.arch_id) if args.rule in CRITIC_RULES else None
    planner = CoherencePlanner(policy, args.rule, args.candidates, args.eval_seed, learner, args.k, args.lam)
    t0 = time.perf_counter()
    n = max(1, min(args.num_envs, args.episodes))
    with _runner(policy, args.task, n, args.eval_seed, 0) as runner:
        loops = [ChunkLoop.for_policy(policy) for _ in range(n)]
        outcomes: list[int] = []
        wins = count_successes(runner, loops, planner, args.episodes, args.eval_seed, outcomes)
    lo, hi = wilson_interval(wins, args.episodes)
    print(f"rule {args.rule} (N = {args.candidates}): {wins}/{args.episodes} = {wins / args.episodes:.1%} "
          f"(Wilson 95 % {lo:.1%}-{hi:.1%}) | {time.perf_counter() - t0:.0f} s")
    print("outcomes " + "".join(map(str, outcomes)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
