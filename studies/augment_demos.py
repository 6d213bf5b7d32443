"""Study: do colour and viewpoint augmentations of the demonstrations alone make a policy hold up under a
changed scene, before any robot time?

Trains ``--train-params`` of the starting checkpoint for ``--steps`` gradient steps on the demonstrations
(and, with ``--kept``, what a stack run kept), each batch's scene images jittered in colour (brightness,
contrast, saturation, a hue rotation) and/or warped (a small rotation and zoom about the image centre),
then evaluates the policy alone in each of ``--worlds`` (the first-proposal protocol of
``train-select --eval-only``). ``--steps 0`` evaluates the checkpoint as it is.

    PYTHONPATH=$PWD .venv/bin/python studies/augment_demos.py --steps 1000 --color 1 --geom 1 \
        --worlds default green_cube narrow_fov camera_pan_5deg --episodes 50 --out runs/aug_cg
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def color_jitter(img: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """uint8 [B, T, H, W, 3] -> uint8, one draw per sample: brightness, contrast and saturation factors in
    1 +- 0.3 strength, a hue rotation of up to +-180 strength degrees (in YIQ's chroma plane)."""
    b = img.shape[0]
    x = img.float() / 255.0

    def u(lo: float, hi: float) -> torch.Tensor:
        return (lo + (hi - lo) * torch.rand(b, generator=gen)).view(b, 1, 1, 1, 1)

    s = 0.3 * strength
    x = x * u(1 - s, 1 + s)
    grey = (x * torch.tensor([0.299, 0.587, 0.114])).sum(-1, keepdim=True)
    x = (x - grey.mean(dim=(2, 3), keepdim=True)) * u(1 - s, 1 + s) + grey.mean(dim=(2, 3), keepdim=True)
    grey = (x * torch.tensor([0.299, 0.587, 0.114])).sum(-1, keepdim=True)
    x = grey + (x - grey) * u(1 - s, 1 + s)
    th = (torch.rand(b, generator=gen) * 2 - 1) * math.pi * strength
    c, sn = torch.cos(th), torch.sin(th)
    rot = torch.zeros(b, 3, 3)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = c, -sn, sn, c
    m = torch.linalg.inv(_YIQ) @ rot @ _YIQ          # [B, 3, 3]
    x = torch.einsum("bij,bthwj->bthwi", m, x)
    return (x.clamp(0, 1) * 255.0).round().to(torch.uint8)


def warp(img: torch.Tensor, degrees: float, zoom: float, shift: float, gen: torch.Generator) -> torch.Tensor:
    """uint8 [B, T, H, W, 3] -> uint8: rotate by up to +-degrees, scale by a factor in [1/(1+zoom), 1+zoom]
    about the centre and move by up to +-shift of the half width, the same for all frames of a sample;
    border pixels repeat."""
    b, t, h, w, _ = img.shape
    ang = (torch.rand(b, generator=gen) * 2 - 1) * math.radians(degrees)
    z = torch.exp((torch.rand(b, generator=gen) * 2 - 1) * math.log1p(zoom))
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = z * torch.cos(ang), -z * torch.sin(ang)
    theta[:, 1, 0], theta[:, 1, 1] = z * torch.sin(ang), z * torch.cos(ang)
    theta[:, :, 2] = (torch.rand(b, 2, generator=gen) * 2 - 1) * shift
    x = img.permute(0, 1, 4, 2, 3).reshape(b * t, 3, h, w).float()
    grid = F.affine_grid(theta.repeat_interleave(t, 0), [b * t, 3, h, w], align_corners=False)
    y = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8).reshape(b, t, 3, h, w).permute(0, 1, 3, 4, 2)


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
    ap.add_argument("--train-params", nargs="+", default=["encoders", "unet.up", "unet.upsample", "unet.final"])
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from mechanic_rl_ros.jobs.finetune_demos import evaluate_policy
    from mechanic_rl_ros.policy import DiffusionPolicy
    from mechanic_rl_ros.rl.distill import ChunkReplay, DistillConfig, Distiller
    from mechanic_rl_ros.rl.online_distill import load_demos
    from mechanic_rl_ros.sim.world import load_world

    policy = DiffusionPolicy.from_checkpoint(args.checkpoint).eval()
    cfg = DistillConfig(train_params=tuple(args.train_params), batch_size=args.batch_size, seed=args.seed,
                        augment_pad=4)
    d = Distiller(policy, cfg, load_demos(policy, args.demos))
    if args.kept:
        d.replay = ChunkReplay.load(args.kept)
    gen = torch.Generator().manual_seed(args.seed + 1234)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0, losses = time.process_time(), []
    for step in range(1, args.steps + 1):
        batch = d.batch()
        for cam, img in batch["images"].items():
            pick = torch.rand(img.shape[0], generator=gen) < args.aug_prob
            aug = img[pick]
            if args.geom > 0:
                aug = warp(aug, 6.0 * args.geom, 0.15 * args.geom, 0.12 * args.geom, gen)
            if args.color > 0:
                aug = color_jitter(aug, args.color, gen)
            img = img.clone()
            img[pick] = aug
            batch["images"][cam] = img
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
