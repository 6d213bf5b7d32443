"""Step time of Mechanic(Adam) against plain Adam on CPU.

Identical ~4.7 M-parameter MLPs (256-1024-2048-1024-256), one trained by
``torch.optim.Adam`` and the others by ``Mechanic(torch.optim.Adam(lr=1.0))``
with its fused CPU kernels (``optim/fused_kernels.c``, the default) and with
torch ``_foreach`` kernels (``fused=False``), all with torch's default Adam
implementation. Steps are interleaved (A, M, M', A, M, M', ...) so that load
from other processes hits all alike, and the median of each is reported.
Two measurements:

* ``optimizer step``: ``opt.step()`` alone, gradients fixed (random);
* ``training step``: ``zero_grad`` + forward + backward + ``step`` on a batch.

Besides wall-clock medians it prints the median process CPU time per step,
which is less sensitive to other processes on a shared machine.

Usage::

    .venv/bin/python bench/bench_mechanic.py            # 2 threads, 40 steps each
    .venv/bin/python bench/bench_mechanic.py --threads 1 --steps 60 --batch 256
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from mechanic_rl_ros.optim import Mechanic, fused  # noqa: E402

WIDTHS = (256, 1024, 2048, 1024, 256)
VARIANTS = ("Adam", "Mechanic(Adam) fused", "Mechanic(Adam) torch kernels")


def make_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(WIDTHS[:-1], WIDTHS[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(WIDTHS) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def interleaved(steps_by_name, steps: int, warmup: int = 3, between=None):
    """Run the named steps round robin; return wall-clock and process-CPU seconds of each."""
    for _ in range(warmup):
        for step in steps_by_name.values():
            step()
        if between is not None:
            between()
    wall = {name: [] for name in steps_by_name}
    cpu = {name: [] for name in steps_by_name}
    for _ in range(steps):
        for name, step in steps_by_name.items():
            c0, t0 = time.process_time(), time.perf_counter()
            step()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
        if between is not None:
            between()
    return wall, cpu


def report(title: str, wall, cpu) -> dict:
    """Print medians and each variant's ratio to the first (Adam); return the wall ratios."""
    names = list(wall)
    base = names[0]
    med = {n: statistics.median(wall[n]) * 1e3 for n in names}
    cpu_med = {n: statistics.median(cpu[n]) * 1e3 for n in names}
    print(f"{title}")
    ratios = {}
    for n in names:
        line = (f"  {n:<28} median {med[n]:9.2f} ms wall (min {min(wall[n]) * 1e3:8.2f}),"
                f" {cpu_med[n]:9.2f} ms CPU")
        if n != base:
            ratios[n] = med[n] / med[base]
            paired = statistics.median(b / a for a, b in zip(wall[base], wall[n]))
            line += (f"   ratio to {base}: {ratios[n]:.3f} (paired {paired:.3f},"
                     f" CPU {cpu_med[n] / cpu_med[base]:.3f})")
        print(line)
    return ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not fused.available():
        print(f"note: Mechanic's fused kernels are not available ({fused.unavailable_reason()})")

    def optimizers(seed):
        models = {name: make_model(seed) for name in VARIANTS}
        opts = {"Adam": torch.optim.Adam(models["Adam"].parameters(), lr=1e-3)}
        for name, use_fused in (("Mechanic(Adam) fused", True), ("Mechanic(Adam) torch kernels", False)):
            if use_fused and not fused.available():
                del models[name]
                continue
            opts[name] = Mechanic(torch.optim.Adam(models[name].parameters(), lr=1.0), fused=use_fused)
        return models, opts

    models, opts = optimizers(0)
    n_params = sum(p.numel() for p in models["Adam"].parameters())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{n_params / 1e6:.2f} M parameters in {len(list(models['Adam'].parameters()))} tensors, "
          f"{args.steps} interleaved steps each")

    # Fixed random gradients whose sign flips between steps (untimed): a
    # constant gradient would be a linear loss, on which Mechanic's scale
    # rightly grows without bound.
    gen = torch.Generator().manual_seed(0)
    grads = []
    for params in zip(*(m.parameters() for m in models.values())):
        grad = torch.randn(params[0].shape, generator=gen) * 1e-3
        for p in params:
            p.grad = grad.clone()
            grads.append(p.grad)
    ratio_opt = report("optimizer step (opt.step() only)",
                       *interleaved({n: o.step for n, o in opts.items()}, args.steps,
                                    between=lambda: torch._foreach_neg_(grads)))

    models, opts = optimizers(1)
    x = torch.randn(args.batch, WIDTHS[0], generator=gen)
    y = torch.randn(args.batch, WIDTHS[-1], generator=gen)

    def train_step(model, opt):
        def run():
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
        return run

    ratio_train = report(f"training step (zero_grad + forward + backward + step, batch {args.batch})",
                         *interleaved({n: train_step(models[n], o) for n, o in opts.items()},
                                      args.steps))
    for name in ratio_opt:
        print(f"RESULT {name}: optimizer-step ratio {ratio_opt[name]:.3f}, "
              f"training-step ratio {ratio_train[name]:.3f} (target <= 1.25)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
