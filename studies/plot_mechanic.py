"""Plot Mechanic against Adam at several learning rates: docs/mechanic_vs_adam.png.

The problem is the regression fine-tuning task of
mechanic_rl_ros/optim/reference_problem.py (also asserted on by
test/test_mechanic_training.py): a 4-16-1 tanh MLP starts from 'pretrained'
weights and fits the noisy outputs of a perturbed copy (4096 points, minibatch
64, noise floor ~0.032). Three panels:

1. full-data loss vs step: Adam at lr 1e-4 ... 1e-1 and Mechanic(Adam(lr=1));
2. Mechanic(Adam(lr)) for base lr 1e-4 ... 10 (nearly the same curves);
3. the effective learning rate S * lr that Mechanic learned in panel 2, with
   the best Adam lr for reference; also Mechanic with weight_decay=0 at base
   lr 1e-4, to show the lambda term's share of the remaining lr dependence.

``--lambda-check`` also prints, for a from-scratch regression (random init,
teacher of the same shape, minibatch 32), the final loss and effective lr of
Mechanic at base lr 1e-4 / 1e-2 / 10 with weight_decay 1e-2 (default) and 0.

``--clip-check`` prints S over 3000 steps of the fine-tuning problem for
Mechanic(Adam) and Mechanic(SGD), with and without clip_grad_norm_(0.01).

Usage::

    .venv/bin/python studies/plot_mechanic.py [--out docs/mechanic_vs_adam.png] [--steps 1500]
    .venv/bin/python studies/plot_mechanic.py --lambda-check
    .venv/bin/python studies/plot_mechanic.py --clip-check
"""

from __future__ import annotations

import argparse
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "test"))  # reference_problem.py, a test fixture
from mechanic_rl_ros.optim import Mechanic  # noqa: E402
from reference_problem import (  # noqa: E402
    N, finetune_problem, full_loss, net, train)

EVERY = 25


def run(make_opt, problem, steps, batch=64, seed=3):
    """Train as reference_problem.train; return the steps recorded (every
    EVERY), the full-data loss and the effective lr S * lr at each."""
    start = net()
    start.load_state_dict(problem[2])
    marks, losses, eff = [0], [full_loss(start, problem)], []

    def scale_of(opt):
        if isinstance(opt, Mechanic):
            eff.append(opt.scale * opt.param_groups[0]["lr"])

    def make(params):
        opt = make_opt(params)
        scale_of(opt)  # before the first step
        return opt

    def record(opt, model, t):
        if t % EVERY == 0:
            marks.append(t)
            losses.append(full_loss(model, problem))
            scale_of(opt)

    train(make, problem, steps, batch, seed=seed, after_step=record)
    return marks, losses, eff


def lambda_check(steps: int = 1500, batch: int = 32) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(N, 4, generator=gen)
    torch.manual_seed(1)
    teacher = net()
    with torch.no_grad():
        for p in teacher.parameters():
            p.mul_(2.0)
        y = teacher(x)
        y = y / y.std() + 0.3 * torch.randn(N, 1, generator=gen)
    torch.manual_seed(2)
    init = net().state_dict()
    problem = (x, y, init)
    print(f"from-scratch regression, minibatch {batch}, {steps} steps (noise floor 0.09):")
    for wd in (1e-2, 0.0):
        for lr in (1e-4, 1e-2, 10.0):
            _, loss, eff = run(lambda p, lr=lr, wd=wd: Mechanic(torch.optim.Adam(p, lr=lr),
                                                                 weight_decay=wd),
                               problem, steps, batch=batch)
            print(f"  weight_decay={wd:<5g} base lr={lr:<6g} loss {loss[-1]:.4f}   "
                  f"effective lr {eff[-1]:.2e}")


def clip_check(steps: int = 3000, clip: float = 0.01) -> None:
    problem = finetune_problem()
    marks = (100, 400, 800, 1600, steps)
    print(f"fine-tuning problem, minibatch 64, {steps} steps; S at steps {marks}:")
    for name, base in (("Adam", torch.optim.Adam), ("SGD", torch.optim.SGD)):
        for max_norm in (None, clip):
            scales = []
            loss, _, norms = train(lambda p, base=base: Mechanic(base(p, lr=1.0)), problem,
                                   steps, 64, clip=max_norm,
                                   after_step=lambda opt, *_: scales.append(opt.scale))
            extra = ""
            if norms:
                late = sorted(norms[-200:])[100]
                extra = (f"  raw grad norm min {min(norms):.3f}, late median {late:.3f}, "
                         f"clip active {sum(n > max_norm for n in norms)}/{len(norms)}")
            label = "no clip" if max_norm is None else f"clip {max_norm:g}"
            print(f"  {name:4s} {label:9s} S " + " / ".join(f"{scales[m - 1]:.2e}" for m in marks)
                  + f"  final loss {loss:.4f}{extra}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "mechanic_vs_adam.png"))
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--lambda-check", action="store_true",
                        help="only print the weight_decay comparison on a from-scratch problem")
    parser.add_argument("--clip-check", action="store_true",
                        help="only print S with and without clip_grad_norm_")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.lambda_check:
        lambda_check(args.steps)
        return 0
    if args.clip_check:
        clip_check()
        return 0
    problem = finetune_problem()

    adam_lrs = (1e-4, 1e-3, 1e-2, 1e-1)
    mech_lrs = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
    adam = {lr: run(lambda p, lr=lr: torch.optim.Adam(p, lr=lr), problem, args.steps)
            for lr in adam_lrs}
    mech = {lr: run(lambda p, lr=lr: Mechanic(torch.optim.Adam(p, lr=lr)), problem, args.steps)
            for lr in mech_lrs}
    no_wd = run(lambda p: Mechanic(torch.optim.Adam(p, lr=1e-4), weight_decay=0.0),
                problem, args.steps)

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    cmap = plt.get_cmap("viridis")
    ax = axes[0]
    for i, (lr, (t, loss, _)) in enumerate(adam.items()):
        ax.plot(t, loss, color=cmap(i / len(adam)), lw=1.2, label=f"Adam lr={lr:g}")
    t, loss, _ = mech[1.0]
    ax.plot(t, loss, color="crimson", lw=2.5, label="Mechanic(Adam lr=1)")
    ax.set_title("Mechanic vs Adam at fixed learning rates")

    ax = axes[1]
    for i, (lr, (t, loss, _)) in enumerate(mech.items()):
        ax.plot(t, loss, color=cmap(i / len(mech)), lw=1.5, label=f"Mechanic(Adam lr={lr:g})")
    best_lr = min(adam, key=lambda lr: adam[lr][1][-1])
    ax.plot(adam[best_lr][0], adam[best_lr][1], "k--", lw=1.2, label=f"best Adam (lr={best_lr:g})")
    ax.set_title("Mechanic with misspecified base lr")
    for ax in axes[:2]:
        ax.set_yscale("log")
        ax.set_ylim(0.025, 0.2)
        ax.axhline(0.032, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("step")
        ax.set_ylabel("full-data MSE (dotted: noise floor)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")

    ax = axes[2]
    for i, (lr, (t, _, eff)) in enumerate(mech.items()):
        ax.plot(t, eff, color=cmap(i / len(mech)), lw=1.5, label=f"base lr={lr:g}")
    ax.plot(no_wd[0], no_wd[2], color=cmap(0.0), ls="--", lw=1.5,
            label="base lr=1e-4, weight_decay=0")
    ax.axhline(best_lr, color="k", ls="--", lw=1.0, label=f"best Adam lr={best_lr:g}")
    ax.set_yscale("log")
    ax.set_ylim(1e-4, 1e-1)
    ax.set_xlabel("step")
    ax.set_ylabel("effective lr = S * base lr")
    ax.set_title("Learned scale (effective learning rate)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")

    fig.suptitle("Regression fine-tuning, 4-16-1 MLP, minibatch 64, "
                 f"{args.steps} steps (studies/plot_mechanic.py)")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    print("final full-data loss:")
    for lr, (_, loss, _) in adam.items():
        print(f"  Adam lr={lr:<8g} {loss[-1]:.4f}")
    for lr, (_, loss, eff) in mech.items():
        print(f"  Mechanic(Adam lr={lr:<6g}) {loss[-1]:.4f}   effective lr {eff[-1]:.2e}")
    print(f"  Mechanic(Adam lr=1e-4, weight_decay=0) {no_wd[1][-1]:.4f}   "
          f"effective lr {no_wd[2][-1]:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
