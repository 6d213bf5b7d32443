"""Study: does an exponential moving average of the trained weights (the EMA that pretraining keeps and
saves, Chi et al. 2023 Sec. IV-C) make the augmented offline stage cost the training scene less?

Runs the offline stage of ``--distill-config`` exactly as ``mechanic-rl train-distill --total-steps 0`` does
(the same learner, seed and batches), keeps an EMA of the trained parameters with pretraining's schedule
(decay 1 - (1 + step)^-0.75, at most 0.999), and saves both: ``<out>/raw`` (the last iterate, what
train-distill saves) and ``<out>/ema``. Evaluate each with ``mechanic-rl eval --checkpoint``.

    PYTHONPATH=$PWD .venv/bin/python studies/ema_offline.py --seed 1 --out runs/ema_offline_s1
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="checkpoints/lift_demos")
    ap.add_argument("--demos", default="runs/demos_clean50")
    ap.add_argument("--distill-config", default="config/distill_augmented.yaml")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from mechanic_rl_ros.jobs.pretrain import EMA
    from mechanic_rl_ros.rl.online_distill import OnlineDistill

    online = OnlineDistill.from_params({"checkpoint": args.checkpoint, "demos": str(Path(args.demos).resolve()),
                                        "distill_config": args.distill_config, "seed": args.seed})
    import copy
    ema = EMA(copy.deepcopy(online.policy.net), 0.75, 0.999, 1.0)
    t0 = time.perf_counter()
    while online.owed() > 0:
        online.step()
        ema.update(online.policy.net)
        if online.steps % 100 == 0:
            print(f"{online.steps}/{online.cfg.offline_steps} steps, decay {ema.decay():.4f}, "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
    out = Path(args.out)
    online.policy.save(out / "raw")
    online.policy.net.load_state_dict(ema.net.state_dict())
    online.policy.save(out / "ema")
    print(f"saved {out / 'raw'} and {out / 'ema'}")


if __name__ == "__main__":
    main()
