"""Headless off-policy fine-tuning: noise-space SAC (:mod:`.steer`) over the frozen diffusion policy.

Every decision, each of ``num_envs`` simulated FR3s computes the frozen policy's observation
features, the actor picks the initial noise x_K, deterministic DDIM from x_K gives the action
chunk, and the chunk's T_a actions run in the simulator (sparse reward: 1 on success). The
decisions go into a bounded replay buffer; after every round of ``num_envs`` decisions the learner
makes ``utd`` gradient steps per new decision. The first ``warmup_steps`` control steps use
x_K ~ N(0, I) clipped to the actor's bound (the pretrained policy as it is).
An episode that reaches the time limit without success counts as terminal with value 0
(``truncation_terminal``): the critic does not see the time, and bootstrapping through the
last state of a failed episode let every failure inherit the value of a success (Q pinned at
the clip, see docs/offpolicy.md).

Robot time is counted in control steps (10 Hz): robot minutes = control steps / 600.

Outputs in ``--out``: ``episodes.csv`` (one row per training episode), ``evals.csv``
(deterministic evaluations: x_K = b tanh(mu(features)), reset seeds ``eval_seed + j``),
``updates.csv`` (learner statistics per round), ``learning_curve.png`` (success vs robot
minutes), ``config.yaml``, ``final.json`` and ``ckpt/`` (learner + replay + trainer state;
``--resume OUT/ckpt`` continues from it, with fresh episodes).

Defaults can be set in a YAML file (``--config``) with sections ``train:`` and ``learner:``;
command-line flags override it.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from mechanic_rl_ros.rl.persist import recover_dir, write_checkpoint
from mechanic_rl_ros.rl.replay import ReplayBuffer
from mechanic_rl_ros.rl.steer import SteerConfig, SteerLearner

TRAIN_DEFAULTS: dict[str, Any] = {
    "task": "lift", "checkpoint": "checkpoints/lift_pretrained", "out": None, "reward": "sparse",
    "num_envs": 8, "total_steps": 9000, "warmup_steps": 640, "utd": 20, "actor_every": 1,
    "replay_capacity": 100000, "eval_every": 3000, "eval_episodes": 50, "final_eval_episodes": 200,
    "eval_seed": 100000, "train_seed_base": 1000, "seed": 0, "threads": 1, "workers": 0, "save_every": 3000,
    "resume": None, "log_every": 4, "truncation_terminal": True,
}

EPISODE_FIELDS = ("episode", "env", "env_steps", "robot_min", "length", "success", "return")
EVAL_FIELDS = ("env_steps", "robot_min", "episodes", "successes", "success", "wilson_lo", "wilson_hi", "eval_s")
UPDATE_FIELDS = ("env_steps", "robot_min", "decisions", "replay", "grad_steps", "critic_loss", "actor_loss",
                 "q_mean", "q_pi", "alpha", "entropy", "actor_scale", "critic_scale", "alpha_scale",
                 "nonfinite_skipped", "train_success_20", "wall_s")


def robot_minutes(steps: int) -> float:
    return steps / 600.0


#: written last into a checkpoint directory: its presence marks the directory complete
CKPT_MARKER = "trainer.json"


def save_checkpoint(directory: str | Path, learner: SteerLearner, replay: ReplayBuffer,
                    trainer_state: Mapping[str, Any]) -> Path:
    """Learner, replay buffer and trainer state into ``directory``, all from the same moment.

    Written to ``<directory>.tmp`` and swapped in whole (:func:`~mechanic_rl_ros.rl.persist.replace_dir`),
    so Ctrl-C or SIGKILL at any point leaves the previous checkpoint loadable."""
    return write_checkpoint(directory, {"learner": learner.save, "replay.npz": replay.save}, dict(trainer_state),
                            CKPT_MARKER)


def load_checkpoint(directory: str | Path) -> tuple[SteerLearner, ReplayBuffer, dict[str, Any]]:
    """(learner, replay, trainer state) of :func:`save_checkpoint`; a save cut short between its
    renames is taken back first (:func:`~mechanic_rl_ros.rl.persist.recover_dir`)."""
    d = Path(directory)
    recover_dir(d, CKPT_MARKER)
    if not (d / CKPT_MARKER).is_file():
        raise FileNotFoundError(f"{d}: no off-policy checkpoint here (expected {CKPT_MARKER}, learner/, replay.npz)")
    return (SteerLearner.load(d / "learner"), ReplayBuffer.load(d / "replay.npz"),
            json.loads((d / CKPT_MARKER).read_text()))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mechanic-rl train-offpolicy",
                                 description=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="YAML file with train: and learner: sections (defaults below)")
    g = ap.add_argument_group("run")
    g.add_argument("--checkpoint", help=f"frozen pretrained policy (default {TRAIN_DEFAULTS['checkpoint']})")
    g.add_argument("--out", help="output directory (logs, curve, checkpoint)")
    g.add_argument("--seed", type=int, help="learner seed; training resets use train_seed_base + 100 * seed")
    g.add_argument("--total-steps", type=int, help="robot budget in control steps (600 = 1 robot minute)")
    g.add_argument("--warmup-steps", type=int, help="control steps with x_K ~ N(0, I) before learning")
    g.add_argument("--num-envs", type=int, help="simulated robots acting in parallel")
    g.add_argument("--utd", type=int, help="gradient steps per new decision (update-to-data ratio)")
    g.add_argument("--actor-every", type=int, help="actor/temperature step every N critic steps")
    g.add_argument("--eval-every", type=int, help="control steps between evaluations (0: only the final one)")
    g.add_argument("--eval-episodes", type=int, help="episodes of the intermediate evaluations")
    g.add_argument("--final-eval-episodes", type=int, help="episodes of the final evaluation (seeds eval_seed+j)")
    g.add_argument("--eval-seed", type=int)
    g.add_argument("--workers", type=int, help="simulator processes (0: in this process)")
    g.add_argument("--threads", type=int, help="torch threads")
    g.add_argument("--resume", help="OUT/ckpt of an earlier run to continue")
    g.add_argument("--eval-only", action="store_true",
                   help="only evaluate (the actor of --resume, or the pretrained policy with x_K ~ N(0, I))")
    g.add_argument("--eval-stochastic", action="store_true",
                   help="with --eval-only --resume: sample x_K from the actor (seeded) instead of b tanh(mu)")
    g.add_argument("--quiet", action="store_true")
    ga = ap.add_argument_group("learner")
    ga.add_argument("--optimizer", choices=("mechanic", "adam"), help="all optimisers (default mechanic)")
    ga.add_argument("--lr", type=float, help="learning rate of every optimiser with --optimizer adam")
    ga.add_argument("--num-critics", type=int)
    ga.add_argument("--batch-size", type=int)
    ga.add_argument("--noise-bound", type=float, help="x_K in [-b, b] (with --latent-dim: the latent z in [-b, b])")
    ga.add_argument("--latent-dim", type=int, help="> 0: the actor picks this many numbers z, x_K = P z (fixed random P)")
    ga.add_argument("--target-entropy", type=float, help="per noise dimension")
    ga.add_argument("--hidden", type=int)
    ga.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="any train.X or learner.X entry, e.g. --set learner.gamma=0.95")
    return ap


def _coerce(v: str) -> Any:
    import yaml

    return yaml.safe_load(v)


def resolve_config(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    train, learner = dict(TRAIN_DEFAULTS), {}
    if args.config:
        import yaml

        data = yaml.safe_load(Path(args.config).read_text()) or {}
        train.update(data.get("train") or {})
        learner.update(data.get("learner") or {})
    for flag in ("checkpoint", "out", "seed", "total_steps", "warmup_steps", "num_envs", "utd", "actor_every",
                 "eval_every", "eval_episodes", "final_eval_episodes", "eval_seed", "workers", "threads", "resume"):
        if getattr(args, flag) is not None:
            train[flag] = getattr(args, flag)
    for flag in ("optimizer", "lr", "num_critics", "batch_size", "noise_bound", "latent_dim", "target_entropy",
                 "hidden"):
        if getattr(args, flag) is not None:
            learner[flag] = getattr(args, flag)
    for item in args.set:
        key, _, val = item.partition("=")
        section, _, name = key.partition(".")
        if section == "train":
            train[name] = _coerce(val)
        elif section == "learner":
            learner[name] = _coerce(val)
        else:
            raise ValueError(f"--set {item}: expected train.KEY=VALUE or learner.KEY=VALUE")
    unknown = set(train) - set(TRAIN_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown train keys: {sorted(unknown)}")
    if learner.get("optimizer") == "adam" and "lr" not in learner:
        raise ValueError("--optimizer adam needs --lr")
    learner.setdefault("seed", int(train["seed"]))
    return train, learner


# -------------------------------------------------------------------- acting
class NoisePolicy:
    """The frozen diffusion policy driven from a chosen initial noise."""

    def __init__(self, policy: Any):
        self.policy = policy
        c = policy.cfg
        self.shape = (c.pred_horizon, c.action_dim)

    @torch.no_grad()
    def features(self, histories: Sequence[Mapping[str, Any]]) -> torch.Tensor:
        from mechanic_rl_ros.control.history import stack_histories

        return self.policy.encode(stack_histories(list(histories)))

    @torch.no_grad()
    def actions(self, histories: Sequence[Mapping[str, Any]], noise: torch.Tensor,
                leads: Sequence[int] | None = None) -> np.ndarray:
        """[B, T_a, A] executable actions of deterministic DDIM from ``noise`` (``leads``: per history)."""
        from mechanic_rl_ros.control.history import stack_histories

        out = self.policy.sample(stack_histories(list(histories)), stochastic=False,
                                 x_init=noise.view(len(histories), *self.shape))
        pred = out.actions.cpu().numpy()
        if leads is None or not any(leads):
            return self.policy.executable(pred).astype(np.float64)
        return np.stack([self.policy.executable(pred[i], int(k)) for i, k in enumerate(leads)]).astype(np.float64)


class NoisePlanner:
    """The :data:`~mechanic_rl_ros.jobs.rollouts.BatchPlanner` of the off-policy learner.

    A batch of plan requests -> features -> ``choose(features) -> x_K`` -> deterministic DDIM.
    The features and x_K of the last batch stay in :attr:`feat` / :attr:`noise` (the trainer stores
    them as the decisions). ``known_feat``, where the caller has already encoded exactly the next
    batch's histories (the next-state features of the previous round), is used instead of encoding
    them again, once.
    """

    def __init__(self, npol: NoisePolicy, choose: Callable[[torch.Tensor], torch.Tensor]):
        self.npol, self.choose = npol, choose
        self.known_feat: torch.Tensor | None = None
        self.feat: torch.Tensor | None = None
        self.noise: torch.Tensor | None = None

    def __call__(self, reqs: list[Any]) -> list[Any]:
        from mechanic_rl_ros.control.chunk_loop import Chunk

        hs = [r.history for r in reqs]
        feat = self.known_feat if self.known_feat is not None else self.npol.features(hs)
        self.known_feat = None
        if feat.shape[0] != len(reqs):
            raise RuntimeError(f"{feat.shape[0]} known features for {len(reqs)} plan requests")
        noise = self.choose(feat)
        acts = self.npol.actions(hs, noise, [r.lead for r in reqs])
        self.feat, self.noise = feat, noise
        return [Chunk(acts[i], r.index) for i, r in enumerate(reqs)]


def _runner(policy: Any, task: str, num_envs: int, seed: int, workers: int, reward: str = "sparse") -> Any:
    from mechanic_rl_ros.sim.chunks import ChunkRunner

    cfg = policy.cfg
    return ChunkRunner(task=task, num_envs=num_envs, render=bool(cfg.cameras), cameras=cfg.cameras or ("scene",),
                       image_size=cfg.image_size, seed=seed, reward=reward, workers=workers)


def evaluate(np_policy: NoisePolicy, choose: Callable[[torch.Tensor], torch.Tensor], task: str, episodes: int,
             seed: int, num_envs: int, workers: int = 0, outcomes: list[int] | None = None) -> int:
    """Successes over ``episodes`` episodes reset with seeds ``seed + j``; ``choose(features) -> x_K``
    (``outcomes``: filled with each episode's 0/1, see :func:`~mechanic_rl_ros.jobs.rollouts.count_successes`)."""
    from mechanic_rl_ros.control.chunk_loop import ChunkLoop
    from mechanic_rl_ros.jobs.rollouts import count_successes

    n = max(1, min(num_envs, episodes))
    with _runner(np_policy.policy, task, n, seed, workers) as runner:
        loops = [ChunkLoop.for_policy(np_policy.policy) for _ in range(n)]
        return count_successes(runner, loops, NoisePlanner(np_policy, choose), episodes, seed, outcomes)


def base_chooser(noise_dim: int, seed: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """x_K ~ N(0, I) from a seeded generator: the pretrained policy as it is (deterministic DDIM)."""
    gen = torch.Generator().manual_seed(int(seed))
    return lambda f: torch.randn((f.shape[0], noise_dim), generator=gen)


# ------------------------------------------------------------------- logging
def _write_csv(path: Path, fields: Sequence[str], rows: list[Mapping[str, Any]]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(fields))
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in fields})


def plot_curve(episodes: list[Mapping[str, Any]], evals: list[Mapping[str, Any]], path: Path,
               title: str = "", window: int = 20) -> None:
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


def _fmt(x: Any) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}"


# --------------------------------------------------------------------- train
def train(t: Mapping[str, Any], learner_overrides: Mapping[str, Any],
          log: Callable[[str], None] = lambda m: print(m, flush=True)) -> dict[str, Any]:
    from mechanic_rl_ros.control.chunk_loop import ChunkLoop
    from mechanic_rl_ros.jobs.rollouts import plan_batch, run_blocks
    from mechanic_rl_ros.policy import DiffusionPolicy

    torch.set_num_threads(int(t["threads"]))
    policy = DiffusionPolicy.from_checkpoint(t["checkpoint"]).eval().requires_grad_(False)
    npol = NoisePolicy(policy)
    pc = policy.cfg
    out = Path(t["out"]) if t["out"] else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    episodes: list[dict[str, Any]] = []
    evals: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    env_steps, next_episode, wall0 = 0, 0, 0.0
    if t["resume"]:
        rd = Path(t["resume"])
        learner, replay, tj = load_checkpoint(rd)
        env_steps, next_episode, wall0 = tj["env_steps"], tj["next_episode"], tj["wall_s"]
        episodes, evals, updates = tj["episodes"], tj["evals"], tj["updates"]
        log(f"offpolicy: resumed from {rd} at {env_steps} control steps (episodes restart)")
    else:
        lc = {"feat_dim": policy.net.cond_dim, "noise_dim": pc.pred_horizon * pc.action_dim, **learner_overrides}
        learner = SteerLearner(SteerConfig.from_dict(lc))
        replay = ReplayBuffer(int(t["replay_capacity"]), learner.cfg.feat_dim, learner.cfg.noise_dim)
    lcfg = learner.cfg
    if out:
        import yaml

        (out / "config.yaml").write_text(yaml.safe_dump({"train": dict(t), "learner": lcfg.to_dict()},
                                                        sort_keys=False))
    rng = np.random.default_rng(lcfg.seed + 12345 + next_episode)
    n = int(t["num_envs"])
    total, warmup = int(t["total_steps"]), int(t["warmup_steps"])
    t0 = time.perf_counter() - wall0
    bound = lcfg.noise_bound
    warm_gen = torch.Generator().manual_seed(lcfg.seed + 777 + next_episode)
    opt_desc = "Mechanic(Adam(lr=1))" if lcfg.optimizer == "mechanic" else f"Adam(lr={lcfg.lr:g})"
    log(f"offpolicy: noise-space SAC on {t['checkpoint']} (frozen), task {t['task']}, {n} envs, budget {total} "
        f"control steps = {robot_minutes(total):.1f} robot min, warm-up {warmup}, UTD {t['utd']}, "
        f"{lcfg.num_critics} critics, x_K dim {lcfg.noise_dim} in [-{bound:g}, {bound:g}]"
        f"{f' (latent dim {lcfg.latent_dim})' if lcfg.latent_dim else ''}, {opt_desc}, "
        f"seed {lcfg.seed}")

    def run_eval(episodes_n: int) -> dict[str, Any]:
        te = time.perf_counter()
        wins = evaluate(npol, lambda f: learner.act(f, deterministic=True), t["task"], episodes_n,
                        int(t["eval_seed"]), n, int(t["workers"]))
        return eval_row(env_steps, wins, episodes_n, time.perf_counter() - te, log)

    def save() -> None:
        if not out:
            return
        _write_csv(out / "episodes.csv", EPISODE_FIELDS, episodes)
        _write_csv(out / "evals.csv", EVAL_FIELDS, evals)
        _write_csv(out / "updates.csv", UPDATE_FIELDS, updates)
        plot_curve(episodes, evals, out / "learning_curve.png",
                   f"noise-space SAC, {opt_desc}, seed {lcfg.seed}, UTD {t['utd']}")

    def checkpoint() -> None:
        if not out:
            return
        save_checkpoint(out / "ckpt", learner, replay, {
            "env_steps": env_steps, "next_episode": next_episode, "wall_s": time.perf_counter() - t0,
            "episodes": episodes, "evals": evals, "updates": updates})

    eval_every = int(t["eval_every"])
    if eval_every > 0 and env_steps == 0:
        evals.append(run_eval(int(t["eval_episodes"])))
    runner = _runner(policy, t["task"], n, int(t["train_seed_base"]) + 100 * lcfg.seed + next_episode,
                     int(t["workers"]), t["reward"])
    try:
        loops = [ChunkLoop.for_policy(policy) for _ in range(n)]
        ep_ret, ep_len = [0.0] * n, [0] * n
        for i, o in enumerate(runner.reset()):
            loops[i].reset(next_episode)
            loops[i].observe(o)
            next_episode += 1
        choice: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
        planner = NoisePlanner(npol, lambda f: choice["now"](f))
        planner.known_feat = npol.features([loop.history.stacked() for loop in loops])
        next_eval = (env_steps // eval_every + 1) * eval_every if eval_every > 0 else None
        next_save = (env_steps // int(t["save_every"]) + 1) * int(t["save_every"]) if t["save_every"] else None
        rounds = 0
        last_stats: dict[str, float] = {}
        while env_steps < total:
            if env_steps < warmup:
                choice["now"] = lambda f: torch.randn((f.shape[0], lcfg.noise_dim), generator=warm_gen).clamp(
                    -bound, bound)
            else:
                choice["now"] = learner.act
            plan_batch(loops, planner)
            feat, noise = planner.feat, planner.noise
            results = run_blocks(runner, loops, range(n), reset_on_end=True)
            next_feat = npol.features([loop.history.stacked() for loop in loops])
            ended = []
            for i, (chunk, res) in enumerate(results):
                loop = loops[i]
                env_steps += res.steps
                ep_ret[i] += res.reward
                ep_len[i] += res.steps
                done = res.terminated or (res.truncated and bool(t["truncation_terminal"]))
                replay.add(feat[i].numpy(), noise[i].numpy(), res.reward, done, next_feat[i].numpy(),
                           loop.episode, chunk.index, res.steps)
                if res.terminated or res.truncated:
                    episodes.append({"episode": loop.episode, "env": i, "env_steps": env_steps,
                                     "robot_min": robot_minutes(env_steps), "length": ep_len[i],
                                     "success": int(res.success), "return": ep_ret[i]})
                    loop.reset(next_episode)
                    loop.observe(res.reset_obs)
                    ep_ret[i], ep_len[i] = 0.0, 0
                    next_episode += 1
                    ended.append(i)
            if ended:
                next_feat[ended] = npol.features([loops[i].history.stacked() for i in ended])
            planner.known_feat = next_feat
            rounds += 1
            if env_steps >= warmup and len(replay) > 0:
                agg: dict[str, list[float]] = {}
                for j in range(int(t["utd"]) * n):
                    st = learner.update(replay.sample(lcfg.batch_size, rng),
                                        update_actor=(j % int(t["actor_every"]) == 0))
                    for k, v in st.items():
                        agg.setdefault(k, []).append(v)
                last_stats = mean_stats(agg)
            recent = [e["success"] for e in episodes[-20:]]
            row = {"env_steps": env_steps, "robot_min": robot_minutes(env_steps), "decisions": replay.added,
                   "replay": len(replay), "grad_steps": learner.num_updates,
                   "nonfinite_skipped": learner.nonfinite_skipped,
                   "train_success_20": float(np.mean(recent)) if recent else float("nan"),
                   "wall_s": time.perf_counter() - t0,
                   **{k: last_stats.get(k, float("nan")) for k in UPDATE_FIELDS
                      if k in ("critic_loss", "actor_loss", "q_mean", "q_pi", "alpha", "entropy", "actor_scale",
                               "critic_scale", "alpha_scale")}}
            updates.append(row)
            if rounds % int(t["log_every"]) == 0 and not t.get("quiet"):
                log(f"{env_steps:6d} steps = {row['robot_min']:5.2f} robot min | episodes {len(episodes)} | "
                    f"train success (last 20) {_fmt(row['train_success_20'])} | critic {_fmt(row['critic_loss'])} "
                    f"Q {_fmt(row['q_mean'])} alpha {_fmt(row['alpha'])} H/dim {_fmt(row['entropy'])} | "
                    f"Mechanic scale a {_fmt(row['actor_scale'])} c {_fmt(row['critic_scale'])} | "
                    f"grad steps {learner.num_updates} (skipped {learner.nonfinite_skipped}) | "
                    f"{row['wall_s']:.0f} s")
            if next_eval is not None and env_steps >= next_eval and env_steps < total:
                evals.append(run_eval(int(t["eval_episodes"])))
                next_eval += eval_every
                save()
            if next_save is not None and env_steps >= next_save:
                checkpoint()
                next_save += int(t["save_every"])
    finally:
        runner.close()
    checkpoint()
    final = run_eval(int(t["final_eval_episodes"]))
    final["final"] = 1
    evals.append(final)
    save()
    return write_summary(out, env_steps, episodes, final, learner, replay, time.perf_counter() - t0)


def write_summary(out: Path | None, env_steps: int, episodes: list[Mapping[str, Any]], final: Mapping[str, Any],
                  learner: Any, replay: Any, wall_s: float, **extra: Any) -> dict[str, Any]:
    """A run's summary (budget used, training success, final evaluation, learner counters), also written
    to ``out/final.json``; shared by the off-policy trainers."""
    summary = {"env_steps": env_steps, "robot_min": robot_minutes(env_steps), "episodes": len(episodes),
               "train_success": float(np.mean([e["success"] for e in episodes])) if episodes else float("nan"),
               "final_eval": dict(final), **extra, "grad_steps": learner.num_updates,
               "nonfinite_skipped": learner.nonfinite_skipped, "replay": replay.counters(),
               "wall_s": wall_s, "learner": learner.cfg.to_dict()}
    if out:
        (out / "final.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    import os

    os.environ.setdefault("MUJOCO_GL", "egl")
    args = build_parser().parse_args(argv)
    t, learner = resolve_config(args)
    t["quiet"] = args.quiet
    if args.eval_only:
        from mechanic_rl_ros.policy import DiffusionPolicy
        from mechanic_rl_ros.jobs.evaluate import wilson_interval

        torch.set_num_threads(int(t["threads"]))
        policy = DiffusionPolicy.from_checkpoint(t["checkpoint"]).eval().requires_grad_(False)
        npol = NoisePolicy(policy)
        if t["resume"]:
            sl = load_checkpoint(t["resume"])[0]
            det = not args.eval_stochastic
            gen = torch.Generator().manual_seed(int(t["eval_seed"]))
            choose = (lambda f: sl.act(f, deterministic=det, generator=gen))
            what = f"{'deterministic' if det else 'stochastic'} actor of {t['resume']}"
        else:
            nd = policy.cfg.pred_horizon * policy.cfg.action_dim
            choose, what = base_chooser(nd, int(t["eval_seed"])), "pretrained policy, x_K ~ N(0, I)"
        k = int(t["final_eval_episodes"])
        te = time.perf_counter()
        wins = evaluate(npol, choose, t["task"], k, int(t["eval_seed"]), int(t["num_envs"]), int(t["workers"]))
        lo, hi = wilson_interval(wins, k)
        print(f"{what}: {wins}/{k} = {wins / k:.1%} (95 % Wilson {lo:.1%}-{hi:.1%}), seeds {t['eval_seed']}.. "
              f"{int(t['eval_seed']) + k - 1}, {time.perf_counter() - te:.0f} s", flush=True)
        return 0
    print_done(train(t, learner))
    return 0


def print_done(summary: Mapping[str, Any]) -> None:
    """The last line of a training run: budget used and the final deterministic evaluation."""
    f = summary["final_eval"]
    print(f"done: {summary['env_steps']} control steps = {summary['robot_min']:.2f} robot min, "
          f"{summary['episodes']} episodes; final deterministic eval {f['successes']}/{f['episodes']} = "
          f"{f['success']:.1%} (95 % Wilson {f['wilson_lo']:.1%}-{f['wilson_hi']:.1%})", flush=True)


if __name__ == "__main__":
    sys.exit(main())
