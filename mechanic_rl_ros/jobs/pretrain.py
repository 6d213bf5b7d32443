"""``mechanic-rl pretrain``: behaviour-cloning pretraining of the diffusion policy (Chi et al., RSS 2023).

Trains eps_theta with the DDPM loss (Ho et al. 2020, Eq. 14) on windows of
demonstrations, keeps an exponential moving average of the weights (Chi et al.,
Sec. IV-C: EMA weights are the ones evaluated and saved), reports a validation
loss on held-out episodes and writes

* ``<out>/model.safetensors`` + ``<out>/config.json``: the EMA policy checkpoint;
* ``<out>/history.json``: per-epoch train/val losses and timings;
* ``<out>/loss_curves.png``: the loss curves;
* ``<out>/train_config.yaml``: the fully resolved configuration.

Configuration: ``config/policy.yaml`` (documented defaults), then ``--config``
files, then the shortcut flags, then ``--set dotted.key=value`` overrides.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from mechanic_rl_ros.config_files import apply_overrides, deep_update, load_yaml
from mechanic_rl_ros.optim.ema import EMA
from mechanic_rl_ros.policy.config import DEFAULT_CONFIG_PATH, PolicyConfig
from mechanic_rl_ros.policy.dataset import SequenceDataset, synthetic_episodes
from mechanic_rl_ros.policy.normalizer import PolicyNormalizer
from mechanic_rl_ros.policy.policy import DiffusionPolicy

#: defaults used when a key is missing from the YAML file (kept equal to config/policy.yaml)
TRAIN_DEFAULTS: dict[str, Any] = {
    "data": None, "out": None, "max_episodes": 100, "successful_only": True, "epochs": 40,
    "batch_size": 64, "lr": 3.0e-4, "weight_decay": 1.0e-6, "betas": [0.95, 0.999], "warmup_steps": 200,
    "grad_clip": 1.0, "ema_power": 0.75, "ema_max_decay": 0.999, "ema_inv_gamma": 1.0, "val_fraction": 0.1,
    "val_every": 5, "val_sample_batches": 2, "augment_pad": 4, "num_threads": 2, "seed": 0, "save_every": 10,
    "max_minutes": None,
}


# ------------------------------------------------------------------ config
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mechanic-rl pretrain", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="demonstration directory (mechanic-rl collect --out), or 'synthetic[:N]'")
    ap.add_argument("--out", help="output directory for the checkpoint, curves and history")
    ap.add_argument("--config", action="append", default=[], help="YAML file(s) merged over config/policy.yaml")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--threads", type=int, help="torch CPU threads (train.num_threads)")
    ap.add_argument("--max-episodes", type=int)
    ap.add_argument("--max-minutes", type=float, help="stop after this wall time (checkpoint is still written)")
    ap.add_argument("--state-only", action="store_true",
                    help="no cameras; low-dim obs = qpos, gripper, task_state (the RL quick-benchmark policy)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override any config entry, e.g. --set policy.unet.down_dims=[32,64,128]")
    ap.add_argument("--no-progress", action="store_true", help="disable the tqdm progress bar")
    return ap


def resolve_config(args: argparse.Namespace) -> dict[str, Any]:
    cfg: dict[str, Any] = {"policy": {}, "train": dict(TRAIN_DEFAULTS)}
    cfg = deep_update(cfg, load_yaml(DEFAULT_CONFIG_PATH) if DEFAULT_CONFIG_PATH.is_file() else {})
    for path in args.config:
        cfg = deep_update(cfg, load_yaml(path, "policy config"))
    t = cfg["train"]
    for flag, key in [("data", "data"), ("out", "out"), ("epochs", "epochs"), ("batch_size", "batch_size"),
                      ("lr", "lr"), ("threads", "num_threads"), ("max_episodes", "max_episodes"),
                      ("max_minutes", "max_minutes")]:
        if getattr(args, flag) is not None:
            t[key] = getattr(args, flag)
    if args.state_only:
        cfg["policy"] = deep_update(cfg["policy"], {"cameras": [], "lowdim_keys": ["qpos", "gripper", "task_state"]})
    cfg = apply_overrides(cfg, args.set)
    unknown = set(cfg["train"]) - set(TRAIN_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown train config keys: {sorted(unknown)}")
    return cfg


# ------------------------------------------------------------------- data
def load_demos(spec: str, policy_cfg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Episodes from ``mechanic_rl_ros.data.demos.load_episodes`` or the synthetic generator."""
    if spec.startswith("synthetic"):
        n = int(spec.split(":")[1]) if ":" in spec else 16
        return synthetic_episodes(n, 40, tuple(policy_cfg.get("cameras", ("scene",))),
                                  int(policy_cfg.get("image_size", 96)), 13)
    from mechanic_rl_ros.data.demos import load_episodes  # lazy: keeps the policy package sim-free

    return list(load_episodes(spec))


def split_episodes(episodes: Sequence[Any], val_fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """Hold out ``val_fraction`` of the episodes (at least one when there are >= 2)."""
    n = len(episodes)
    n_val = min(n - 1, max(1, round(val_fraction * n))) if val_fraction > 0 and n >= 2 else 0
    perm = np.random.default_rng(seed).permutation(n)
    val = set(perm[:n_val].tolist())
    return [e for i, e in enumerate(episodes) if i not in val], [e for i, e in enumerate(episodes) if i in val]


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# --------------------------------------------------------------- training
@torch.no_grad()
def evaluate_val(policy: DiffusionPolicy, ds: SequenceDataset, batch_size: int,
                 sample_batches: int, seed: int) -> dict[str, float]:
    """Validation DDPM loss (fixed noise draws, so epochs are comparable) and the MSE of
    DDIM-sampled executable actions against the demonstration (normalised units)."""
    gen = torch.Generator().manual_seed(seed)
    losses, mses = [], []
    for i, batch in enumerate(ds.batches(batch_size)):
        losses.append(float(policy.compute_loss(batch, generator=gen)) * len(batch["action"]))
        if i < sample_batches:
            out = policy.sample(batch, stochastic=False, generator=gen)
            target = policy.normalizer.action.normalize(batch["action"].float())
            mses.append(float(((policy.executable(out.actions_norm) - policy.executable(target)) ** 2).mean()))
    return {"val_loss": sum(losses) / len(ds), "val_action_mse": float(np.mean(mses)) if mses else float("nan")}


def plot_curves(history: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    steps = history["step_loss"]
    if steps:
        y = np.asarray(steps, dtype=float)
        w = max(1, len(y) // 50)
        smooth = np.convolve(y, np.ones(w) / w, mode="valid")
        ax[0].plot(np.arange(len(y)), y, alpha=0.25, lw=0.5, label="train (per step)")
        ax[0].plot(np.arange(w - 1, len(y)), smooth, label=f"train (mean of {w})")
    ep = history["epochs"]
    ax[0].plot([e["step"] for e in ep if "val_loss" in e], [e["val_loss"] for e in ep if "val_loss" in e],
               "o-", label="validation (EMA weights)")
    ax[0].set_yscale("log")
    ax[0].set_xlabel("gradient step")
    ax[0].set_ylabel("DDPM loss")
    ax[0].legend()
    ax[1].plot([e["epoch"] for e in ep if "val_action_mse" in e],
               [e["val_action_mse"] for e in ep if "val_action_mse" in e], "o-")
    ax[1].set_yscale("log")
    ax[1].set_xlabel("epoch")
    ax[1].set_ylabel("val. action MSE (normalised, DDIM)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train(cfg: Mapping[str, Any], episodes: Sequence[Mapping[str, Any]] | None = None,
          progress: bool = True, log: Callable[[str], None] = print) -> tuple[DiffusionPolicy, dict[str, Any]]:
    """Pretrain a policy; returns (EMA policy, history).  Writes the outputs when ``train.out`` is set."""
    t_cfg = dict(TRAIN_DEFAULTS, **cfg.get("train", {}))
    torch.set_num_threads(int(t_cfg["num_threads"]))
    torch.manual_seed(int(t_cfg["seed"]))
    rng = np.random.default_rng(int(t_cfg["seed"]))
    p_dict = dict(cfg.get("policy", {}))
    if episodes is None:
        if not t_cfg["data"]:
            raise ValueError("no training data: pass --data")
        episodes = load_demos(str(t_cfg["data"]), p_dict)
    n_loaded = len(episodes)
    n_success_loaded = sum(bool(e.get("success", True)) for e in episodes)
    if t_cfg["successful_only"]:
        episodes = [e for e in episodes if bool(e.get("success", True))]
    if t_cfg["max_episodes"]:
        episodes = list(episodes)[: int(t_cfg["max_episodes"])]
    if not episodes:
        raise ValueError("no (successful) episodes to train on")
    lowdim_keys = tuple(p_dict.get("lowdim_keys", PolicyConfig().lowdim_keys))
    p_dict["lowdim_dims"] = {k: int(np.asarray(episodes[0][k]).reshape(len(episodes[0]["action"]), -1).shape[1])
                             for k in lowdim_keys}
    p_dict["action_dim"] = int(np.asarray(episodes[0]["action"]).shape[-1])
    pcfg = PolicyConfig.from_dict(p_dict).validate()

    train_eps, val_eps = split_episodes(episodes, float(t_cfg["val_fraction"]), int(t_cfg["seed"]))
    normalizer = PolicyNormalizer.fit(train_eps, pcfg.lowdim_keys)
    policy = DiffusionPolicy(pcfg, normalizer)
    train_ds = SequenceDataset(train_eps, pcfg)
    val_ds = SequenceDataset(val_eps, pcfg) if val_eps else None
    log(f"pretrain: {len(train_eps)} train / {len(val_eps)} val episodes ({n_loaded} loaded, "
        f"{n_success_loaded} successful), {len(train_ds)} windows; {policy.num_parameters() / 1e6:.2f} M params; "
        f"arch {policy.arch_id}")

    bs = int(t_cfg["batch_size"])
    steps_per_epoch = max(1, len(train_ds) // bs)
    total = steps_per_epoch * int(t_cfg["epochs"])
    opt = torch.optim.AdamW(policy.net.parameters(), lr=float(t_cfg["lr"]), betas=tuple(t_cfg["betas"]),
                            weight_decay=float(t_cfg["weight_decay"]))
    warm = int(t_cfg["warmup_steps"])

    def lr_factor(step: int) -> float:  # linear warm-up, then cosine decay to 0
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    ema_policy = DiffusionPolicy(pcfg, normalizer)
    ema_policy.net.load_state_dict(policy.net.state_dict())
    ema = EMA(list(ema_policy.net.requires_grad_(False).eval().parameters()), float(t_cfg["ema_power"]),
              float(t_cfg["ema_max_decay"]), float(t_cfg["ema_inv_gamma"]))
    out_dir = Path(t_cfg["out"]) if t_cfg["out"] else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
        import yaml

        (out_dir / "train_config.yaml").write_text(
            yaml.safe_dump({"policy": pcfg.to_dict(), "train": t_cfg}, sort_keys=False))

    history: dict[str, Any] = {"step_loss": [], "epochs": []}
    gen = torch.Generator().manual_seed(int(t_cfg["seed"]))
    t0 = time.time()
    max_s = float(t_cfg["max_minutes"]) * 60 if t_cfg["max_minutes"] else math.inf
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="pretrain", unit="step", dynamic_ncols=True, file=sys.stderr)
    step, stopped_early = 0, False

    def finish_epoch(epoch: int, ep_losses: list[float]) -> None:
        rec: dict[str, Any] = {"epoch": epoch, "step": step, "train_loss": float(np.mean(ep_losses)),
                               "lr": sched.get_last_lr()[0], "wall_s": time.time() - t0}
        last = epoch == int(t_cfg["epochs"]) or stopped_early
        if val_ds is not None and (epoch % int(t_cfg["val_every"]) == 0 or last):
            rec.update(evaluate_val(ema_policy, val_ds, bs, int(t_cfg["val_sample_batches"]),
                                    int(t_cfg["seed"]) + 1))
        history["epochs"].append(rec)
        if bar is not None:
            bar.set_postfix({k: f"{v:.4f}" for k, v in rec.items() if k in ("train_loss", "val_loss")})
        if out_dir and (epoch % int(t_cfg["save_every"]) == 0 or last):
            save(epoch)

    def save(epoch: int) -> None:
        ema_policy.train_info = {
            "epochs": epoch, "steps": step, "wall_time_s": round(time.time() - t0, 1),
            "train_episodes": len(train_eps), "val_episodes": len(val_eps), "windows": len(train_ds),
            "data": str(t_cfg["data"]), "weights": "ema", "git_commit": _git_commit(),
            "torch_threads": torch.get_num_threads(),
            "last": {k: v for k, v in history["epochs"][-1].items()} if history["epochs"] else {},
        }
        ema_policy.save(out_dir)  # type: ignore[arg-type]
        (out_dir / "history.json").write_text(json.dumps(history))  # type: ignore[operator]
        plot_curves(history, out_dir / "loss_curves.png")  # type: ignore[operator]

    policy.train()
    for epoch in range(1, int(t_cfg["epochs"]) + 1):
        ep_losses = []
        for batch in train_ds.batches(bs, rng, drop_last=True):
            loss = policy.compute_loss(batch, generator=gen, augment_pad=int(t_cfg["augment_pad"]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if t_cfg["grad_clip"]:
                torch.nn.utils.clip_grad_norm_(policy.net.parameters(), float(t_cfg["grad_clip"]))
            opt.step()
            sched.step()
            ema.update(policy.net.parameters())
            step += 1
            lv = loss.item()
            ep_losses.append(lv)
            history["step_loss"].append(lv)
            if bar is not None:
                bar.update(1)
            if time.time() - t0 > max_s:
                stopped_early = True
                break
        finish_epoch(epoch, ep_losses)
        if stopped_early:
            log(f"pretrain: stopped after {time.time() - t0:.0f} s (max_minutes) in epoch {epoch}")
            break
    if bar is not None:
        bar.close()
    history["wall_time_s"] = time.time() - t0
    if not out_dir:
        ema_policy.train_info = {"epochs": history["epochs"][-1]["epoch"], "steps": step,
                                 "wall_time_s": round(history["wall_time_s"], 1)}
    log(f"pretrain: done in {history['wall_time_s']:.0f} s; last epoch {history['epochs'][-1]}")
    return ema_policy.eval(), history


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = resolve_config(args)
    if not cfg["train"]["data"] or not cfg["train"]["out"]:
        print("mechanic-rl pretrain: --data and --out are required (or train.data / train.out in a config file)",
              file=sys.stderr)
        return 2
    train(cfg, progress=not args.no_progress)
    print(f"checkpoint: {cfg['train']['out']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
