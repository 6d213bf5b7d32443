"""Batched rollouts of the headless trainer: many simulated FR3s, one :class:`ChunkLoop` each.

Every environment runs the same act-observe-replan loop as the policy node
(:mod:`mechanic_rl_ros.control.chunk_loop`); the planning ticks of all
environments are served by one batched call of the learner
(:meth:`DPPO.act`), and each loop's actions up to its next planning tick are
executed as a block by :class:`~mechanic_rl_ros.sim.chunks.ChunkRunner`
(in worker processes when ``workers`` > 0). A decision's reward is the sum of
the rewards of its block, so the loops plan when their chunk is used up
(``replan_margin`` = 0, as DPPO's action-chunk MDP).

The driver pieces -- :func:`plan_batch` (one batched plan for many loops,
given a :data:`BatchPlanner`), :func:`run_blocks` (drain, execute, observe)
and :func:`count_successes` (a seeded evaluation) -- are shared by the DPPO
trainer (:mod:`.train_rl`) and the selection trainer (:mod:`.train_select`).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from mechanic_rl_ros.control.chunk_loop import Chunk, ChunkLoop, PlanRequest
from mechanic_rl_ros.control.decision import Decision
from mechanic_rl_ros.control.history import stack_histories
from mechanic_rl_ros.rl.buffer import RolloutBuffer
from mechanic_rl_ros.rl.dppo import DPPO
from mechanic_rl_ros.sim.chunks import ChunkRunner


def sim_runner(policy: Any, task: str, num_envs: int, seed: int, reward: str = "sparse",
               workers: int = 0, world: Any = None) -> ChunkRunner:
    """``num_envs`` simulated FR3s rendering what ``policy`` (a :class:`DiffusionPolicy`) observes, in
    ``world`` (a scene variation; None = the training scene)."""
    cfg = policy.cfg
    return ChunkRunner(task=task, num_envs=num_envs, render=bool(cfg.cameras), cameras=cfg.cameras or ("scene",),
                       image_size=cfg.image_size, seed=seed, reward=reward, workers=workers, world=world)


#: plans a batch of requests at once -> one chunk per request, in order
BatchPlanner = Callable[[list[PlanRequest]], list[Chunk]]


def plan_batch(loops: Sequence[ChunkLoop], plan: BatchPlanner) -> list[Chunk]:
    """One batched plan for ``loops`` (each at a planning tick); offers each loop its chunk, returns them."""
    reqs = [loop.request() for loop in loops]
    chunks = plan(reqs)
    if len(chunks) != len(reqs):
        raise RuntimeError(f"planner returned {len(chunks)} chunks for {len(reqs)} requests")
    for loop, chunk in zip(loops, chunks):
        loop.offer(chunk)
    return chunks


def run_blocks(runner: ChunkRunner, loops: Sequence[ChunkLoop], idx: Sequence[int],
               reset_on_end: bool = True) -> list[tuple[Chunk, Any]]:
    """Drain loops ``idx``, execute each block in its environment (one batched call), observe every
    observation; returns (the block's chunk, the :class:`ChunkRunner` result) per loop."""
    idx = list(idx)
    blocks = [loops[i].drain() for i in idx]
    actions = np.stack([np.stack([a for a, _, _ in block]) for block in blocks])
    out = []
    for i, block, res in zip(idx, blocks, runner.run(idx, actions, reset_on_end=reset_on_end)):
        for o in res.observations:
            loops[i].observe(o)
        out.append((block[0][1], res))
    return out


def count_successes(runner: ChunkRunner, loops: Sequence[ChunkLoop], plan: BatchPlanner, episodes: int,
                    seed: int, outcomes: list[int] | None = None) -> int:
    """Successes over ``episodes`` episodes reset with seeds ``seed + j``, ``len(loops)`` at a time
    (``runner`` has as many environments), the planning ticks of all running episodes in one batch.
    ``outcomes``, if given, is filled with each episode's 0/1 in seed order (for paired comparisons)."""
    if outcomes is not None:
        outcomes[:] = [0] * episodes
    n = len(loops)
    wins = 0
    for start in range(0, episodes, n):
        idx = list(range(min(n, episodes - start)))
        for i, o in zip(idx, runner.reset_envs(idx, [seed + start + i for i in idx])):
            loops[i].reset(start + i)
            loops[i].observe(o)
        active = list(idx)
        while active:
            plan_batch([loops[i] for i in active], plan)
            still = []
            for i, (_, res) in zip(active, run_blocks(runner, loops, active, reset_on_end=False)):
                if res.terminated or res.truncated:
                    wins += int(res.success)
                    if outcomes is not None:
                        outcomes[start + i] = int(res.success)
                else:
                    still.append(i)
            active = still
    return wins


def dppo_planner(learner: DPPO, generator: torch.Generator | None, deterministic: bool = False) -> BatchPlanner:
    """:data:`BatchPlanner` of :meth:`DPPO.act`; each chunk carries its :class:`Decision`."""
    def plan(reqs: list[PlanRequest]) -> list[Chunk]:
        out = learner.act(stack_histories([r.history for r in reqs]), deterministic=deterministic,
                          generator=generator)
        chunks = []
        for i, req in enumerate(reqs):
            d = Decision(req.history, out.chain[i], out.chain_logprob[i], out.policy_version, req.episode, req.index)
            chunks.append(Chunk(learner.policy.executable(out.actions[i], req.lead).astype(np.float64), req.index,
                                out.policy_version, d))
        return chunks
    return plan


def plan_all(learner: DPPO, loops: list[ChunkLoop], generator: torch.Generator | None,
             deterministic: bool = False) -> list[Decision]:
    """One batched plan for ``loops`` (each at a planning tick); offers each its chunk, returns the decisions."""
    return [c.decision for c in plan_batch(loops, dppo_planner(learner, generator, deterministic))]


class Collector:
    """``num_envs`` simulated FR3s that make decisions for a :class:`RolloutBuffer`; episodes run on across calls.

    ``workers`` > 0 steps the simulators in that many processes; the data are the same as with ``workers=0``."""

    def __init__(self, learner: DPPO, task: str, num_envs: int, seed: int, reward: str, workers: int = 0):
        self.learner = learner
        self.runner = sim_runner(learner.policy, task, num_envs, seed, reward, workers)
        self.loops = [ChunkLoop.for_policy(learner.policy) for _ in range(num_envs)]
        self.next_episode = 0
        self._ep_return = [0.0] * num_envs
        for loop, obs in zip(self.loops, self.runner.reset(seed=seed)):
            self._start(loop, obs)

    def _start(self, loop: ChunkLoop, obs: Any) -> None:
        loop.reset(self.next_episode)
        loop.observe(obs)
        self.next_episode += 1

    def collect(self, buf: RolloutBuffer, steps: int, generator: torch.Generator) -> dict[str, float]:
        """``steps`` decisions per environment into ``buf``; the last ones get their bootstrap observation."""
        n = self.runner.num_envs
        env_steps, successes, returns = 0, [], []
        for _ in range(steps):
            for d in plan_all(self.learner, self.loops, generator):
                buf.add_decision(d)
            for i, (chunk, res) in enumerate(run_blocks(self.runner, self.loops, range(n))):
                loop = self.loops[i]
                env_steps += res.steps
                self._ep_return[i] += res.reward
                buf.set_outcome(loop.episode, chunk.index, res.reward, terminated=res.terminated,
                                truncated=res.truncated, final_obs=loop.history.stacked() if res.truncated else None,
                                env_steps=res.steps)
                if res.terminated or res.truncated:
                    successes.append(res.success)
                    returns.append(self._ep_return[i])
                    self._ep_return[i] = 0.0
                    self._start(loop, res.reset_obs)
        for loop in self.loops:
            if loop.chunks_planned > 0:
                buf.set_next_obs(loop.episode, loop.chunks_planned - 1, loop.history.stacked())
        return {"env_steps": float(env_steps), "episodes": float(len(successes)),
                "train_success": float(np.mean(successes)) if successes else float("nan"),
                "train_return": float(np.mean(returns)) if returns else float("nan")}

    def close(self) -> None:
        self.runner.close()


def evaluate(learner: DPPO, task: str, episodes: int, seed: int, num_envs: int, reward: str = "sparse",
             workers: int = 0) -> float:
    """Success rate of deterministic DDIM (eta = 0) over episodes reset with seeds ``seed + j``.

    The initial noise x_K of every chunk comes from a generator seeded with ``seed``, so the same weights
    always get the same score (for a given ``num_envs``; ``workers`` does not change it)."""
    n = max(1, min(num_envs, episodes))
    runner = sim_runner(learner.policy, task, n, seed, reward, workers)
    gen = torch.Generator().manual_seed(int(seed))
    try:
        loops = [ChunkLoop.for_policy(learner.policy) for _ in range(n)]
        wins = count_successes(runner, loops, dppo_planner(learner, gen, deterministic=True), episodes, seed)
    finally:
        runner.close()
    return wins / episodes
