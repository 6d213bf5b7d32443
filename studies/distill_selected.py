"""Distil the chunks a selection rule chose in successful episodes back into the diffusion policy.

Diagnostic for the "distil the chosen chunks" idea of docs/offpolicy.md (round 3): does the frozen
policy itself get better when its denoiser is fine-tuned on what selection picked, and does selection
on top of the fine-tuned policy add to that? One round of expert iteration (filtered behaviour
cloning on the policy's own successful data, as in self-imitation):

1. collect ``--collect`` episodes (reset seeds ``collect_seed + j``) with ``--rule`` of
   ``studies/coherence_select.py`` (``coh`` needs no critic), recording at every decision the
   encoder's features and the chosen proposal's whole normalised prediction [T_p, A];
2. fine-tune the denoiser (the encoder stays frozen: the features are fixed inputs) with the DDPM
   loss of the policy's pretraining (Ho et al. 2020, Eq. 14, its ``prediction`` target) on the
   decisions of the successful episodes (all decisions with ``--all``), ``Mechanic(Adam(lr=1))``,
   batch ``--batch``; no learning rate;
3. after each total in ``--steps``, evaluate each of ``--eval-rules`` on reset seeds
   ``eval_seed + j`` with proposals from a generator seeded with ``eval_seed`` (as the selection
   learner's evaluation), and save the fine-tuned policy to ``--save``/steps_N if given.

    PYTHONPATH=$PWD MUJOCO_GL=egl .venv/bin/python studies/distill_selected.py --steps 200 600 \\
        --eval-rules first coh
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _coherence_module():
    spec = importlib.util.spec_from_file_location("coherence_select", ROOT / "studies" / "coherence_select.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv: list[str] | None = None) -> int:
    cs = _coherence_module()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--checkpoint", default="checkpoints/lift_pretrained")
    ap.add_argument("--critic", default="checkpoints/lift_select", help="for the rules critic, topk, blend")
    ap.add_argument("--rule", default="coh", choices=cs.RULES, help="selection rule while collecting")
    ap.add_argument("--collect", type=int, default=64, help="episodes collected (64 ~ 4 500 control steps)")
    ap.add_argument("--collect-seed", type=int, default=0, help="reset seeds collect_seed + j")
    ap.add_argument("--collect-proposal-seed", type=int, default=4242,
                    help="seed of the proposals' generator while collecting")
    ap.add_argument("--all", action="store_true", help="distil every decision, not only successful episodes")
    ap.add_argument("--steps", type=int, nargs="+", default=[200, 600], help="fine-tuning steps to evaluate at")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--eval-rules", nargs="+", default=["first", "coh"], choices=cs.RULES)
    ap.add_argument("--eval-episodes", type=int, default=100)
    ap.add_argument("--eval-seed", type=int, default=100000)
    ap.add_argument("--save", help="directory for the fine-tuned policies (steps_N/)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    torch.set_num_threads(args.threads)
    from mechanic_rl_ros.control.chunk_loop import ChunkLoop
    from mechanic_rl_ros.jobs.rollouts import count_successes
    from mechanic_rl_ros.jobs.train_offpolicy import _runner
    from mechanic_rl_ros.jobs.train_select import load_learner
    from mechanic_rl_ros.optim import Mechanic
    from mechanic_rl_ros.policy import DiffusionPolicy
    from mechanic_rl_ros.policy.diffusion import training_target

    policy = DiffusionPolicy.from_checkpoint(args.checkpoint).eval().requires_grad_(False)
    pc = policy.cfg
    need_critic = {args.rule, *args.eval_rules} & set(cs.CRITIC_RULES)
    critic = load_learner(args.critic, policy.arch_id) if need_critic else None

    def run(rule: str, episodes: int, seed: int, proposal_seed: int,
            record: list | None = None) -> tuple[int, list[int]]:
        planner = cs.CoherencePlanner(policy, rule, 8, proposal_seed, critic if rule in need_critic else None,
                                      record=record)
        n = max(1, min(8, episodes))
        with torch.no_grad(), _runner(policy, "lift", n, proposal_seed, 0) as runner:
            loops = [ChunkLoop.for_policy(policy) for _ in range(n)]
            outcomes: list[int] = []
            wins = count_successes(runner, loops, planner, episodes, seed, outcomes)
        return wins, outcomes

    t0 = time.perf_counter()
    rows: list = []
    wins, outcomes = run(args.rule, args.collect, args.collect_seed, args.collect_proposal_seed, rows)
    print(f"collected with rule {args.rule}: {wins}/{args.collect} episodes succeeded, {len(rows)} decisions "
          f"| {time.perf_counter() - t0:.0f} s", flush=True)
    rows = [r for r in rows if args.all or outcomes[r[0]]]
    if not rows:
        raise SystemExit("no decision to distil (no successful episode collected)")
    feat, x0 = torch.stack([r[1] for r in rows]), torch.stack([r[2] for r in rows])
    print(f"distilling {len(rows)} decisions", flush=True)

    net = policy.net.requires_grad_(True)
    opt = Mechanic(torch.optim.Adam(net.parameters(), lr=1.0))
    gen = torch.Generator().manual_seed(0)
    done = 0
    for total in sorted(args.steps):
        net.train()
        while done < total:
            idx = torch.randint(0, len(rows), (args.batch,), generator=gen)
            cond, a = feat[idx], x0[idx]
            t = torch.randint(0, policy.schedule.train_steps, (args.batch,), generator=gen)
            eps = torch.randn(a.shape, generator=gen)
            abar = policy.schedule.abar_at(t, a.dtype).view(-1, 1, 1)
            target = training_target(a, eps, abar, pc.diffusion.prediction)
            loss = F.mse_loss(net(policy.schedule.add_noise(a, eps, t), t, cond), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done % 100 == 0:
                print(f"step {done}: loss {loss.item():.4f}, Mechanic scale {opt.scale:.2e}", flush=True)
        net.eval()
        if args.save:
            policy.save(Path(args.save) / f"steps_{total}")
        for rule in args.eval_rules:
            wins, outcomes = run(rule, args.eval_episodes, args.eval_seed, args.eval_seed)
            print(f"after {total} steps, rule {rule}: {wins}/{args.eval_episodes} "
                  f"| {time.perf_counter() - t0:.0f} s\noutcomes {''.join(map(str, outcomes))}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
