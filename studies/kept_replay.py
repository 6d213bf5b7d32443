"""Study: how much does a changed scene's policy gain per gradient step under each distillation setting?

Replays what a stack run kept (its ``<run_dir>/learner/kept.npz``: the operator's corrections and the
policy's successful chunks under the shift) with the demonstrations, from the starting checkpoint, for
``--steps`` gradient steps, then evaluates the policy alone under the shift. Compares batch size, demo
fraction and trained layers at equal steps and equal CPU time, without running the stack.

    .venv/bin/python studies/kept_replay.py --kept runs/wg_hil_s0/learner/kept.npz --world green_cube \
        --steps 800 --batch-size 32 --out /tmp/kr_b32
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="checkpoints/lift_demos")
    ap.add_argument("--demos", default="runs/demos_clean50")
    ap.add_argument("--kept", required=True)
    ap.add_argument("--world", default="green_cube")
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--demo-fraction", type=float, default=0.5)
    ap.add_argument("--train-params", nargs="+", default=["encoders", "unet.up", "unet.upsample", "unet.final"])
    ap.add_argument("--eval-every", type=int, default=400)
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ema", action="store_true", help="evaluate an EMA of the trained layers (pretrain's schedule)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from mechanic_rl_ros.jobs.finetune_demos import evaluate_policy
    from mechanic_rl_ros.policy import DiffusionPolicy
    from mechanic_rl_ros.rl.distill import ChunkReplay, DistillConfig, Distiller
    from mechanic_rl_ros.rl.online_distill import load_demos
    from mechanic_rl_ros.sim.world import load_world

    policy = DiffusionPolicy.from_checkpoint(args.checkpoint).eval()
    cfg = DistillConfig(train_params=tuple(args.train_params), batch_size=args.batch_size,
                        demo_fraction=args.demo_fraction, seed=args.seed, augment_pad=4)
    d = Distiller(policy, cfg, load_demos(policy, args.demos))
    d.replay = ChunkReplay.load(args.kept)
    world = load_world(args.world)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    params = dict(policy.net.named_parameters())
    ema = {n: params[n].detach().clone() for n in d.names}
    record, busy = [], 0.0
    for step in range(1, args.steps + 1):
        t = time.process_time()
        d.step()
        with torch.no_grad():
            decay = min(1.0 - (1.0 + step) ** -0.75, 0.999)
            for n in d.names:
                ema[n].lerp_(params[n].detach(), 1.0 - decay)
        busy += time.process_time() - t
        if step % args.eval_every == 0 or step == args.steps:
            outcomes: list[int] = []
            raw = {n: params[n].detach().clone() for n in d.names}
            if args.ema:
                with torch.no_grad():
                    for n in d.names:
                        params[n].copy_(ema[n])
            wins = evaluate_policy(policy, "lift", args.episodes, 100000, outcomes, world=world)
            with torch.no_grad():
                for n in d.names:
                    params[n].copy_(raw[n])
            record.append({"steps": step, "cpu_s": round(busy, 1), "successes": wins, "episodes": args.episodes,
                           "scale": d.scale})
            print(json.dumps(record[-1]), flush=True)
    (out / "record.json").write_text(json.dumps({"args": vars(args), "record": record}, indent=1))


if __name__ == "__main__":
    main()
