"""What the headless trainers write while they run.

``train-rl`` (DPPO): the per-iteration table (CSV + JSON) and its learning curve (:func:`write_logs`).
``train-select``: one row per training episode, per evaluation and per round of updates (:func:`write_csv`
with :data:`EPISODE_FIELDS`, :data:`EVAL_FIELDS`), success against robot minutes
(:func:`plot_success_curve`) and the run's summary (:func:`write_summary`). Robot time is counted in
control steps at 10 Hz: 600 control steps are one robot minute.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

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


# ------------------------------------------------------------------ train-select's run report
EPISODE_FIELDS = ("episode", "env", "env_steps", "robot_min", "length", "success", "return")
EVAL_FIELDS = ("env_steps", "robot_min", "episodes", "successes", "success", "wilson_lo", "wilson_hi", "eval_s")


def robot_minutes(steps: int) -> float:
    """Robot minutes of ``steps`` control steps at 10 Hz."""
    return steps / 600.0


def fmt(x: Any) -> str:
    """A statistic for a log line: three significant digits, ``nan`` for a missing one."""
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}"


def write_csv(path: Path, fields: Sequence[str], rows: list[Mapping[str, Any]]) -> None:
    """``rows`` as CSV with columns ``fields`` (a missing entry is left empty)."""
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(fields))
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in fields})


def plot_success_curve(episodes: list[Mapping[str, Any]], evals: list[Mapping[str, Any]], path: Path,
                       title: str = "", window: int = 20) -> None:
    """Training success (mean of the last ``window`` episodes) and the evaluations with their Wilson 95 %
    intervals, against robot minutes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if episodes:
        x = np.array([e["robot_min"] for e in episodes], float)
        s = np.array([e["success"] for e in episodes], float)
        ma = np.array([s[max(0, i - window + 1):i + 1].mean() for i in range(len(s))])
        ax.plot(x, ma, "-", alpha=0.6, label=f"training episodes (stochastic), mean of last {window}")
    if evals:
        x = np.array([e["robot_min"] for e in evals], float)
        y = np.array([e["success"] for e in evals], float)
        lo = np.array([e["wilson_lo"] for e in evals], float)
        hi = np.array([e["wilson_hi"] for e in evals], float)
        ax.errorbar(x, y, yerr=[y - lo, hi - y], fmt="o-", capsize=3, label="deterministic eval (Wilson 95 %)")
    ax.axhline(0.95, color="gray", ls=":", lw=1)
    ax.set_xlabel("robot minutes (control steps / 600)")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="lower right", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def eval_row(env_steps: int, wins: int, episodes_n: int, seconds: float,
             log: Callable[[str], None]) -> dict[str, Any]:
    """One ``evals.csv`` row (success with its Wilson 95 % interval, at ``env_steps``), logged."""
    from mechanic_rl_ros.jobs.evaluate import wilson_interval

    lo, hi = wilson_interval(wins, episodes_n)
    row = {"env_steps": env_steps, "robot_min": robot_minutes(env_steps), "episodes": episodes_n,
           "successes": wins, "success": wins / episodes_n, "wilson_lo": lo, "wilson_hi": hi, "eval_s": seconds}
    log(f"eval | {env_steps} steps = {row['robot_min']:.2f} robot min | success {wins}/{episodes_n} = "
        f"{row['success']:.1%} (95 % {lo:.1%}-{hi:.1%}) | {seconds:.0f} s")
    return row


def mean_stats(agg: Mapping[str, list[float]]) -> dict[str, float]:
    """Per statistic the mean over a round's updates, NaN entries (skipped updates) left out."""
    return {k: float(np.nanmean(v)) if not all(math.isnan(x) for x in v) else float("nan") for k, v in agg.items()}


def write_summary(out: Path | None, env_steps: int, episodes: list[Mapping[str, Any]], final: Mapping[str, Any],
                  learner: Any, replay: Any, wall_s: float, **extra: Any) -> dict[str, Any]:
    """A run's summary (budget used, training success, final evaluation, learner counters), also written
    to ``out/final.json``."""
    summary = {"env_steps": env_steps, "robot_min": robot_minutes(env_steps), "episodes": len(episodes),
               "train_success": float(np.mean([e["success"] for e in episodes])) if episodes else float("nan"),
               "final_eval": dict(final), **extra, "grad_steps": learner.num_updates,
               "nonfinite_skipped": learner.nonfinite_skipped, "replay": replay.counters(),
               "wall_s": wall_s, "learner": learner.cfg.to_dict()}
    if out:
        (out / "final.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def print_done(summary: Mapping[str, Any]) -> None:
    """The last line of a training run: budget used and the final deterministic evaluation."""
    f = summary["final_eval"]
    print(f"done: {summary['env_steps']} control steps = {summary['robot_min']:.2f} robot min, "
          f"{summary['episodes']} episodes; final deterministic eval {f['successes']}/{f['episodes']} = "
          f"{f['success']:.1%} (95 % Wilson {f['wilson_lo']:.1%}-{f['wilson_hi']:.1%})", flush=True)


class EpisodeBook:
    """The episodes of ``n`` simulated robots in a headless trainer: the length and return of each running
    episode, the ``episodes.csv`` rows (:data:`EPISODE_FIELDS`) of the ended ones, and the next episode id."""

    def __init__(self, n: int, next_episode: int = 0):
        self.length, self.ret = [0] * n, [0.0] * n
        self.rows: list[dict[str, Any]] = []
        self.next = int(next_episode)

    def start(self, loops: Sequence[Any], observations: Sequence[Any]) -> None:
        """Begin a new episode in every loop with its first observation."""
        for loop, o in zip(loops, observations):
            self.begin(loop, o)

    def begin(self, loop: Any, observation: Any) -> None:
        loop.reset(self.next)
        loop.observe(observation)
        self.next += 1

    def record(self, i: int, loop: Any, res: Any, env_steps: int, on_end: Callable[[int, bool], None]) -> None:
        """Robot ``i`` ran a block (``res``: steps, reward, terminated, truncated, success, reset_obs); at an
        episode's end ``on_end(episode, success)`` is called, its row written and the next episode begun."""
        self.length[i] += res.steps
        self.ret[i] += float(res.reward)
        if res.terminated or res.truncated:
            on_end(loop.episode, bool(res.success))
            self.rows.append({"episode": loop.episode, "env": i, "env_steps": env_steps,
                              "robot_min": robot_minutes(env_steps), "length": self.length[i],
                              "success": int(res.success), "return": self.ret[i]})
            self.length[i], self.ret[i] = 0, 0.0
            self.begin(loop, res.reset_obs)

