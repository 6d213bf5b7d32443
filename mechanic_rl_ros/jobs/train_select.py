"""Headless off-policy fine-tuning by value-guided selection (:mod:`mechanic_rl_ros.rl.selection`).

Each decision of each of ``num_envs`` simulated FR3s: the frozen policy's features are computed once,
``num_candidates`` initial noises x_K ~ N(0, I) are denoised (deterministic DDIM) into proposals, the
critic ensemble picks one (the first proposal until the critic has made a gradient step: the pretrained
policy as it is), and its T_a actions run in the simulator (sparse reward: 1 on success, a time-limit
failure is terminal). The learner is the stack's own
(:class:`~mechanic_rl_ros.rl.online_selection.OnlineSelection`, the object learner_node drives), fed the
same decisions, steps and rewards, from the same settings (config/select.yaml and learner_node's
config/learner.yaml; a flag given overrides its file): a decision enters the replay buffer once the
next decision's features and proposals are known (the max of the TD target runs over them), and after
every round the critic makes the gradient steps it owes, ``utd`` per stored decision after
``warmup_decisions``. Robot time is counted in control steps (600 = one robot minute
at 10 Hz). Deterministic evaluations (the critic's argmax over proposals drawn from a generator
seeded with ``eval_seed``, reset seeds ``eval_seed + j``) every ``eval_every`` control steps and at
the end.

Outputs in ``--out``: ``episodes.csv``, ``evals.csv`` (with ``outcomes`` of the final evaluation in
``final.json`` for paired comparisons), ``updates.csv``, ``learning_curve.png``, ``final.json``,
``ckpt/`` (the learner as learner_node saves it + trainer state, swapped in whole) and ``critic/`` (the trained critic
alone: ``critic.safetensors`` + ``select.json``, what ships in ``checkpoints/``). ``--eval-only``
evaluates ``--resume``'s critic (a ``ckpt/`` or a ``critic/``), without ``--resume`` the pretrained
policy (one proposal per decision), and writes ``eval.json`` with every episode's outcome into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from mechanic_rl_ros.jobs.train_log import (EPISODE_FIELDS, EVAL_FIELDS, EpisodeBook, eval_row, fmt, mean_stats,
                                            plot_success_curve, print_done, robot_minutes, write_csv, write_summary)
from mechanic_rl_ros.rl.learner import saved_algorithm
from mechanic_rl_ros.rl.online_selection import OnlineSelection, load_schedule
from mechanic_rl_ros.rl.persist import recover_dir, write_checkpoint
from mechanic_rl_ros.rl.selection import (SelectLearner, export_critic, load_exported_critic, load_select_config,
                                          policy_weights_id)

UPDATE_FIELDS = ("env_steps", "robot_min", "decisions", "replay", "grad_steps", "critic_loss", "q_mean",
                 "target_mean", "critic_scale", "nonfinite_skipped", "train_success_20", "wall_s")
CKPT_MARKER = "trainer.json"


class FrozenPolicy:
    """The frozen pretrained diffusion policy, as value-guided selection uses it: observation features once
    per decision, and deterministic DDIM from a given initial noise x_K."""

    def __init__(self, policy: Any):
        self.policy = policy
        c = policy.cfg
        self.shape = (c.pred_horizon, c.action_dim)

    @torch.no_grad()
    def features(self, histories: Sequence[Any]) -> torch.Tensor:
        return self.policy.encode(_stack(histories))

    @torch.no_grad()
    def actions(self, histories: Sequence[Any], noise: torch.Tensor,
                leads: Sequence[int] | None = None) -> np.ndarray:
        """[B, T_a, A] executable actions of deterministic DDIM from ``noise`` (``leads``: per history)."""
        out = self.policy.sample(_stack(histories), stochastic=False,
                                 x_init=noise.view(len(histories), *self.shape))
        pred = out.actions.cpu().numpy()
        if leads is None or not any(leads):
            return self.policy.executable(pred).astype(np.float64)
        return np.stack([self.policy.executable(pred[i], int(k)) for i, k in enumerate(leads)]).astype(np.float64)


def _stack(histories: Sequence[Any]) -> Any:
    from mechanic_rl_ros.control.history import stack_histories

    return stack_histories(list(histories))


class SelectPlanner:
    """The :data:`~mechanic_rl_ros.jobs.rollouts.BatchPlanner` of the selection learner.

    Per request: features (``known_feat`` once if the caller has them), N proposals from one batched
    deterministic DDIM, ``choose(features, proposals) -> index``. Keeps :attr:`feat` [B, F],
    :attr:`cands` [B, N, T_a * A] (normalised executed actions) and :attr:`idx` [B] of the last batch."""

    def __init__(self, npol: FrozenPolicy, num_candidates: int, generator: torch.Generator,
                 choose: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]):
        self.npol, self.n, self.generator, self.choose = npol, int(num_candidates), generator, choose
        self.known_feat: torch.Tensor | None = None
        self.feat = self.cands = self.idx = None

    @torch.no_grad()
    def __call__(self, reqs: list[Any]) -> list[Any]:
        from mechanic_rl_ros.control.chunk_loop import Chunk
        from mechanic_rl_ros.policy.planner import propose

        policy, n = self.npol.policy, self.n
        pc = policy.cfg
        b = len(reqs)
        feat = self.known_feat if self.known_feat is not None else self.npol.features([r.history for r in reqs])
        self.known_feat = None
        x = torch.randn((b * n, pc.pred_horizon, pc.action_dim), generator=self.generator)
        out, cands = propose(policy, feat, x, [r.lead for r in reqs])
        acts = out.actions.view(b, n, pc.pred_horizon, pc.action_dim).cpu().numpy()
        idx = self.choose(feat, cands, torch.tensor([r.index for r in reqs]))
        self.feat, self.cands, self.idx = feat, cands, idx
        return [Chunk(policy.executable(acts[i, int(idx[i])], r.lead).astype(np.float64), r.index)
                for i, r in enumerate(reqs)]


def write_eval_record(out: str | Path, what: str, wins: int, episodes: int, eval_seed: int,
                      outcomes: list[int]) -> Path:
    """``OUT/eval.json``: what was evaluated, successes of ``episodes`` on reset seeds ``eval_seed + j`` and every
    episode's outcome (for paired comparisons)."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    (d / "eval.json").write_text(json.dumps({"what": what, "successes": wins, "episodes": episodes,
                                             "eval_seed": eval_seed, "outcomes": outcomes}, indent=1) + "\n")
    return d / "eval.json"


def first_proposal(feat: torch.Tensor, cands: torch.Tensor, t: Any = None) -> torch.Tensor:
    """The pretrained policy as it is: always the first (a plain x_K ~ N(0, I)) proposal."""
    return torch.zeros(cands.shape[0], dtype=torch.long)


def evaluate(npol: FrozenPolicy, choose: Callable, num_candidates: int, task: str, episodes: int, seed: int,
             num_envs: int, outcomes: list[int] | None = None, world: Any = None) -> int:
    """Successes over ``episodes`` reset seeds ``seed + j`` in ``world`` (None = the training scene);
    proposals from a generator seeded with ``seed``."""
    from mechanic_rl_ros.control.chunk_loop import ChunkLoop
    from mechanic_rl_ros.jobs.rollouts import count_successes, sim_runner

    n = max(1, min(num_envs, episodes))
    planner = SelectPlanner(npol, num_candidates, torch.Generator().manual_seed(int(seed)), choose)
    with sim_runner(npol.policy, task, n, seed, world=world) as runner:
        loops = [ChunkLoop.for_policy(npol.policy) for _ in range(n)]
        return count_successes(runner, loops, planner, episodes, seed, outcomes)


def save_checkpoint(directory: Path, online: OnlineSelection, state: Mapping[str, Any]) -> None:
    """The learner (critic, replay, pending decisions, join) and trainer state, written aside and swapped in
    whole (a kill leaves the previous)."""
    write_checkpoint(directory, {"learner": online.save}, dict(state), CKPT_MARKER)


def load_checkpoint(directory: str | Path) -> tuple[OnlineSelection, dict[str, Any]]:
    """(learner, trainer state) of :func:`save_checkpoint`; a save cut short is taken back first."""
    d = Path(directory)
    recover_dir(d, CKPT_MARKER)
    if not (d / CKPT_MARKER).is_file():
        raise FileNotFoundError(f"{d}: neither an exported critic (select.json) nor a training checkpoint "
                                f"({CKPT_MARKER}, learner/)")
    return OnlineSelection.load(d / "learner"), json.loads((d / CKPT_MARKER).read_text())


def load_learner(directory: str | Path, policy_arch_id: str | None = None,
                 policy_weights: str | None = None) -> SelectLearner:
    """The critic of a training checkpoint (``OUT/ckpt``), of a stack's ``<run_dir>/learner`` or of an exported
    one (``select.json``, checked against the policy's arch id and weights where given)."""
    d = Path(directory)
    if (d / "select.json").is_file():
        return load_exported_critic(d, policy_arch_id, policy_weights)
    if saved_algorithm(d) == "select":
        return OnlineSelection.load(d).ensemble
    return load_checkpoint(d)[0].ensemble


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mechanic-rl train-select", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="checkpoints/lift_pretrained", help="frozen pretrained policy")
    ap.add_argument("--task", default="lift")
    ap.add_argument("--out", help="output directory (logs, curve, checkpoint)")
    ap.add_argument("--total-steps", type=int, default=9000, help="robot budget in control steps (600 = 1 min)")
    ap.add_argument("--num-envs", type=int, default=8, help="simulated robots acting in parallel")
    g = ap.add_argument_group("learner", "the stack's settings: --select-config (config/select.yaml, the critic) and "
                              "--learner-config (config/learner.yaml, learner_node's schedule); a flag given "
                              "overrides its file")
    g.add_argument("--select-config", help="selection settings (default: config/select.yaml, as the stack)")
    g.add_argument("--learner-config", help="learner_node parameters file whose utd, warmup_decisions, "
                   "replay_capacity it reads (default: config/learner.yaml, as the stack)")
    g.add_argument("--seed", type=int, help="learner seed; training resets start at 1000 + 100 * seed")
    g.add_argument("--utd", type=int, help="gradient steps per new decision")
    g.add_argument("--warmup-decisions", type=int, help="complete decisions before the first gradient step")
    g.add_argument("--replay-capacity", type=int, help="[decisions] held in the replay buffer")
    g.add_argument("--num-candidates", type=int, help="proposals of the frozen policy per decision")
    g.add_argument("--gamma", type=float, help="discount per decision")
    g.add_argument("--num-critics", type=int)
    g.add_argument("--hidden", type=int, help="units per hidden layer of each critic")
    g.add_argument("--choose", choices=("mean", "min"),
                   help="ensemble aggregation when choosing a proposal (min: pessimistic)")
    g.add_argument("--optimizer", choices=("mechanic", "adam"))
    g.add_argument("--lr", type=float, help="only with --optimizer adam")
    ap.add_argument("--eval-every", type=int, default=1500, help="control steps between evaluations (0: final only)")
    ap.add_argument("--eval-episodes", type=int, default=32)
    ap.add_argument("--final-eval-episodes", type=int, default=200)
    ap.add_argument("--eval-seed", type=int, default=100000)
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--save-every", type=int, default=3000, help="control steps between checkpoints")
    ap.add_argument("--resume", help="with --eval-only: the critic that chooses (OUT/ckpt, OUT/critic, a stack's "
                    "<run_dir>/learner or a shipped one)")
    ap.add_argument("--eval-only", action="store_true")
    ap.add_argument("--eval-candidates", type=int, default=None,
                    help="with --eval-only --resume: proposals the critic chooses among (default: its own N); "
                         "the critic scores each proposal alone, so it can rank more than it was trained with")
    return ap


#: command-line flags that override a SelectConfig field of the same name
CONFIG_FLAGS = ("seed", "num_candidates", "gamma", "num_critics", "hidden", "choose", "optimizer", "lr")


def build_learner(args: argparse.Namespace, policy: Any) -> OnlineSelection:
    """The stack's selection learner over ``policy``: config/select.yaml and config/learner.yaml (or the files
    given), with the flags given on top."""
    pc = policy.cfg
    cfg = load_select_config(args.select_config, feat_dim=policy.net.cond_dim,
                             act_dim=pc.action_horizon * pc.action_dim,
                             **{k: getattr(args, k) for k in CONFIG_FLAGS if getattr(args, k) is not None})
    schedule = load_schedule(args.learner_config, utd=args.utd, warmup_decisions=args.warmup_decisions,
                             replay_capacity=args.replay_capacity)
    return OnlineSelection(cfg, schedule, policy.arch_id, policy_weights_id(args.checkpoint))


def feed_chunk(online: OnlineSelection, episode: int, first_step: int, chunk: int, steps: int, reward: float,
               terminated: bool, truncated: bool) -> None:
    """The executed steps of a chunk after its first and their rewards, as the stack's learner gets them: one
    transition per control step, the chunk's summed reward on its last step (the sparse reward's only
    non-zero one) with the episode's end."""
    for k in range(1, steps):
        online.add_step(episode, first_step + k, chunk)
    for k in range(steps):
        last = k == steps - 1
        online.add_reward(episode, first_step + k, reward if last else 0.0, terminated and last, truncated and last)


def train(args: argparse.Namespace, log: Callable[[str], None] = lambda m: print(m, flush=True)) -> dict[str, Any]:
    """Train the stack's selection learner in ``num_envs`` simulated FR3s (see the module docstring)."""
    from mechanic_rl_ros.control.chunk_loop import ChunkLoop
    from mechanic_rl_ros.control.decision import Decision
    from mechanic_rl_ros.jobs.rollouts import plan_batch, run_blocks, sim_runner
    from mechanic_rl_ros.policy import DiffusionPolicy

    torch.set_num_threads(args.threads)
    policy = DiffusionPolicy.from_checkpoint(args.checkpoint).eval().requires_grad_(False)
    npol = FrozenPolicy(policy)
    online = build_learner(args, policy)
    learner, replay, lcfg, sched = online.ensemble, online.replay, online.cfg, online.schedule
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    n, seed = args.num_envs, lcfg.seed
    gen = torch.Generator().manual_seed(seed + 17)
    evals: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    opt_desc = "Mechanic(Adam)" if lcfg.optimizer == "mechanic" else f"Adam lr {lcfg.lr:g}"
    log(f"select: {opt_desc}, N {lcfg.num_candidates} proposals, {lcfg.num_critics} critics, gamma {lcfg.gamma}, "
        f"UTD {sched.utd}, warm-up {sched.warmup_decisions} decisions, choose {lcfg.choose}, {n} robots, "
        f"budget {args.total_steps} control steps = {robot_minutes(args.total_steps):.1f} robot min")

    def run_eval(k: int, outcomes: list[int] | None = None) -> dict[str, Any]:
        te = time.perf_counter()
        wins = evaluate(npol, learner.choose, lcfg.num_candidates, args.task, k, args.eval_seed, n, outcomes)
        return eval_row(env_steps, wins, k, time.perf_counter() - te, log)

    def write_logs() -> None:
        if out:
            write_csv(out / "episodes.csv", EPISODE_FIELDS, episodes)
            write_csv(out / "evals.csv", EVAL_FIELDS, evals)
            write_csv(out / "updates.csv", UPDATE_FIELDS, updates)
            plot_success_curve(episodes, evals, out / "learning_curve.png",
                               f"value-guided selection, {opt_desc}, N {lcfg.num_candidates}, seed {seed}")

    def checkpoint() -> None:
        if out:
            save_checkpoint(out / "ckpt", online, {"env_steps": env_steps, "next_episode": book.next,
                                                   "episodes": episodes, "evals": evals})
            export_critic(learner, out / "critic", policy.arch_id, policy_weights_id(args.checkpoint))

    env_steps = 0
    book = EpisodeBook(n)
    episodes = book.rows
    if args.eval_every > 0:
        evals.append(run_eval(args.eval_episodes))
    runner = sim_runner(policy, args.task, n, 1000 + 100 * seed)
    try:
        loops = [ChunkLoop.for_policy(policy) for _ in range(n)]
        book.start(loops, runner.reset())
        choice: dict[str, Callable] = {}
        planner = SelectPlanner(npol, lcfg.num_candidates, gen, lambda f, c, t: choice["now"](f, c, t))
        next_eval = args.eval_every if args.eval_every > 0 else None
        next_save = args.save_every if args.save_every > 0 else None
        rounds = 0
        while env_steps < args.total_steps:
            # the pretrained policy as it is until the critic has learned something, as policy_node runs it
            # until the first critic arrives
            choice["now"] = learner.choose if online.trained else first_proposal
            chunks = plan_batch(loops, planner)
            feat, cands, idx = planner.feat, planner.cands, planner.idx
            for i, loop in enumerate(loops):  # each decision, as the first step of its chunk
                decision = Decision(obs={}, chain=np.zeros((1, 1, 1), np.float32), chain_logprob=np.zeros(0),
                                    policy_version=learner.version, episode=loop.episode, chunk=chunks[i].index,
                                    features=feat[i].numpy(), proposals=cands[i].numpy(), chosen=int(idx[i]))
                online.add_step(loop.episode, book.length[i], chunks[i].index, first=True, decision=decision)
            for i, (chunk, res) in enumerate(run_blocks(runner, loops, range(n), reset_on_end=True)):
                loop = loops[i]
                feed_chunk(online, loop.episode, book.length[i], chunk.index, res.steps, res.reward, res.terminated,
                           res.truncated)
                env_steps += res.steps
                book.record(i, loop, res, env_steps, online.end_episode)
            rounds += 1
            stats: dict[str, list[float]] = {}
            while online.owed() > 0:  # the learner's schedule, as learner_node runs it
                for k, v in online.step().stats.items():
                    stats.setdefault(k, []).append(v)
            mean = mean_stats(stats)
            recent = [e["success"] for e in episodes[-20:]]
            urow = {"env_steps": env_steps, "robot_min": robot_minutes(env_steps), "decisions": replay.added,
                    "replay": len(replay), "grad_steps": learner.num_updates,
                    "nonfinite_skipped": learner.nonfinite_skipped,
                    "train_success_20": float(np.mean(recent)) if recent else float("nan"),
                    "wall_s": time.perf_counter() - t0,
                    **{k: mean.get(k, float("nan")) for k in ("critic_loss", "q_mean", "target_mean", "critic_scale")}}
            updates.append(urow)
            if rounds % 4 == 0:
                log(f"{env_steps:6d} steps = {urow['robot_min']:5.2f} robot min | episodes {len(episodes)} | "
                    f"train success (last 20) {fmt(urow['train_success_20'])} | critic {fmt(urow['critic_loss'])} "
                    f"Q {fmt(urow['q_mean'])} target {fmt(urow['target_mean'])} | Mechanic scale "
                    f"{fmt(urow['critic_scale'])} | grad steps {learner.num_updates} "
                    f"(skipped {learner.nonfinite_skipped}) | {urow['wall_s']:.0f} s")
            if next_eval is not None and env_steps >= next_eval and env_steps < args.total_steps:
                evals.append(run_eval(args.eval_episodes))
                next_eval += args.eval_every
                write_logs()
            if next_save is not None and env_steps >= next_save:
                checkpoint()
                next_save += args.save_every
    finally:
        runner.close()
    checkpoint()
    outcomes: list[int] = []
    final = run_eval(args.final_eval_episodes, outcomes)
    final["final"] = 1
    evals.append(final)
    write_logs()
    return write_summary(out, env_steps, episodes, final, learner, replay, time.perf_counter() - t0,
                         final_outcomes=outcomes)


def main(argv: list[str] | None = None) -> int:
    import os

    os.environ.setdefault("MUJOCO_GL", "egl")
    args = build_parser().parse_args(argv)
    if args.eval_only:
        from mechanic_rl_ros.jobs.evaluate import wilson_interval
        from mechanic_rl_ros.policy import DiffusionPolicy

        torch.set_num_threads(args.threads)
        policy = DiffusionPolicy.from_checkpoint(args.checkpoint).eval().requires_grad_(False)
        if args.resume:
            learner = load_learner(args.resume, policy.arch_id, policy_weights_id(args.checkpoint))
            choose, ncand, what = learner.choose, learner.cfg.num_candidates, f"critic of {args.resume}"
            if args.eval_candidates is not None:
                if args.eval_candidates < 1:
                    raise SystemExit(f"--eval-candidates: {args.eval_candidates}; expected an integer >= 1")
                ncand, what = args.eval_candidates, f"{what}, choosing among {args.eval_candidates} proposals"
        else:
            choose, ncand, what = first_proposal, 1, f"policy {args.checkpoint} alone (one proposal, x_K ~ N(0, I))"
        outcomes: list[int] = []
        te = time.perf_counter()
        k = args.final_eval_episodes
        wins = evaluate(FrozenPolicy(policy), choose, ncand, args.task, k, args.eval_seed, args.num_envs, outcomes)
        lo, hi = wilson_interval(wins, k)
        print(f"{what}: {wins}/{k} = {wins / k:.1%} (95 % Wilson {lo:.1%}-{hi:.1%}), seeds {args.eval_seed}.."
              f"{args.eval_seed + k - 1}, {time.perf_counter() - te:.0f} s", flush=True)
        if args.out:
            write_eval_record(args.out, what, wins, k, args.eval_seed, outcomes)
        return 0
    print_done(train(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
