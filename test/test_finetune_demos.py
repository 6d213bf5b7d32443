"""``mechanic-rl finetune-demos``: behaviour cloning of the policy on a few demonstrations with Mechanic.

Small policies on synthetic demonstrations for the learning behaviour; the command end to end on demonstrations
recorded in the MuJoCo simulator by ``mechanic-rl collect`` and the shipped pretrained policy.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mechanic_rl_ros.jobs import finetune_demos as fd
from mechanic_rl_ros.policy import DiffusionPolicy
from mechanic_rl_ros.policy.dataset import synthetic_episodes
from mechanic_rl_ros.policy.normalizer import PolicyNormalizer
from fixtures_policy import tiny_config

ROOT = Path(__file__).resolve().parents[1]


def _tiny(seed: int = 0):
    torch.manual_seed(seed)
    cfg = tiny_config()
    eps = synthetic_episodes(n=6, length=30, image_size=cfg.image_size, seed=1)
    return DiffusionPolicy(cfg, PolicyNormalizer.fit(eps, cfg.lowdim_keys)), eps


def _weights(policy):
    return [p.detach().clone() for p in policy.net.parameters()]


def test_windows_refuse_demonstrations_that_do_not_fit_the_policy():
    policy, eps = _tiny()
    assert len(fd.demo_windows(policy, eps)) == sum(len(e["action"]) for e in eps)
    bad = dict(eps[0], images={"scene": np.zeros((30, 16, 16, 3), np.uint8)})
    with pytest.raises(ValueError, match=r"episode 1: images\['scene'\] has shape \[30, 16, 16, 3\]"):
        fd.demo_windows(policy, [eps[1], bad])
    with pytest.raises(ValueError, match="no low-dim key 'gripper'"):
        fd.demo_windows(policy, [{k: v for k, v in eps[0].items() if k != "gripper"}])
    nan = dict(eps[0], action=np.full_like(eps[0]["action"], np.nan))
    with pytest.raises(ValueError, match="episode 0: action has non-finite values"):
        fd.demo_windows(policy, [nan])
    with pytest.raises(ValueError, match=r"action has shape \[30, 7\]; expected \[L > 0, 8\]"):
        fd.demo_windows(policy, [dict(eps[0], action=eps[0]["action"][:, :7])])
    with pytest.raises(ValueError, match="episode 0: qpos has 6 values per step; expected 7"):
        fd.demo_windows(policy, [dict(eps[0], qpos=eps[0]["qpos"][:, :6])])
    with pytest.raises(ValueError, match="no demonstration episodes"):
        fd.demo_windows(policy, [])


def test_finetuning_is_deterministic_and_fits_the_demonstrations():
    runs = []
    for _ in range(2):
        policy, eps = _tiny()
        ds = fd.demo_windows(policy, eps)
        tuner = fd.DemoFinetuner(policy, ds, batch_size=16, seed=3, augment_pad=2)
        probe = ds.get_batch(np.arange(0, len(ds), 3))
        with torch.no_grad():
            before = float(policy.compute_loss(probe, generator=torch.Generator().manual_seed(9)))
        losses = [tuner.step() for _ in range(150)]
        with torch.no_grad():
            after = float(policy.compute_loss(probe, generator=torch.Generator().manual_seed(9)))
        runs.append((_weights(policy), losses, before, after, tuner.scale))
    (w0, l0, b0, a0, s0), (w1, l1, _, _, s1) = runs
    assert l0 == l1 and s0 == s1 and all(torch.equal(p, q) for p, q in zip(w0, w1))
    assert all(np.isfinite(l0)) and s0 > 0
    assert a0 < 0.7 * b0, (b0, a0)


def test_the_moving_average_is_what_is_adopted_and_lags_the_steps():
    """With ``ema_decay`` the weights adopted at the end are the average: the first update copies the step's
    weights (warm-up decay 0), later ones lag them; the same seed without the average makes the same steps."""
    plain, eps = _tiny()
    tuner = fd.DemoFinetuner(plain, fd.demo_windows(plain, eps), batch_size=8, seed=2)
    averaged, _ = _tiny()
    avg = fd.DemoFinetuner(averaged, fd.demo_windows(averaged, eps), batch_size=8, seed=2, ema_decay=0.9)
    tuner.step(), avg.step()
    assert all(torch.equal(t, p) for t, p in zip(avg.ema.targets, avg.params))
    for _ in range(5):
        tuner.step(), avg.step()
    last = _weights(averaged)
    assert all(torch.equal(p, q) for p, q in zip(last, _weights(plain)))  # the average does not steer the steps
    assert avg.ema.step == 6 and 0.0 < avg.ema.decay() <= 0.9
    averages = [t.clone() for t in avg.ema.targets]
    assert any(not torch.equal(a, w) for a, w in zip(averages, last))
    avg.adopt_average()
    assert all(torch.equal(p, a) for p, a in zip(avg.params, averages))
    tuner.adopt_average()  # without the average: nothing changes
    assert all(torch.equal(p, q) for p, q in zip(last, _weights(plain)))


def test_a_non_finite_loss_changes_nothing_and_is_counted(monkeypatch):
    policy, eps = _tiny()
    tuner = fd.DemoFinetuner(policy, fd.demo_windows(policy, eps), batch_size=8, seed=0)
    tuner.step()
    before = _weights(policy)
    state = json.dumps(tuner.opt.tuner_state, default=str)
    real = policy.compute_loss
    monkeypatch.setattr(policy, "compute_loss", lambda *a, **k: real(*a, **k) * float("nan"))
    assert np.isnan(tuner.step())
    assert tuner.nonfinite_skipped == 1 and tuner.steps == 1
    assert all(torch.equal(p, q) for p, q in zip(before, _weights(policy)))
    assert json.dumps(tuner.opt.tuner_state, default=str) == state
    monkeypatch.setattr(policy, "compute_loss", real)
    assert np.isfinite(tuner.step()) and tuner.steps == 2


def test_command_end_to_end_on_simulator_demonstrations(tmp_path, capsys):
    """Two clean demonstrations recorded in MuJoCo, three steps on the shipped pretrained policy, a two-episode
    evaluation: an ordinary checkpoint of the same architecture with changed weights, the robot time of the
    demonstrations recorded, every evaluation outcome kept."""
    from mechanic_rl_ros.jobs import collect

    demos = tmp_path / "demos"
    assert collect.main(["--episodes", "2", "--noise", "0", "--out", str(demos), "--seed", "7000", "--quiet"]) == 0
    out = tmp_path / "ft"
    argv = ["--checkpoint", str(ROOT / "checkpoints/lift_pretrained"), "--data", str(demos), "--steps", "3",
            "--batch-size", "4", "--eval-episodes", "2", "--out", str(out), "--threads", "1", "--log-every", "1"]
    assert fd.main(argv) == 0
    printed = capsys.readouterr().out
    assert "step 3/3" in printed and "eval: the fine-tuned policy alone" in printed
    pre = DiffusionPolicy.from_checkpoint(ROOT / "checkpoints/lift_pretrained")
    post = DiffusionPolicy.from_checkpoint(out)
    assert post.arch_id == pre.arch_id
    assert any(not torch.equal(p, q) for p, q in zip(pre.net.parameters(), post.net.parameters()))
    summary = json.loads((out / "finetune.json").read_text())
    from mechanic_rl_ros.data.demos import load_episodes

    lengths = [len(e["action"]) for e in load_episodes(demos)]
    assert summary["episodes"] == 2 and summary["demo_control_steps"] == sum(lengths)
    assert summary["steps"] == 3 and summary["optimizer"] == "mechanic" and len(summary["losses"]) == 3
    assert summary["ema_decay"] == 0.0
    ev = json.loads((out / "eval.json").read_text())
    assert ev["episodes"] == 2 and len(ev["outcomes"]) == 2 and ev["successes"] == sum(ev["outcomes"])
    assert (out / "loss_curve.png").stat().st_size > 0


def test_command_names_the_problem_with_its_input(tmp_path, capsys):
    assert fd.main(["--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "o"), "--eval-episodes", "0",
                    "--checkpoint", str(ROOT / "checkpoints/lift_pretrained")]) == 2
    assert "demonstrations path" in capsys.readouterr().err
    assert fd.main(["--data", str(tmp_path), "--out", str(tmp_path / "o"), "--ema-decay", "1"]) == 2
    assert "--ema-decay: 1.0; expected a number in [0, 1)" in capsys.readouterr().err
