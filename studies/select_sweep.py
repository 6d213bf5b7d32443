"""Mechanic against an Adam learning-rate grid for the value-guided selection learner, same robot budget.

Runs ``mechanic-rl train-select`` once per (optimizer, seed): Mechanic(Adam) with no learning rate,
and Adam at each ``--lrs`` value, ``--seeds`` learner seeds each, all with the same budget in
control steps and the same final deterministic evaluation (``--final-eval-episodes`` reset seeds
from 100000). A run whose ``final.json`` exists is not run again, so the sweep can be stopped and
continued. Prints a table (final success per setting: mean and standard error over seeds) and the
verdict of the issue's test -- Mechanic's mean >= the best grid point's mean minus one standard
error -- and writes ``sweep.md``, ``sweep.json`` and ``sweep.png`` into ``--out``.

    PYTHONPATH=$PWD MUJOCO_GL=egl .venv/bin/python studies/select_sweep.py --out runs/select_sweep \\
        --total-steps 4500 --seeds 0 1 2 --jobs 2
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _settings(lrs: list[float]) -> list[tuple[str, list[str]]]:
    return [("Mechanic(Adam)", ["--optimizer", "mechanic"])] + \
        [(f"Adam {lr:g}", ["--optimizer", "adam", "--lr", repr(lr)]) for lr in lrs]


def _run(out: Path, flags: list[str]) -> dict:
    final = out / "final.json"
    if not final.is_file():
        out.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "mechanic_rl_ros.jobs.train_select", "--out", str(out), *flags]
        with open(out / "run.log", "w") as log:
            subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=True,
                           env={**os.environ, "PYTHONPATH": str(REPO), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")})
    return json.loads(final.read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-4, 1e-4, 3e-5])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--total-steps", type=int, default=4500, help="robot budget per run, control steps")
    ap.add_argument("--final-eval-episodes", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time (each uses one torch thread)")
    ap.add_argument("--extra", default="", help="more train-select flags for every run, one string")
    args = ap.parse_args(argv)
    out = Path(args.out)
    common = ["--total-steps", str(args.total_steps), "--final-eval-episodes", str(args.final_eval_episodes),
              "--eval-every", "0", "--threads", "1", *args.extra.split()]
    jobs = [(name, seed, out / f"{name.replace(' ', '_').replace('(', '').replace(')', '')}_s{seed}",
             [*flags, "--seed", str(seed), *common]) for name, flags in _settings(args.lrs) for seed in args.seeds]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        finals = list(pool.map(lambda j: _run(j[2], j[3]), jobs))
    rows: dict[str, list[float]] = {}
    for (name, seed, _, _), f in zip(jobs, finals):
        rows.setdefault(name, []).append(float(f["final_eval"]["success"]))
        print(f"{name:<16} seed {seed}: {f['final_eval']['successes']}/{f['final_eval']['episodes']}", flush=True)

    def mean_se(v: list[float]) -> tuple[float, float]:
        m = sum(v) / len(v)
        se = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1) / len(v)) if len(v) > 1 else float("nan")
        return m, se

    stats = {k: mean_se(v) for k, v in rows.items()}
    grid = {k: v for k, v in stats.items() if k != "Mechanic(Adam)"}
    best = max(grid, key=lambda k: grid[k][0])
    mech = stats["Mechanic(Adam)"]
    passed = mech[0] >= grid[best][0] - grid[best][1]
    lines = [f"| setting | final success (mean ± SE over {len(args.seeds)} seeds) | per seed |", "|---|---|---|"]
    for k, (m, se) in stats.items():
        lines.append(f"| {k} | {m:.1%} ± {se:.1%} | {', '.join(f'{x:.1%}' for x in rows[k])} |")
    verdict = (f"Mechanic {mech[0]:.1%} vs best grid point {best} {grid[best][0]:.1%} ± {grid[best][1]:.1%}: "
               f"{'PASS' if passed else 'FAIL'} (Mechanic >= best - 1 SE)")
    text = "\n".join(lines) + "\n\n" + verdict + "\n"
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.md").write_text(text)
    (out / "sweep.json").write_text(json.dumps({"rows": rows, "verdict": verdict, "passed": passed,
                                                "total_steps": args.total_steps}, indent=1) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = list(stats)
    ax.bar(range(len(names)), [stats[k][0] for k in names], yerr=[stats[k][1] for k in names], capsize=4,
           color=["tab:red"] + ["tab:blue"] * (len(names) - 1))
    for i, k in enumerate(names):
        ax.plot([i] * len(rows[k]), rows[k], "k.", ms=4)
    ax.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
    ax.set_ylabel(f"final deterministic success ({args.final_eval_episodes} seeds)")
    ax.set_title(f"selection learner, {args.total_steps} control steps = {args.total_steps / 600:.1f} robot min",
                 fontsize=9)
    ax.set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(out / "sweep.png", dpi=90)
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
