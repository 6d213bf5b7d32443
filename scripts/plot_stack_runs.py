"""Plot the stack's own success against robot minutes for several `make run` runs, with the held-out
evaluation of the critic each one saved, into one PNG, and print the acceptance figures.

    PYTHONPATH=$PWD .venv/bin/python scripts/plot_stack_runs.py OUT.png LABEL=RUN_DIR[,EVAL_DIR] [LABEL=RUN_DIR[,EVAL_DIR] ...]

RUN_DIR is a stack run directory (`make run ARGS="run_dir:=..."`: its episodes.csv); EVAL_DIR, optional,
holds the eval.json of `mechanic-rl eval --critic RUN_DIR/learner/critic --out EVAL_DIR`. Printed per run:
episodes, robot minutes, successes in all, over the last 50 and in blocks of 50, and the evaluation with
its Wilson 95 % interval.
"""
import csv
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mechanic_rl_ros.jobs.evaluate import wilson_interval as wilson  # noqa: E402

WINDOW = 50  # [episodes] the acceptance's "last 50"


def load_run(spec: str):
    label, _, dirs = spec.partition("=")
    run_dir, _, eval_dir = dirs.partition(",")
    with open(Path(run_dir) / "episodes.csv") as fh:
        episodes = list(csv.DictReader(fh))
    minutes = np.array([float(e["robot_min"]) for e in episodes])
    success = np.array([e["outcome"] == "success" for e in episodes], dtype=float)
    evaluation = None
    if eval_dir:
        record = json.loads((Path(eval_dir) / "eval.json").read_text())
        k, m = int(record["successes"]), int(record["episodes"])
        evaluation = (k, m, *wilson(k, m))
    return label, minutes, success, evaluation


def report(label, minutes, success, evaluation) -> str:
    n = len(success)
    blocks = [int(success[i:i + WINDOW].sum()) for i in range(0, n, WINDOW)]
    line = (f"{label}: {n} episodes in {minutes[-1]:.1f} robot min, {int(success.sum())}/{n} successes, "
            f"last {WINDOW}: {int(success[-WINDOW:].sum())}/{min(n, WINDOW)}, blocks of {WINDOW}: "
            f"{', '.join(map(str, blocks))}")
    if evaluation:
        k, m, lo, hi = evaluation
        line += f"; eval {k}/{m} = {100 * k / m:.1f} % (Wilson {100 * lo:.1f}-{100 * hi:.1f} %)"
    return line


def main(argv):
    if len(argv) < 2 or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    out, runs = argv[0], [load_run(a) for a in argv[1:]]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for j, (label, minutes, success, evaluation) in enumerate(runs):
        print(report(label, minutes, success, evaluation))
        rate = np.array([success[max(0, i - WINDOW + 1):i + 1].mean() for i in range(len(success))])
        ax.plot(minutes, rate, color=f"C{j}", label=f"{label}: stack, mean of last {WINDOW} episodes")
        if evaluation:
            k, m, lo, hi = evaluation
            y = k / m
            ax.errorbar([minutes[-1] + 0.3 * (j + 1)], [y], yerr=[[y - lo], [hi - y]], fmt="s", color=f"C{j}",
                        capsize=3, label=f"{label}: its critic, {m} held-out seeds")
    ax.axhline(0.95, color="gray", ls=":", lw=1)
    ax.axhline(0.90, color="gray", ls="--", lw=0.8)
    ax.set_xlabel("robot minutes (control steps / 600, at 10 Hz)")
    ax.set_ylabel("success rate")
    ax.set_ylim(0.5, 1.02)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("make run (the whole ROS 2 stack), selection learner, Mechanic")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
