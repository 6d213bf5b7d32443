"""RolloutBuffer: incremental filling, completeness, rewards per chunk, and pickle-free serialisation."""
import numpy as np
import pytest

from mechanic_rl_ros.control.decision import Decision
from mechanic_rl_ros.rl.buffer import Batch, RolloutBuffer

KP, TP, A = 3, 16, 8


def _obs(seed, images=True):
    rng = np.random.default_rng(seed)
    o = {"qpos": rng.normal(size=(2, 7)).astype(np.float32), "gripper": rng.random((2, 1)).astype(np.float32)}
    if images:
        o["images"] = {"scene": rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)}
    return o


def _decision(buf, ep, ck, version=0, seed=None, images=True):
    rng = np.random.default_rng(100 * ep + ck if seed is None else seed)
    buf.add_decision(Decision(_obs(100 * ep + ck, images), rng.normal(size=(KP + 1, TP, A)).astype(np.float32),
                              rng.normal(size=KP) * 50, version, ep, ck))


def test_step_rewards_sum_per_chunk_and_completion_needs_bootstrap():
    buf = RolloutBuffer(action_horizon=4)
    _decision(buf, 0, 0)
    for r in (0.0, 1.0, 0.5, 0.25):
        assert buf.add_step_reward(0, 0, r)
    assert buf.num_complete() == 0            # reward final, but s' unknown
    _decision(buf, 0, 1)                       # next decision of the episode gives s'
    assert buf.num_complete() == 1
    buf.add_step_reward(0, 1, 1.0, terminated=True)   # ends mid-chunk: reward final, no bootstrap needed
    assert buf.ready(2) and not buf.ready(3)
    b = buf.take_batch(2)
    assert b.reward.tolist() == [1.75, 1.0]
    assert b.env_steps.tolist() == [4, 1]
    assert b.terminated.tolist() == [False, True]
    np.testing.assert_array_equal(b.next_obs["qpos"][0], _obs(1)["qpos"])  # s' of (0, 0) = obs of (0, 1)
    assert len(buf) == 0 and buf.counters.decisions_taken == 2


def test_truncation_with_and_without_final_obs():
    buf = RolloutBuffer(action_horizon=2)
    _decision(buf, 5, 0)
    buf.set_outcome(5, 0, 0.3, truncated=True, final_obs=_obs(999))
    _decision(buf, 6, 0)
    buf.set_outcome(6, 0, 0.1, truncated=True)            # ROS case: no final observation
    b = buf.take_batch()
    assert b.truncated.tolist() == [True, True] and not b.terminated.any()
    np.testing.assert_array_equal(b.next_obs["images"]["scene"][0], _obs(999)["images"]["scene"])
    np.testing.assert_array_equal(b.next_obs["qpos"][1], b.obs["qpos"][1])   # V(s) stands in for V(s')
    assert buf.counters.bootstrap_fallbacks == 1


def test_set_next_obs_completes_the_last_decision_and_unmatched_rewards_are_counted():
    buf = RolloutBuffer(action_horizon=8)
    _decision(buf, 1, 0)
    buf.set_outcome(1, 0, 0.0)
    assert not buf.ready(1)
    assert buf.set_next_obs(1, 0, _obs(7))
    assert buf.ready(1)
    assert not buf.add_step_reward(42, 0, 1.0)
    assert not buf.set_outcome(42, 3, 1.0)
    assert buf.counters.unmatched_rewards == 2
    with pytest.raises(ValueError, match="only 1 complete"):
        buf.take_batch(2)


def test_oldest_complete_first_capacity_and_validation():
    buf = RolloutBuffer(action_horizon=8, capacity=3)
    for ep in range(4):
        _decision(buf, ep, 0)
        buf.set_outcome(ep, 0, float(ep), terminated=True)
    assert len(buf) == 3 and buf.counters.dropped_overflow == 1
    assert buf.take_batch(2).episode.tolist() == [1, 2]
    with pytest.raises(ValueError, match="chain_logprob"):
        buf.add_decision(Decision(_obs(0), np.zeros((KP + 1, TP, A), np.float32), np.zeros(KP + 1), 0, 9, 0))
    with pytest.raises(ValueError, match="qpos"):
        bad = _obs(0)
        bad["qpos"] = bad["qpos"][:, :6]
        buf.add_decision(Decision(bad, np.zeros((KP + 1, TP, A), np.float32), np.zeros(KP), 0, 9, 0))
    with pytest.raises(ValueError, match="finite"):
        buf.set_outcome(3, 0, float("nan"))
    assert buf.drop_stale(min_version=1) == 1 and buf.counters.dropped_stale == 1


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_round_trip_through_serialisation(tmp_path, suffix):
    buf = RolloutBuffer(action_horizon=4, capacity=50)
    for ep in range(3):
        for ck in range(3):
            _decision(buf, ep, ck, version=ep)
    buf.set_outcome(0, 0, 1.0)
    buf.add_step_reward(0, 1, 0.5)                        # partial reward
    buf.set_outcome(1, 2, 2.0, truncated=True, final_obs=_obs(77))
    buf.set_outcome(2, 2, 3.0, terminated=True)
    buf.add_step_reward(99, 0, 1.0)                       # an unmatched count to carry over
    path = buf.save(tmp_path / f"buf{suffix}")
    if suffix == ".npz":
        np.load(path, allow_pickle=False).close()        # loads without pickle
    back = RolloutBuffer.load(path)
    assert back.counters == buf.counters
    assert len(back) == len(buf) and back.num_complete() == buf.num_complete()
    # continuing to fill both gives the same batches
    for b_ in (buf, back):
        b_.add_step_reward(0, 1, 0.25)
        b_.add_step_reward(0, 1, 0.25)
        b_.add_step_reward(0, 1, 0.0)
    b1, b2 = buf.take_batch(), back.take_batch()
    a1, a2 = b1.to_arrays(), b2.to_arrays()
    assert sorted(a1) == sorted(a2)
    for k in a1:
        assert a1[k].dtype == a2[k].dtype, k
        np.testing.assert_array_equal(a1[k], a2[k], err_msg=k)
    assert Batch.from_arrays(a1).reward.tolist() == b1.reward.tolist()


def test_empty_buffer_round_trip_keeps_the_spec(tmp_path):
    buf = RolloutBuffer(action_horizon=4)
    _decision(buf, 0, 0, images=False)
    buf.set_outcome(0, 0, 1.0, terminated=True)
    buf.take_batch()
    back = RolloutBuffer.load(buf.save(tmp_path / "empty.npz"))
    assert len(back) == 0
    with pytest.raises(ValueError, match="observation keys"):
        _decision(back, 1, 0, images=True)


def test_whole_episodes_hands_out_only_ended_episodes_and_an_aborted_one_never(tmp_path):
    """The stack's learner: a complete step of a running episode waits until the episode ends; an episode
    the robot aborts is dropped whole, so no step of it can have been in a batch. The ended set survives a save."""
    buf = RolloutBuffer(action_horizon=2, whole_episodes=True)
    for ep in (0, 1):
        _decision(buf, ep, 0)
        buf.add_step_reward(ep, 0, 0.0)
        buf.add_step_reward(ep, 0, 0.0)
        _decision(buf, ep, 1)                    # (ep, 0) is complete now
    assert buf.num_complete() == 0 and not buf.ready(1)
    buf.add_step_reward(0, 1, 1.0, terminated=True)
    assert buf.num_complete() == 2            # episode 0 ended: both its steps
    loaded = RolloutBuffer.load(buf.save(tmp_path / "b.npz"))
    assert loaded.whole_episodes and loaded.num_complete() == 2
    assert buf.drop_episode(1) == 2           # episode 1 aborted under its second chunk
    b = buf.take_batch()
    assert b.episode.tolist() == [0, 0] and len(buf) == 0
    plain = RolloutBuffer(action_horizon=2)
    _decision(plain, 1, 0)
    plain.add_step_reward(1, 0, 0.0)
    plain.add_step_reward(1, 0, 0.0)
    _decision(plain, 1, 1)
    assert plain.num_complete() == 1          # without whole_episodes a running episode's step is handed out
