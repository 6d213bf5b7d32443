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


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95 % Wilson score interval for a binomial proportion (z = Phi^-1(0.975))."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


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


def rollout(env: Any, actor: Any, seed: int, record: bool, video_camera: str | None,
            upscale: int) -> dict[str, Any]:
    """Run one episode.  ``actor.reset(obs)`` starts it, ``actor(obs) -> float[n, 8]`` gives the actions
    to execute before the next call, ``actor.observe(obs)`` sees every intermediate observation."""
    obs, info = env.reset(seed=seed)
    actor.reset(obs)
    frames, success, steps, t_inf = [], False, 0, []
    done = False
    while not done:
        t0 = time.perf_counter()
        chunk = actor(obs)
        t_inf.append(time.perf_counter() - t0)
        for a in chunk:
            if record and video_camera:
                frames.append(_annotate(env.render(video_camera), upscale, success))
            obs, _, terminated, truncated, info = env.step(np.asarray(a, dtype=np.float64))
            steps += 1
            success = success or bool(info.get("success", False))
            done = terminated or truncated
            if done:
                break
            actor.observe(obs)
    if record and video_camera:
        frames.extend([_annotate(env.render(video_camera), upscale, success)] * 5)
    return {"seed": seed, "success": success, "steps": steps, "frames": frames,
            "inference_s": float(np.median(t_inf)) if t_inf else float("nan")}


class PolicyActor:
    """Receding-horizon driver of a :class:`DiffusionPolicy` around an :class:`ObsHistory`."""

    def __init__(self, policy: Any, seed: int = 0, stochastic: bool = False, noise_clip: float = 0.0):
        from .history import ObsHistory

        self.policy = policy
        self.history = ObsHistory.for_policy(policy)
        self.calls = 0
        self.seed = seed
        self.sample_kw = {"stochastic": True, "noise_clip": noise_clip} if stochastic else {}

    def reset(self, obs: dict) -> None:
        self.history.reset()
        self.history.push(obs)

    def observe(self, obs: dict) -> None:
        self.history.push(obs)

    def __call__(self, obs: dict) -> np.ndarray:
        self.calls += 1
        return self.policy.predict_action(self.history.stacked(), seed=self.seed * 100003 + self.calls,
                                          **self.sample_kw)


class ExpertActor:
    """The scripted (noisy) expert, one action per call."""

    def __init__(self, env: Any, noise: float, seed: int):
        self.expert = env.expert(noise=noise, seed=seed)

    def reset(self, obs: dict) -> None:
        self.expert.reset(obs)

    def observe(self, obs: dict) -> None:
        pass

    def __call__(self, obs: dict) -> np.ndarray:
        return self.expert.act(obs)[None]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mechanic-rl eval", description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="policy checkpoint directory")
    src.add_argument("--expert", action="store_true", help="evaluate the scripted expert instead")
    ap.add_argument("--noise", type=float, default=1.0, help="expert noise scale (--expert; 1.0 = noisy expert)")
    ap.add_argument("--task", default="lift")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=100_000, help="episode i uses seed + i (demos use other seeds)")
    ap.add_argument("--video-episodes", type=int, default=4, help="rollouts recorded into the video")
    ap.add_argument("--video-camera", default=None, help="camera for the video (default: the policy's first)")
    ap.add_argument("--video-upscale", type=int, default=3)
    ap.add_argument("--out", default=None, help="output directory (default: <checkpoint>/eval_<task>)")
    ap.add_argument("--steps", type=int, default=None, help="DDIM steps K (default: checkpoint config)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--stochastic", action="store_true",
                    help="sample chunks as the RL policy does (DPPO: eta, noise floors of the checkpoint's "
                         "sampling config, clipped noise) instead of deterministic DDIM")
    ap.add_argument("--noise-clip", type=float, default=3.0,
                    help="with --stochastic: clip each N(0, I) draw to +-this (config/rl.yaml noise_clip)")
    ap.add_argument("--min-sampling-std", type=float, default=None,
                    help="with --stochastic: floor on the per-step sampling std (default: checkpoint config)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    from mechanic_rl_ros.sim import make_env

    label: str
    if args.checkpoint:
        import torch

        from .policy import DiffusionPolicy

        torch.set_num_threads(args.threads)
        policy = DiffusionPolicy.from_checkpoint(args.checkpoint).eval()
        if args.steps:
            policy.cfg.sampling.inference_steps = int(args.steps)
        if args.min_sampling_std is not None:
            policy.cfg.sampling.min_sampling_std = float(args.min_sampling_std)
        cfg = policy.cfg
        cams = tuple(cfg.cameras) or ("scene",)
        env = make_env(task=args.task, render=bool(cfg.cameras), cameras=cams, image_size=cfg.image_size,
                       seed=args.seed)
        actor: Any = PolicyActor(policy, args.seed, stochastic=args.stochastic, noise_clip=args.noise_clip)
        label = str(args.checkpoint)
        mode = ""
        if args.stochastic:
            mode = f"_stochastic_std{cfg.sampling.min_sampling_std:g}"
            label += f" (stochastic, min_sampling_std {cfg.sampling.min_sampling_std:g})"
        out = Path(args.out) if args.out else Path(args.checkpoint) / f"eval_{args.task}{mode}"
        video_cam = args.video_camera or cams[0]
    else:
        env = make_env(task=args.task, render=False, seed=args.seed)
        actor = ExpertActor(env, args.noise, args.seed)
        label = f"scripted expert (noise {args.noise})"
        out = Path(args.out) if args.out else Path("runs") / f"eval_expert_{args.task}_noise{args.noise:g}"
        video_cam = args.video_camera or "scene"
    out.mkdir(parents=True, exist_ok=True)

    from tqdm import tqdm

    results, frames = [], []
    t0 = time.time()
    bar = tqdm(range(args.episodes), desc="eval", unit="ep", dynamic_ncols=True, file=sys.stderr)
    for i in bar:
        r = rollout(env, actor, args.seed + i, i < args.video_episodes, video_cam, args.video_upscale)
        frames.extend(r.pop("frames"))
        results.append(r)
        bar.set_postfix(success=f"{sum(x['success'] for x in results)}/{len(results)}")
    wall = time.time() - t0
    n_ok = sum(r["success"] for r in results)
    lo, hi = wilson_interval(n_ok, len(results))
    summary = {"source": label, "task": args.task, "episodes": len(results), "successes": n_ok,
               "success_rate": n_ok / max(1, len(results)), "wilson95": [lo, hi], "seed": args.seed,
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
