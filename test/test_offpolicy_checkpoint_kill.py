"""Ctrl-C or SIGKILL while the off-policy trainer writes its checkpoint leaves the previous one loadable.

A child process updates a real learner and checkpoints it in a loop (learner, replay buffer and trainer
state through :func:`~mechanic_rl_ros.jobs.train_offpolicy.save_checkpoint`), printing after each
save; the test kills it at random moments, most of them inside a save (the replay buffer is large
enough that writing it is most of a round), and then loads what is on disk. The three parts must come
from the same round, and that round must be at least the last one the child reported saved.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mechanic_rl_ros.jobs.train_offpolicy import load_checkpoint

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import faulthandler
import signal
import sys
faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test asks where a child that does not exit is
import numpy as np
from mechanic_rl_ros.jobs.train_offpolicy import save_checkpoint
from mechanic_rl_ros.rl.replay import ReplayBuffer
from mechanic_rl_ros.rl.steer import SteerConfig, SteerLearner

learner = SteerLearner(SteerConfig(feat_dim=144, noise_dim=128, hidden=64, batch_size=16, seed=0))
replay = ReplayBuffer(20000, 144, 128)
rng = np.random.default_rng(0)
for j in range(10000):
    replay.add(rng.standard_normal(144), rng.standard_normal(128), 0.0, False, rng.standard_normal(144), j, 0, 8)
for k in range(1, 10 ** 6):
    replay.add(rng.standard_normal(144), rng.standard_normal(128), 1.0, True, rng.standard_normal(144), 10 ** 6 + k, 0, 8)
    learner.update(replay.sample(16, rng))
    save_checkpoint(sys.argv[1], learner, replay, {"round": k})
    print(k, flush=True)
"""


def _consistent_round(ckpt: Path) -> int:
    learner, replay, state = load_checkpoint(ckpt)
    k = int(state["round"])
    assert learner.num_updates == k, (learner.num_updates, k)
    assert replay.added == 10000 + k, (replay.added, k)
    return k


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_a_kill_during_a_checkpoint_leaves_the_previous_one_loadable(tmp_path, sig):
    ckpt = tmp_path / "ckpt"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    rnd = random.Random(int(sig))
    for trial in range(3):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(ckpt)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, env=env, cwd=REPO, text=True)
        try:
            first = child.stdout.readline()  # a first save completed: from here on a kill may hit a save
            assert first.strip(), "the child saved nothing"
            time.sleep(rnd.uniform(0.0, 0.2))
            child.send_signal(sig)
            try:
                out, _ = child.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                # seen once in CI on a loaded machine after SIGINT: the interpreter did not finish exiting.
                # What this test guards is the checkpoint on disk, so the child is killed and that is checked;
                # where it hung goes to the log.
                child.send_signal(signal.SIGUSR1)
                time.sleep(1.0)
                child.kill()
                out, err = child.communicate()
                print(f"trial {trial}: the child did not exit within 60 s of {sig!r}; its threads:\n{err[-4000:]}")
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        reported = [int(x) for x in (first + out).split()]
        k = _consistent_round(ckpt)
        assert k >= reported[-1], f"trial {trial}: on disk round {k}, the child had reported {reported[-1]} saved"
        # a kill may leave ckpt.tmp or ckpt.old behind; the next trial's saves start over them
