"""ChunkRunner: action chunks executed in worker processes give exactly what the in-process environments give."""
import numpy as np
import pytest

from mechanic_rl_ros.sim.chunks import ChunkRunner


def _chunks(n, t_a, rounds, seed=3):
    """Joint targets near the home pose with an open/closing gripper: valid actions, varied rollouts."""
    rng = np.random.default_rng(seed)
    home = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])
    out = []
    for _ in range(rounds):
        q = home + rng.normal(0.0, 0.2, (n, t_a, 7))
        g = rng.uniform(0.0, 0.08, (n, t_a, 1))
        out.append(np.concatenate([q, g], axis=2))
    return out


def _flat(obs):
    return [obs[k] for k in sorted(obs) if k != "images"] + [obs["images"][c] for c in sorted(obs.get("images", {}))]


def _same_obs(a, b):
    fa, fb = _flat(a), _flat(b)
    return len(fa) == len(fb) and all(np.array_equal(x, y) for x, y in zip(fa, fb))


def _trace(workers):
    """Every observation, reward and flag of 15 chunks of 8 steps on 5 rendering lift environments
    (max_steps 80: each episode ends by time-out inside the run and the environment resets)."""
    trace = []
    with ChunkRunner("lift", num_envs=5, render=True, image_size=24, seed=7, workers=workers) as runner:
        assert runner.workers == workers
        trace.append(runner.reset(seed=7))
        for k, actions in enumerate(_chunks(5, 8, 15)):
            idx = [0, 1, 2, 3, 4] if k % 3 else [4, 2, 0]
            trace.append(runner.run(idx, actions[idx]))
        trace.append(runner.reset_envs([3, 1], [100, 101]))
        trace.append(runner.run([1, 3], _chunks(2, 8, 1)[0], reset_on_end=False))
    return trace


def test_workers_give_bit_identical_rollouts_to_the_in_process_environments():
    local, spread = _trace(0), _trace(2)
    assert len(local) == len(spread)
    ended = 0
    for step_local, step_spread in zip(local, spread):
        assert len(step_local) == len(step_spread)
        for a, b in zip(step_local, step_spread):
            if isinstance(a, dict):
                assert _same_obs(a, b)
                continue
            assert (a.reward, a.steps, a.terminated, a.truncated, a.success) == \
                   (b.reward, b.steps, b.terminated, b.truncated, b.success)
            assert len(a.observations) == a.steps and all(_same_obs(x, y) for x, y in zip(a.observations, b.observations))
            assert (a.reset_obs is None) == (b.reset_obs is None)
            if a.reset_obs is not None:
                ended += 1
                assert a.truncated and _same_obs(a.reset_obs, b.reset_obs)
    assert ended == 5  # every environment timed out and reset inside the run, in both
    assert local[1][0].observations[0]["images"]["scene"].shape == (24, 24, 3)


def test_bad_input_is_named_and_the_workers_keep_serving():
    with ChunkRunner("lift", num_envs=3, seed=0, workers=2) as runner:
        runner.reset(seed=0)
        actions = _chunks(3, 4, 1)[0]
        with pytest.raises(ValueError, match=r"indices \[5\]"):
            runner.run([0, 5, 1], actions)
        with pytest.raises(ValueError, match=r"shape \(2, T_a, 8\)"):
            runner.run([0, 1], actions)
        bad = actions.copy()
        bad[2, 1, 0] = np.nan
        with pytest.raises(RuntimeError, match=r"(?s)chunk worker 1 \(environments 2...2\) failed.*finite"):
            runner.run([0, 1, 2], bad)
        results = runner.run([0, 1, 2], actions)  # every pipe was drained: the next call lines up
        assert [r.steps for r in results] == [4, 4, 4]
    with pytest.raises(ValueError, match="workers must be an integer >= 0"):
        ChunkRunner("lift", num_envs=2, workers=-1)
