"""The learner interface (rl/learner.py) with the selection learner behind it: the join, duplicates,
aborted episodes, the owed-steps schedule in decisions, save/load and the registry. No ROS."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mechanic_rl_ros.control.decision import Decision
from mechanic_rl_ros.rl.learner import ALGORITHMS, learner_class, open_learner
from mechanic_rl_ros.rl.online_dppo import OnlineDPPO
from mechanic_rl_ros.rl.online_selection import OnlineSelection, SelectionSchedule, load_schedule
from mechanic_rl_ros.rl.selection import SelectConfig

FEAT, ACT, N = 6, 4, 3


def _learner(utd: int = 2, warmup: int = 2) -> OnlineSelection:
    cfg = SelectConfig(feat_dim=FEAT, act_dim=ACT, num_candidates=N, hidden=8, batch_size=4, seed=1)
    return OnlineSelection(cfg, SelectionSchedule(utd, warmup, 32, 1000, 1000), "arch")


def _decision(rng, ep: int, chunk: int) -> Decision:
    return Decision(obs={}, chain=np.zeros((1, 1, 1), np.float32), chain_logprob=np.zeros(0), policy_version=0,
                    episode=ep, chunk=chunk, features=rng.normal(size=FEAT).astype(np.float32),
                    proposals=rng.normal(size=(N, ACT)).astype(np.float32), chosen=1)


def _episode(learner, rng, ep: int, chunks: int = 3, steps: int = 2, rewards_first: bool = False) -> None:
    """An episode as the stack sends it: per chunk a decision on its first step, one reward per step, the
    last one terminal (``rewards_first``: every reward before its step)."""
    rew = [(ep, c * steps + k, float(c == chunks - 1 and k == steps - 1), c == chunks - 1 and k == steps - 1,
            False) for c in range(chunks) for k in range(steps)]
    if rewards_first:
        for r in rew:
            learner.add_reward(*r)
    for c in range(chunks):
        for k in range(steps):
            learner.add_step(ep, c * steps + k, c, 0, k == 0, _decision(rng, ep, c) if k == 0 else None)
            if not rewards_first:
                learner.add_reward(*rew[c * steps + k])


def test_decisions_become_replay_rows_whichever_arrives_first_and_duplicates_are_counted():
    rng = np.random.default_rng(0)
    a, b = _learner(), _learner()
    _episode(a, rng, 0)
    _episode(b, np.random.default_rng(0), 0, rewards_first=True)
    for x in (a, b):
        assert x.replay.added == 3 and len(x.stream) == 0 and x.counts["rewards_unmatched"] == 0
    np.testing.assert_array_equal(a.replay.feat[:3], b.replay.feat[:3])
    assert b.join.waiting == {}
    a.add_step(0, 0, 0, 0, True, _decision(rng, 0, 0))  # replayed after a restart
    a.add_reward(0, 0, 0.0, False, False)
    assert a.counts["transitions_duplicate"] == 1 and a.counts["rewards_duplicate"] == 1 and a.replay.added == 3


def test_a_refused_decision_is_counted_and_named():
    learner = _learner()
    assert "empty" in learner.add_step(0, 0, 0, 0, True, None)
    bad = _decision(np.random.default_rng(0), 0, 1)
    bad.proposals = None
    assert "policy_node running algorithm dppo" in learner.add_step(0, 2, 1, 0, True, bad)
    assert learner.add_step(0, 4, 2, 0, True, None, "decision: chosen 9 out of range") == \
        "decision: chosen 9 out of range"
    assert learner.counts["decisions_refused"] == 3


def test_an_aborted_episode_is_dropped_and_what_comes_later_refused():
    rng = np.random.default_rng(0)
    learner = _learner()
    learner.add_step(5, 0, 0, 0, True, _decision(rng, 5, 0))
    assert learner.abort_episode(5) == 1 and learner.abort_episode(5) is None
    _episode(learner, rng, 5)
    assert learner.replay.added == 0 and learner.counts["transitions_after_abort"] == 6
    assert learner.counts["episodes_aborted"] == 1 and learner.counts["decisions_dropped_aborted"] == 1


def test_ended_episodes_give_the_success_rate_of_the_last_ones():
    learner = _learner()
    assert learner.success_rate == 0.0
    for ep, ok in enumerate([True, False, True, True]):
        learner.end_episode(ep, ok)
    assert learner.success_rate == 0.75
    learner.outcomes = type(learner.outcomes)(learner.outcomes, maxlen=2)
    assert learner.success_rate == 1.0


def test_owed_steps_are_utd_per_decision_after_the_warm_up():
    rng = np.random.default_rng(0)
    learner = _learner(utd=3, warmup=2)
    _episode(learner, rng, 0, chunks=2)
    assert learner.replay.added == 2 and learner.owed() == 0 and not learner.trained
    _episode(learner, rng, 1, chunks=2)
    assert learner.owed() == 3 * 2
    for _ in range(4):
        result = learner.step()
        assert result.refused is None and result.samples == 4
    assert learner.owed() == 2 and learner.steps == 4 and learner.trained
    payload = learner.payload()
    assert payload.version == 4 and payload.arch_id.startswith("select-critic-")
    assert learner.payload().version == 5  # never the same version twice


def test_save_and_load_resume_identically_with_the_nodes_schedule(tmp_path):
    rng = np.random.default_rng(0)
    learner = _learner()
    _episode(learner, rng, 0)
    learner.add_step(1, 0, 0, 0, True, _decision(rng, 1, 0))  # pending
    learner.add_reward(1, 1, 0.0, False, False)  # waiting for its step
    learner.abort_episode(7)
    learner.step()
    learner.save(tmp_path / "learner")
    back = OnlineSelection.load(tmp_path / "learner", {"utd": 7, "warmup_decisions": 1, "replay_capacity": 5})
    assert back.schedule.utd == 7 and back.replay.capacity == 32  # the saved replay keeps its size
    assert back.counts == learner.counts and back.aborted == {7} and len(back.stream) == 1
    assert back.join.state() == learner.join.state()
    for a, b in zip(back.ensemble.critic.parameters(), learner.ensemble.critic.parameters()):
        assert torch.equal(a, b)
    b1, l1 = back.step(), learner.step()
    assert b1.stats["critic_loss"] == l1.stats["critic_loss"]


def test_the_registry_names_every_algorithm_and_a_run_dir_keeps_its_own(tmp_path):
    from mechanic_rl_ros.rl.online_distill import OnlineDistill

    assert learner_class("select") is OnlineSelection and learner_class("dppo") is OnlineDPPO
    assert learner_class("distill") is OnlineDistill
    assert set(ALGORITHMS) == {"select", "dppo", "distill"}
    with pytest.raises(ValueError, match="expected one of"):
        learner_class("sac")
    _learner().save(tmp_path / "learner")
    with pytest.raises(ValueError, match="algorithm:=select"):
        open_learner({"algorithm": "dppo", "checkpoint": ""}, tmp_path / "learner")
    with pytest.raises(ValueError, match="parameter checkpoint"):
        open_learner({"algorithm": "select", "checkpoint": ""}, tmp_path / "none")


def test_the_headless_trainer_reads_the_nodes_schedule_from_its_parameters_file(tmp_path):
    import yaml

    from mechanic_rl_ros.rl.online_selection import DEFAULT_LEARNER_CONFIG

    node = yaml.safe_load(DEFAULT_LEARNER_CONFIG.read_text())["learner_node"]["ros__parameters"]
    s = load_schedule()
    assert (s.utd, s.warmup_decisions, s.replay_capacity) == (node["utd"], node["warmup_decisions"],
                                                              node["replay_capacity"])
    assert load_schedule(None, utd=3, warmup_decisions=None).utd == 3
    bad = tmp_path / "learner.yaml"
    bad.write_text("learner_node:\n  ros__parameters:\n    utd: 2\n")
    with pytest.raises(ValueError, match="lacks"):
        load_schedule(bad)


def test_a_learner_that_does_not_learn_from_interventions_ignores_the_episode_from_the_takeover_on():
    rng = np.random.default_rng(3)
    learner = _learner()
    learner.add_step(0, 0, 0, 0, True, _decision(rng, 0, 0))
    learner.add_reward(0, 0, 0.0, False, False)
    person = Decision(obs={"qpos": np.zeros((2, 7))}, chain=np.zeros((0, 0, 8), np.float32),
                      chain_logprob=np.zeros(0), policy_version=0, episode=0, chunk=1)
    learner.add_step(0, 1, 1, 0, True, person, intervention=True, action=np.zeros(8))
    learner.add_step(0, 2, 2, 0, True, _decision(rng, 0, 2))  # the policy again, from the corrected state
    learner.add_reward(0, 1, 0.0, False, False)
    learner.add_reward(0, 2, 1.0, True, False)
    learner.end_episode(0, True)
    assert learner.replay.added == 0 and len(learner.stream) == 0  # nothing of it is the policy's own course
    c = learner.counts
    assert c["episodes_intervened"] == 1 and c["decisions_dropped_intervened"] == 1 and c["steps_intervened"] == 1
    assert c["rewards_unmatched"] == 0 and c["decisions_refused"] == 0
    _episode(learner, rng, 1)  # the next episode is learned from as before
    assert learner.replay.added == 3
