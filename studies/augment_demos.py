"""Study: do colour and viewpoint augmentations of the demonstrations alone make a policy hold up under a
changed scene, before any robot time?

Trains ``--train-params`` of the starting checkpoint for ``--steps`` gradient steps on the demonstrations
(and, with ``--kept``, what a stack run kept), each batch's scene images jittered in colour (brightness,
contrast, saturation, a hue rotation) and/or warped (a small rotation and zoom about the image centre),
then evaluates the policy alone in each of ``--worlds`` (the first-proposal protocol of
``train-select --eval-only``). ``--steps 0`` evaluates the checkpoint as it is. The figures in the docs were
made at commit d1ef956, where this script had its own copy of the two augmentations; they now come from
``mechanic_rl_ros/policy/augment.py`` (the same transforms, the hue matrix in float64).

    PYTHONPATH=$PWD .venv/bin/python studies/augment_demos.py --steps 1000 --color 1 --geom 1 \
        --worlds default green_cube narrow_fov camera_pan_5deg --episodes 50 --out runs/aug_cg
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
    ap.add_argument("--kept", default=None, help="a stack run's learner/kept.npz, mixed in as distill does")
    ap.add_argument("--worlds", nargs="+", default=["default", "green_cube", "narrow_fov", "camera_pan_5deg"])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--color", type=float, default=0.0, help="colour jitter strength (0 off, 1 full hue circle)")
    ap.add_argument("--geom", type=float, default=0.0, help="warp strength: 1 = +-6 deg, zoom 1.15, shift +-0.12 of the half width")
    ap.add_argument("--aug-prob", type=float, default=0.8, help="share of each batch augmented")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--demo-fraction", type=float, default=0.5, help="share of each batch from the demonstrations "
                    "once --kept is given")
    ap.add_argument("--train-params", nargs="+", default=["encoders", "unet.up", "unet.upsample", "unet.final"])
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from mechanic_rl_ros.jobs.finetune_demos import evaluate_policy
    from mechanic_rl_ros.policy import DiffusionPolicy
    from mechanic_rl_ros.policy.augment import ImageAugment
    from mechanic_rl_ros.rl.distill import ChunkReplay, DistillConfig, Distiller
    from mechanic_rl_ros.rl.online_distill import load_demos
    from mechanic_rl_ros.sim.world import load_world

    policy = DiffusionPolicy.from_checkpoint(args.checkpoint).eval()
    cfg = DistillConfig(train_params=tuple(args.train_params), batch_size=args.batch_size, seed=args.seed,
                        demo_fraction=args.demo_fraction, augment_pad=4)
    d = Distiller(policy, cfg, load_demos(policy, args.demos))
    if args.kept:
        d.replay = ChunkReplay.load(args.kept)
    augment = ImageAugment(color=args.color, warp=args.geom, prob=args.aug_prob)
    gen = torch.Generator().manual_seed(args.seed + 1234)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0, losses = time.process_time(), []
    for step in range(1, args.steps + 1):
        batch = d.batch()
        batch["images"] = augment(batch["images"], gen)
        losses.append(d.step(batch)["actor_loss"])
        if step % 100 == 0:
            print(f"step {step} loss {sum(losses[-100:]) / 100:.4f} scale {d.scale:.3g} "
                  f"cpu {time.process_time() - t0:.0f} s", flush=True)
    result = {"args": vars(args), "cpu_s": round(time.process_time() - t0, 1), "scale": d.scale, "worlds": {}}
    for name in args.worlds:
        outcomes: list[int] = []
        wins = evaluate_policy(policy, "lift", args.episodes, 100000, outcomes, world=load_world(name))
        result["worlds"][name] = {"successes": wins, "episodes": args.episodes, "outcomes": outcomes}
        print(f"{name}: {wins}/{args.episodes}", flush=True)
        (out / "record.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
