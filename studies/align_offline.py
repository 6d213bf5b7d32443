"""Study: an offline stage that teaches the camera encoder to see a changed picture as the policy saw the
recorded one, and leaves the rest of the network as it was.

The augmented offline stage (``config/distill_augmented.yaml``, docs/world.md) trains the encoder and the
denoiser's decoder half with the diffusion loss on jittered and warped demonstrations; it buys the shifts
and costs the training scene 3-9 points, and that cost is the steps on 50 demonstrations themselves, not
the augmentation (docs/history.md). Here only the encoder trains, and not on actions: its features of a
jittered, warped, randomly shifted window are pulled towards the frozen starting encoder's features of the
same window as recorded,

    L = mean || phi_theta(aug(o)) - phi_0(o) ||^2        (per camera, per frame; phi_0 frozen),

so that a colour or viewpoint change looks, after the encoder, like the scene the denoiser was trained on
(feature-level invariance as in SODA, Hansen & Wang, ICRA 2021, and the teacher-student consistency of
"generalisation through alignment" methods). The denoiser never changes, and on the recorded images the
target is the starting encoder itself. Mechanic(Adam(lr=1)), no learning rate.

    PYTHONPATH=$PWD .venv/bin/python studies/align_offline.py --seed 1 --steps 3000 --out runs/align_s1
    .venv/bin/mechanic-rl eval --checkpoint runs/align_s1/policy --episodes 400 --threads 1
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

from mechanic_rl_ros.policy.policy import frame_features


def features(net, images: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per camera and frame encoder features, [cameras, B * T_o, feature_dim]."""
    return torch.stack([frame_features(net.encoders[cam], images[cam]) for cam in net.cameras])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="checkpoints/lift_demos")
    ap.add_argument("--demos", default="runs/demos_clean50")
    ap.add_argument("--color", type=float, default=1.0)
    ap.add_argument("--warp", type=float, default=0.5)
    ap.add_argument("--share", type=float, default=0.8)
    ap.add_argument("--pad", type=int, default=4, help="random shift of the student's input [px]")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--save-every", type=int, default=1000, help="also save <out>/policy_<step> this often")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from mechanic_rl_ros.optim import build_optimizer, mechanic_scale
    from mechanic_rl_ros.policy import DiffusionPolicy
    from mechanic_rl_ros.policy.augment import ImageAugment
    from mechanic_rl_ros.policy.policy import random_shift
    from mechanic_rl_ros.rl.online_distill import load_demos

    policy = DiffusionPolicy.from_checkpoint(args.checkpoint).eval()
    teacher = copy.deepcopy(policy.net).eval().requires_grad_(False)
    demos = load_demos(policy, str(Path(args.demos).resolve()))
    net = policy.net
    for n, p in net.named_parameters():
        p.requires_grad_(n.startswith("encoders."))
    params = [p for p in net.parameters() if p.requires_grad]
    opt = build_optimizer("mechanic", params)
    augment = ImageAugment(color=args.color, warp=args.warp, prob=args.share)
    rng, gen = np.random.default_rng(args.seed + 31), torch.Generator().manual_seed(args.seed + 37)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log, t0, recent = [], time.perf_counter(), []
    for step in range(1, args.steps + 1):
        images = demos.get_batch(rng.integers(0, len(demos), args.batch_size))["images"]
        with torch.no_grad():
            target = features(teacher, images)
        seen = augment({c: random_shift(v, args.pad, gen) for c, v in images.items()}, gen)
        net.train()
        loss = torch.nn.functional.mse_loss(features(net, seen), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        net.eval()
        recent.append(float(loss.detach()))
        if step % 100 == 0:
            row = {"step": step, "loss": float(np.mean(recent)), "scale": mechanic_scale(opt),
                   "wall_s": time.perf_counter() - t0}
            log.append(row)
            recent.clear()
            print(f"{step}/{args.steps} steps | alignment loss {row['loss']:.5f} | Mechanic scale "
                  f"{row['scale']:.3g} | {row['wall_s']:.0f} s", flush=True)
        if args.save_every and step % args.save_every == 0 and step < args.steps:
            policy.save(out / f"policy_{step}")
    policy.train_info = {**policy.train_info, "align_offline": vars(args)}
    policy.save(out / "policy")
    (out / "log.json").write_text(json.dumps(log, indent=1) + "\n")
    print(f"saved {out / 'policy'}")


if __name__ == "__main__":
    main()
