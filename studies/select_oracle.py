"""Is the selection learner limited by its critic or by the proposals it chooses among?

Diagnostic for ``rl/select.py`` (docs/offpolicy.md, round 3). A reference pass runs the critic's
deterministic evaluation (as ``mechanic-rl train-select --eval-only``) and records, at every decision,
the 8 proposals, the critic's score of each and its choice. Then, for each recorded state of the
chosen episodes, 8 branches in 8 simulators: reset with the same seed, replay the recorded chunks up
to the decision (the simulator is deterministic; the script checks that the features at the branch
point equal the recorded ones), execute proposal j there, and continue with the critic's own choice
among fresh proposals to the end of the episode. A branch's success is one sample of "take proposal j
here, then act as the selection policy does" -- what the critic's Q estimates.

Per state it reports whether the critic's choice succeeded, whether any branch did, and, where the
branches disagree, how well the critic's scores rank successes above failures (AUC). Failed reference
episodes are also traced back: the last decision from which some branch still succeeded (after it,
no proposal on offer led to a success in this sample).

    PYTHONPATH=$PWD MUJOCO_GL=egl .venv/bin/python studies/select_oracle.py --episodes 100 \\
        --branch-failures 12 --branch-successes 8 --out runs/select_oracle.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class Recorder:
    """Batch planner: the critic's argmax over N proposals; records every proposal and score per
    (episode, decision). ``script`` maps (episode, decision) -> the chunk to execute instead."""

    def __init__(self, npol, learner, n: int, seed: int):
        self.npol, self.learner, self.n = npol, learner, n
        self.gen = torch.Generator().manual_seed(seed)
        self.rec: dict[tuple[int, int], dict[str, Any]] = {}
        self.script: dict[tuple[int, int], np.ndarray] = {}

    @torch.no_grad()
    def __call__(self, reqs):
        from mechanic_rl_ros.control.chunk_loop import Chunk
        from mechanic_rl_ros.policy.planner import propose

        policy, n = self.npol.policy, self.n
        pc = policy.cfg
        b = len(reqs)
        feat = self.npol.features([r.history for r in reqs])
        scripted = [self.script.get((r.episode, r.index)) for r in reqs]
        if all(a is not None for a in scripted):  # a replayed prefix: features only, for the drift check
            for i, r in enumerate(reqs):
                self.rec[(r.episode, r.index)] = {"feat": feat[i].clone()}
            return [Chunk(a, r.index) for a, r in zip(scripted, reqs)]
        x = torch.randn((b * n, pc.pred_horizon, pc.action_dim), generator=self.gen)
        out, cands = propose(policy, feat, x, [r.lead for r in reqs])
        acts = out.actions.view(b, n, pc.pred_horizon, pc.action_dim).cpu().numpy()
        scores = self.learner.scores(feat, cands, torch.tensor([r.index for r in reqs]))
        chunks = []
        for i, r in enumerate(reqs):
            execs = np.stack([policy.executable(acts[i, j], r.lead) for j in range(n)]).astype(np.float64)
            k = int(scores[i].argmax())
            key = (r.episode, r.index)
            self.rec[key] = {"feat": feat[i].clone(), "execs": execs, "scores": scores[i].tolist(), "chosen": k}
            act = scripted[i]
            chunks.append(Chunk(execs[k] if act is None else act, r.index))
        return chunks


def run_episodes(runner, loops, planner, items):
    """items: (env index, reset seed, episode id) per env; runs them to the end; returns success per env."""
    from mechanic_rl_ros.jobs.rollouts import plan_batch, run_blocks

    idx = [i for i, _, _ in items]
    for (i, _, ep), o in zip(items, runner.reset_envs(idx, [s for _, s, _ in items])):
        loops[i].reset(ep)
        loops[i].observe(o)
    active, won = list(idx), {}
    while active:
        plan_batch([loops[i] for i in active], planner)
        still = []
        for i, (_, res) in zip(active, run_blocks(runner, loops, active, reset_on_end=False)):
            if res.terminated or res.truncated:
                won[i] = int(res.success)
            else:
                still.append(i)
        active = still
    return [won[i] for i in idx]


def auc(scores, wins) -> float | None:
    pos = [s for s, w in zip(scores, wins) if w]
    neg = [s for s, w in zip(scores, wins) if not w]
    if not pos or not neg:
        return None
    return sum((p > q) + 0.5 * (p == q) for p in pos for q in neg) / (len(pos) * len(neg))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--checkpoint", default="checkpoints/lift_pretrained")
    ap.add_argument("--critic", default="checkpoints/lift_select")
    ap.add_argument("--task", default="lift")
    ap.add_argument("--episodes", type=int, default=100, help="reference episodes, reset seeds eval_seed + j")
    ap.add_argument("--eval-seed", type=int, default=100000)
    ap.add_argument("--branch-failures", type=int, default=12, help="failed reference episodes to branch")
    ap.add_argument("--branch-successes", type=int, default=8, help="successful reference episodes to branch")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="JSON with every state's branch outcomes and scores")
    args = ap.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    torch.set_num_threads(args.threads)
    from mechanic_rl_ros.control.chunk_loop import ChunkLoop
    from mechanic_rl_ros.jobs.rollouts import count_successes
    from mechanic_rl_ros.jobs.train_offpolicy import NoisePolicy, _runner
    from mechanic_rl_ros.jobs.train_select import load_learner
    from mechanic_rl_ros.policy import DiffusionPolicy

    policy = DiffusionPolicy.from_checkpoint(args.checkpoint).eval().requires_grad_(False)
    learner = load_learner(args.critic, policy.arch_id)
    npol, n = NoisePolicy(policy), learner.cfg.num_candidates
    t0 = time.perf_counter()
    ref = Recorder(npol, learner, n, args.eval_seed)
    with _runner(policy, args.task, n, args.eval_seed, 0) as runner:
        loops = [ChunkLoop.for_policy(policy) for _ in range(n)]
        outcomes: list[int] = []
        wins = count_successes(runner, loops, ref, args.episodes, args.eval_seed, outcomes)
        print(f"reference: {wins}/{args.episodes} | {time.perf_counter() - t0:.0f} s", flush=True)
        failed = [e for e, w in enumerate(outcomes) if not w][:args.branch_failures]
        passed = [e for e, w in enumerate(outcomes) if w][:args.branch_successes]
        states = []
        for e in failed + passed:
            decisions = sorted(d for (ep, d) in ref.rec if ep == e)
            for d in decisions:
                rec = ref.rec[(e, d)]
                br = Recorder(npol, learner, n, 7919 * (1000 * e + d + 1))
                items = []
                for j in range(n):
                    ep = 10_000_000 + 1000 * e + 10 * d + j
                    for dd in range(d):
                        br.script[(ep, dd)] = ref.rec[(e, dd)]["execs"][ref.rec[(e, dd)]["chosen"]]
                    br.script[(ep, d)] = rec["execs"][j]
                    items.append((j, args.eval_seed + e, ep))
                won = run_episodes(runner, loops, br, items)
                drift = max(float((br.rec[(ep, d)]["feat"] - rec["feat"]).abs().max()) for _, _, ep in items)
                states.append({"episode": e, "seed": args.eval_seed + e, "decision": d, "ref_success": outcomes[e],
                               "scores": rec["scores"], "chosen": rec["chosen"], "branch_success": won,
                               "replay_feature_drift": drift})
                print(f"episode {e} ({'won' if outcomes[e] else 'failed'}) decision {d}: branches {won} "
                      f"chosen {rec['chosen']} drift {drift:.1e} | {time.perf_counter() - t0:.0f} s", flush=True)

    def summary(rows, what):
        if not rows:
            return
        chosen = sum(r["branch_success"][r["chosen"]] for r in rows)
        anyw = sum(1 for r in rows if any(r["branch_success"]))
        mean = sum(sum(r["branch_success"]) / n for r in rows)
        aucs = [a for a in (auc(r["scores"], r["branch_success"]) for r in rows) if a is not None]
        print(f"{what}: {len(rows)} states; chosen proposal's branch succeeded in {chosen}, some branch in {anyw}, "
              f"mean branch success {mean / len(rows):.2f}; mixed states {len(aucs)}, critic AUC there "
              f"{np.mean(aucs) if aucs else float('nan'):.2f}")

    summary([r for r in states if not r["ref_success"]], "states of failed episodes")
    summary([r for r in states if r["ref_success"]], "states of successful episodes")
    for e in failed:
        rows = [r for r in states if r["episode"] == e]
        alive = [r["decision"] for r in rows if any(r["branch_success"])]
        missed = [r["decision"] for r in rows if any(r["branch_success"]) and not r["branch_success"][r["chosen"]]]
        print(f"failed episode {e}: decisions {len(rows)}, some branch wins at {alive}, "
              f"critic's choice lost where another won at {missed}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"outcomes": outcomes, "states": states}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
