"""Step time of Mechanic(Adam) against plain Adam on CPU.

Two identical ~4.7 M-parameter MLPs (256-1024-2048-1024-256), one trained by
``torch.optim.Adam`` and one by ``Mechanic(torch.optim.Adam(lr=1.0))``, both
with torch's default Adam implementation. Steps of the two are interleaved
(A, M, A, M, ...) so that load from other processes hits both alike, and the
median of each is reported. Two measurements:

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
from mechanic_rl_ros.optim import Mechanic  # noqa: E402

WIDTHS = (256, 1024, 2048, 1024, 256)


def make_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(WIDTHS[:-1], WIDTHS[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(WIDTHS) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def interleaved(step_a, step_b, steps: int, warmup: int = 3, between=None):
    """Alternate the two steps; return wall-clock and process-CPU seconds of each."""
    for _ in range(warmup):
        step_a()
        step_b()
        if between is not None:
            between()
    wall_a, wall_b, cpu_a, cpu_b = [], [], [], []
    for _ in range(steps):
        c0, t0 = time.process_time(), time.perf_counter()
        step_a()
        c1, t1 = time.process_time(), time.perf_counter()
        step_b()
        c2, t2 = time.process_time(), time.perf_counter()
        wall_a.append(t1 - t0)
        wall_b.append(t2 - t1)
        cpu_a.append(c1 - c0)
        cpu_b.append(c2 - c1)
        if between is not None:
            between()
    return wall_a, wall_b, cpu_a, cpu_b


def report(title: str, wall_a, wall_b, cpu_a, cpu_b) -> float:
    med_a = statistics.median(wall_a) * 1e3
    med_b = statistics.median(wall_b) * 1e3
    cpu_ma = statistics.median(cpu_a) * 1e3
    cpu_mb = statistics.median(cpu_b) * 1e3
    pair = statistics.median(b / a for a, b in zip(wall_a, wall_b))
    print(f"{title}")
    print(f"  Adam            median {med_a:9.2f} ms wall (min {min(wall_a) * 1e3:8.2f}),"
          f" {cpu_ma:9.2f} ms CPU")
    print(f"  Mechanic(Adam)  median {med_b:9.2f} ms wall (min {min(wall_b) * 1e3:8.2f}),"
          f" {cpu_mb:9.2f} ms CPU")
    print(f"  ratio of wall medians Mechanic/Adam = {med_b / med_a:.3f}"
          f"   (paired {pair:.3f}, CPU {cpu_mb / cpu_ma:.3f})")
    return med_b / med_a


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model_a, model_b = make_model(), make_model()
    n_params = sum(p.numel() for p in model_a.parameters())
    adam = torch.optim.Adam(model_a.parameters(), lr=1e-3)
    mech = Mechanic(torch.optim.Adam(model_b.parameters(), lr=1.0))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{n_params / 1e6:.2f} M parameters in {len(list(model_a.parameters()))} tensors, "
          f"{args.steps} interleaved steps each")

    # Fixed random gradients whose sign flips between steps (untimed): a
    # constant gradient would be a linear loss, on which Mechanic's scale
    # rightly grows without bound.
    gen = torch.Generator().manual_seed(0)
    grads = []
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        grad = torch.randn(pa.shape, generator=gen) * 1e-3
        pa.grad, pb.grad = grad.clone(), grad.clone()
        grads += [pa.grad, pb.grad]
    ratio_opt = report("optimizer step (opt.step() only)",
                       *interleaved(adam.step, mech.step, args.steps,
                                    between=lambda: torch._foreach_neg_(grads)))

    model_a, model_b = make_model(1), make_model(1)
    adam = torch.optim.Adam(model_a.parameters(), lr=1e-3)
    mech = Mechanic(torch.optim.Adam(model_b.parameters(), lr=1.0))
    x = torch.randn(args.batch, WIDTHS[0], generator=gen)
    y = torch.randn(args.batch, WIDTHS[-1], generator=gen)

    def train_step(model, opt):
        def run():
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
        return run

    ratio_train = report(f"training step (zero_grad + forward + backward + step, batch {args.batch})",
                         *interleaved(train_step(model_a, adam), train_step(model_b, mech),
                                      args.steps))
    print(f"RESULT optimizer-step ratio {ratio_opt:.3f}, training-step ratio {ratio_train:.3f} "
          f"(target <= 1.25)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
