"""Does the policy's camera encoder see the cube's yaw? A linear probe of its features.

`lift_demos` barely turns its hand to the cube (`studies/grasp_close_trace.py`). Is the yaw missing from
what the encoder extracts, or there and unused? This fits a ridge regression from the scene encoder's 64
features (after the spatial softmax and its linear layer) of the first ``--frames`` frames of each
demonstration (before the hand reaches the cube) to the cube's yaw and its x and y, on four fifths of the
episodes, and reports R^2 and the error on the other fifth (whole episodes held out: one cube pose each).

    PYTHONPATH=$PWD .venv/bin/python studies/yaw_probe.py --checkpoint checkpoints/lift_demos \\
        --data runs/demos_clean200
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="checkpoints/lift_demos")
    ap.add_argument("--data", default="runs/demos_clean200", help="demonstrations recorded at the policy's image size")
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--ridge", type=float, default=1.0)
    args = ap.parse_args(argv)

    from mechanic_rl_ros.data.demos import load_episodes
    from mechanic_rl_ros.policy import DiffusionPolicy
    from mechanic_rl_ros.sim.expert import quat_yaw

    torch.set_num_threads(1)
    enc = DiffusionPolicy.from_checkpoint(args.checkpoint).eval().net.encoders["scene"]
    feats, targets, episode = [], [], []
    for i, ep in enumerate(load_episodes(args.data, cameras=["scene"])):
        n = min(args.frames, len(ep["action"]))
        img = torch.as_tensor(ep["images"]["scene"][:n]).float().div(255).permute(0, 3, 1, 2)
        with torch.no_grad():
            feats.append(enc(img).numpy())
        ts = ep["task_state"][:n]
        targets.append(np.column_stack([[quat_yaw(t[3:7]) for t in ts], ts[:, 0], ts[:, 1]]))
        episode += [i] * n
    x, y, episode = np.concatenate(feats), np.concatenate(targets), np.array(episode)
    test = episode % 5 == 0
    mx, sx, my = x[~test].mean(0), x[~test].std(0) + 1e-6, y[~test].mean(0)
    a, b = (x - mx) / sx, y - my
    w = np.linalg.solve(a[~test].T @ a[~test] + args.ridge * np.eye(a.shape[1]), a[~test].T @ b[~test])
    err = a[test] @ w - b[test]
    r2 = 1 - (err ** 2).sum(0) / ((b[test] - b[test].mean(0)) ** 2).sum(0)
    rmse = np.sqrt((err ** 2).mean(0))
    print(f"{args.checkpoint}: {int((~test).sum())} frames of {len(set(episode[~test]))} episodes to fit, "
          f"{int(test.sum())} of {len(set(episode[test]))} held out")
    print(f"  cube yaw: R^2 {r2[0]:.2f}, error {math.degrees(rmse[0]):.1f} deg (its spread {math.degrees(b[test, 0].std()):.1f} deg)")
    print(f"  cube x:   R^2 {r2[1]:.2f}, error {100 * rmse[1]:.2f} cm (spread {100 * b[test, 1].std():.2f} cm)")
    print(f"  cube y:   R^2 {r2[2]:.2f}, error {100 * rmse[2]:.2f} cm (spread {100 * b[test, 2].std():.2f} cm)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
