"""``mechanic-rl collect``: record scripted-expert demonstrations.

Each episode becomes a rosbag2 directory ``<out>/episode_NNNNN/`` (MCAP +
``metadata.yaml``, see :mod:`.rosbag`) and a training cache
``<out>/cache/episode_NNNNN.npz`` (see :mod:`.demos`); ``<out>/summary.json``
holds the settings and the success rate. Episode ``i`` uses reset seed
``seed + i`` and the expert's noise stream is seeded from ``seed`` too, so a
collection is reproducible.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
from tqdm import tqdm

from mechanic_rl_ros.control.chunk_loop import ChunkLoop, run_episode
from mechanic_rl_ros.data.demos import cache_path_for, read_bag, save_cache
from mechanic_rl_ros.data.rosbag import EpisodeBagWriter
from mechanic_rl_ros.sim.env import FR3Env, make_env
from mechanic_rl_ros.sim.expert import DEFAULT_NOISE, ExpertPlanner
from mechanic_rl_ros.sim.fr3_sim import CAMERAS
from mechanic_rl_ros.sim.tasks import TASK_STATE_FIELDS, TASKS


@dataclass
class CollectConfig:
    """Settings of one collection run (the command-line options)."""

    task: str = "lift"
    episodes: int = 100
    out: str = "demos"
    #: Expert noise: 0 = clean expert; the default is the noisy expert.
    noise: float = DEFAULT_NOISE
    image_size: int = 96
    cameras: tuple[str, ...] = ("scene",)
    #: Seed of episode 0 (episode i uses seed + i) and of the expert noise.
    seed: int = 0
    #: Also write the .npz training cache next to the bags.
    cache: bool = True
    progress: bool = True


def record_episode(
    env: FR3Env, expert: ExpertPlanner, directory: Path, seed: int, start_time_ns: int, meta: dict
) -> dict:
    """Run one expert episode in ``env`` (through the one chunk loop) and write it as a bag under ``directory``."""
    meta = {**meta, "seed": seed, "event": "start"}
    with EpisodeBagWriter(directory, start_time_ns, control_dt=env.control_dt) as bag:
        bag.add_metadata("mechanic_rl_ros.episode", meta)
        bag.write_episode_info(0.0, meta)

        def write_obs(o: dict, info: dict, success: bool) -> None:
            t = env.sim.time
            for cam, img in o.get("images", {}).items():
                bag.write_image(t, cam, img)
            bag.write_joint_state(t, env.sim.joint_state())
            status = env.task.evaluate(env.sim)
            bag.write_task_state(
                t, env.config.task, TASK_STATE_FIELDS, o["task_state"], status.success, status.failed,
                status.shaped_reward,
            )

        rec = run_episode(env, ChunkLoop(obs_horizon=1), expert, seed=seed, on_observation=write_obs,
                          on_action=lambda o, a: bag.write_command(env.sim.time, a))
        outcome = {**meta, "event": "end", "success": rec.success, "steps": rec.steps, "return": rec.total_reward}
        bag.write_episode_info(env.sim.time, outcome)
    return outcome


def collect(config: CollectConfig) -> dict:
    """Record ``config.episodes`` episodes; returns the summary written to summary.json."""
    if config.task not in TASKS:
        raise ValueError(f"--task must be one of {sorted(TASKS)}, got {config.task!r}")
    if config.episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {config.episodes}")
    if not np.isfinite(config.noise) or config.noise < 0:
        raise ValueError(f"--noise must be a finite value >= 0, got {config.noise}")
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    env = make_env(
        task=config.task, render=True, cameras=config.cameras, image_size=config.image_size, seed=config.seed
    )
    expert = ExpertPlanner(env.expert(noise=config.noise, seed=config.seed))
    meta = {
        "task": config.task,
        "noise": config.noise,
        "cameras": list(env.config.cameras),
        "image_size": list(env.config.image_size),
        "control_dt": env.control_dt,
        "expert": type(expert.expert).__name__,
    }
    start = time.time()
    t0_ns = time.time_ns()
    outcomes = []
    bar = tqdm(range(config.episodes), desc=f"collect {config.task}", unit="ep", disable=not config.progress)
    for i in bar:
        directory = out / f"episode_{i:05d}"
        # Episodes are laid out 1 h apart on the time axis so bags never overlap.
        outcome = record_episode(env, expert, directory, config.seed + i, t0_ns + i * 3_600_000_000_000, meta)
        if config.cache:
            bag_file = directory / f"{directory.name}_0.mcap"
            save_cache(read_bag(bag_file), cache_path_for(bag_file, out))
        outcomes.append(outcome)
        bar.set_postfix(success=f"{np.mean([o['success'] for o in outcomes]):.2f}")
    env.close()
    summary = {
        **meta,
        "episodes": len(outcomes),
        "seed": config.seed,
        "success_rate": float(np.mean([o["success"] for o in outcomes])),
        "mean_steps": float(np.mean([o["steps"] for o in outcomes])),
        "successes": [bool(o["success"]) for o in outcomes],
        "wall_time_s": time.time() - start,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mechanic-rl collect",
        description="Record scripted-expert demonstrations of the simulated FR3 as rosbag2 MCAP "
        "(+ an .npz training cache). Load them with mechanic_rl_ros.data.demos.load_episodes.",
    )
    p.add_argument("--task", default="lift", choices=sorted(TASKS), help="task (default: lift)")
    p.add_argument("--episodes", type=int, default=100, help="number of episodes (default: 100)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument(
        "--noise",
        type=float,
        default=DEFAULT_NOISE,
        help=f"expert noise scale, 0 = clean expert (default: {DEFAULT_NOISE}, the noisy expert)",
    )
    p.add_argument("--image-size", type=int, default=96, help="square image size in px (default: 96)")
    p.add_argument(
        "--cameras",
        default="scene",
        help=f"comma-separated subset of {','.join(CAMERAS)} (default: scene)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of episode 0; episode i uses seed+i (default: 0)")
    p.add_argument("--no-cache", action="store_true", help="write only the bags, no .npz cache")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cameras = tuple(c.strip() for c in args.cameras.split(",") if c.strip())
    config = CollectConfig(
        task=args.task,
        episodes=args.episodes,
        out=args.out,
        noise=args.noise,
        image_size=args.image_size,
        cameras=cameras,
        seed=args.seed,
        cache=not args.no_cache,
        progress=not args.quiet,
    )
    try:
        summary = collect(config)
    except ValueError as exc:
        print(f"mechanic-rl collect: error: {exc}", file=sys.stderr)
        return 2
    n_ok = sum(summary["successes"])
    print(
        f"collected {summary['episodes']} {summary['task']} episodes (noise {summary['noise']}) in "
        f"{summary['wall_time_s']:.1f} s: success rate {summary['success_rate']:.1%} ({n_ok}/{summary['episodes']}), "
        f"mean length {summary['mean_steps']:.1f} steps -> {Path(config.out).resolve()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
