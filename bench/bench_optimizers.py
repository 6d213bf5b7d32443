"""Mechanic (no learning rate) against an Adam learning-rate grid for the distillation learner.

The distillation learner (``algorithm:=distill``, :mod:`mechanic_rl_ros.rl.online_distill`) is the one
that changes the diffusion policy's own weights. Every configuration here runs ``mechanic-rl
train-distill`` (the stack's learner object, headless) from the same checkpoint with the same
demonstrations and learner seeds, differing only in the optimizer: ``Mechanic(Adam(lr=1))`` against
``Adam(lr)`` for each ``lr`` of the grid (Cutkosky, Defazio and Mehta, NeurIPS 2023, compare Mechanic
with the best of such a grid). By default each run is the learner's offline stage alone (gradient steps
on the demonstrations before any episode, where its measured gain from ``lift_pretrained`` is), then
the saved policy alone on held-out reset seeds; ``--total-steps`` adds robot time after it.

Prints one line per run as it ends, then the table (success per learner seed, mean +- standard error
over seeds, final loss) and the verdict of issue 29's criterion: Mechanic's mean success >= the best
Adam point's within one standard error of their difference. Writes ``--out``/results.md,
results.json, optimizers.png (the loss over gradient steps, and the success of each configuration)
and every run's own directory. A run whose ``final.json`` exists is not run again, so an interrupted
bench resumes.

    .venv/bin/python bench/bench_optimizers.py       # about 48 min on 2 cores; runs/bench_optimizers/
"""
from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LOSS_LINE = re.compile(r"offline stage: (\d+)/\d+ gradient steps on the demonstrations \| loss ([0-9.eE+-]+|nan)")


def configurations(lrs: list[float]) -> list[tuple[str, list[str]]]:
    """(name, optimizer flags of train-distill) for Mechanic and each Adam learning rate."""
    return [("mechanic", ["--optimizer", "mechanic"])] + [
        (f"adam_{lr:g}", ["--optimizer", "adam", "--lr", f"{lr:g}"]) for lr in lrs]


def run_one(name: str, flags: list[str], seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One train-distill run (or its record, when it finished before); its figures."""
    out = Path(args.out) / f"{name}_s{seed}"
    log = out.parent / f"{out.name}.log"
    if not (out / "final.json").exists():
        cmd = [sys.executable, "-m", "mechanic_rl_ros.jobs.train_distill", "--checkpoint", args.checkpoint,
               "--demos", args.demos, "--total-steps", str(args.total_steps), "--offline-steps",
               str(args.offline_steps), "--seed", str(seed), "--final-eval-episodes", str(args.eval_episodes),
               "--eval-seed", str(args.eval_seed), "--threads", "1", "--out", str(out), *flags]
        out.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with open(log, "w") as fh:
            rc = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT).returncode
        if rc != 0:
            raise RuntimeError(f"{name} seed {seed}: train-distill exited {rc}; see {log}")
        print(f"  {name} seed {seed}: done in {time.perf_counter() - t0:.0f} s", flush=True)
    final = json.loads((out / "final.json").read_text())
    ev = final["final_eval"]
    losses = [(int(m.group(1)), float(m.group(2))) for m in LOSS_LINE.finditer(log.read_text())] \
        if log.exists() else []
    row = {"config": name, "seed": seed, "successes": ev["successes"], "episodes": ev["episodes"],
           "success": ev["success"], "last50": final["last50"], "episodes_online": final["episodes"],
           "mechanic_scale": final["mechanic_scale"], "losses": losses, "wall_s": final["wall_s"]}
    print(f"  {name} seed {seed}: {ev['successes']}/{ev['episodes']} "
          f"(final loss {losses[-1][1] if losses else float('nan'):.4g})", flush=True)
    return row


def mean_se(x: list[float]) -> tuple[float, float]:
    a = np.asarray(x, float)
    return float(a.mean()), float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else float("nan")


def summarise(rows: list[dict[str, Any]], names: list[str]) -> tuple[list[dict[str, Any]], str]:
    """Per configuration: success mean and SE over seeds; the Mechanic verdict."""
    table = []
    for name in names:
        mine = [r for r in rows if r["config"] == name]
        m, se = mean_se([r["success"] for r in mine])
        loss = [r["losses"][-1][1] for r in mine if r["losses"]]
        table.append({"config": name, "per_seed": [f"{r['successes']}/{r['episodes']}" for r in mine],
                      "mean": m, "se": se, "final_loss": float(np.mean(loss)) if loss else float("nan")})
    mech = table[0]
    best = max(table[1:], key=lambda t: t["mean"])
    margin = math.sqrt(mech["se"] ** 2 + best["se"] ** 2)
    ok = mech["mean"] >= best["mean"] - margin
    verdict = (f"Mechanic {mech['mean']:.1%} +- {mech['se']:.1%} against the best Adam point "
               f"({best['config']}) {best['mean']:.1%} +- {best['se']:.1%}: "
               f"{'within' if ok else 'NOT within'} one standard error of the difference ({margin:.1%})")
    return table, verdict


def plot(rows: list[dict[str, Any]], table: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for i, t in enumerate(table):
        curves = [r["losses"] for r in rows if r["config"] == t["config"] and r["losses"]]
        if curves:
            n = min(len(c) for c in curves)
            steps = [s for s, _ in curves[0][:n]]
            ax1.plot(steps, np.mean([[v for _, v in c[:n]] for c in curves], axis=0), label=t["config"],
                     color=f"C{i}", lw=2.5 if i == 0 else 1.2)
        seeds = [r["success"] for r in rows if r["config"] == t["config"]]
        ax2.bar(i, t["mean"], yerr=t["se"], color=f"C{i}", alpha=0.6, capsize=4)
        ax2.plot([i] * len(seeds), seeds, "k.", ms=6)
    ax1.set(xlabel="gradient step", ylabel="training loss (mean over seeds, last 100 steps)", yscale="log")
    if ax1.lines:
        ax1.legend(fontsize=8)
    else:  # the runs logged no loss (fewer than 100 gradient steps each)
        ax1.text(0.5, 0.5, "no loss logged (runs under 100 gradient steps)", ha="center", va="center",
                 transform=ax1.transAxes)
    ax2.set_xticks(range(len(table)), [t["config"] for t in table], rotation=30, fontsize=8)
    lo = min(r["success"] for r in rows)
    ax2.set(ylabel="success of the saved policy alone", ylim=(max(0.0, lo - 0.1), 1.0))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "lift_pretrained"),
                    help="the policy every run starts from")
    ap.add_argument("--demos", default=str(ROOT / "runs" / "demos_clean50"),
                    help="demonstrations of the learner (mechanic-rl collect --out); recorded from the scripted "
                         "expert (50 episodes, noise 0, seed 5000, as README's) when the directory does not exist")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench_optimizers"), help="output directory")
    ap.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-4, 1e-4, 3e-5], help="Adam's grid")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="learner seeds")
    ap.add_argument("--offline-steps", type=int, default=1000, help="gradient steps on the demonstrations")
    ap.add_argument("--total-steps", type=int, default=0, help="robot time after them, in control steps")
    ap.add_argument("--eval-episodes", type=int, default=100, help="episodes of the saved policy's evaluation")
    ap.add_argument("--eval-seed", type=int, default=100000, help="first held-out reset seed")
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time (one torch thread each)")
    args = ap.parse_args(argv)
    args.checkpoint, args.demos, args.out = (str(Path(p).resolve()) for p in (args.checkpoint, args.demos, args.out))
    if not Path(args.demos).exists():
        from mechanic_rl_ros.jobs.collect import CollectConfig, collect

        print(f"bench_optimizers: no demonstrations at {args.demos}; recording 50 of the scripted expert", flush=True)
        collect(CollectConfig(episodes=50, out=args.demos, noise=0.0, seed=5000, progress=False))

    configs = configurations(args.lrs)
    names = [n for n, _ in configs]
    todo = [(n, f, s) for s in args.seeds for n, f in configs]
    print(f"bench_optimizers: {len(configs)} configurations x {len(args.seeds)} seeds = {len(todo)} runs of "
          f"train-distill from {args.checkpoint}: {args.offline_steps} offline steps + {args.total_steps} control "
          f"steps, the saved policy on reset seeds {args.eval_seed}..{args.eval_seed + args.eval_episodes - 1}; "
          f"{args.jobs} at a time", flush=True)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda job: run_one(*job, args), todo))
    table, verdict = summarise(rows, names)

    lines = [f"| configuration | {' | '.join(f'seed {s}' for s in args.seeds)} | mean +- SE | final loss |",
             "|---|" + "---|" * len(args.seeds) + "---|---|"]
    for t in table:
        lines.append(f"| {t['config']} | {' | '.join(t['per_seed'])} | {t['mean']:.1%} +- {t['se']:.1%} | "
                     f"{t['final_loss']:.4g} |")
    text = "\n".join(lines + ["", verdict])
    print("\n" + text, flush=True)
    out = Path(args.out)
    title = (f"distillation learner from {Path(args.checkpoint).name}: {args.offline_steps} offline steps"
             + (f" + {args.total_steps} control steps" if args.total_steps else "")
             + f", {len(args.seeds)} seeds, {args.eval_episodes} held-out episodes each")
    trained_min = sum(float(r["wall_s"]) for r in rows) / 60  # resumed runs keep the time they took then
    (out / "results.md").write_text(f"{title}\n\n{text}\n\n`{' '.join(sys.argv)}`: this invocation "
                                    f"{time.perf_counter() - t0:.0f} s; the runs' train-distill "
                                    f"{trained_min:.1f} min summed\n")
    (out / "results.json").write_text(json.dumps({"table": table, "verdict": verdict, "runs": rows,
                                                  "args": vars(args)}, indent=1) + "\n")
    plot(rows, table, out / "optimizers.png", title)
    print(f"wrote {out / 'results.md'}, {out / 'optimizers.png'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
