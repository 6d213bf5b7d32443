"""Figure of one recovery experiment (issue "when the world changes") over several learner seeds.

Left: the stack's own episodes against robot minutes, one line per seed: success and autonomous success
(mean of the last 20 episodes). Right: the operator's share of the control steps over the same window.
Dashed horizontal lines give, per seed, the saved policy evaluated alone under the shifted scene (the
ending rate); dotted lines the starting policy under the shifted scene, the starting policy on the
training scene and `lift_demos` under the shift (references).

    python studies/plot_recovery.py OUT.png --title TEXT \
        --run 0=runs/rec_s0:runs/ev_shift_s0/eval.json [--run 1=...] \
        --ref "offline stage, shifted=runs/ev_shift_offline/eval.json" [--ref ...]
"""
import argparse
import csv
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def rate(path):
    d = json.load(open(path))
    return d["successes"] / d["episodes"], f'{d["successes"]}/{d["episodes"]}'


def window(values, n=20):
    return np.array([values[max(0, i - n + 1):i + 1].mean() for i in range(len(values))])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--title", default="")
    ap.add_argument("--run", action="append", default=[], help="SEED=RUN_DIR:EVAL_JSON")
    ap.add_argument("--ref", action="append", default=[], help="LABEL=EVAL_JSON")
    a = ap.parse_args()
    fig, ax = plt.subplots(1, 2, figsize=(13, 4.4), gridspec_kw={"width_ratios": [2, 1]})
    for j, spec in enumerate(a.run):
        seed, rest = spec.split("=", 1)
        run_dir, ev = rest.split(":", 1)
        with open(f"{run_dir}/episodes.csv") as fh:
            ep = list(csv.DictReader(fh))
        x = np.array([float(e["robot_min"]) for e in ep])
        ok = np.array([e["outcome"] == "success" for e in ep], float)
        iv = np.array([int(e["intervened_steps"]) for e in ep], float)
        steps = np.array([int(e["steps"]) for e in ep], float)
        auto = ok * (iv == 0)
        share = np.array([iv[max(0, i - 19):i + 1].sum() / steps[max(0, i - 19):i + 1].sum()
                          for i in range(len(ep))])
        c = f"C{j}"
        end, txt = rate(ev)
        ax[0].plot(x, window(ok), color=c, label=f"seed {seed}: success (last 20)")
        ax[0].plot(x, window(auto), color=c, lw=0.8, alpha=0.6, label=f"seed {seed}: autonomous success")
        ax[0].axhline(end, color=c, ls="--", lw=1.2, label=f"seed {seed}: saved policy alone {txt}")
        ax[1].plot(x, share, color=c, label=f"seed {seed}")
    for k, spec in enumerate(a.ref):
        label, ev = spec.split("=", 1)
        r, txt = rate(ev)
        ax[0].axhline(r, color=f"C{len(a.run) + k}", ls=":", lw=1.4, label=f"{label} {txt}")
    ax[0].set_ylim(-0.02, 1.02)
    ax[0].set_ylabel("success rate")
    ax[0].set_title(a.title or "the stack's episodes")
    ax[0].legend(fontsize=6.5, loc="lower right", ncol=2)
    ax[1].set_ylim(-0.01, 0.5)
    ax[1].set_ylabel("operator's share of the control steps (last 20 episodes)")
    ax[1].set_title("interventions")
    ax[1].legend(fontsize=7)
    for x_ax in ax:
        x_ax.set_xlabel("robot minutes (control steps / 600)")
    fig.tight_layout()
    fig.savefig(a.out, dpi=90)


if __name__ == "__main__":
    main()
