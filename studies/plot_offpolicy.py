"""Plot success vs robot minutes of several off-policy runs (runs/X/episodes.csv + evals.csv) into one PNG.

    python studies/plot_offpolicy.py OUT.png LABEL=RUN_DIR [LABEL=RUN_DIR ...]
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def main(argv):
    out, runs = argv[0], [a.split("=", 1) for a in argv[1:]]
    fig, ax = plt.subplots(1, 2, figsize=(12, 4.2))
    for j, (label, d) in enumerate(runs):
        c = f"C{j}"
        ep = rows(f"{d}/episodes.csv")
        x = np.array([float(e["robot_min"]) for e in ep])
        s = np.array([float(e["success"]) for e in ep])
        ma = np.array([s[max(0, i - 19):i + 1].mean() for i in range(len(s))])
        ax[0].plot(x, ma, color=c, label=label)
        ev = rows(f"{d}/evals.csv")
        x = np.array([float(e["robot_min"]) for e in ev])
        y = np.array([float(e["success"]) for e in ev])
        lo = np.array([float(e["wilson_lo"]) for e in ev])
        hi = np.array([float(e["wilson_hi"]) for e in ev])
        n = [int(e["episodes"]) for e in ev]
        ax[1].errorbar(x + 0.08 * j, y, yerr=[y - lo, hi - y], fmt="o-", color=c, capsize=3,
                       label=f"{label} (last point: {n[-1]} episodes)")
    ax[0].set_title("training episodes (stochastic actor), mean of last 20")
    ax[1].set_title("deterministic eval, seeds 100000.. (32 episodes; final 200), Wilson 95 %")
    for a in ax:
        a.axhline(0.95, color="gray", ls=":", lw=1)
        a.set_xlabel("robot minutes (control steps / 600)")
        a.set_ylabel("success rate")
        a.set_ylim(-0.02, 1.02)
        a.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(out, dpi=90)


if __name__ == "__main__":
    main(sys.argv[1:])
