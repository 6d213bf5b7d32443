"""Study: does distilling a policy's own successful episodes (plus the demonstrations) into its denoiser
lift it past what the demonstrations alone give?

Rolls the policy out on training reset seeds (one proposal per decision, x_K ~ N(0, I)), keeps the
successful episodes as extra demonstrations (optionally only the faster half), fine-tunes the policy on
demonstrations + successes with the pretraining loss and Mechanic (``DemoFinetuner``), and evaluates the
result alone on held-out reset seeds with the ``train-select --eval-only`` protocol. Writes
``OUT/study.json`` and ``OUT/policy`` (an ordinary checkpoint) and ``OUT/eval.json``.

    PYTHONPATH=$PWD MUJOCO_GL=egl .venv/bin/python studies/self_distill.py --checkpoint checkpoints/lift_demos \
        --demos runs/demos_clean50 --rollouts 150 --steps 1000 --eval-episodes 400 --out runs/sd_a
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def rollout_episodes(policy, task: str, n: int, seed: int, log) -> list[dict]:
    from mechanic_rl_ros.control.chunk_loop import ChunkLoop, run_episode
    from mechanic_rl_ros.policy.planner import PolicyPlanner
    from mechanic_rl_ros.sim.env import make_env

    c = policy.cfg
    env = make_env(task=task, render=True, cameras=tuple(c.cameras), image_size=c.image_size, seed=seed)
    planner = PolicyPlanner(policy, seed=seed)
    eps = []
    t0 = time.perf_counter()
    for i in range(n):
        rec: dict = {"images": {cam: [] for cam in c.cameras}, "qpos": [], "qvel": [], "gripper": [], "action": []}

        def on_action(o, a, rec=rec):
            for cam in c.cameras:
                rec["images"][cam].append(np.asarray(o["images"][cam], np.uint8))
            rec["qpos"].append(np.asarray(o["qpos"], np.float32))
            rec["qvel"].append(np.asarray(o.get("qvel", np.zeros(7)), np.float32))
            rec["gripper"].append(np.asarray(o["gripper"], np.float32).reshape(1))
            rec["action"].append(np.asarray(a, np.float32))

        r = run_episode(env, ChunkLoop.for_policy(policy), planner, seed=seed + i, on_action=on_action)
        ep = {"images": {k: np.stack(v) for k, v in rec["images"].items()},
              **{k: np.stack(rec[k]) for k in ("qpos", "qvel", "gripper", "action")},
              "task_state": np.zeros((len(rec["action"]), 0), np.float32), "success": bool(r.success),
              "task": task, "source": "rollout", "seed": seed + i}
        eps.append(ep)
        if (i + 1) % 10 == 0:
            ok = sum(e["success"] for e in eps)
            log(f"rollout {i + 1}/{n}: {ok} successes, {time.perf_counter() - t0:.0f} s")
    env.close()
    return eps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="checkpoints/lift_demos")
    ap.add_argument("--demos", default="runs/demos_clean50")
    ap.add_argument("--rollouts", type=int, default=150)
    ap.add_argument("--rollout-seed", type=int, default=200000)
    ap.add_argument("--fast-half", action="store_true", help="keep only successes no longer than the median")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-params", default="", help="comma-separated prefixes of policy.net parameters to "
                    "train (empty: all)")
    ap.add_argument("--eval-episodes", type=int, default=400)
    ap.add_argument("--eval-seed", type=int, default=100000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    from mechanic_rl_ros.data.demos import load_episodes
    from mechanic_rl_ros.jobs.finetune_demos import DemoFinetuner, demo_windows, evaluate_policy
    from mechanic_rl_ros.jobs.train_select import write_eval_record
    from mechanic_rl_ros.policy import DiffusionPolicy

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = lambda m: print(m, flush=True)  # noqa: E731
    policy = DiffusionPolicy.from_checkpoint(Path(args.checkpoint)).eval()
    demos = load_episodes(args.demos, cameras=policy.cfg.cameras)
    t0 = time.perf_counter()
    eps = rollout_episodes(policy, "lift", args.rollouts, args.rollout_seed, log)
    wins = [e for e in eps if e["success"]]
    lens = [len(e["action"]) for e in wins]
    if args.fast_half:
        med = float(np.median(lens))
        wins = [e for e in wins if len(e["action"]) <= med]
    steps = int(sum(len(e["action"]) for e in eps))
    log(f"rollouts: {sum(e['success'] for e in eps)}/{len(eps)} successes, {steps} control steps = "
        f"{steps / 600:.1f} robot min; keeping {len(wins)} (+{len(demos)} demonstrations)")
    ds = demo_windows(policy, list(demos) + wins)
    if args.train_params:
        prefixes = tuple(p for p in args.train_params.split(",") if p)
        n_on = 0
        for name, prm in policy.net.named_parameters():
            prm.requires_grad_(name.startswith(prefixes))
            n_on += prm.numel() if prm.requires_grad else 0
        log(f"training {n_on} parameters ({n_on * 4 / 1e6:.1f} MB) under {prefixes}")
    tuner = DemoFinetuner(policy, ds, seed=args.seed)
    losses = []
    for i in range(args.steps):
        losses.append(tuner.step())
        if (i + 1) % 100 == 0:
            log(f"step {i + 1}/{args.steps}: loss {np.nanmean(losses[-100:]):.4f} scale {tuner.scale:.3g} "
                f"{time.perf_counter() - t0:.0f} s")
    policy.save(out / "policy")
    outcomes: list[int] = []
    w = evaluate_policy(policy, "lift", args.eval_episodes, args.eval_seed, outcomes)
    write_eval_record(out, f"self-distilled {args.checkpoint}", w, args.eval_episodes, args.eval_seed, outcomes)
    res = {"args": vars(args), "rollout_successes": int(sum(e["success"] for e in eps)), "rollout_steps": steps,
           "kept": len(wins), "eval": [w, args.eval_episodes], "wall_s": time.perf_counter() - t0,
           "scale": tuner.scale}
    (out / "study.json").write_text(json.dumps(res, indent=1))
    log(f"eval {w}/{args.eval_episodes}; {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
