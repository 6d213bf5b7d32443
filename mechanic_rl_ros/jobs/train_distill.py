"""Headless twin of the stack's distillation learner (``algorithm:=distill``, :mod:`mechanic_rl_ros.rl.online_distill`).

``num_envs`` simulated FR3s act with the policy as policy_node runs it under this algorithm: one
deterministic DDIM sample from x_K ~ N(0, I) per decision, from the weights last published. Each
decision (its observation history and predicted chunk) and each episode's outcome go to the stack's
own :class:`~mechanic_rl_ros.rl.online_distill.OnlineDistill`, from the same files
(config/distill.yaml, learner_node's publish schedule); after every round it makes the gradient steps
it owes, and every ``--publish-every`` steps the acting policy takes the trained weights, as
policy_node swaps them in. Robot time is counted in control steps (600 = one robot minute at 10 Hz);
training resets start at 1000 + 100 * seed, evaluation seeds at ``--eval-seed`` (held out).

Outputs in ``--out``: ``episodes.csv``, ``evals.csv``, ``learning_curve.png``, ``final.json``,
``learner/`` (the learner as learner_node saves it; ``learner/policy`` is an ordinary checkpoint) and
``eval.json`` (every episode of the final evaluation of the policy alone, for paired tests).

    mechanic-rl train-distill --checkpoint checkpoints/lift_demos --demos runs/demos_clean50 \\
        --total-steps 18000 --seed 0 --out runs/distill_s0      # 30 robot minutes
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from mechanic_rl_ros.jobs.train_log import (EPISODE_FIELDS, EVAL_FIELDS, EpisodeBook, eval_row, fmt, mean_stats,
                                            plot_success_curve, robot_minutes, write_csv)


class SamplePlanner:
    """The :data:`~mechanic_rl_ros.jobs.rollouts.BatchPlanner` of the distillation learner: one deterministic
    DDIM sample per request from x_K drawn from ``generator``; keeps the requests and predictions of the
    last batch (:attr:`reqs`, :attr:`pred` [B, T_p, A] real units) for the decisions."""

    def __init__(self, policy: Any, generator: torch.Generator):
        self.policy, self.generator = policy, generator
        self.reqs: list[Any] = []
        self.pred: np.ndarray | None = None

    @torch.no_grad()
    def __call__(self, reqs: list[Any]) -> list[Any]:
        from mechanic_rl_ros.control.chunk_loop import Chunk
        from mechanic_rl_ros.control.history import stack_histories

        pc = self.policy.cfg
        x = torch.randn((len(reqs), pc.pred_horizon, pc.action_dim), generator=self.generator)
        out = self.policy.sample(stack_histories([r.history for r in reqs]), stochastic=False, x_init=x)
        self.reqs, self.pred = list(reqs), out.actions.cpu().numpy()
        return [Chunk(self.policy.executable(self.pred[i], r.lead).astype(np.float64), r.index)
                for i, r in enumerate(reqs)]

    def decision(self, i: int, version: int) -> Any:
        """The :class:`Decision` of request ``i`` of the last batch, as policy_node sends it."""
        from mechanic_rl_ros.control.decision import Decision

        r = self.reqs[i]
        chain = self.policy.normalizer.action.normalize(torch.from_numpy(self.pred[i])).numpy()[None]
        return Decision(obs=r.history, chain=chain.astype(np.float32), chain_logprob=np.zeros(0),
                        policy_version=version, episode=r.episode, chunk=r.index)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mechanic-rl train-distill", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="checkpoints/lift_demos", help="the policy to start from")
    ap.add_argument("--demos", default="", help="demonstrations mixed into every batch (mechanic-rl collect --out, "
                    "or bags of the stack's topics); '' = none")
    ap.add_argument("--task", default="lift")
    ap.add_argument("--world", default=None, metavar="SPEC",
                    help="act and evaluate in a changed scene (as `mechanic-rl eval --world` and the stack's "
                         "world:=): a preset of config/worlds/, a world YAML file and/or field=value overrides; "
                         "default: the training scene")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--total-steps", type=int, default=18000, help="robot budget in control steps (600 = 1 min)")
    ap.add_argument("--num-envs", type=int, default=8, help="simulated robots acting in parallel")
    g = ap.add_argument_group("learner", "config/distill.yaml (or --distill-config); a flag given overrides it")
    g.add_argument("--distill-config", metavar="SPEC",
                   help="distillation settings: a YAML file and/or key=value overrides separated by spaces, e.g. "
                        "'config/distill_augmented.yaml augment_warp=0.5'; config/distill_align.yaml teaches the camera "
                        "encoder a changed scene before any robot time (default: config/distill.yaml, as the stack)")
    g.add_argument("--seed", type=int, default=0, help="learner seed; training resets start at 1000 + 100 * seed")
    g.add_argument("--train-params", nargs="+", metavar="PREFIX",
                   help="parameter-name prefixes of the policy network to train, e.g. encoders unet.up "
                        "unet.upsample unet.final (the encoder too: what a changed scene needs)")
    g.add_argument("--utd", type=float, help="gradient steps per kept decision")
    g.add_argument("--offline-steps", type=int, help="gradient steps on the demonstrations before acting")
    g.add_argument("--demo-fraction", type=float, help="share of every batch from the demonstrations")
    g.add_argument("--successful-demos-only", action="store_true", default=None,
                   help="skip demonstrations whose bag records a failure")
    g.add_argument("--optimizer", choices=("mechanic", "adam"))
    g.add_argument("--lr", type=float, help="only with --optimizer adam")
    g.add_argument("--publish-every", type=int, default=100, help="[gradient steps] between two weight swaps "
                   "of the acting policy (learner_node's weights_publish_every)")
    ap.add_argument("--eval-every", type=int, default=0, help="control steps between evaluations (0: final only)")
    ap.add_argument("--eval-episodes", type=int, default=50)
    ap.add_argument("--final-eval-episodes", type=int, default=400, help="episodes of the last evaluation of the "
                    "policy alone (0: none; evaluate the saved checkpoint with mechanic-rl eval instead)")
    ap.add_argument("--eval-seed", type=int, default=100000)
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    return ap


def train(args: argparse.Namespace, log: Callable[[str], None] = lambda m: print(m, flush=True)) -> dict[str, Any]:
    from mechanic_rl_ros.control.chunk_loop import ChunkLoop
    from mechanic_rl_ros.jobs.finetune_demos import evaluate_policy
    from mechanic_rl_ros.jobs.rollouts import plan_batch, run_blocks, sim_runner
    from mechanic_rl_ros.jobs.train_select import write_eval_record
    from mechanic_rl_ros.rl.online_distill import OnlineDistill
    from mechanic_rl_ros.sim.world import load_world

    if args.final_eval_episodes < 0:
        raise ValueError(f"--final-eval-episodes: got {args.final_eval_episodes}; expected an integer >= 0")
    torch.set_num_threads(args.threads)
    world = load_world(args.world)
    overrides = {"utd": args.utd, "offline_steps": args.offline_steps, "demo_fraction": args.demo_fraction,
                 "lr": args.lr, "successful_demos_only": args.successful_demos_only,
                 "train_params": tuple(args.train_params) if args.train_params else None}
    params = {"checkpoint": args.checkpoint, "demos": args.demos, "distill_config": args.distill_config,
              "seed": args.seed, "optimizer": args.optimizer, "weights_publish_every": args.publish_every,
              "overrides": overrides}
    online = OnlineDistill.from_params(params)
    acting = copy.deepcopy(online.policy).eval().requires_grad_(False)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n = args.num_envs
    planner = SamplePlanner(acting, torch.Generator().manual_seed(args.seed + 17))
    evals: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    where = "" if world.is_default() else f" in world {args.world!r}"
    log(f"train-distill: {online.ready_line()}; {n} robots{where}, budget {args.total_steps} control steps = "
        f"{robot_minutes(args.total_steps):.1f} robot min")
    version = 0

    stats: dict[str, list[float]] = {}  # of the steps since the last log line

    def learn(offline: bool = False) -> None:
        nonlocal version
        while online.owed() > 0:
            for k, v in online.step().stats.items():
                stats.setdefault(k, []).append(v)
            if offline and online.steps % 100 == 0:
                log(f"offline stage: {online.steps}/{online.cfg.offline_steps} gradient steps on the demonstrations "
                    f"| loss {fmt(float(np.mean(stats.get('actor_loss', [np.nan])[-100:])))} | Mechanic scale "
                    f"{fmt(online.distiller.scale)} | {time.perf_counter() - t0:.0f} s")
            if online.steps % online.publish_every == 0:
                p = online.payload()
                acting.load_partial(p.tensors)
                version = p.version

    def run_eval(k: int, outcomes: list[int] | None = None) -> dict[str, Any]:
        te = time.perf_counter()
        wins = evaluate_policy(acting, args.task, k, args.eval_seed, outcomes if outcomes is not None else [],
                               world=world)
        return eval_row(env_steps, wins, k, time.perf_counter() - te, log)

    def write_logs() -> None:
        write_csv(out / "episodes.csv", EPISODE_FIELDS, episodes)
        write_csv(out / "evals.csv", EVAL_FIELDS, evals)
        if episodes or evals:  # an offline stage alone has no curve to draw
            plot_success_curve(episodes, evals, out / "learning_curve.png",
                               f"distillation into the policy, {online.cfg.optimizer}, seed {args.seed}")

    env_steps = 0
    book = EpisodeBook(n)
    episodes = book.rows
    learn(offline=True)  # the offline stage, before the first episode
    runner = sim_runner(acting, args.task, n, 1000 + 100 * args.seed, world=world)
    try:
        loops = [ChunkLoop.for_policy(acting) for _ in range(n)]
        book.start(loops, runner.reset())
        next_eval = args.eval_every if args.eval_every > 0 else None
        rounds = 0
        while env_steps < args.total_steps:
            chunks = plan_batch(loops, planner)
            for i, loop in enumerate(loops):
                online.add_step(loop.episode, book.length[i], chunks[i].index, version, first=True,
                                decision=planner.decision(i, version))
            for i, (chunk, res) in enumerate(run_blocks(runner, loops, range(n), reset_on_end=True)):
                env_steps += res.steps
                book.record(i, loops[i], res, env_steps, online.end_episode)
            learn()
            rounds += 1
            if rounds % 10 == 0:
                mean = mean_stats(stats)
                stats.clear()
                recent = [e["success"] for e in episodes[-50:]]
                log(f"{env_steps:6d} steps = {robot_minutes(env_steps):5.2f} robot min | episodes {len(episodes)} | "
                    f"success (last 50) {fmt(float(np.mean(recent)) if recent else float('nan'))} | kept "
                    f"{len(online.distiller.replay)} | loss {fmt(mean.get('actor_loss', float('nan')))} | "
                    f"Mechanic scale {fmt(online.distiller.scale)} | grad steps {online.steps} | version {version} | "
                    f"{time.perf_counter() - t0:.0f} s")
            if next_eval is not None and env_steps >= next_eval:
                evals.append(run_eval(args.eval_episodes))
                next_eval += args.eval_every
                write_logs()
    finally:
        runner.close()
    if online.trained:  # the last steps too, as a stopping learner_node publishes at shutdown
        acting.load_partial(online.payload().tensors)
    online.save(out / "learner")
    final: dict[str, Any] | None = None
    if args.final_eval_episodes > 0:
        outcomes: list[int] = []
        final = run_eval(args.final_eval_episodes, outcomes)
        final["final"] = 1
        evals.append(final)
        write_eval_record(out, f"policy of train-distill {out} alone (one proposal, x_K ~ N(0, I)){where}",
                          final["successes"], args.final_eval_episodes, args.eval_seed, outcomes)
    write_logs()
    import json

    summary = {"env_steps": env_steps, "robot_min": robot_minutes(env_steps), "episodes": len(episodes),
               "train_success": float(np.mean([e["success"] for e in episodes])) if episodes else float("nan"),
               "last50": int(sum(e["success"] for e in episodes[-50:])), "final_eval": final,
               "grad_steps": online.steps, "kept": len(online.distiller.replay),
               "mechanic_scale": online.distiller.scale, "wall_s": time.perf_counter() - t0,
               "learner": online.cfg.to_dict(), "args": vars(args)}
    (out / "final.json").write_text(json.dumps(summary, indent=1) + "\n")
    alone = (f"the policy alone {final['successes']}/{final['episodes']} = {final['success']:.1%} on seeds "
             f"{args.eval_seed}..{args.eval_seed + final['episodes'] - 1}" if final is not None
             else "no final evaluation (--final-eval-episodes 0)")
    log(f"done: {env_steps} control steps = {summary['robot_min']:.2f} robot min, {len(episodes)} episodes "
        f"(last 50: {summary['last50']}/50), {online.steps} gradient steps; {alone}; checkpoint "
        f"{out / 'learner' / 'policy'}")
    return summary


def main(argv: list[str] | None = None) -> int:
    import os

    os.environ.setdefault("MUJOCO_GL", "egl")
    args = build_parser().parse_args(argv)
    try:
        train(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"mechanic-rl train-distill: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
