"""Fast CPU tests of value-guided selection (rl/selection.py, jobs/train_select.py): the TD target's max over
stored proposals, deterministic updates, all-or-nothing on non-finite input, replay round trip, the
planner choosing among the frozen policy's own proposals, and the trainer end to end in the simulator."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mechanic_rl_ros.control.chunk_loop import PlanRequest
from mechanic_rl_ros.control.history import ObsHistory
from mechanic_rl_ros.jobs.train_select import FrozenPolicy, SelectPlanner, first_proposal
from mechanic_rl_ros.optim import Mechanic
from mechanic_rl_ros.policy import DiffusionPolicy
from fixtures_policy import random_obs, tiny_config
from mechanic_rl_ros.rl.selection import (CandidateReplay, SelectConfig, SelectLearner, export_critic,
                                          load_exported_critic)

FEAT, ACT, N = 12, 10, 4


def _cfg(**kw) -> SelectConfig:
    base = dict(feat_dim=FEAT, act_dim=ACT, num_candidates=N, hidden=32, batch_size=16, seed=3)
    base.update(kw)
    return SelectConfig(**base)


def _replay(n: int = 40, seed: int = 0) -> CandidateReplay:
    rng = np.random.default_rng(seed)
    buf = CandidateReplay(64, FEAT, ACT, N)
    for i in range(n):
        done = i % 5 == 4
        buf.add(rng.normal(size=FEAT), rng.uniform(-1, 1, ACT), float(done and i % 10 == 4), done,
                None if done else rng.normal(size=FEAT), None if done else rng.uniform(-1, 1, (N, ACT)),
                episode=i // 5, chunk=i % 5)
    return buf


def _flat(learner: SelectLearner) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in (*learner.critic.parameters(),
                                                       *learner.critic_target.parameters())])


@pytest.mark.parametrize("optimizer", ["mechanic", "adam"])
def test_update_on_fixed_batch_is_deterministic(optimizer):
    batch = _replay().sample(16, np.random.default_rng(1))
    runs = []
    for _ in range(2):
        learner = SelectLearner(_cfg(optimizer=optimizer, lr=1e-3))
        before = _flat(learner).clone()
        for _ in range(3):
            stats = learner.update(batch)
        assert stats["skipped"] == 0.0 and learner.num_updates == 3
        runs.append(_flat(learner))
        assert not torch.equal(before, runs[-1])
    assert torch.equal(runs[0], runs[1])
    assert isinstance(SelectLearner(_cfg()).critic_opt, Mechanic)


def test_td_target_is_the_best_stored_proposal_of_the_next_state():
    learner = SelectLearner(_cfg(q_max=0.0, gamma=0.5))
    rng = np.random.default_rng(0)
    feat, nfeat = rng.normal(size=(1, FEAT)), rng.normal(size=(1, FEAT))
    cands = rng.normal(size=(1, N, ACT))
    with torch.no_grad():  # each proposal on its own: min over the ensemble, then the best proposal
        nf = torch.tensor(nfeat, dtype=torch.float32)
        q_next = max(float(learner.critic_target(nf, torch.tensor(cands[:, j], dtype=torch.float32)).min())
                     for j in range(N))
    stats = learner.update({"feat": feat, "action": cands[:, 0], "reward": np.array([0.25]),
                            "done": np.array([0.0]), "next_feat": nfeat, "next_cands": cands})
    assert stats["target_mean"] == pytest.approx(0.25 + 0.5 * float(q_next), rel=1e-5)
    done = learner.update({"feat": feat, "action": cands[:, 0], "reward": np.array([1.0]),
                           "done": np.array([1.0]), "next_feat": nfeat, "next_cands": cands})
    assert done["target_mean"] == pytest.approx(1.0)


def test_retired_critic_variants_are_read_at_their_implemented_value_and_refused_otherwise():
    """Four variants measured and not better are gone (docs/history.md); a config saved with them at the
    value this code implements still loads (the shipped critic's), any other value is refused by name."""
    from mechanic_rl_ros.rl.selection import RETIRED

    base = _cfg().to_dict()
    assert SelectConfig.from_dict({**base, **RETIRED}) == _cfg()
    with pytest.raises(ValueError, match="mc_mix = 0.5 is a retired critic variant"):
        SelectConfig.from_dict({**base, "mc_mix": 0.5})
    with pytest.raises(ValueError, match="horizon = 4 is a retired"):
        SelectConfig.from_dict({**base, "horizon": 4})


def test_nonfinite_batch_steps_nothing_and_is_counted():
    learner = SelectLearner(_cfg())
    learner.update(_replay().sample(16, np.random.default_rng(1)))
    before = _flat(learner).clone()
    opt_before = {k: v.clone() for k, v in learner.critic_opt.state_dict()["state"][0].items()
                  if isinstance(v, torch.Tensor)}
    batch = _replay().sample(16, np.random.default_rng(2))
    batch["reward"] = batch["reward"].copy()
    batch["reward"][3] = np.nan
    stats = learner.update(batch)
    assert stats["skipped"] == 1.0 and learner.nonfinite_skipped == 1 and learner.num_updates == 1
    assert torch.equal(before, _flat(learner))
    for k, v in learner.critic_opt.state_dict()["state"][0].items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(v, opt_before[k])


def test_replay_round_trip_and_refusals(tmp_path):
    buf = _replay(70)  # wraps the 64-row ring
    assert len(buf) == 64 and buf.added == 70
    assert not buf.add(np.zeros(FEAT), np.zeros(ACT), 0.0, True, None, None, episode=13, chunk=4)  # stored key
    assert not buf.add(np.full(FEAT, np.nan), np.zeros(ACT), 0.0, True, None, None, episode=99, chunk=0)
    with pytest.raises(ValueError, match="next_feat and next_cands"):
        buf.add(np.zeros(FEAT), np.zeros(ACT), 0.0, False, None, None, episode=99, chunk=1)
    assert buf.counters() == {"size": 64, "added": 70, "refused_duplicate": 1, "refused_nonfinite": 1}
    back = CandidateReplay.load(buf.save(tmp_path / "r.npz"))
    assert back.counters() == buf.counters() and back.pos == buf.pos
    for k in CandidateReplay.FIELDS:
        np.testing.assert_array_equal(getattr(back, k), getattr(buf, k))
    with np.load(tmp_path / "r.npz", allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)
    assert not back.add(np.zeros(FEAT), np.zeros(ACT), 0.0, True, None, None, episode=13, chunk=4)


def test_learner_save_load_chooses_identically(tmp_path):
    learner = SelectLearner(_cfg())
    for j in range(3):
        learner.update(_replay().sample(16, np.random.default_rng(j)))
    back = SelectLearner.load(learner.save(tmp_path / "l"))
    feat, cands = torch.randn(5, FEAT), torch.randn(5, N, ACT)
    assert torch.equal(back.scores(feat, cands), learner.scores(feat, cands))
    assert back.num_updates == 3
    learner.update(_replay().sample(16, np.random.default_rng(9)))
    back.update(_replay().sample(16, np.random.default_rng(9)))
    assert torch.equal(_flat(back), _flat(learner))  # optimiser state resumed too


def test_exported_critic_scores_identically_and_refuses_another_policy(tmp_path):
    learner = SelectLearner(_cfg())
    learner.update(_replay().sample(16, np.random.default_rng(0)))
    d = export_critic(learner, tmp_path / "critic", "arch-a")
    assert sorted(p.name for p in d.iterdir()) == ["critic.safetensors", "select.json"]
    back = load_exported_critic(d, "arch-a")
    feat, cands = torch.randn(4, FEAT), torch.randn(4, N, ACT)
    assert torch.equal(back.scores(feat, cands), learner.scores(feat, cands))
    with pytest.raises(ValueError, match="arch-a.*arch-b"):
        load_exported_critic(d, "arch-b")
    # same architecture, other weights (a fine-tuned policy): refused where both sides record the weights
    d2 = export_critic(learner, tmp_path / "critic2", "arch-a", policy_weights="ab" * 32)
    assert json.loads((d2 / "select.json").read_text())["policy_weights_sha256"] == "ab" * 32
    load_exported_critic(d2, "arch-a", "ab" * 32)
    load_exported_critic(d, "arch-a", "cd" * 32)  # the critic does not record its policy's weights: not checkable
    with pytest.raises(ValueError, match="other weights"):
        load_exported_critic(d2, "arch-a", "cd" * 32)


def test_planner_executes_the_chosen_proposal_of_the_frozen_policy():
    cfg = tiny_config()
    policy = DiffusionPolicy(cfg).eval()
    obs = random_obs(cfg, 2)
    reqs = []
    for b in range(2):
        h = ObsHistory.for_policy(policy)
        for t in range(cfg.obs_horizon):
            h.push({"images": {"scene": obs["images"]["scene"][b, t]}, "qpos": obs["qpos"][b, t],
                    "gripper": obs["gripper"][b, t]})
        reqs.append(PlanRequest(h.stacked(), {}, np.zeros(cfg.obs_horizon), 0, 0, b))
    npol = FrozenPolicy(policy)
    n = 3
    last = torch.tensor([n - 1, n - 1])
    planner = SelectPlanner(npol, n, torch.Generator().manual_seed(5), lambda f, c, t: last)
    chunks = planner(reqs)
    assert planner.cands.shape == (2, n, cfg.action_horizon * cfg.action_dim)
    # the executed chunk is the chosen proposal: deterministic DDIM from that proposal's own x_K
    x = torch.randn((2 * n, cfg.pred_horizon, cfg.action_dim), generator=torch.Generator().manual_seed(5))
    direct = npol.actions([r.history for r in reqs], x.view(2, n, -1)[:, n - 1])
    for i in range(2):
        np.testing.assert_allclose(chunks[i].actions, direct[i], rtol=1e-5, atol=1e-6)
    first = SelectPlanner(npol, n, torch.Generator().manual_seed(5), first_proposal)(reqs)
    direct0 = npol.actions([r.history for r in reqs], x.view(2, n, -1)[:, 0])
    np.testing.assert_allclose(first[0].actions, direct0[0], rtol=1e-5, atol=1e-6)


def test_trainer_end_to_end_in_the_simulator(tiny_ckpt, tmp_path):
    """A few rounds in the real simulator with the tiny state-only policy: logs, every episode's decisions
    stored with the next state's proposals, reproducible per seed."""
    from mechanic_rl_ros.jobs.train_select import main

    ckpt = tiny_ckpt
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert main(["--checkpoint", str(ckpt), "--out", str(out), "--total-steps", "240", "--warmup-decisions", "8",
                     "--num-envs", "2", "--num-candidates", "3", "--utd", "1", "--eval-every", "0",
                     "--final-eval-episodes", "2", "--save-every", "0"]) == 0
        outs.append(json.loads((out / "final.json").read_text()))
        for f in ("episodes.csv", "evals.csv", "updates.csv", "learning_curve.png", "ckpt/trainer.json"):
            assert (out / f).is_file(), f
    a, b = outs
    assert a["grad_steps"] > 0 and a["replay"]["refused_duplicate"] == 0
    assert a["final_outcomes"] == b["final_outcomes"] and a["replay"] == b["replay"]
    # the exported critic alone reproduces the final evaluation, episode by episode
    assert main(["--checkpoint", str(ckpt), "--eval-only", "--resume", str(tmp_path / "a" / "critic"),
                 "--num-envs", "2", "--final-eval-episodes", "2", "--out", str(tmp_path / "e")]) == 0
    assert json.loads((tmp_path / "e" / "eval.json").read_text())["outcomes"] == a["final_outcomes"]
    # the critic ranks more proposals than it was trained with, if asked; a count below 1 is refused by name
    assert main(["--checkpoint", str(ckpt), "--eval-only", "--resume", str(tmp_path / "a" / "critic"),
                 "--eval-candidates", "5", "--num-envs", "2", "--final-eval-episodes", "2",
                 "--out", str(tmp_path / "e5")]) == 0
    assert "among 5 proposals" in json.loads((tmp_path / "e5" / "eval.json").read_text())["what"]
    with pytest.raises(SystemExit, match="--eval-candidates"):
        main(["--checkpoint", str(ckpt), "--eval-only", "--resume", str(tmp_path / "a" / "critic"),
              "--eval-candidates", "0"])
    replay = CandidateReplay.load(tmp_path / "a" / "ckpt" / "learner" / "replay.npz")
    open_rows = replay.done[:len(replay)] == 0
    assert np.abs(replay.next_cands[:len(replay)][open_rows]).sum(axis=(1, 2)).min() > 0  # proposals stored
    # a flag overrides config/select.yaml, which the run otherwise reads as the stack does
    out = tmp_path / "c"
    assert main(["--checkpoint", str(ckpt), "--out", str(out), "--total-steps", "160", "--warmup-decisions", "8",
                 "--num-envs", "2", "--num-candidates", "3", "--utd", "1", "--eval-every", "0",
                 "--final-eval-episodes", "1", "--save-every", "0", "--choose", "min"]) == 0
    saved = json.loads((out / "critic" / "select.json").read_text())["config"]
    assert saved["choose"] == "min" and saved["hidden"] == 256 and saved["num_candidates"] == 3
