"""The stack's side of value-guided selection, without ROS: the policy node's planner with a critic
(proposals from one encoding, the critic's choice, hot-swapped critics), the decision on the wire, the
learner node's assembly of decisions and rewards into replay rows, and the shared select config."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mechanic_rl_ros.control.chunk_loop import PlanRequest
from mechanic_rl_ros.control.history import ObsHistory
from mechanic_rl_ros.policy import DiffusionPolicy, PolicyPlanner
from fixtures_policy import random_obs, tiny_config
from mechanic_rl_ros.rl.selection import (CandidateReplay, CriticSelector, SelectConfig, SelectLearner,
                                          critic_arch_id, load_select_config)
from mechanic_rl_ros.rl.selection_stream import SelectStream
from mechanic_rl_ros.wire import WireError
from mechanic_rl_ros.wire.transition import ExecutedStep, decision_from_transition, transition_message
from mechanic_rl_ros.wire.weights import verify_weights, weights_message

FEAT, ACT, N = 6, 4, 3


def _policy_and_request():
    cfg = tiny_config()
    policy = DiffusionPolicy(cfg).eval()
    obs = random_obs(cfg, 1)
    h = ObsHistory.for_policy(policy)
    for t in range(cfg.obs_horizon):
        h.push({"images": {"scene": obs["images"]["scene"][0, t]}, "qpos": obs["qpos"][0, t],
                "gripper": obs["gripper"][0, t]})
    return policy, PlanRequest(h.stacked(), {}, np.zeros(cfg.obs_horizon), 4, 1, 7)


def _selector(policy, n=4, **kw) -> CriticSelector:
    pc = policy.cfg
    scfg = SelectConfig(feat_dim=policy.net.cond_dim, act_dim=pc.action_horizon * pc.action_dim, num_candidates=n,
                        hidden=16, **kw)
    return CriticSelector(scfg, policy.arch_id)


def test_planner_runs_the_critics_choice_among_proposals_from_one_encoding():
    policy, req = _policy_and_request()
    selector = _selector(policy)
    planner = PolicyPlanner(policy, seed=2, selector=selector)
    before = planner(req)
    d = before.decision
    assert d.proposals.shape == (4, policy.cfg.action_horizon * policy.cfg.action_dim)
    assert d.features.shape == (policy.net.cond_dim,) and d.chosen == 0  # no critic yet: the pretrained policy
    np.testing.assert_allclose(policy.executable(d.chain[-1], req.lead).reshape(-1), d.proposals[0], atol=1e-6)
    # a critic that prefers one proposal: hot-swapped between plans, then chosen
    learner = SelectLearner(selector.cfg)
    feat, cands = torch.as_tensor(d.features)[None], torch.as_tensor(d.proposals)[None]
    want = int(learner.choose(feat, cands)[0])
    planner.stage_weights({k: v.numpy() for k, v in learner.critic.state_dict().items()}, 5, None)
    planner.calls -= 1  # the same noise as the first plan
    after = planner(req)
    assert planner.version == 5 and after.version == 5 and after.decision.chosen == want
    np.testing.assert_allclose(after.decision.proposals, d.proposals, atol=1e-6)
    unnorm = policy.normalizer.action.unnormalize(torch.as_tensor(after.decision.chain[-1]))
    np.testing.assert_allclose(after.actions, policy.executable(unnorm.numpy(), req.lead), atol=1e-5)


def test_planner_keeps_its_critic_when_staged_weights_do_not_fit():
    policy, req = _policy_and_request()
    seen = []
    selector = _selector(policy)
    planner = PolicyPlanner(policy, selector=selector, on_weights=lambda v, e: seen.append((v, e)))
    planner.stage_weights({"weights.0": np.zeros((1, 2, 3), np.float32)}, 3, None)
    planner(req)
    assert planner.version == 0 and selector.version == 0 and isinstance(seen[0][1], ValueError)


def test_selection_decision_round_trips_the_wire_and_bad_ones_are_refused():
    policy, req = _policy_and_request()
    d = PolicyPlanner(policy, selector=_selector(policy)).__call__(req).decision
    step = ExecutedStep(7, 0, 4, 0, 0, np.zeros(8), False)
    back = decision_from_transition(transition_message(step, d))
    np.testing.assert_array_equal(back.features, d.features)
    np.testing.assert_array_equal(back.proposals, d.proposals)
    assert back.chosen == d.chosen
    d.chosen = 9
    with pytest.raises(WireError, match="chosen"):
        decision_from_transition(transition_message(step, d))
    d.chosen, d.proposals = 0, d.proposals.copy()
    d.proposals[1, 2] = np.nan
    with pytest.raises(WireError, match="proposals"):
        decision_from_transition(transition_message(step, d))


def test_critic_weights_verify_only_for_the_same_policy_and_structure():
    policy, _ = _policy_and_request()
    sel = _selector(policy)
    learner = SelectLearner(sel.cfg)
    msg = weights_message(learner.critic.state_dict(), version=1, architecture_id=sel.arch_id, finetune_steps=0)
    got = verify_weights(msg, architecture_id=sel.arch_id, expected_shapes=sel.expected_shapes)
    sel.load(got.tensors, 1)
    assert sel.version == 1
    other = _selector(policy, n=5)
    assert other.arch_id != sel.arch_id
    with pytest.raises(WireError, match="architecture_id"):
        verify_weights(msg, architecture_id=other.arch_id, expected_shapes=other.expected_shapes)
    assert critic_arch_id("another-policy", sel.cfg) != sel.arch_id


def _stream(capacity=32):
    replay = CandidateReplay(capacity, FEAT, ACT, N)
    return replay, SelectStream(replay, max_episodes=4)


def _decide(stream, ep, chunk, value, chosen=1, steps=3):
    stream.add_decision(ep, chunk, np.full(FEAT, value), np.full((N, ACT), value) + np.arange(N)[:, None], chosen)
    for _ in range(steps):
        stream.add_step(ep, chunk)


def test_stream_completes_a_decision_with_its_rewards_and_the_next_decision():
    replay, s = _stream()
    _decide(s, 0, 0, 1.0)
    s.add_reward(0, 0, 0.0, False)
    s.add_reward(0, 0, 0.0, False)
    _decide(s, 0, 1, 2.0)
    assert len(replay) == 0  # the last step's reward of chunk 0 is still on its way
    s.add_reward(0, 0, 0.5, False)
    assert len(replay) == 1
    row = {k: getattr(replay, k)[0] for k in replay.FIELDS}
    assert row["reward"] == 0.5 and row["done"] == 0.0 and row["chunk"] == 0
    np.testing.assert_array_equal(row["action"], np.full(ACT, 2.0))  # proposal 1 of chunk 0
    np.testing.assert_array_equal(row["next_feat"], np.full(FEAT, 2.0))
    np.testing.assert_array_equal(row["next_cands"][2], np.full(ACT, 4.0))
    # the episode ends in chunk 1; a decision already sent for chunk 2 is dropped and counted
    s.add_reward(0, 1, 0.0, False)
    _decide(s, 0, 2, 3.0, steps=1)
    s.add_reward(0, 1, 1.0, True)
    assert len(replay) == 2 and replay.done[1] == 1.0 and replay.reward[1] == 1.0
    assert s.counters["after_end"] == 1 and len(s) == 0
    assert not s.add_decision(0, 3, np.zeros(FEAT), np.zeros((N, ACT)), 0)  # after its end: refused, counted
    assert s.counters["after_end"] == 2


def test_stream_refuses_wrong_shapes_counts_unmatched_and_drops_aborted_episodes():
    replay, s = _stream()
    with pytest.raises(ValueError, match="proposals"):
        s.add_decision(0, 0, np.zeros(FEAT), np.zeros((N + 1, ACT)), 0)
    assert s.counters["refused_shape"] == 1
    assert not s.add_reward(5, 0, 1.0, True) and s.counters["rewards_unmatched"] == 1
    _decide(s, 1, 0, 1.0)
    _decide(s, 1, 1, 1.0)
    assert s.drop_episode(1) == 2 and len(s) == 0 and len(replay) == 0
    for ep in range(10, 16):  # more open episodes than max_episodes: the oldest go, counted
        _decide(s, ep, 0, 0.0)
    assert len(s.pending) == 4 and s.counters["dropped_incomplete"] == 4


def test_stream_state_round_trips_through_its_file(tmp_path):
    replay, s = _stream()
    _decide(s, 2, 0, 1.0)
    s.add_reward(2, 0, 0.25, False)
    s.save(tmp_path / "stream.npz")
    replay.save(tmp_path / "replay.npz")
    replay2 = CandidateReplay.load(tmp_path / "replay.npz")
    s2 = SelectStream(replay2, max_episodes=4)
    s2.load(tmp_path / "stream.npz")
    assert s2.counters == s.counters
    for t in (s, s2):  # the same continuation gives the same row
        t.add_reward(2, 0, 0.25, False)
        t.add_reward(2, 0, 0.0, False)
        _decide(t, 2, 1, 5.0)
    assert len(replay2) == len(replay) == 1
    for k in replay.FIELDS:
        np.testing.assert_array_equal(getattr(replay2, k)[:1], getattr(replay, k)[:1])


def test_select_config_names_the_file_and_the_field(tmp_path):
    cfg = load_select_config("", feat_dim=10, act_dim=4, seed=3)
    assert cfg.feat_dim == 10 and cfg.act_dim == 4 and cfg.seed == 3 and cfg.optimizer == "mechanic"
    # the documented defaults are the file's: every reader (nodes, train-select) gets the same learner
    assert load_select_config("", feat_dim=10, act_dim=4) == SelectConfig(feat_dim=10, act_dim=4)
    bad = tmp_path / "bad.yaml"
    for text, field in (("num_candidates: 0\n", "num_candidates"), ("gamma: 1.5\n", "gamma"),
                        ("learning_rate: 0.1\n", "learning_rate"), ("feat_dim: 3\n", "feat_dim"),
                        ("- a\n- b\n", "mapping"), ("num_critics: [\n", "not valid YAML"),
                        ("mc_mix: 2\n", "mc_mix = 2 is a retired"), ("loss: bce\n", "loss = 'bce' is a retired")):
        bad.write_text(text)
        with pytest.raises(ValueError, match=field) as err:
            load_select_config(bad, feat_dim=10, act_dim=4)
        assert str(bad) in str(err.value)
