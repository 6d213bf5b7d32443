"""The off-policy trainer (`mechanic-rl train-offpolicy`) end to end in the real batched simulator, with a
tiny state-only policy: the training rollout and the evaluation run through ChunkLoop."""
from __future__ import annotations

import csv

import numpy as np
import torch

from mechanic_rl_ros import cli
from mechanic_rl_ros.control.chunk_loop import ChunkLoop
from mechanic_rl_ros.jobs.rollouts import plan_batch
from mechanic_rl_ros.jobs.train_offpolicy import NoisePlanner, NoisePolicy, main
from mechanic_rl_ros.policy import DiffusionPolicy
from fixtures_policy import random_obs

torch.set_num_threads(1)


def _argv(ckpt, out, *extra):
    return ["--checkpoint", str(ckpt), "--out", str(out), "--total-steps", "300", "--warmup-steps", "100",
            "--num-envs", "2", "--utd", "1", "--eval-every", "150", "--eval-episodes", "2",
            "--final-eval-episodes", "3", "--hidden", "32", "--batch-size", "16", "--quiet", *extra]


def test_seeded_run_is_reproducible_and_writes_logs(tiny_ckpt, tmp_path):
    assert main(_argv(tiny_ckpt, tmp_path / "a")) == 0
    assert cli.main(["train-offpolicy", *_argv(tiny_ckpt, tmp_path / "b")]) == 0
    ra, rb = np.load(tmp_path / "a" / "ckpt" / "replay.npz"), np.load(tmp_path / "b" / "ckpt" / "replay.npz")
    assert all(np.array_equal(ra[k], rb[k]) for k in ra.files)
    la = torch.load(tmp_path / "a" / "ckpt" / "learner" / "learner.pt", weights_only=True)
    lb = torch.load(tmp_path / "b" / "ckpt" / "learner" / "learner.pt", weights_only=True)
    assert all(torch.equal(la["actor"][k], lb["actor"][k]) for k in la["actor"])
    with open(tmp_path / "a" / "episodes.csv") as f:
        eps = list(csv.DictReader(f))
    with open(tmp_path / "a" / "evals.csv") as f:
        evals = list(csv.DictReader(f))
    assert eps and all(int(e["length"]) > 0 for e in eps)
    assert [int(e["episodes"]) for e in evals] == [2, 2, 3]
    # decisions are numbered per episode from 0, in order, and every episode's chunks are stored
    ep, ch = ra["episode"], ra["chunk"]
    for e in np.unique(ep):
        assert sorted(ch[ep == e].tolist()) == list(range(int((ep == e).sum())))


def test_noise_planner_reuses_known_features_once(tiny_ckpt):
    policy = DiffusionPolicy.from_checkpoint(tiny_ckpt).eval()
    npol = NoisePolicy(policy)
    seen = []

    def choose(f):
        seen.append(f.clone())
        return torch.zeros(f.shape[0], npol.shape[0] * npol.shape[1])

    planner = NoisePlanner(npol, choose)
    loops = [ChunkLoop.for_policy(policy) for _ in range(2)]
    batch = random_obs(policy.cfg, 2)
    for i, loop in enumerate(loops):
        loop.observe({k: batch[k][i, -1] for k in policy.cfg.lowdim_keys})
    known = torch.full((2, policy.net.cond_dim), 7.0)
    planner.known_feat = known
    chunks = plan_batch(loops, planner)
    assert torch.equal(seen[0], known) and planner.known_feat is None
    assert all(c.actions.shape == (policy.cfg.action_horizon, policy.cfg.action_dim) for c in chunks)
    for loop in loops:
        loop.drain()
    plan_batch(loops, planner)  # encodes the histories itself now
    assert torch.allclose(seen[1], npol.features([loop.history.stacked() for loop in loops]))
