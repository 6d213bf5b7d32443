"""How much each scene variation hurts a policy: success against the size of each shift of the world.

    nice -n 19 .venv/bin/python bench/bench_world.py [--checkpoint checkpoints/lift_demos] [--episodes 50]
        [--threads 1] [--only camera_shift,light] [--out runs/bench_world]

Evaluates the checkpoint with ``mechanic-rl eval``'s own code (jobs/evaluate.py: the policy node's planner,
deterministic DDIM, the same act-observe-replan loop) once per grid point: each point is one
:class:`~mechanic_rl_ros.sim.world.World` (docs/world.md), played for ``--episodes`` episodes on the reset
seeds ``--seed``, ``--seed`` + 1, ... -- the same seeds at every point, so the points differ only in the world.
The unshifted scene is evaluated once and is every variation's size 0.

Prints one line per point as it finishes and the table at the end; writes ``world_bench.csv`` (one row per
point), ``world_bench.json`` (the same with every episode's outcome by seed, for paired comparisons) and
``world_bench.png`` (success with its 95 % Wilson interval against the size of each shift) to ``--out``.
A benchmark, not a test: it measures and prints.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: variation -> (what is varied, unit of its size, [(size, world overrides), ...]); size 0 is the unshifted scene
GRID: dict[str, tuple[str, str, list[tuple[float, dict]]]] = {
    "camera_shift": ("scene camera moved sideways (base y)", "cm", [
        (1, {"camera_position_offset": [0.0, 0.01, 0.0]}),
        (2, {"camera_position_offset": [0.0, 0.02, 0.0]}),
        (4, {"camera_position_offset": [0.0, 0.04, 0.0]})]),
    "camera_pan": ("scene camera panned", "deg", [
        (2, {"camera_rotation_offset": [2.0, 0.0, 0.0]}),
        (5, {"camera_rotation_offset": [5.0, 0.0, 0.0]})]),
    "camera_fov": ("scene camera field of view changed from 45 deg", "deg", [
        (-5, {"camera_fovy": 40.0}),
        (5, {"camera_fovy": 50.0})]),
    "light": ("light intensity (1 = training)", "x", [
        (0.4, {"light_intensity": 0.4}),
        (1.6, {"light_intensity": 1.6})]),
    "cube_color": ("cube colour: red (0), green (1), blue (2)", "", [
        (1, {"cube_color": [0.15, 0.7, 0.2]}),
        (2, {"cube_color": [0.1, 0.25, 0.85]})]),
    "cube_size": ("cube edge changed from 5 cm", "cm", [
        (-1, {"cube_size": 0.04}),
        (1, {"cube_size": 0.06})]),
    "table_height": ("table top raised", "cm", [
        (-3, {"table_height": -0.03}),
        (3, {"table_height": 0.03})]),
    "cube_mass": ("cube mass (physics only)", "kg", [
        (0.5, {"cube_mass": 0.5})]),
    "cube_friction": ("cube friction coefficient (physics only)", "", [
        (0.3, {"cube_friction": 0.3})]),
    "table_look": ("table top: checker (0), plain grey (1)", "", [
        (1, {"table_texture": "flat", "table_color": [0.45, 0.45, 0.48]})]),
    "distractors": ("loose boxes on the table", "boxes", [
        (4, {"distractors": 4})]),
}
#: the size the unshifted scene has on each variation's axis
ZERO = {"light": 1.0, "cube_mass": 0.1, "cube_friction": 1.0}


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True).stdout.strip()
        return out + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _spec(overrides: dict) -> str:
    """The ``--world`` / ``world:=`` spec of a grid point (what reproduces it with mechanic-rl eval)."""
    parts = []
    for k, v in overrides.items():
        if isinstance(v, list):
            parts.append(f"{k}=[{','.join(f'{x:g}' for x in v)}]")
        else:
            parts.append(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}")
    return " ".join(parts) or "default"


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [v for v in GRID if any(r["variation"] == v for r in rows)]
    base = next((r for r in rows if r["variation"] == "none"), None)
    cols = 3
    nrows = max(1, (len(names) + cols - 1) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.0 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        pts = [r for r in rows if r["variation"] == name]
        if base is not None:
            pts = [{**base, "size": ZERO.get(name, 0)}] + pts
        pts.sort(key=lambda r: r["size"])
        xs = [r["size"] for r in pts]
        ys = [100 * r["success_rate"] for r in pts]
        # the interval holds the rate; max() only absorbs rounding at 0 and 100 %
        lo = [max(0.0, 100 * (r["success_rate"] - r["wilson_low"])) for r in pts]
        hi = [max(0.0, 100 * (r["wilson_high"] - r["success_rate"])) for r in pts]
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3)
        ax.axhline(60, color="grey", lw=0.8, ls="--")
        ax.set_ylim(-3, 103)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(f"{GRID[name][0]} [{GRID[name][1]}]" if GRID[name][1] else GRID[name][0], fontsize=8)
        ax.set_ylabel("success [%]")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="variations: " + ", ".join(f"{k} ({v[0]}, sizes "
                                                                   f"{[s for s, _ in v[2]]} {v[1]})"
                                                                   for k, v in GRID.items()))
    ap.add_argument("--checkpoint", default="checkpoints/lift_demos", help="policy checkpoint directory")
    ap.add_argument("--task", default="lift")
    ap.add_argument("--episodes", type=int, default=50, help="episodes per grid point")
    ap.add_argument("--seed", type=int, default=100_000, help="episode i of every point resets with seed + i")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--only", default="", help="comma-separated variations to run (default: all); the "
                    "unshifted scene always runs")
    ap.add_argument("--out", default="runs/bench_world", help="output directory")
    ap.add_argument("--quiet", action="store_true", help="no per-episode progress bar, only a line per point")
    ap.add_argument("--replot", default=None, metavar="WORLD_BENCH_JSON",
                    help="evaluate nothing: print the table and draw the figure of an earlier run's world_bench.json")
    args = ap.parse_args(argv)
    if args.replot:
        data = json.loads(Path(args.replot).read_text())
        rows = data["points"]
        png = Path(args.replot).with_name("world_bench.png")
        plot(rows, png, f"{data['checkpoint']} ({data['task']}), {data['episodes']} episodes per point, seeds "
             f"{data['seed']}+, commit {data['commit']}")
        _print_table(rows)
        print(f"\nwrote {png}")
        return 0

    import torch

    from mechanic_rl_ros.control.chunk_loop import ChunkLoop
    from mechanic_rl_ros.jobs.evaluate import evaluate_episodes, policy_env, wilson_interval
    from mechanic_rl_ros.policy import DiffusionPolicy, PolicyPlanner
    from mechanic_rl_ros.sim.world import load_world

    only = [v for v in args.only.split(",") if v]
    unknown = sorted(set(only) - set(GRID))
    if unknown:
        ap.error(f"--only: unknown variation(s) {unknown}; expected some of {list(GRID)}")
    points = [("none", 0.0, {})] + [(name, size, ov) for name, (_, _, sizes) in GRID.items()
                                    if not only or name in only for size, ov in sizes]
    for name, _, ov in points:
        load_world(_spec(ov))  # a bad grid point fails before the first episode

    torch.set_num_threads(args.threads)
    policy = DiffusionPolicy.from_checkpoint(args.checkpoint).eval()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    commit = _commit()
    print(f"bench_world: {args.checkpoint} on {args.task}, {len(points)} points x {args.episodes} episodes, seeds "
          f"{args.seed}-{args.seed + args.episodes - 1}, {args.threads} thread(s), commit {commit}", flush=True)
    rows: list[dict] = []
    t_start = time.time()
    for k, (name, size, ov) in enumerate(points):
        spec = _spec(ov)
        env = policy_env(policy, args.task, args.seed, world=spec)
        planner = PolicyPlanner(policy, seed=args.seed)
        t0 = time.time()
        try:
            results, _ = evaluate_episodes(env, planner, ChunkLoop.for_policy(policy), args.episodes, args.seed,
                                           desc=f"{name} {size:g}", progress=not args.quiet)
        finally:
            env.close()
        n_ok = sum(r["success"] for r in results)
        lo, hi = wilson_interval(n_ok, len(results))
        rows.append({"variation": name, "size": size, "unit": GRID[name][1] if name in GRID else "",
                     "world": spec, "episodes": len(results), "successes": n_ok,
                     "success_rate": n_ok / max(1, len(results)), "wilson_low": lo, "wilson_high": hi,
                     "wall_s": round(time.time() - t0, 1),
                     "outcomes": {str(r["seed"]): bool(r["success"]) for r in results}})
        done = time.time() - t_start
        eta = done / (k + 1) * (len(points) - k - 1)
        print(f"[{k + 1}/{len(points)}] {name:<13} {size:>5g} {rows[-1]['unit']:<5} {n_ok:>4}/{len(results)} = "
              f"{100 * n_ok / max(1, len(results)):5.1f} % (95 % CI {100 * lo:.0f}-{100 * hi:.0f} %)  "
              f"world: {spec}  [{time.time() - t0:.0f} s; {done / 60:.1f} min so far, ~{eta / 60:.0f} min left]",
              flush=True)
        _write(out, rows, args, commit)
    plot(rows, out / "world_bench.png", f"{args.checkpoint} ({args.task}), {args.episodes} episodes per point, "
         f"seeds {args.seed}+, commit {commit}")
    _print_table(rows)
    print(f"\nwrote {out / 'world_bench.csv'}, {out / 'world_bench.json'}, {out / 'world_bench.png'} "
          f"({(time.time() - t_start) / 60:.1f} min)")
    return 0


def _print_table(rows: list[dict]) -> None:
    print("\n| variation | size | unit | success | 95 % Wilson | world |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variation']} | {r['size']:g} | {r['unit']} | {r['successes']}/{r['episodes']} = "
              f"{100 * r['success_rate']:.0f} % | {100 * r['wilson_low']:.0f}-{100 * r['wilson_high']:.0f} % | "
              f"`{r['world']}` |")


def _write(out: Path, rows: list[dict], args, commit: str) -> None:
    keys = [k for k in rows[0] if k != "outcomes"]
    with open(out / "world_bench.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: r[k] for k in keys})
    (out / "world_bench.json").write_text(json.dumps({
        "checkpoint": args.checkpoint, "task": args.task, "episodes": args.episodes, "seed": args.seed,
        "commit": commit, "points": rows}, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
