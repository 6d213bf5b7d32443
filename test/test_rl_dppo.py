"""The DPPO learner on a tiny state-only policy: behaviour log-probs, staleness, rollback, determinism, I/O."""
import copy

import numpy as np
import pytest
import torch

from mechanic_rl_ros.control.decision import Decision
from mechanic_rl_ros.policy import DiffusionPolicy
from mechanic_rl_ros.policy.checkpoint import state_dict_to_bytes
from fixtures_policy import random_obs, tiny_config
from mechanic_rl_ros.rl import DPPO, Batch, DPPOConfig, NonFiniteUpdateError, RolloutBuffer, load_config

torch.set_num_threads(1)

FAST = dict(critic_hidden=(32, 32), update_epochs=2, minibatch_size=12, critic_warmup_updates=0, finetune_steps=3)


def _policy(seed=0):
    torch.manual_seed(seed)
    return DiffusionPolicy(tiny_config(state_only=True))


def _learner(seed=0, **kw):
    return DPPO(_policy(seed), DPPOConfig(**{**FAST, **kw}))


def _batch(learner, episodes=3, chunks=4, seed=0, version=None):
    """Decisions sampled by ``learner`` (one batched call) on random observations, random sparse rewards."""
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    n = episodes * chunks
    obs = random_obs(learner.policy.cfg, n, seed=seed)
    out = learner.act(obs, generator=g)
    buf = RolloutBuffer(action_horizon=learner.policy.cfg.action_horizon)
    for i in range(n):
        ep, ck = seed * 100 + i // chunks, i % chunks
        buf.add_decision(Decision({k: v[i] for k, v in obs.items()}, out.chain[i], out.chain_logprob[i],
                                  out.policy_version if version is None else version, ep, ck))
        last = ck == chunks - 1
        buf.set_outcome(ep, ck, float(rng.random() < 0.3), terminated=last and ep % 2 == 0,
                        truncated=last and ep % 2 == 1)
    return buf.take_batch()


def _weights(learner):
    return {k: v.clone() for k, v in learner.policy.ft_net.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_config_defaults_match_the_yaml():
    assert load_config().learner == DPPOConfig()


def test_behaviour_logprobs_match_the_current_policy_before_any_step():
    learner = _learner()
    batch = _batch(learner)
    with torch.no_grad():
        lp = learner.log_probs(batch.obs, torch.as_tensor(batch.chain))
    np.testing.assert_allclose(lp.double().numpy(), batch.chain_logprob[:, -FAST["finetune_steps"]:], rtol=1e-5,
                               atol=1e-3)
    stats = learner.update(batch)
    assert stats["approx_kl"] < 1e-6
    for key in ("num_updates", "actor_loss", "critic_loss", "approx_kl", "clip_fraction", "actor_scale",
                "critic_scale", "refused_stale", "refused_stale_total"):
        assert key in stats and isinstance(stats[key], float), key
    assert stats["num_updates"] == stats["grad_steps"] == FAST["update_epochs"]  # one minibatch per epoch
    assert stats["policy_version"] == 1 and stats["actor_scale"] > 0


def test_adam_baseline_has_nan_scales():
    stats = _learner(actor_optimizer="adam", critic_optimizer="adam").update(_batch(_learner()))
    assert np.isnan(stats["actor_scale"]) and np.isnan(stats["critic_scale"])


def test_stale_and_future_data_are_refused_counted_and_ignored():
    base = _learner(max_staleness=1)
    base.update(_batch(base, seed=1))
    base.update(_batch(base, seed=2))
    assert base.policy_version == 2
    fresh = _batch(base, episodes=2, seed=3)                   # version 2
    old = _batch(base, episodes=2, seed=4, version=0)          # 2 versions old > max_staleness = 1
    future = _batch(base, episodes=1, seed=5, version=7)
    mixed = Batch.concatenate([old, fresh, future])

    twin = copy.deepcopy(base)
    stats = base.update(mixed)
    assert stats["refused_stale"] == len(old) and stats["refused_future"] == len(future)
    assert stats["decisions_used"] == len(fresh)
    twin.update(fresh)
    assert _same(_weights(base), _weights(twin))               # refused rows had no influence

    before = _weights(base)
    stats = base.update(old)
    assert stats["refused_stale"] == len(old) and stats["grad_steps"] == 0
    assert stats["refused_stale_total"] == 2 * len(old)
    assert _same(before, _weights(base)) and base.policy_version == 3


def test_critic_warmup_leaves_the_actor_and_version_alone():
    learner = _learner(critic_warmup_updates=1)
    w0 = _weights(learner)
    stats = learner.update(_batch(learner))
    assert stats["actor_trained"] == 0 and learner.policy_version == 0 and _same(w0, _weights(learner))
    assert learner.update(_batch(learner, seed=1))["actor_trained"] == 1 and learner.policy_version == 1


def test_nan_loss_rolls_back_everything():
    learner = _learner(update_epochs=3)
    learner.update(_batch(learner, seed=1))
    published_version = learner.policy_version
    state = copy.deepcopy(learner.state_dict())
    calls = {"n": 0}

    def poison(module, inputs, output):
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 3:                                 # after two good optimiser steps of this update
                return output * float("nan")
        return output

    handle = learner.critic.register_forward_hook(poison)
    with pytest.raises(NonFiniteUpdateError, match="non-finite loss.*rolled back"):
        learner.update(_batch(learner, seed=2))
    handle.remove()
    assert calls["n"] == 3
    after = learner.state_dict()
    assert _same(state["ft_net"], after["ft_net"]) and _same(state["critic"], after["critic"])
    assert after["scalars"] == state["scalars"]
    assert learner.actor_opt.state_dict()["tuner"]["s"].tolist() == state["actor_opt"]["tuner"]["s"].tolist()
    assert learner.policy_version == published_version
    learner.update(_batch(learner, seed=2))                     # and it carries on
    assert learner.policy_version == published_version + 1


def test_non_finite_batch_is_refused_before_anything_changes():
    learner = _learner()
    batch = _batch(learner)
    batch.reward[3] = np.nan
    w0 = _weights(learner)
    with pytest.raises(ValueError, match=r"batch.reward is not finite \(rows \[3\]\)"):
        learner.update(batch)
    assert _same(w0, _weights(learner)) and learner.num_updates == 0


def test_same_seed_same_weights_and_resume_is_bit_for_bit(tmp_path):
    def run(n_updates, learner=None):
        learner = learner or _learner(seed=3)
        for i in range(n_updates):
            learner.update(_batch(learner, seed=10 + learner.update_calls))
        return learner

    a, b = run(2), run(2)
    assert _same(_weights(a), _weights(b))
    assert state_dict_to_bytes(_weights(a)) == state_dict_to_bytes(_weights(b))
    assert _same(a.critic.state_dict(), b.critic.state_dict())

    c = run(1)
    c.save(tmp_path / "ckpt")
    d = DPPO.load(tmp_path / "ckpt")
    run(1, c)
    run(1, d)
    assert _same(_weights(c), _weights(d)) and _same(_weights(a), _weights(d))
    assert d.actor_opt.scale == a.actor_opt.scale and d.policy_version == a.policy_version


def test_published_weights_load_into_a_policy_node_copy():
    learner = _learner()
    learner.update(_batch(learner))
    from mechanic_rl_ros.wire.weights import verify_weights, weights_message

    msg = weights_message(learner.policy.ft_net.state_dict(), version=learner.policy_version,
                          architecture_id=learner.policy.arch_id, finetune_steps=learner.finetune_steps)
    node_policy = _policy()                                     # the policy node's pretrained copy, no ft_net yet
    w = verify_weights(msg, architecture_id=node_policy.arch_id,
                       expected_shapes={k: tuple(v.shape) for k, v in node_policy.net.state_dict().items()})
    assert w.version == 1 and w.finetune_steps == 3
    node_policy.load_finetuned(w.tensors, w.finetune_steps)
    assert node_policy.cfg.sampling.finetune_steps == 3
    assert _same(node_policy.ft_net.state_dict(), learner.policy.ft_net.state_dict())
    obs = random_obs(node_policy.cfg, 2, seed=5)
    x1 = node_policy.sample(obs, noise_clip=3.0, generator=torch.Generator().manual_seed(0)).chain
    x2 = learner.policy.sample(obs, noise_clip=3.0, generator=torch.Generator().manual_seed(0)).chain
    assert torch.equal(x1, x2)


def test_noise_clip_clips_the_draws_and_keeps_exact_logprobs():
    policy = _policy()
    policy.make_finetune_copy(3)
    obs = random_obs(policy.cfg, 4, seed=1)
    ref = policy.sample(obs, stochastic=True, generator=torch.Generator().manual_seed(0))
    off = policy.sample(obs, noise_clip=0.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ref.chain, off.chain) and torch.equal(ref.logprobs, off.logprobs)
    clipped = policy.sample(obs, noise_clip=0.5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        lp = policy.chain_log_prob(obs, clipped.chain)
    torch.testing.assert_close(lp, clipped.logprobs, rtol=1e-5, atol=1e-3)
    # with the sampling std floored at 0.1 and |z| <= 0.5, each step moves at most 0.5 * std from its mean
    std = policy._stds(policy.schedule.step_params(10).ddim_sigma_unit, 1.0)[1]
    z_bound = -0.5 * 0.25 - std.log().max().item() - 0.5 * np.log(2 * np.pi)
    assert (clipped.logprobs / (16 * 8) >= z_bound - 1e-4).all()


def test_time_out_ends_the_return_unless_bootstrap_is_chosen():
    """truncation='terminate' (DPPO) drops gamma V(s') at a time-out; 'bootstrap' keeps it; nothing else differs."""
    import dataclasses

    def critic_after(truncation, batch):
        learner = _learner(truncation=truncation, reward_scale_running=False)
        learner.update(batch)
        return {k: v.clone() for k, v in learner.critic.state_dict().items()}

    batch = _batch(_learner())
    assert batch.truncated.any()
    assert not _same(critic_after("terminate", batch), critic_after("bootstrap", batch))
    ended = dataclasses.replace(batch, terminated=batch.terminated | batch.truncated,
                                truncated=np.zeros_like(batch.truncated))
    assert _same(critic_after("terminate", ended), critic_after("bootstrap", ended))
    assert _same(critic_after("terminate", batch), critic_after("terminate", ended))
    with pytest.raises(ValueError, match="truncation"):
        DPPOConfig(truncation="ignore").validate()
