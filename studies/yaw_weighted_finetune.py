"""`finetune-demos` with the loss on chosen action dimensions weighted up: does the policy then turn its hand?

`lift_demos` turns its hand to the cube's yaw with a slope of about 0.16 (the expert's: 1;
`studies/grasp_close_trace.py`) though its encoder's features hold the yaw at R^2 0.57
(`studies/yaw_probe.py`). The hand's yaw is mostly joint 7's (and joint 1's) target. This runs
`mechanic-rl finetune-demos` unchanged except that the DDPM loss's squared error on ``--dims`` (0-based
action indices) is multiplied by ``--weight`` (the mean over the others stays as it is). Every other option
goes to `finetune-demos`.

    PYTHONPATH=$PWD MUJOCO_GL=egl .venv/bin/python studies/yaw_weighted_finetune.py --dims 6 --weight 10 -- \\
        --data runs/demos_clean50 --steps 1000 --seed 0 --eval-episodes 400 --out runs/bcq7w10_s0
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dims", default="6", help="comma-separated action indices (0-6 joints, 7 gripper)")
    ap.add_argument("--weight", type=float, default=10.0)
    ap.add_argument("rest", nargs=argparse.REMAINDER, help="-- then finetune-demos' options")
    args = ap.parse_args(argv)
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest

    from mechanic_rl_ros.jobs import finetune_demos
    from mechanic_rl_ros.policy import policy as policy_module

    dims = [int(d) for d in args.dims.split(",")]

    def weighted_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        w = torch.ones(pred.shape[-1], dtype=pred.dtype)
        w[dims] = args.weight
        return ((pred - target) ** 2 * w).mean()

    class F:  # the policy module's torch.nn.functional, with mse_loss weighted
        def __getattr__(self, name):
            return weighted_mse if name == "mse_loss" else getattr(torch.nn.functional, name)

    policy_module.F = F()
    return finetune_demos.main(rest)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
