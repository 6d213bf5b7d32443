"""Headless trainer (`mechanic-rl train-rl`) in the real batched simulator with a tiny state-only policy."""
import csv
import json

import pytest
import torch
from safetensors.torch import load_file

from mechanic_rl_ros.policy import DiffusionPolicy
from fixtures_policy import tiny_config
from mechanic_rl_ros.rl.config import load_config
from mechanic_rl_ros.jobs.train_log import LOG_FIELDS
from mechanic_rl_ros.jobs.train_rl import TRAIN_DEFAULTS, main

torch.set_num_threads(1)


def _argv(ckpt, out, seed):
    return ["--checkpoint", str(ckpt), "--state-obs", "--iterations", "2", "--num-envs", "2", "--steps-per-iter",
            "2", "--eval-every", "0", "--out", str(out), "--seed", str(seed), "--optimizer", "mechanic", "--quiet",
            "--set", "learner.critic_warmup_updates=0", "--set", "learner.update_epochs=1",
            "--set", "learner.critic_hidden=[32,32]", "--set", "learner.finetune_steps=2", "--set", "train.save_every=0"]


def test_seeded_run_is_reproducible_bit_for_bit_and_writes_logs(tiny_ckpt, tmp_path):
    assert main(_argv(tiny_ckpt, tmp_path / "a", 1)) == 0
    assert main(_argv(tiny_ckpt, tmp_path / "b", 1)) == 0
    for name in ("policy/model.safetensors", "critic.safetensors"):
        wa, wb = load_file(tmp_path / "a" / "final" / name), load_file(tmp_path / "b" / "final" / name)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), name
    learner_a = json.loads((tmp_path / "a" / "final" / "learner.json").read_text())
    assert learner_a["scalars"]["policy_version"] == 2 and learner_a["actor_scale"] > 0
    with open(tmp_path / "a" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and tuple(rows[0]) == LOG_FIELDS
    assert int(rows[1]["env_steps"]) > int(rows[0]["env_steps"]) > 0
    assert (tmp_path / "a" / "learning_curve.png").stat().st_size > 0
    assert (tmp_path / "a" / "final" / "trainer.json").is_file()
    # a fine-tuned checkpoint loads as a policy (mechanic-rl eval can use it)
    policy = DiffusionPolicy.from_checkpoint(tmp_path / "a" / "final" / "policy")
    assert policy.ft_net is not None and policy.cfg.sampling.finetune_steps == 2


def test_state_obs_refuses_a_camera_policy(tmp_path):
    d = tmp_path / "cam_policy"
    DiffusionPolicy(tiny_config()).save(d)
    with pytest.raises(ValueError, match="state-only checkpoint"):
        main(_argv(d, tmp_path / "out", 0))


def test_train_defaults_match_the_yaml():
    assert load_config().train == TRAIN_DEFAULTS


def test_simulator_workers_change_nothing_but_the_processes(tiny_ckpt, tmp_path):
    """Same seed, in-process simulators vs two worker processes: identical weights and evaluation."""
    extra = ["--eval-every", "2", "--set", "train.eval_episodes=3"]
    assert main(_argv(tiny_ckpt, tmp_path / "local", 4) + extra) == 0
    assert main(_argv(tiny_ckpt, tmp_path / "spread", 4) + extra + ["--workers", "2"]) == 0
    for name in ("policy/model.safetensors", "critic.safetensors"):
        wa, wb = load_file(tmp_path / "local" / "final" / name), load_file(tmp_path / "spread" / "final" / name)
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name
    logs = [list(csv.DictReader(open(tmp_path / d / "log.csv"))) for d in ("local", "spread")]
    keys = ("env_steps", "episodes", "train_success", "eval_success", "actor_loss", "critic_loss")
    assert [[r[k] for k in keys] for r in logs[0]] == [[r[k] for k in keys] for r in logs[1]]


def test_best_evaluation_keeps_its_weights_in_best(tiny_ckpt, tmp_path):
    argv = _argv(tiny_ckpt, tmp_path / "run", 3)
    argv[argv.index("--eval-every") + 1] = "1"
    assert main(argv + ["--eval-episodes", "2"]) == 0
    with open(tmp_path / "run" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    # in-loop evaluations measure the policy before row i's update (after i - 1 updates); the last row is the final
    evals = [(float(r["eval_success"]), int(r["iteration"]) - 1) for r in rows[:-1]]
    evals.append((float(rows[-1]["eval_success"]), int(rows[-1]["iteration"])))
    assert len(evals) == 3 and not any(e != e for e, _ in evals)
    top = max(e for e, _ in evals)
    first_top = min(i for e, i in evals if e == top)
    best = json.loads((tmp_path / "run" / "best" / "best.json").read_text())
    assert best["eval_success"] == top and best["iteration"] == first_top and best["eval_episodes"] == 2
    # the weights in best/ are those the evaluation measured: after first_top updates
    policy = load_file(tmp_path / "run" / "best" / "policy" / "model.safetensors")
    final = load_file(tmp_path / "run" / "final" / "policy" / "model.safetensors")
    ft = [k for k in policy if k.startswith("ft_net.")]
    moved = any(not torch.equal(policy[k], final[k]) for k in ft)
    assert moved == (first_top != 2)
    if first_top == 0:
        assert all(torch.equal(policy[k], policy["net." + k[len("ft_net."):]]) for k in ft)
    trainer = json.loads((tmp_path / "run" / "best" / "trainer.json").read_text())
    assert trainer["iteration"] == first_top


def test_device_is_checked_with_a_clear_error(tiny_ckpt, tmp_path):
    with pytest.raises(ValueError, match=r"train.device: 'gpu0'.*expected cpu or cuda"):
        main(_argv(tiny_ckpt, tmp_path / "x", 0) + ["--device", "gpu0"])
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"train.device: 'cuda'.*no CUDA GPU"):
            main(_argv(tiny_ckpt, tmp_path / "y", 0) + ["--device", "cuda"])


def test_ctrl_c_stops_after_the_iteration_and_saves_a_resumable_final(tiny_ckpt, tmp_path):
    """SIGINT to the whole process group (a terminal's Ctrl-C, simulator workers included)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    argv = _argv(tiny_ckpt, tmp_path / "run", 2)
    argv[argv.index("--iterations") + 1] = "500"
    argv.remove("--quiet")
    proc = subprocess.Popen([sys.executable, "-m", "mechanic_rl_ros.cli", "train-rl", *argv, "--workers", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines = []
    deadline = time.monotonic() + 300
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("it 2/500") or time.monotonic() > deadline:
            break
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    text = "".join(lines) + out
    assert proc.returncode == 0, text
    assert "stopping after this iteration" in text and "stopped by signal after iteration" in text, text
    trainer = json.loads((tmp_path / "run" / "final" / "trainer.json").read_text())
    with open(tmp_path / "run" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert 2 <= trainer["iteration"] < 500 and len(rows) == trainer["iteration"]
    # the saved state continues
    resumed = _argv(tiny_ckpt, tmp_path / "more", 2)
    resumed[resumed.index("--iterations") + 1] = str(trainer["iteration"] + 1)
    assert main(resumed + ["--resume", str(tmp_path / "run" / "final")]) == 0
    learner = json.loads((tmp_path / "more" / "final" / "learner.json").read_text())
    assert learner["scalars"]["policy_version"] == trainer["iteration"] + 1
