"""Study: after a recovery run under a changed scene, does a short pass on the demonstrations as recorded
(the training scene) and the run's kept chunks (the changed scene), with no colour jitter and no warp, give
back the training scene without giving up the changed one?

Loads the policy a stack run saved (``<run>/learner/policy``) and what its learner kept
(``<run>/learner/kept.npz``: the chunks of successful episodes and the operator's corrections), trains the
camera encoder and the denoiser's decoder half for ``--steps`` Mechanic steps on batches that are half
demonstrations and half kept chunks (the distillation learner's own batches, the pretraining shift of 4 px
the only augmentation), and saves the policy to ``<out>/policy``. No robot time: the data are the run's.
Evaluate with ``mechanic-rl eval --checkpoint <out>/policy`` on both scenes.

    PYTHONPATH=$PWD .venv/bin/python studies/consolidate.py --run runs/rec_narrow_op3_s1 --steps 400 \
        --seed 1 --out runs/cons_s1
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a stack run directory with learner/policy and learner/kept.npz")
    ap.add_argument("--demos", default="runs/demos_clean50")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--demo-fraction", type=float, default=0.5, help="share of each batch from the demonstrations")
    ap.add_argument("--train-params", nargs="+", default=["encoders", "unet.up", "unet.upsample", "unet.final"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from mechanic_rl_ros.policy import DiffusionPolicy
    from mechanic_rl_ros.rl.distill import ChunkReplay, DistillConfig, Distiller
    from mechanic_rl_ros.rl.online_distill import load_demos

    run = Path(args.run) / "learner"
    policy = DiffusionPolicy.from_checkpoint(run / "policy").eval()
    cfg = DistillConfig(train_params=tuple(args.train_params), batch_size=args.batch_size, seed=args.seed,
                        demo_fraction=args.demo_fraction, augment_pad=4)
    d = Distiller(policy, cfg, load_demos(policy, args.demos))
    d.replay = ChunkReplay.load(run / "kept.npz")
    print(f"{len(d.replay)} kept chunks from {run / 'kept.npz'}", flush=True)
    t0, losses = time.process_time(), []
    for step in range(1, args.steps + 1):
        losses.append(d.step(d.batch())["actor_loss"])
        if step % 100 == 0:
            print(f"step {step} loss {sum(losses[-100:]) / 100:.4f} scale {d.scale:.3g} "
                  f"cpu {time.process_time() - t0:.0f} s", flush=True)
    out = Path(args.out)
    policy.save(out / "policy")
    (out / "record.json").write_text(json.dumps({"args": vars(args), "cpu_s": round(time.process_time() - t0, 1),
                                                 "scale": d.scale, "losses": losses}, indent=1))
    print(f"saved {out / 'policy'}", flush=True)


if __name__ == "__main__":
    main()
