"""Pretraining and evaluation tools end to end (real torch, real simulator, tiny networks)."""
import json
import os

import numpy as np
import pytest
import torch

from mechanic_rl_ros.policy import DiffusionPolicy
from mechanic_rl_ros.policy.dataset import synthetic_episodes
from mechanic_rl_ros.jobs.evaluate import wilson_interval
from fixtures_policy import tiny_config
from mechanic_rl_ros.jobs.pretrain import train

torch.set_num_threads(1)


def test_tiny_training_run_reduces_the_loss():
    cfg = tiny_config(state_only=True)
    eps = synthetic_episodes(12, 40, cameras=(), seed=0)
    run = {"policy": cfg.to_dict(),
           "train": {"epochs": 15, "batch_size": 32, "lr": 2e-3, "warmup_steps": 10, "val_every": 5,
                     "num_threads": 1, "seed": 0, "ema_max_decay": 0.9}}
    policy, hist = train(run, episodes=eps, progress=False, log=lambda s: None)
    first = np.mean(hist["step_loss"][:5])
    last = np.mean(hist["step_loss"][-10:])
    assert last < 0.5 * first, (first, last)
    vals = [e["val_loss"] for e in hist["epochs"] if "val_loss" in e]
    assert vals[-1] < vals[0]
    torch.set_num_threads(1)
    # the trained EMA policy predicts the demonstrated next joint targets far better than chance
    e = eps[0]
    obs = {k: e[k][None, 9:11] for k in ("qpos", "gripper", "task_state")}
    out = policy.sample(obs, stochastic=False, generator=torch.Generator().manual_seed(0))
    err = (policy.executable(out.actions)[0, 0] - torch.as_tensor(e["action"][10])).abs().mean()
    spread = np.abs(e["action"][10] - np.concatenate([x["action"] for x in eps]).mean(0)).mean()
    assert err < spread, (float(err), spread)


def test_pretrain_cli_writes_checkpoint_curves_and_history(tmp_path):
    from mechanic_rl_ros.cli import main

    out = tmp_path / "run"
    rc = main(["pretrain", "--data", "synthetic:4", "--out", str(out), "--epochs", "2", "--threads", "1",
               "--no-progress", "--set", "policy.image_size=32", "--set", "policy.vision.base_width=8",
               "--set", "policy.vision.group_size=8", "--set", "policy.unet.down_dims=[16,32]",
               "--set", "train.batch_size=16", "--set", "train.val_every=1"])
    assert rc == 0
    for f in ("model.safetensors", "config.json", "history.json", "loss_curves.png", "train_config.yaml"):
        assert (out / f).is_file(), f
    assert (out / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"
    hist = json.loads((out / "history.json").read_text())
    assert len(hist["epochs"]) == 2 and "val_loss" in hist["epochs"][-1]
    policy = DiffusionPolicy.from_checkpoint(out)
    assert policy.cfg.image_size == 32 and policy.cfg.unet.down_dims == (16, 32)
    info = json.loads((out / "config.json").read_text())["train_info"]
    assert info["epochs"] == 2 and info["weights"] == "ema" and info["wall_time_s"] > 0


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson_interval(50, 50)
    assert hi == 1.0 and lo == pytest.approx(0.9287, abs=1e-4)


def test_eval_cli_runs_a_policy_in_the_simulator(tmp_path):
    os.environ.setdefault("MUJOCO_GL", "egl")
    from mechanic_rl_ros.jobs.evaluate import main

    torch.manual_seed(0)
    cfg = tiny_config(image_size=32)
    cfg.sampling.inference_steps = 2
    DiffusionPolicy(cfg).save(tmp_path / "ckpt")  # untrained: identity normaliser, actions near 0
    rc = main(["--checkpoint", str(tmp_path / "ckpt"), "--task", "lift", "--episodes", "1", "--video-episodes", "1",
               "--threads", "1", "--out", str(tmp_path / "ev")])
    assert rc == 0
    res = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert res["episodes"] == 1 and res["successes"] == 0 and res["wilson95"][0] == 0.0
    assert res["episodes_detail"][0]["steps"] > 0
    video = tmp_path / "ev" / os.path.basename(res["video"])
    assert video.is_file() and video.stat().st_size > 1000


def test_eval_cli_stochastic_mode_samples_with_the_given_noise_floor(tmp_path):
    """`mechanic-rl eval --stochastic` samples as the RL policy does; the floor on the
    per-step std (--min-sampling-std) widens the spread of the executed actions."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    from mechanic_rl_ros.control.chunk_loop import ChunkLoop
    from mechanic_rl_ros.jobs.evaluate import main
    from mechanic_rl_ros.policy import PolicyPlanner
    from fixtures_policy import random_obs

    torch.manual_seed(0)
    cfg = tiny_config(image_size=32)
    cfg.sampling.inference_steps = 2
    policy = DiffusionPolicy(cfg)
    policy.save(tmp_path / "ckpt")
    rc = main(["--checkpoint", str(tmp_path / "ckpt"), "--task", "lift", "--episodes", "1", "--video-episodes", "0",
               "--threads", "1", "--stochastic", "--min-sampling-std", "0.2"])
    assert rc == 0
    res = json.loads((tmp_path / "ckpt" / "eval_lift_stochastic_std0.2" / "eval.json").read_text())
    assert "stochastic, min_sampling_std 0.2" in res["source"] and res["episodes"] == 1

    batch = random_obs(cfg, 1)  # [B=1, T_o, ...]; one observation is its first frame
    obs = {k: np.asarray(v)[0, 0] for k, v in batch.items() if k != "images"}
    obs["images"] = {c: np.asarray(im)[0, 0] for c, im in batch["images"].items()}

    def spread(planner):
        loop = ChunkLoop.for_policy(policy)
        loop.observe(obs)
        req = loop.request()
        return np.std(np.stack([planner(req).actions for _ in range(16)]), axis=0).mean()

    det = PolicyPlanner(policy)
    narrow, wide = PolicyPlanner(policy, stochastic=True), PolicyPlanner(policy, stochastic=True)
    policy.cfg.sampling.min_sampling_std = 0.001
    s_narrow = spread(narrow)
    policy.cfg.sampling.min_sampling_std = 0.5
    s_wide = spread(wide)
    assert s_wide > 2 * s_narrow, (s_narrow, s_wide)
    assert np.isfinite(spread(det))


def test_paired_comparison_counts_won_and_lost_seeds_with_the_exact_p(tmp_path):
    import json

    from mechanic_rl_ros.jobs.evaluate import compare_line, outcomes_by_seed, paired_exact_p

    assert paired_exact_p(7, 2) == pytest.approx(0.1796875)  # 2 * P(X <= 2), X ~ Bin(9, 1/2)
    assert paired_exact_p(0, 0) == 1.0 and paired_exact_p(4, 4) == 1.0
    headless = tmp_path / "a.json"
    headless.write_text(json.dumps({"eval_seed": 100, "outcomes": [1, 0, 0, 1]}))
    mine = {100: True, 101: True, 102: False, 103: False, 999: True}
    line = compare_line(mine, outcomes_by_seed(headless), "a.json")
    assert "4 common seeds" in line and "won 1, lost 1" in line and "p = 1" in line
    (tmp_path / "b.json").write_text(json.dumps({"successes": 3}))
    with pytest.raises(ValueError, match="no per-episode outcomes"):
        outcomes_by_seed(tmp_path / "b.json")
