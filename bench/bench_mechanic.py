"""Step time of Mechanic(Adam) against torch's Adam on CPU, at 1 and 2 threads.

Identical ~4.7 M-parameter MLPs (256-1024-2048-1024-256, 8 tensors, 18.9 MB
of float32 parameters), one per variant:

* ``Adam``: ``torch.optim.Adam`` with torch's default CPU implementation;
* ``Adam fused=True``: ``torch.optim.Adam(fused=True)``, torch's one-pass kernel;
* ``Mechanic(Adam)``: ``Mechanic(torch.optim.Adam(lr=1.0))`` as built by
  default: the two-pass fused Adam + Mechanic kernel (``optim/adam_fused.py``);
* ``Mechanic(Adam) torch kernels``: the same with ``fused=False``
  (``torch._foreach`` kernels around torch's Adam step).

Steps are interleaved (every variant at 1 thread, then at 2 threads, then
again) so that load from other processes hits all alike; each step touches
more memory than the L3 cache holds, so every variant starts from a cold
cache. Medians are reported, with each Mechanic variant's ratio to the two
Adams at the same thread count. Two measurements:

* ``optimizer step``: ``opt.step()`` alone, gradients fixed (random);
* ``training step``: ``zero_grad`` + forward + backward + ``step`` on a batch.

Besides wall-clock medians it prints the median process CPU time per step,
which is less sensitive to other processes on a shared machine.

Usage::

    .venv/bin/python bench/bench_mechanic.py                    # threads 1 and 2, 40 steps each
    .venv/bin/python bench/bench_mechanic.py --threads 1 2 --steps 60 --batch 256
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
VARIANTS = ("Adam", "Adam fused=True", "Mechanic(Adam)", "Mechanic(Adam) torch kernels")
BASELINES = ("Adam", "Adam fused=True")


def make_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(WIDTHS[:-1], WIDTHS[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(WIDTHS) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def make_optimizer(name: str, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = model.parameters()
    if name == "Adam":
        return torch.optim.Adam(params, lr=1e-3)
    if name == "Adam fused=True":
        return torch.optim.Adam(params, lr=1e-3, fused=True)
    return Mechanic(torch.optim.Adam(params, lr=1.0), fused=not name.endswith("torch kernels"))


def interleaved(steps_by_name, threads, steps: int, warmup: int = 3, between=None):
    """Run the named steps round robin at each thread count in turn; return
    wall-clock and process-CPU seconds keyed by (threads, name)."""
    wall = {(n, name): [] for n in threads for name in steps_by_name}
    cpu = {key: [] for key in wall}
    for i in range(warmup + steps):
        for n in threads:
            torch.set_num_threads(n)
            for name, step in steps_by_name.items():
                c0, t0 = time.process_time(), time.perf_counter()
                step()
                if i >= warmup:
                    wall[n, name].append(time.perf_counter() - t0)
                    cpu[n, name].append(time.process_time() - c0)
        if between is not None:
            between()
    return wall, cpu


def report(title: str, wall, cpu, threads, names) -> dict:
    """Print medians and each Mechanic variant's ratios to the Adams; return
    the wall-clock ratios keyed by (threads, name, baseline)."""
    print(title)
    ratios = {}
    for n in threads:
        med = {name: statistics.median(wall[n, name]) * 1e3 for name in names}
        cpu_med = {name: statistics.median(cpu[n, name]) * 1e3 for name in names}
        for name in names:
            line = (f"  {n} thread{'s' if n > 1 else ' '} {name:<30} median {med[name]:8.2f} ms wall"
                    f" (min {min(wall[n, name]) * 1e3:7.2f}), {cpu_med[name]:8.2f} ms CPU")
            for base in BASELINES:
                if name in BASELINES or base not in med:
                    continue
                ratios[n, name, base] = med[name] / med[base]
                paired = statistics.median(b / a for a, b in zip(wall[n, base], wall[n, name]))
                line += f"\n      / {base:<16} {ratios[n, name, base]:.3f} (paired {paired:.3f}," \
                        f" CPU {cpu_med[name] / cpu_med[base]:.3f})"
            print(line)
    return ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    if not fused.available():
        print(f"note: Mechanic's fused kernels are not available ({fused.unavailable_reason()})")

    def optimizers(seed):
        models = {name: make_model(seed) for name in VARIANTS}
        return models, {name: make_optimizer(name, models[name]) for name in VARIANTS}

    models, opts = optimizers(0)
    n_params = sum(p.numel() for p in models["Adam"].parameters())
    print(f"torch {torch.__version__}, threads {args.threads} (fused kernels: {fused.threading() or 'unavailable'}), "
          f"{n_params / 1e6:.2f} M parameters in "
          f"{len(list(models['Adam'].parameters()))} tensors, {args.steps} interleaved steps each, "
          f"load average {os.getloadavg()[0]:.2f} at start")

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
                       *interleaved({n: o.step for n, o in opts.items()}, args.threads,
                                    args.steps, between=lambda: torch._foreach_neg_(grads)),
                       args.threads, VARIANTS)

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
                                      args.threads, args.steps),
                         args.threads, VARIANTS)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    for n in args.threads:
        for base in BASELINES:
            print(f"RESULT {n} thread(s) Mechanic(Adam) / {base}: optimizer step "
                  f"{ratio_opt[n, 'Mechanic(Adam)', base]:.3f}, training step "
                  f"{ratio_train[n, 'Mechanic(Adam)', base]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
