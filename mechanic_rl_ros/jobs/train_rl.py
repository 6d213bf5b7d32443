"""``mechanic-rl train-rl``: headless online RL fine-tuning in the batched simulator (no ROS).

The same learner code as the ROS stack (:class:`~mechanic_rl_ros.rl.dppo.DPPO`
fed through a :class:`~mechanic_rl_ros.rl.buffer.RolloutBuffer`), driven
synchronously as in DPPO's training loop (Ren et al. 2024): every iteration
each of ``num_envs`` simulated FR3s makes ``steps_per_iter`` decisions (one
per action chunk of T_a control steps; episodes run on across iterations),
then one learner update on all of them, then new weights. Every
``eval_every`` iterations the policy is evaluated with deterministic DDIM on
``eval_episodes`` fixed initial states (reset seeds ``eval_seed + j``), so
runs and optimisers are compared on the same episodes.

Outputs in ``--out``: ``log.csv`` and ``log.json`` (one row per iteration),
``learning_curve.png``, ``checkpoints/iter_XXXX/`` (learner checkpoints, see
:meth:`DPPO.save`, plus ``trainer.json``), ``final/`` and ``best/``: the
learner as it was at the highest evaluation of this invocation (the start
included), with ``best.json`` saying after how many updates and with which
score. Fine-tuning does not settle at its best (on the GPU run of docs/learner.md
the evaluation moved between 83 % and 98 % over 25 updates), so the best
policy is kept as it is measured rather than only every ``save_every``.

Ctrl-C (SIGINT) or SIGTERM stops after the iteration in progress and writes
logs, curve and ``final/`` for the iterations completed, so a run cut short
(a lent machine's time running out, say) keeps its work and can be continued
with ``--resume out/final``; a second Ctrl-C aborts at once without saving.
"""
from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from mechanic_rl_ros.jobs.rollouts import Collector, evaluate
from mechanic_rl_ros.jobs.train_log import LOG_FIELDS, fmt, write_logs
from mechanic_rl_ros.rl.buffer import RolloutBuffer
from mechanic_rl_ros.rl.config import DPPOConfig, load_config
from mechanic_rl_ros.rl.dppo import DPPO

#: defaults of the ``train`` section (kept equal to config/rl.yaml; a test checks it)
TRAIN_DEFAULTS: dict[str, Any] = {
    "task": "lift", "checkpoint": None, "out": None, "reward": "sparse", "num_envs": 8, "iterations": 30,
    "steps_per_iter": 10, "eval_every": 5, "eval_episodes": 16, "eval_seed": 100000, "save_every": 10,
    "seed": 0, "threads": 1, "state_obs": False, "resume": None, "device": "cpu",
    "workers": 0,
}

# ----------------------------------------------------------------- arguments
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mechanic-rl train-rl", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", help="simulated task (lift, push)")
    ap.add_argument("--checkpoint", help="pretrained policy checkpoint directory (mechanic-rl pretrain --out)")
    ap.add_argument("--optimizer", choices=("mechanic", "adam"),
                    help="actor and critic optimiser: Mechanic(Adam(lr=1)) or Adam with a fixed lr")
    ap.add_argument("--actor-optimizer", choices=("mechanic", "adam"), help="actor optimiser only")
    ap.add_argument("--critic-optimizer", choices=("mechanic", "adam"), help="critic optimiser only")
    ap.add_argument("--lr", type=float, help="actor learning rate for Adam (learner.actor_lr)")
    ap.add_argument("--critic-lr", type=float, help="critic learning rate for Adam (learner.critic_lr)")
    ap.add_argument("--state-obs", action="store_true",
                    help="state observations (no rendering); requires a state-only checkpoint")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--iterations", type=int)
    ap.add_argument("--num-envs", type=int)
    ap.add_argument("--steps-per-iter", type=int, help="decisions (action chunks) per environment per iteration")
    ap.add_argument("--eval-every", type=int, help="iterations between evaluations (0: none)")
    ap.add_argument("--eval-episodes", type=int)
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    ap.add_argument("--device", help="torch device of policy, critic and update: cpu (default) or cuda[:N]; "
                                     "the simulator always runs on the CPU")
    ap.add_argument("--workers", type=int, help="simulator processes (0: step the environments in this process)")
    ap.add_argument("--out", help="output directory")
    ap.add_argument("--resume", help="learner checkpoint directory to continue from (out/checkpoints/iter_XXXX)")
    ap.add_argument("--config", action="append", default=[], help="YAML file(s) merged over config/rl.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override any entry, e.g. --set learner.clip=0.02 --set train.eval_episodes=32")
    ap.add_argument("--quiet", action="store_true", help="no per-iteration lines")
    return ap


def resolve_config(args: argparse.Namespace) -> tuple[dict[str, Any], DPPOConfig]:
    file_cfg = load_config(args.config, args.set)
    train = dict(TRAIN_DEFAULTS, **file_cfg.train)
    unknown = set(train) - set(TRAIN_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown train config keys: {sorted(unknown)}")
    for flag, key in [("task", "task"), ("checkpoint", "checkpoint"), ("seed", "seed"),
                      ("iterations", "iterations"), ("num_envs", "num_envs"), ("steps_per_iter", "steps_per_iter"),
                      ("eval_every", "eval_every"), ("eval_episodes", "eval_episodes"), ("threads", "threads"),
                      ("out", "out"), ("resume", "resume"), ("device", "device"), ("workers", "workers")]:
        if getattr(args, flag) is not None:
            train[key] = getattr(args, flag)
    if args.state_obs:
        train["state_obs"] = True
    learner = file_cfg.learner.to_dict()
    if args.optimizer:
        learner["actor_optimizer"] = learner["critic_optimizer"] = args.optimizer
    if args.actor_optimizer:
        learner["actor_optimizer"] = args.actor_optimizer
    if args.critic_optimizer:
        learner["critic_optimizer"] = args.critic_optimizer
    if args.lr is not None:
        learner["actor_lr"] = args.lr
    if args.critic_lr is not None:
        learner["critic_lr"] = args.critic_lr
    learner["seed"] = int(train["seed"])
    return train, DPPOConfig.from_dict(learner)


# ------------------------------------------------------------------ logging
# --------------------------------------------------------------------- train
def _device(name: Any) -> torch.device:
    """``train.device`` as a torch device; a clear error for a malformed name or an absent GPU."""
    try:
        dev = torch.device(str(name))
    except RuntimeError as e:
        raise ValueError(f"train.device: {name!r} is not a torch device (expected cpu or cuda[:N]): {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device: {name!r} asked for, but torch sees no CUDA GPU (expected cpu)")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"train.device: {name!r}: expected cpu or cuda[:N]")
    return dev


def _print(msg: str) -> None:
    print(msg, flush=True)


def train(train_cfg: Mapping[str, Any], learner_cfg: DPPOConfig, log: Callable[[str], None] = _print,
          progress: bool = True) -> tuple[DPPO, list[dict[str, Any]]]:
    """Run the headless fine-tuning; returns the learner and the per-iteration log rows."""
    t = dict(TRAIN_DEFAULTS, **train_cfg)
    torch.set_num_threads(int(t["threads"]))
    device = _device(t["device"])
    out = Path(t["out"]) if t["out"] else None
    rows: list[dict[str, Any]] = []
    start_it, env_steps, wall0 = 0, 0, 0.0
    gen = torch.Generator().manual_seed(int(t["seed"]))
    if t["resume"]:
        learner = DPPO.load(t["resume"], map_location=device)
        tj = json.loads((Path(t["resume"]) / "trainer.json").read_text())
        rows, start_it, env_steps, wall0 = tj["rows"], tj["iteration"], tj["env_steps"], tj["wall_s"]
        gen.set_state(torch.tensor(tj["generator"], dtype=torch.uint8))
        log(f"train-rl: resumed from {t['resume']} at iteration {start_it} (episodes restart)")
    else:
        if not t["checkpoint"]:
            raise ValueError("train-rl: no policy checkpoint (--checkpoint or train.checkpoint)")
        learner = DPPO.from_checkpoint(t["checkpoint"], learner_cfg, map_location=device)
    pcfg = learner.policy.cfg
    if t["state_obs"] and pcfg.cameras:
        raise ValueError(f"--state-obs: the checkpoint's policy uses cameras {list(pcfg.cameras)}; "
                         "give a state-only checkpoint (mechanic-rl pretrain --state-only)")
    buf = RolloutBuffer(action_horizon=pcfg.action_horizon,
                        capacity=int(t["num_envs"]) * int(t["steps_per_iter"]) * 2 + 64)
    collector = Collector(learner, t["task"], int(t["num_envs"]), int(t["seed"]) + 1000 * (start_it + 1),
                          t["reward"], workers=int(t["workers"]))
    if out:
        out.mkdir(parents=True, exist_ok=True)
        import yaml

        (out / "config.yaml").write_text(yaml.safe_dump({"train": dict(t), "learner": learner.cfg.to_dict()},
                                                        sort_keys=False))
    log(f"train-rl: task {t['task']}, {'images ' + ','.join(pcfg.cameras) if pcfg.cameras else 'state obs'}, "
        f"{t['num_envs']} envs x {t['steps_per_iter']} decisions (T_a={pcfg.action_horizon}) per iteration, "
        f"actor {learner.cfg.actor_optimizer}"
        f"{'' if learner.cfg.actor_optimizer == 'mechanic' else f' lr {learner.cfg.actor_lr:g}'}, "
        f"critic {learner.cfg.critic_optimizer}"
        f"{'' if learner.cfg.critic_optimizer == 'mechanic' else f' lr {learner.cfg.critic_lr:g}'}, "
        f"K'={learner.cfg.finetune_steps} of K={pcfg.sampling.inference_steps}, seed {t['seed']}, device {device}")
    t_start = time.perf_counter() - wall0
    eval_every = int(t["eval_every"])
    n_it = int(t["iterations"])

    def run_eval() -> tuple[float, float]:
        te = time.perf_counter()
        sr = evaluate(learner, t["task"], int(t["eval_episodes"]), int(t["eval_seed"]), int(t["num_envs"]),
                      t["reward"], workers=int(t["workers"]))
        return sr, time.perf_counter() - te

    stop = _StopRequest(log)
    done_it = start_it
    best = -1.0

    def keep_if_best(eval_sr: float, iteration: int) -> None:
        nonlocal best
        if out is None or math.isnan(eval_sr) or eval_sr <= best:
            return
        best = eval_sr
        d = out / "best"
        _save(d, learner, rows, iteration, env_steps, gen, time.perf_counter() - t_start)
        (d / "best.json").write_text(json.dumps({
            "eval_success": eval_sr, "eval_episodes": int(t["eval_episodes"]), "eval_seed": int(t["eval_seed"]),
            "iteration": iteration, "policy_version": learner.policy_version, "grad_steps": learner.num_updates,
            "env_steps": env_steps}) + "\n")
        if progress:
            log(f"best eval so far ({fmt(eval_sr)} after iteration {iteration}): saved to {d}")
    try:
        for it in range(start_it, n_it):
            if stop.requested:
                break
            eval_sr, eval_s = (float("nan"), 0.0)
            if eval_every > 0 and it % eval_every == 0:
                eval_sr, eval_s = run_eval()
                keep_if_best(eval_sr, it)
            tc = time.perf_counter()
            col = collector.collect(buf, int(t["steps_per_iter"]), gen)
            collect_s = time.perf_counter() - tc
            env_steps += int(col["env_steps"])
            stats = learner.update(buf.take_batch())
            row = {"iteration": it + 1, **col, "env_steps": env_steps, "eval_success": eval_sr,
                   "eval_episodes": int(t["eval_episodes"]) if not math.isnan(eval_sr) else 0,
                   **{k: stats[k] for k in ("actor_loss", "critic_loss", "approx_kl", "clip_fraction", "actor_scale",
                                            "critic_scale", "policy_version", "num_updates", "refused_stale_total",
                                            "explained_variance", "grad_steps", "kl_stop", "update_s")},
                   "collect_s": collect_s, "eval_s": eval_s, "wall_s": time.perf_counter() - t_start}
            row = {k: row[k] for k in LOG_FIELDS}
            rows.append(row)
            if progress:
                log(f"it {it + 1}/{n_it} | env steps {env_steps} | success train {fmt(row['train_success'])}"
                    f" eval {fmt(eval_sr)} | actor {fmt(row['actor_loss'])} critic {fmt(row['critic_loss'])}"
                    f" | scale a {fmt(row['actor_scale'])} c {fmt(row['critic_scale'])}"
                    f" | kl {fmt(row['approx_kl'])} clip {fmt(row['clip_fraction'])}"
                    f" | {row['collect_s']:.1f}+{row['update_s']:.1f}+{eval_s:.1f} s, total {row['wall_s']:.0f} s")
            if out:
                save_now = int(t["save_every"]) > 0 and (it + 1) % int(t["save_every"]) == 0
                write_logs(out, rows, t, learner.cfg, plot=save_now)
                if save_now:
                    _save(out / "checkpoints" / f"iter_{it + 1:04d}", learner, rows, it + 1, env_steps, gen,
                          time.perf_counter() - t_start)
            done_it = it + 1
        if stop.requested:
            hint = f"; continue with --resume {out / 'final'}" if out else ""
            log(f"train-rl: stopped by signal after iteration {done_it} of {n_it}{hint}")
        elif eval_every > 0:
            eval_sr, eval_s = run_eval()
            final = {k: float("nan") for k in LOG_FIELDS}
            final.update({"iteration": n_it, "env_steps": env_steps, "episodes": 0.0, "eval_success": eval_sr,
                          "eval_episodes": int(t["eval_episodes"]), "eval_s": eval_s,
                          "policy_version": learner.policy_version, "num_updates": learner.num_updates,
                          "actor_scale": rows[-1]["actor_scale"] if rows else float("nan"),
                          "critic_scale": rows[-1]["critic_scale"] if rows else float("nan"),
                          "wall_s": time.perf_counter() - t_start})
            rows.append(final)
            if progress:
                log(f"final eval | env steps {env_steps} | success {fmt(eval_sr)} | total {final['wall_s']:.0f} s")
            keep_if_best(eval_sr, done_it)
        if out:
            write_logs(out, rows, t, learner.cfg)
            _save(out / "final", learner, rows, done_it, env_steps, gen, time.perf_counter() - t_start)
    finally:
        stop.restore()
        collector.close()
    return learner, rows


class _StopRequest:
    """SIGINT/SIGTERM handler for the training loop: the first signal asks to stop after the current
    iteration (the learner's update is never cut in half), a second SIGINT raises KeyboardInterrupt.
    Outside the main thread signals cannot be caught; then nothing is installed."""

    def __init__(self, log: Callable[[str], None]):
        self.requested = False
        self._log = log
        self._old: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self._log(f"train-rl: {signal.Signals(signum).name}: stopping after this iteration, then saving "
                  "(Ctrl-C again aborts without saving)")

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}


def _save(d: Path, learner: DPPO, rows: list[dict[str, Any]], iteration: int, env_steps: int,
          gen: torch.Generator, wall_s: float) -> None:
    learner.save(d)
    (d / "trainer.json").write_text(json.dumps({
        "iteration": iteration, "env_steps": env_steps, "wall_s": wall_s, "rows": rows,
        "generator": gen.get_state().tolist()}) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        train_cfg, learner_cfg = resolve_config(args)
    except ValueError as e:
        print(f"mechanic-rl train-rl: {e}", file=sys.stderr)
        return 2
    if not train_cfg["checkpoint"] and not train_cfg["resume"]:
        print("mechanic-rl train-rl: --checkpoint (a pretrained policy directory) or --resume is required",
              file=sys.stderr)
        return 2
    _, rows = train(train_cfg, learner_cfg, progress=not args.quiet)
    if train_cfg["out"]:
        print(f"train-rl: logs and checkpoints in {train_cfg['out']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
