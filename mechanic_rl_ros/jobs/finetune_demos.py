"""``mechanic-rl finetune-demos``: fine-tune the pretrained diffusion policy on a few demonstrations of the task
on the robot (behaviour cloning), with the learning rate chosen by Mechanic.

Why: every sub-hour real-robot RL result starts from a handful of demonstrations recorded on the robot itself
(HIL-SERL: 20-30 teleoperated demonstrations mixed into every batch, RLPD; ConRFT: an offline stage on about
20 demonstrations before the online one). Here they go into the policy first. The shipped policy was cloned
from a noisy expert (70 % success) and its failures are the noisy expert's: grasps closed a few centimetres
off the cube (docs/learner.md, "What limits it"). A few clean demonstrations sharpen exactly that, which no selection among
the policy's own samples managed (docs/history.md, "The plateau from three sides").

What it does: the pretraining loss (DDPM simple loss, Ho et al. 2020 Eq. 14, with the policy's own
prediction target and random-shift augmentation) on every window of the demonstrations, the whole network
(encoder and denoiser) trained, the checkpoint's normaliser kept (the action and observation scales the
policy was pretrained with), ``Mechanic(Adam(lr=1))`` as the optimiser: no learning rate anywhere. A step
with a non-finite loss or gradient changes nothing and is counted. The result is an ordinary policy
checkpoint (same architecture id) that every other command and node takes as ``--checkpoint``.

Robot time: the demonstrations' control steps are the robot time this costs (a teleoperator drives the arm
for them); ``finetune.json`` records them (``demo_control_steps``, ``demo_robot_min`` at 10 Hz) so that a
budget that counts robot minutes counts them too. In simulation ``mechanic-rl collect --noise 0`` records
them with the scripted expert standing in for the teleoperator.

Outputs in ``--out``: the policy checkpoint (``config.json``, ``model.safetensors``), ``finetune.json``
(settings, data, loss history, Mechanic's scale), ``loss_curve.png`` and, unless ``--eval-episodes 0``,
``eval.json`` (deterministic evaluation of the policy alone, as ``train-select --eval-only``: reset seeds
``eval_seed + j``, one proposal per decision from a generator seeded with ``eval_seed``, every outcome).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from mechanic_rl_ros.jobs.train_log import robot_minutes
from mechanic_rl_ros.policy.dataset import demo_windows, pretraining_augment_pad  # noqa: F401  (demo_windows: API)


class DemoFinetuner:
    """Behaviour cloning of ``policy`` on a :class:`SequenceDataset` with ``Mechanic(Adam(lr=1))``
    (``optimizer="adam"``: plain Adam at ``lr``, for comparisons). Deterministic per ``seed``.

    With ``ema_decay`` > 0 a moving average of the trained weights (:class:`~mechanic_rl_ros.optim.ema.EMA`,
    its warm-up capped at ``ema_decay``) follows the steps, and :meth:`adopt_average` puts it into the policy
    at the end: the weights a diffusion policy is deployed with are an average (Chi et al. 2023, Sec. IV-C).
    On the lift task it narrows the spread between fine-tuning seeds without lifting their mean
    (docs/learner.md, "Demonstrations first")."""

    def __init__(self, policy: Any, dataset: Any, batch_size: int = 64, seed: int = 0, augment_pad: int = 4,
                 optimizer: str = "mechanic", lr: float = 1e-4, ema_decay: float = 0.0):
        from mechanic_rl_ros.optim import build_optimizer
        from mechanic_rl_ros.optim.ema import EMA

        if batch_size < 1:
            raise ValueError(f"batch_size: {batch_size}; expected an integer >= 1")
        if optimizer not in ("mechanic", "adam"):
            raise ValueError(f"optimizer: {optimizer!r}; expected mechanic or adam")
        self.policy, self.dataset = policy, dataset
        self.batch_size, self.augment_pad = int(batch_size), int(augment_pad)
        params = [p for p in policy.net.parameters() if p.requires_grad]  # a frozen part stays as it is
        self.opt = build_optimizer(optimizer, params, lr)
        self.params = params
        self.ema = EMA([p.detach().clone() for p in params], max_decay=ema_decay) if ema_decay else None
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator().manual_seed(int(seed))
        self.steps = 0
        self.nonfinite_skipped = 0

    @property
    def scale(self) -> float:
        from mechanic_rl_ros.optim import mechanic_scale

        return mechanic_scale(self.opt)

    def step(self) -> float:
        """One gradient step on a batch drawn with replacement; its loss (NaN if skipped). The network is left
        in eval mode."""
        net = self.policy.net.train()
        try:
            batch = self.dataset.get_batch(self.rng.integers(0, len(self.dataset), self.batch_size))
            loss = self.policy.compute_loss(batch, generator=self.gen, augment_pad=self.augment_pad)
            self.opt.zero_grad(set_to_none=True)
            if not torch.isfinite(loss):
                self.nonfinite_skipped += 1
                return float("nan")
            loss.backward()
            try:
                self.opt.step()  # Mechanic refuses a non-finite gradient without touching any state
            except ValueError:
                if all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in net.parameters()):
                    raise
                self.nonfinite_skipped += 1
                return float("nan")
            self.steps += 1
            if self.ema is not None:
                self.ema.update(self.params)
            return float(loss.detach())
        finally:
            net.eval()

    @torch.no_grad()
    def adopt_average(self) -> None:
        """Copy the moving average into the policy's weights (no-op without ``ema_decay``); training is over."""
        if self.ema is not None:
            for p, t in zip(self.params, self.ema.targets):
                p.copy_(t)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mechanic-rl finetune-demos", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="checkpoints/lift_pretrained", help="the policy to start from")
    ap.add_argument("--data", required=True, help="demonstrations (mechanic-rl collect --out, or recorded bags)")
    ap.add_argument("--episodes", type=int, default=50, help="use the first N episodes (default: 50; 0: all)")
    ap.add_argument("--steps", type=int, default=1000,
                    help="gradient steps (default: 1000, the recipe checkpoints/lift_demos is made with)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--augment-pad", type=int, default=None,
                    help="random-shift padding of the images [px] (default: the checkpoint's train_config, else 4)")
    ap.add_argument("--optimizer", choices=("mechanic", "adam"), default="mechanic",
                    help="mechanic: Mechanic(Adam(lr=1)), no learning rate; adam: Adam at --lr (comparisons)")
    ap.add_argument("--lr", type=float, default=1e-4, help="only with --optimizer adam")
    ap.add_argument("--ema-decay", type=float, default=0.0,
                    help="cap of the moving average of the weights that is saved (0: the last step's weights)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="output checkpoint directory")
    ap.add_argument("--eval-episodes", type=int, default=100, help="deterministic evaluation episodes (0: none)")
    ap.add_argument("--eval-seed", type=int, default=100000)
    ap.add_argument("--task", default="lift")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--log-every", type=int, default=50)
    return ap


def _augment_pad(checkpoint: Path, given: int | None) -> int:
    """``given``, else the checkpoint's pretraining pad (:func:`~mechanic_rl_ros.policy.dataset.pretraining_augment_pad`)."""
    return int(given) if given is not None else pretraining_augment_pad(checkpoint)


def evaluate_policy(policy: Any, task: str, episodes: int, seed: int, outcomes: list[int], world: Any = None) -> int:
    """Deterministic successes of the policy alone, the protocol of ``train-select --eval-only``, in
    ``world`` (None = the training scene)."""
    from mechanic_rl_ros.jobs.train_select import FrozenPolicy, evaluate, first_proposal

    with torch.no_grad():
        return evaluate(FrozenPolicy(policy), first_proposal, 1, task, episodes, seed, 8, outcomes, world=world)


def plot_losses(losses: list[float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    y = np.asarray(losses, dtype=float)
    ax.plot(np.arange(1, len(y) + 1), y, lw=0.6, alpha=0.4, label="batch loss")
    if len(y) >= 20:
        k = 20
        ax.plot(np.arange(k, len(y) + 1), np.convolve(np.nan_to_num(y), np.ones(k) / k, mode="valid"),
                lw=1.5, label="mean of 20")
    ax.set_yscale("log")
    ax.set_xlabel("gradient step")
    ax.set_ylabel("DDPM loss")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace, log: Callable[[str], None] = lambda m: print(m, flush=True)) -> dict[str, Any]:
    from mechanic_rl_ros.data.demos import load_episodes
    from mechanic_rl_ros.policy import DiffusionPolicy

    torch.set_num_threads(args.threads)
    if args.steps < 0:
        raise ValueError(f"--steps: {args.steps}; expected an integer >= 0")
    if not 0.0 <= args.ema_decay < 1.0:
        raise ValueError(f"--ema-decay: {args.ema_decay}; expected a number in [0, 1) (0: no average)")
    ckpt, out = Path(args.checkpoint), Path(args.out)
    policy = DiffusionPolicy.from_checkpoint(ckpt).eval()
    episodes = load_episodes(args.data, cameras=policy.cfg.cameras)
    if args.episodes > 0:
        episodes = episodes[: args.episodes]
    failed = sum(not bool(e.get("success", True)) for e in episodes)
    dataset = demo_windows(policy, episodes)
    demo_steps = int(sum(len(e["action"]) for e in episodes))
    pad = _augment_pad(ckpt, args.augment_pad)
    tuner = DemoFinetuner(policy, dataset, args.batch_size, args.seed, pad, args.optimizer, args.lr, args.ema_decay)
    opt_desc = "Mechanic(Adam), no learning rate" if args.optimizer == "mechanic" else f"Adam lr {args.lr:g}"
    log(f"finetune-demos: {ckpt} on {len(episodes)} demonstrations of {args.data} ({failed} not successful), "
        f"{demo_steps} control steps = {robot_minutes(demo_steps):.1f} robot min, {len(dataset)} windows; "
        f"{opt_desc}, batch {args.batch_size}, {args.steps} steps, augment pad {pad}"
        + (f", moving average (cap {args.ema_decay:g}) saved" if args.ema_decay else ""))
    losses: list[float] = []
    t0 = time.perf_counter()
    for i in range(args.steps):
        losses.append(tuner.step())
        if args.log_every > 0 and ((i + 1) % args.log_every == 0 or i + 1 == args.steps):
            recent = [v for v in losses[-args.log_every:] if math.isfinite(v)]
            log(f"step {i + 1}/{args.steps} | loss {np.mean(recent) if recent else float('nan'):.4f} (mean of last "
                f"{len(recent)}) | Mechanic scale {tuner.scale:.3g} | skipped {tuner.nonfinite_skipped} | "
                f"{time.perf_counter() - t0:.0f} s")
    tuner.adopt_average()
    out.mkdir(parents=True, exist_ok=True)
    policy.save(out)
    summary: dict[str, Any] = {
        "format": "mechanic_rl_ros.finetune_demos/1", "from_checkpoint": str(ckpt), "data": str(args.data),
        "episodes": len(episodes), "episodes_not_successful": failed, "demo_control_steps": demo_steps,
        "demo_robot_min": robot_minutes(demo_steps), "windows": len(dataset), "steps": tuner.steps,
        "nonfinite_skipped": tuner.nonfinite_skipped, "batch_size": args.batch_size, "augment_pad": pad,
        "optimizer": args.optimizer, "lr": args.lr if args.optimizer == "adam" else None, "seed": args.seed,
        "ema_decay": args.ema_decay,
        "mechanic_scale": tuner.scale, "wall_s": time.perf_counter() - t0, "losses": losses}
    (out / "finetune.json").write_text(json.dumps(summary, indent=1) + "\n")
    if losses:
        plot_losses(losses, out / "loss_curve.png", f"finetune-demos: {len(episodes)} demonstrations, {opt_desc}")
    if args.eval_episodes > 0:
        from mechanic_rl_ros.jobs.evaluate import wilson_interval
        from mechanic_rl_ros.jobs.train_select import write_eval_record

        outcomes: list[int] = []
        te = time.perf_counter()
        wins = evaluate_policy(policy, args.task, args.eval_episodes, args.eval_seed, outcomes)
        lo, hi = wilson_interval(wins, args.eval_episodes)
        log(f"eval: the fine-tuned policy alone {wins}/{args.eval_episodes} = {wins / args.eval_episodes:.1%} "
            f"(95 % Wilson {lo:.1%}-{hi:.1%}), seeds {args.eval_seed}..{args.eval_seed + args.eval_episodes - 1}, "
            f"{time.perf_counter() - te:.0f} s")
        write_eval_record(out, f"policy fine-tuned on {len(episodes)} demonstrations (one proposal, x_K ~ N(0, I))",
                          wins, args.eval_episodes, args.eval_seed, outcomes)
        summary["eval"] = {"successes": wins, "episodes": args.eval_episodes}
    log(f"done: {out} ({tuner.steps} steps, {summary['wall_s']:.0f} s of training)")
    return summary


def main(argv: list[str] | None = None) -> int:
    import os

    os.environ.setdefault("MUJOCO_GL", "egl")
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"mechanic-rl finetune-demos: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
