"""Fast CPU tests of the off-policy noise-space learner (rl/steer.py, rl/replay.py, rl/train_offpolicy.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mechanic_rl_ros.optim import Mechanic
from mechanic_rl_ros.control.history import ObsHistory
from mechanic_rl_ros.policy import DiffusionPolicy
from fixtures_policy import random_obs, tiny_config
from mechanic_rl_ros.rl.replay import ReplayBuffer
from mechanic_rl_ros.rl.steer import SteerConfig, SteerLearner
from mechanic_rl_ros.jobs.train_offpolicy import NoisePolicy, build_parser, resolve_config

FEAT, NOISE = 12, 16


def _cfg(**kw) -> SteerConfig:
    base = dict(feat_dim=FEAT, noise_dim=NOISE, hidden=32, layers=2, num_critics=2, batch_size=16, seed=3)
    base.update(kw)
    return SteerConfig(**base)


def _replay(n: int = 40, seed: int = 0) -> ReplayBuffer:
    rng = np.random.default_rng(seed)
    buf = ReplayBuffer(64, FEAT, NOISE)
    for i in range(n):
        buf.add(rng.normal(size=FEAT), rng.uniform(-1, 1, NOISE), float(i % 5 == 0), i % 5 == 0,
                rng.normal(size=FEAT), episode=i // 5, chunk=i % 5, env_steps=8)
    return buf


def _batch() -> dict:
    return _replay().sample(16, np.random.default_rng(1))


def _flat(learner: SteerLearner) -> torch.Tensor:
    ps = [*learner.actor.parameters(), *learner.critic.parameters(), *learner.critic_target.parameters(),
          learner.log_alpha]
    return torch.cat([p.detach().reshape(-1) for p in ps])


@pytest.mark.parametrize("optimizer", ["mechanic", "adam"])
def test_update_on_fixed_batch_is_deterministic(optimizer):
    batch = _batch()
    runs = []
    for _ in range(2):
        learner = SteerLearner(_cfg(optimizer=optimizer, lr=1e-3))
        before = _flat(learner).clone()
        for _ in range(3):
            stats = learner.update(batch)
        runs.append(_flat(learner))
        assert stats["skipped"] == 0.0 and learner.num_updates == 3
        assert not torch.equal(before, runs[-1])
    assert torch.equal(runs[0], runs[1])
    other = SteerLearner(_cfg(optimizer=optimizer, lr=1e-3, seed=4))
    other.update(batch)
    assert not torch.equal(_flat(other), runs[0])


def test_every_optimizer_is_mechanic_by_default():
    learner = SteerLearner(_cfg())
    for opt in (learner.actor_opt, learner.critic_opt, learner.alpha_opt):
        assert isinstance(opt, Mechanic)
        assert all(g["lr"] == 1.0 for g in opt.base_optimizer.param_groups)


def test_nonfinite_loss_steps_nothing_and_is_counted():
    learner = SteerLearner(_cfg())
    learner.update(_batch())  # optimiser states exist
    before = _flat(learner).clone()
    opt_before = [repr(o.state_dict()) for o in (learner.actor_opt, learner.critic_opt, learner.alpha_opt)]
    bad = dict(_batch())
    bad["reward"] = bad["reward"].copy()
    bad["reward"][0] = np.nan
    stats = learner.update(bad)
    assert stats["skipped"] == 1.0
    assert learner.nonfinite_skipped == 1 and learner.num_updates == 1
    assert torch.equal(_flat(learner), before)
    assert [repr(o.state_dict()) for o in (learner.actor_opt, learner.critic_opt, learner.alpha_opt)] == opt_before
    # an infinite feature poisons the actor's loss too
    bad2 = dict(_batch())
    bad2["feat"] = bad2["feat"].copy()
    bad2["feat"][3, 0] = np.inf
    learner.update(bad2)
    assert learner.nonfinite_skipped == 2 and torch.equal(_flat(learner), before)
    learner.update(_batch())
    assert learner.num_updates == 2


def test_replay_save_load_round_trip(tmp_path):
    buf = _replay(40)
    assert not buf.add(np.zeros(FEAT), np.zeros(NOISE), 0.0, False, np.zeros(FEAT), episode=0, chunk=0)
    path = buf.save(tmp_path / "replay.npz")
    back = ReplayBuffer.load(path)
    for k in ReplayBuffer.FIELDS:
        np.testing.assert_array_equal(getattr(back, k)[:back.size], getattr(buf, k)[:buf.size])
    assert back.counters() == buf.counters() and back.pos == buf.pos
    assert not back.add(np.zeros(FEAT), np.zeros(NOISE), 0.0, False, np.zeros(FEAT), episode=1, chunk=2)
    a = buf.sample(8, np.random.default_rng(5))
    b = back.sample(8, np.random.default_rng(5))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    # a full (wrapped) buffer survives too
    full = _replay(100)
    back = ReplayBuffer.load(full.save(tmp_path / "full.npz"))
    assert back.size == 64 and back.pos == full.pos
    np.testing.assert_array_equal(back.feat, full.feat)
    with np.load(tmp_path / "full.npz", allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)


def test_duplicate_and_nonfinite_decisions_are_counted_not_stored():
    buf = ReplayBuffer(8, FEAT, NOISE)
    z = np.zeros(FEAT)
    assert buf.add(z, np.zeros(NOISE), 1.0, True, z, episode=3, chunk=1)
    assert not buf.add(z + 1, np.ones(NOISE), 0.0, False, z, episode=3, chunk=1)
    assert buf.refused_duplicate == 1 and len(buf) == 1 and buf.reward[0] == 1.0
    bad = np.zeros(NOISE)
    bad[2] = np.nan
    assert not buf.add(z, bad, 0.0, False, z, episode=3, chunk=2)
    assert buf.refused_nonfinite == 1 and len(buf) == 1
    # a key whose row was overwritten by the ring may come again
    for i in range(8):
        buf.add(z, np.zeros(NOISE), 0.0, False, z, episode=10, chunk=i)
    assert buf.add(z, np.zeros(NOISE), 0.0, False, z, episode=3, chunk=1)


def test_learner_checkpoint_resumes_identically(tmp_path):
    batch = _batch()
    a = SteerLearner(_cfg())
    a.update(batch)
    a.save(tmp_path / "l")
    b = SteerLearner.load(tmp_path / "l")
    assert torch.equal(_flat(a), _flat(b))
    a.update(batch)
    b.update(batch)
    assert torch.equal(_flat(a), _flat(b))


def test_actor_bounds_and_noise_policy_runs_the_frozen_policy():
    cfg = tiny_config()
    policy = DiffusionPolicy(cfg).eval()
    obs = random_obs(cfg, 3)
    hists = []
    for b in range(3):
        h = ObsHistory.for_policy(policy)
        for t in range(cfg.obs_horizon):
            h.push({"images": {"scene": obs["images"]["scene"][b, t]}, "qpos": obs["qpos"][b, t],
                    "gripper": obs["gripper"][b, t]})
        hists.append(h.stacked())
    npol = NoisePolicy(policy)
    feat = npol.features(hists)
    assert feat.shape == (3, policy.net.cond_dim)
    learner = SteerLearner(_cfg(feat_dim=policy.net.cond_dim, noise_dim=cfg.pred_horizon * cfg.action_dim,
                                noise_bound=1.5))
    noise = learner.act(feat)
    assert noise.abs().max() <= 1.5
    acts = npol.actions(hists, noise)
    assert acts.shape == (3, cfg.action_horizon, cfg.action_dim)
    again = npol.actions(hists, noise)
    np.testing.assert_array_equal(acts, again)  # deterministic DDIM from a given x_K


def test_cli_defaults_and_adam_switch():
    t, learner = resolve_config(build_parser().parse_args(["--optimizer", "adam", "--lr", "3e-4", "--utd", "5"]))
    assert learner["optimizer"] == "adam" and learner["lr"] == 3e-4 and t["utd"] == 5
    with pytest.raises(ValueError):
        resolve_config(build_parser().parse_args(["--optimizer", "adam"]))
    t, learner = resolve_config(build_parser().parse_args([]))
    assert "lr" not in learner and learner.get("optimizer", "mechanic") == "mechanic"


def test_latent_actor_maps_a_few_numbers_to_x_k_through_a_fixed_saved_projection(tmp_path):
    learner = SteerLearner(_cfg(latent_dim=4, noise_bound=1.0))
    actor = learner.actor
    assert actor.proj.shape == (NOISE, 4) and actor.net[-1].out_features == 2 * 4
    feat = torch.randn(64, FEAT)
    x = learner.act(feat)
    # every x_K lies in the 4-dimensional column space of the projection
    z = torch.linalg.lstsq(actor.proj, x.t()).solution
    assert torch.allclose(actor.proj @ z, x.t(), atol=1e-5)
    assert z.abs().max() <= 1.0 + 1e-5
    # z ~ N(0, I) would give x_K entries of about unit variance
    zz = torch.randn(20000, 4, generator=torch.Generator().manual_seed(0))
    assert 0.7 < float(actor.to_noise(zz).var(0).mean()) < 1.3
    # the projection is part of the checkpoint and a fresh learner of the same seed draws the same one
    before = actor.proj.clone()
    learner.update(_batch())
    assert torch.equal(actor.proj, before)
    learner.save(tmp_path / "l")
    back = SteerLearner.load(tmp_path / "l")
    assert torch.equal(back.actor.proj, before)
    assert torch.equal(back.act(feat, deterministic=True), learner.act(feat, deterministic=True))
    assert torch.equal(SteerLearner(_cfg(latent_dim=4, noise_bound=1.0)).actor.proj, before)
    assert not torch.equal(SteerLearner(_cfg(latent_dim=4, noise_bound=1.0, seed=4)).actor.proj, before)


def test_latent_entropy_is_per_latent_dimension():
    learner = SteerLearner(_cfg(latent_dim=4))
    _, logp = learner.actor(torch.randn(8, FEAT))
    mu, log_std = learner.actor.net(torch.randn(8, FEAT)).chunk(2, dim=-1)
    assert logp.shape == (8,) and mu.shape == (8, 4)
    full = SteerLearner(_cfg())
    assert full.actor.latent_dim == 0 and not hasattr(full.actor, "proj")
