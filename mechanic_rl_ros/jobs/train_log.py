"""What ``train-rl`` writes while it runs: the per-iteration table (CSV + JSON) and the learning curve."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

LOG_FIELDS = ("iteration", "env_steps", "episodes", "train_success", "train_return", "eval_success",
              "eval_episodes", "actor_loss", "critic_loss", "approx_kl", "clip_fraction", "actor_scale",
              "critic_scale", "policy_version", "num_updates", "refused_stale_total", "explained_variance",
              "grad_steps", "kl_stop", "collect_s", "update_s", "eval_s", "wall_s")


def write_logs(out: Path, rows: list[dict[str, Any]], t: Mapping[str, Any], learner_cfg: Any,
               plot: bool = True) -> None:
    """``log.csv``, ``log.json`` and (with ``plot``) ``learning_curve.png`` in ``out``."""
    with open(out / "log.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(LOG_FIELDS))
        w.writeheader()
        w.writerows(rows)
    (out / "log.json").write_text(json.dumps({"train": dict(t), "learner": learner_cfg.to_dict(), "rows": rows},
                                             indent=1) + "\n")
    if not plot:
        return
    title = (f"{t['task']}: actor {learner_cfg.actor_optimizer}"
             f"{'' if learner_cfg.actor_optimizer == 'mechanic' else ' ' + format(learner_cfg.actor_lr, 'g')}, "
             f"seed {t['seed']}")
    plot_curve(rows, out / "learning_curve.png", title)


def plot_curve(rows: list[Mapping[str, Any]], path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([r["env_steps"] for r in rows], dtype=float)
    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    tr = np.array([r["train_success"] for r in rows], dtype=float)
    ax[0].plot(steps, tr, ".-", alpha=0.5, label="train (stochastic)")
    ev = [(r["env_steps"], r["eval_success"]) for r in rows if not math.isnan(r["eval_success"])]
    if ev:
        ax[0].plot(*zip(*ev), "o-", label="eval (DDIM)")
    ax[0].set_xlabel("env steps")
    ax[0].set_ylabel("success rate")
    ax[0].set_ylim(-0.02, 1.02)
    ax[0].legend()
    ax[1].plot(steps, [r["actor_loss"] for r in rows], label="actor loss")
    ax[1].plot(steps, [r["critic_loss"] for r in rows], label="critic loss")
    ax[1].set_yscale("symlog", linthresh=1e-4)
    ax[1].set_xlabel("env steps")
    ax[1].legend()
    for key in ("actor_scale", "critic_scale"):
        y = np.array([r[key] for r in rows], dtype=float)
        if np.isfinite(y).any():
            ax[2].semilogy(steps, y, label=f"Mechanic {key}")
    ax[2].semilogy(steps, np.maximum([r["approx_kl"] for r in rows], 1e-12), label="approx KL")
    ax[2].set_xlabel("env steps")
    ax[2].legend()
    if title:
        fig.suptitle(title)
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.12, top=0.9, wspace=0.25)
    fig.savefig(path, dpi=90)
    plt.close(fig)
