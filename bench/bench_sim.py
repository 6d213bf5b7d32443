"""Benchmark of the simulated FR3; prints the figures quoted in docs/sim.md.

    MUJOCO_GL=egl .venv/bin/python bench/bench_sim.py [--episodes 100] [--quick]

Measures physics steps/s, env control steps/s, render time per frame and
camera, batched-env throughput with and without rendering, action-chunk
throughput with the simulators in worker processes against in-process (a ratio
in one run), and the scripted experts' success rates (clean and noisy) over
seeded episodes.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco
import numpy as np

from mechanic_rl_ros.control import fr3
from mechanic_rl_ros.control.chunk_loop import ChunkLoop, run_episode  # noqa: E402
from mechanic_rl_ros.sim import DEFAULT_NOISE, TASKS, BatchedEnv, ExpertPlanner, FR3Sim, make_env


def _rate(fn, min_time: float) -> tuple[float, int]:
    """Calls of ``fn`` per second, run for at least ``min_time`` seconds."""
    fn()  # warm-up
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_time:
        fn()
        n += 1
    return n / elapsed, n


def bench_physics(min_time: float) -> None:
    sim = FR3Sim()
    m, d = sim.model, sim.data
    raw, _ = _rate(lambda: mujoco.mj_step(m, d, nstep=100), min_time)
    sim.reset()
    q = fr3.Q_HOME.copy()

    def control_step():
        sim.command(q, 0.08)
        sim.step_physics()

    ctrl, _ = _rate(control_step, min_time)
    print(f"physics: mj_step {raw * 100:,.0f} steps/s (dt {m.opt.timestep * 1e3:.0f} ms, "
          f"{raw * 100 * m.opt.timestep:.0f}x real time)")
    print(f"physics: FR3Sim.command + step_physics (ramped PD, {sim.n_substeps} substeps): "
          f"{ctrl * sim.n_substeps:,.0f} physics steps/s = {ctrl:,.0f} control steps/s")
    env = make_env("lift", seed=0)
    obs, _ = env.reset(seed=0)
    action = np.append(obs["qpos"], 0.08)
    rate, _ = _rate(lambda: env.step(action), min_time)
    print(f"env: make_env('lift', render=False).step: {rate:,.0f} control steps/s "
          f"({rate * env.control_dt:.0f}x real time)")


def bench_render(min_time: float) -> None:
    for size in (96, 224):
        env = make_env("lift", render=True, cameras=("scene", "wrist"), image_size=size, seed=0)
        env.reset(seed=0)
        for cam in ("scene", "wrist"):
            rate, _ = _rate(lambda: env.sim.render(cam, size, size), min_time)
            print(f"render: {cam:5s} {size}x{size}: {1e3 / rate:.2f} ms/frame")
        env.close()


def bench_batched(min_time: float, num_envs: int) -> None:
    for render in (False, True):
        benv = BatchedEnv("lift", num_envs=num_envs, render=render, cameras=("scene",), image_size=96, seed=0)
        obs, _ = benv.reset(seed=0)
        actions = np.concatenate([obs["qpos"], np.full((num_envs, 1), 0.08)], axis=1)
        rate, _ = _rate(lambda: benv.step(actions), min_time)
        label = "render scene 96x96" if render else "state only"
        print(f"batched: {num_envs} envs, {label}: {rate * num_envs:,.0f} env steps/s ({rate:,.1f} batch steps/s)")
        benv.close()


def bench_chunk_workers(min_time: float, num_envs: int, workers: tuple[int, ...]) -> None:
    """Env steps/s of 8-step action chunks with rendering, per number of simulator processes (ChunkRunner)."""
    from mechanic_rl_ros.sim.chunks import ChunkRunner

    rates = {}
    for w in workers:
        with ChunkRunner("lift", num_envs=num_envs, render=True, image_size=96, seed=0, workers=w) as runner:
            obs = runner.reset(seed=0)
            chunk = np.stack([np.concatenate([o["qpos"], [0.08]]) for o in obs])[:, None].repeat(8, axis=1)
            steps = []
            rate, _ = _rate(lambda: steps.append(sum(r.steps for r in runner.run(range(num_envs), chunk))),
                            min_time)
            rates[w] = rate * float(np.mean(steps))
    base = rates[workers[0]]
    for w, r in rates.items():
        print(f"chunks: {num_envs} envs, scene 96x96, {w} worker processes: {r:,.0f} env steps/s "
              f"({r / base:.2f}x of {workers[0]} workers)")


def bench_experts(episodes: int) -> None:
    for task in sorted(TASKS):
        for noise in (0.0, DEFAULT_NOISE):
            env = make_env(task, seed=0)
            expert = env.expert(noise=noise, seed=0)
            start = time.perf_counter()
            res = [run_episode(env, ChunkLoop(1), ExpertPlanner(expert), seed=s) for s in range(episodes)]
            wall = time.perf_counter() - start
            ok = [r.steps for r in res if r.success]
            rate = len(ok) / episodes
            se = np.sqrt(rate * (1 - rate) / episodes)
            print(f"expert: {task:4s} noise {noise:.1f}: success {rate:.0%} +- {se:.0%} over {episodes} seeds, "
                  f"mean length of successes {np.mean(ok) if ok else float('nan'):.1f} steps "
                  f"(time limit {env.max_steps}), {wall / episodes * 1e3:.0f} ms/episode")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=100, help="expert episodes per task and noise level")
    p.add_argument("--num-envs", type=int, default=8, help="batched environments")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2],
                   help="simulator processes to compare for action chunks (the first is the reference)")
    p.add_argument("--quick", action="store_true", help="short timings and 20 expert episodes")
    args = p.parse_args(argv)
    min_time = 0.5 if args.quick else 3.0
    episodes = 20 if args.quick else args.episodes
    print(f"# bench_sim: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"mujoco {mujoco.__version__}, MUJOCO_GL={os.environ.get('MUJOCO_GL')}")
    bench_physics(min_time)
    bench_render(min_time)
    bench_batched(min_time, args.num_envs)
    bench_chunk_workers(min_time, args.num_envs, tuple(args.workers))
    bench_experts(episodes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
