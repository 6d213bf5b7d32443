"""``mechanic-rl eval``: success rate of a policy checkpoint (or of the scripted expert) in the simulated FR3.

Receding-horizon execution as in Diffusion Policy (Chi et al., RSS 2023,
Sec. III-A): predict T_p actions from the last T_o observations, execute the
T_a actions starting at index T_o - 1, observe, replan.  Episode i is reset
with seed ``seed + i``, so a policy and the expert are compared on the same
initial states.  Reports the success rate with a 95 % Wilson score interval
(Wilson, JASA 1927) and writes ``eval.json`` and an MP4 (GIF if no MP4 writer
is available) of the first ``--video-episodes`` rollouts.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from mechanic_rl_ros.control.chunk_loop import ChunkLoop, run_episode


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95 % Wilson score interval for a binomial proportion (z = Phi^-1(0.975))."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def paired_exact_p(won: int, lost: int) -> float:
    """Two-sided exact sign test (McNemar's exact test) of ``won`` against ``lost`` discordant pairs: the
    probability under "both policies succeed equally often on a seed" of a split at least this uneven."""
    n = won + lost
    if n == 0:
        return 1.0
    k = min(won, lost)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n
    return min(1.0, 2.0 * tail)


def outcomes_by_seed(path: str | Path) -> dict[int, bool]:
    """Seed -> success of an ``eval.json``: this command's (``episodes_detail``) or the headless trainers'
    (``eval_seed`` + ``outcomes``). ValueError naming the file when it holds neither."""
    data = json.loads(Path(path).read_text())
    if "episodes_detail" in data:
        return {int(r["seed"]): bool(r["success"]) for r in data["episodes_detail"]}
    if "outcomes" in data and "eval_seed" in data:
        return {int(data["eval_seed"]) + i: bool(o) for i, o in enumerate(data["outcomes"])}
    raise ValueError(f"--compare {path}: no per-episode outcomes (episodes_detail, or eval_seed + outcomes)")


def compare_line(mine: dict[int, bool], other: dict[int, bool], other_name: str) -> str:
    """Won / lost seeds against ``other`` over the seeds both evaluated, with the exact paired p."""
    seeds = sorted(set(mine) & set(other))
    if not seeds:
        raise ValueError(f"--compare {other_name}: no reset seed in common with this evaluation")
    won = sum(mine[s] and not other[s] for s in seeds)
    lost = sum(other[s] and not mine[s] for s in seeds)
    return (f"paired with {other_name} on {len(seeds)} common seeds: {sum(mine[s] for s in seeds)} vs "
            f"{sum(other[s] for s in seeds)} successes; won {won}, lost {lost}, exact two-sided p = "
            f"{paired_exact_p(won, lost):.3g}")


def write_video(frames: list[np.ndarray], path: Path, fps: int = 10) -> Path:
    """Write frames as MP4 (imageio + imageio-ffmpeg); falls back to GIF when MP4 writing fails."""
    import imageio

    try:
        with imageio.get_writer(path.with_suffix(".mp4"), fps=fps, macro_block_size=1, codec="libx264",
                                quality=7) as w:
            for f in frames:
                w.append_data(f)
        return path.with_suffix(".mp4")
    except Exception as e:  # noqa: BLE001 -- any missing ffmpeg backend: fall back to GIF
        print(f"eval: MP4 writing failed ({e}); writing GIF", file=sys.stderr)
        imageio.mimsave(path.with_suffix(".gif"), frames, duration=1.0 / fps)
        return path.with_suffix(".gif")


def _annotate(frame: np.ndarray, upscale: int, ok: bool | None) -> np.ndarray:
    """Nearest-neighbour upscaling plus a coloured bar (green: success so far, red: not yet)."""
    f = np.repeat(np.repeat(frame, upscale, axis=0), upscale, axis=1)
    if ok is not None:
        f = f.copy()
        f[:4] = (0, 200, 0) if ok else (200, 0, 0)
    return f


def rollout(env: Any, planner: Any, loop: ChunkLoop, seed: int, record: bool, video_camera: str | None,
            upscale: int) -> dict[str, Any]:
    """Run one episode through :func:`~mechanic_rl_ros.control.chunk_loop.run_episode`; frames if ``record``."""
    frames: list[np.ndarray] = []
    seen = {"success": False}

    def on_observation(obs: Any, info: Any, success: bool) -> None:
        seen["success"] = success

    def on_action(obs: Any, action: np.ndarray) -> None:
        frames.append(_annotate(env.render(video_camera), upscale, seen["success"]))

    t_before = len(getattr(planner, "latencies", ()))
    rec = run_episode(env, loop, planner, seed=seed, on_observation=on_observation,
                      on_action=on_action if record and video_camera else None)
    if record and video_camera:
        frames.extend([_annotate(env.render(video_camera), upscale, rec.success)] * 5)
    t_inf = list(getattr(planner, "latencies", ()))[t_before:]
    return {"seed": seed, "success": rec.success, "steps": rec.steps, "frames": frames,
            "inference_s": float(np.median(t_inf)) if t_inf else float("nan")}


def policy_env(policy: Any, task: str, seed: int, sim_config: Any = None, world: Any = None) -> Any:
    """The simulated FR3 rendering what ``policy`` (a :class:`DiffusionPolicy`) observes, in ``world`` (a
    :class:`~mechanic_rl_ros.sim.world.World` or a spec; None = the training scene)."""
    from mechanic_rl_ros.sim import make_env

    cfg = policy.cfg
    cams = tuple(cfg.cameras) or ("scene",)
    return make_env(task=task, render=bool(cfg.cameras), cameras=cams, image_size=cfg.image_size, seed=seed,
                    sim_config=sim_config, world=world)


def evaluate_episodes(env: Any, planner: Any, loop: ChunkLoop, episodes: int, seed: int, video_episodes: int = 0,
                      video_camera: str | None = None, upscale: int = 3, desc: str = "eval",
                      progress: bool = True) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
    """Episodes reset with seeds ``seed + i``, i < ``episodes``: (one result per episode, the video frames of
    the first ``video_episodes``). ``progress`` shows a bar on stderr with the success count."""
    from tqdm import tqdm

    results: list[dict[str, Any]] = []
    frames: list[np.ndarray] = []
    bar = tqdm(range(episodes), desc=desc, unit="ep", dynamic_ncols=True, file=sys.stderr, disable=not progress)
    for i in bar:
        r = rollout(env, planner, loop, seed + i, i < video_episodes, video_camera, upscale)
        frames.extend(r.pop("frames"))
        results.append(r)
        bar.set_postfix(success=f"{sum(x['success'] for x in results)}/{len(results)}")
    return results, frames


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mechanic-rl eval", description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="policy checkpoint directory")
    src.add_argument("--expert", action="store_true", help="evaluate the scripted expert instead")
    ap.add_argument("--critic", default=None,
                    help="with --checkpoint: a selection critic (critic.safetensors + select.json: "
                         "<run_dir>/learner/critic of the stack, or checkpoints/lift_demos_select) chooses among the "
                         "frozen policy's proposals, as policy_node runs it (algorithm select)")
    ap.add_argument("--noise", type=float, default=1.0, help="expert noise scale (--expert; 1.0 = noisy expert)")
    ap.add_argument("--task", default="lift")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=100_000, help="episode i uses seed + i (demos use other seeds)")
    ap.add_argument("--video-episodes", type=int, default=4, help="rollouts recorded into the video")
    ap.add_argument("--video-camera", default=None, help="camera for the video (default: the policy's first)")
    ap.add_argument("--video-upscale", type=int, default=3)
    ap.add_argument("--out", default=None, help="output directory (default: <checkpoint>/eval_<task>; with --critic "
                    "runs/eval_select_<task>)")
    ap.add_argument("--compare", default=None, metavar="EVAL_JSON",
                    help="another evaluation's eval.json (e.g. of the policy a run started from, on the same seeds): "
                         "print the seeds won and lost against it and the exact paired p (sign test)")
    ap.add_argument("--steps", type=int, default=None, help="DDIM steps K (default: checkpoint config)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--replan-margin", type=int, default=0,
                    help="plan the next chunk when this many actions of the current one remain, as policy_node "
                         "does with its replan_margin (0: plan when the chunk is used up)")
    ap.add_argument("--stochastic", action="store_true",
                    help="sample chunks as the RL policy does (DPPO: eta, noise floors of the checkpoint's "
                         "sampling config, clipped noise) instead of deterministic DDIM")
    ap.add_argument("--noise-clip", type=float, default=3.0,
                    help="with --stochastic: clip each N(0, I) draw to +-this (config/rl.yaml noise_clip)")
    ap.add_argument("--speed-scale", type=float, default=None,
                    help="fraction of the FR3 velocity, acceleration and jerk limits the simulator's safety filter "
                         "allows (policy_node's safety_*_scale; default: SafetyConfig's, 0.5)")
    ap.add_argument("--min-sampling-std", type=float, default=None,
                    help="with --stochastic: floor on the per-step sampling std (default: checkpoint config)")
    ap.add_argument("--world", default=None, metavar="SPEC",
                    help="evaluate in a changed scene: a preset of config/worlds/ (e.g. camera_shift_2cm, dim_light), "
                         "the path of a world YAML file, and/or field=value overrides, e.g. \"dim_light "
                         "cube_mass=0.3\" (docs/world.md lists the fields, units and ranges); default: the training "
                         "scene. The default output directory gets the world's name")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    from mechanic_rl_ros.control.safety import SafetyConfig
    from mechanic_rl_ros.sim import ExpertPlanner, make_env
    from mechanic_rl_ros.sim.fr3_sim import SimConfig
    from mechanic_rl_ros.sim.world import load_world

    try:
        world = load_world(args.world)
    except ValueError as exc:
        print(f"mechanic-rl eval: --world: {exc}", file=sys.stderr)
        return 2
    world_tag = "" if world.is_default() else "_world_" + "_".join(
        "".join(c if c.isalnum() or c in "-." else "_" for c in part) for part in str(args.world).split())[:80]

    sim_config = None
    if args.speed_scale is not None:
        s = float(args.speed_scale)
        sim_config = SimConfig(safety=SafetyConfig(velocity_scale=s, acceleration_scale=s, jerk_scale=s))

    label: str
    if args.checkpoint:
        import torch

        from mechanic_rl_ros.policy import DiffusionPolicy, PolicyPlanner

        torch.set_num_threads(args.threads)
        policy = DiffusionPolicy.from_checkpoint(args.checkpoint).eval()
        if args.steps:
            policy.cfg.sampling.inference_steps = int(args.steps)
        if args.min_sampling_std is not None:
            policy.cfg.sampling.min_sampling_std = float(args.min_sampling_std)
        cfg = policy.cfg
        cams = tuple(cfg.cameras) or ("scene",)
        env = policy_env(policy, args.task, args.seed, sim_config=sim_config, world=world)
        selector = None
        if args.critic:
            from mechanic_rl_ros.rl.selection import exported_selector, policy_weights_id

            selector = exported_selector(args.critic, policy.arch_id, policy_weights_id(args.checkpoint))
        planner: Any = PolicyPlanner(policy, stochastic=args.stochastic, noise_clip=args.noise_clip, seed=args.seed,
                                     selector=selector, version=1 if selector else 0)
        loop = ChunkLoop.for_policy(policy, args.replan_margin)
        label = str(args.checkpoint)
        if selector is not None:
            label += f" + critic {args.critic} ({selector.cfg.num_candidates} proposals)"
        mode = ""
        if args.stochastic:
            mode = f"_stochastic_std{cfg.sampling.min_sampling_std:g}"
            label += f" (stochastic, min_sampling_std {cfg.sampling.min_sampling_std:g})"
        if selector is not None:
            mode += "_select"
        default_out = (Path("runs") / f"eval_select_{args.task}{world_tag}" if selector is not None else
                       Path(args.checkpoint) / f"eval_{args.task}{mode}{world_tag}")
        out = Path(args.out) if args.out else default_out
        video_cam = args.video_camera or cams[0]
    else:
        env = make_env(task=args.task, render=False, seed=args.seed, sim_config=sim_config, world=world)
        planner = ExpertPlanner(env.expert(noise=args.noise, seed=args.seed))
        loop = ChunkLoop(obs_horizon=1)
        label = f"scripted expert (noise {args.noise})"
        out = (Path(args.out) if args.out else
               Path("runs") / f"eval_expert_{args.task}_noise{args.noise:g}{world_tag}")
        video_cam = args.video_camera or "scene"
    if not world.is_default():
        label += f" in world {args.world!r}"
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.time()
    results, frames = evaluate_episodes(env, planner, loop, args.episodes, args.seed, args.video_episodes, video_cam,
                                        args.video_upscale)
    wall = time.time() - t0
    n_ok = sum(r["success"] for r in results)
    lo, hi = wilson_interval(n_ok, len(results))
    summary = {"source": label, "task": args.task, "episodes": len(results), "successes": n_ok,
               "success_rate": n_ok / max(1, len(results)), "wilson95": [lo, hi], "seed": args.seed,
               "replan_margin": loop.replan_margin,
               "speed_scale": args.speed_scale,
               "world": args.world or "default", "world_changes": world.changes(),
               "wall_time_s": round(wall, 1),
               "median_chunk_inference_s": float(np.median([r["inference_s"] for r in results])),
               "episodes_detail": results}
    if frames:
        summary["video"] = str(write_video(frames, out / "rollouts"))
    (out / "eval.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{label} on {args.task}: success {n_ok}/{len(results)} = {summary['success_rate']:.1%} "
          f"(95% Wilson CI {lo:.1%} - {hi:.1%}); {wall:.0f} s; results in {out}")
    if frames:
        print(f"video: {summary['video']}")
    env.close()
    if args.compare:
        try:
            line = compare_line({r["seed"]: bool(r["success"]) for r in results}, outcomes_by_seed(args.compare),
                                args.compare)
        except (ValueError, OSError) as exc:
            print(f"mechanic-rl eval: {exc}", file=sys.stderr)
            return 2
        summary["compare"] = line
        (out / "eval.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
