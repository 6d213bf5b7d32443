"""Ctrl-C or SIGKILL while train-select writes its checkpoint leaves the previous one loadable.

A child process feeds the stack's selection learner, steps it and checkpoints it in a loop (the learner
as learner_node saves it, and the trainer state, through
:func:`~mechanic_rl_ros.jobs.train_select.save_checkpoint`), printing after each save; the test kills it
at random moments, most of them inside a save (the replay buffer is large enough that writing it is most
of a round), and then loads what is on disk. Its parts must come from the same round, and that round must
be at least the last one the child reported saved.
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

from mechanic_rl_ros.jobs.train_select import load_checkpoint

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import faulthandler
import signal
import sys
faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test asks where a child that does not exit is
# Ctrl-C as a terminal gives it: a test run started in the background (CI) has SIGINT ignored, the child
# inherits that, and Python then installs no KeyboardInterrupt handler of its own
signal.signal(signal.SIGINT, signal.default_int_handler)
import numpy as np
from mechanic_rl_ros.control.decision import Decision
from mechanic_rl_ros.jobs.train_select import save_checkpoint
from mechanic_rl_ros.rl.online_selection import OnlineSelection, SelectionSchedule
from mechanic_rl_ros.rl.selection import SelectConfig

cfg = SelectConfig(feat_dim=144, act_dim=64, num_candidates=8, hidden=64, batch_size=16, seed=0)
online = OnlineSelection(cfg, SelectionSchedule(1, 0, 20000, 1000, 1000), "arch")
rng = np.random.default_rng(0)

def decide(ep):
    d = Decision(obs={}, chain=np.zeros((1, 1, 1), np.float32), chain_logprob=np.zeros(0), policy_version=0,
                 episode=ep, chunk=0, features=rng.standard_normal(144), proposals=rng.standard_normal((8, 64)),
                 chosen=0)
    online.add_step(ep, 0, 0, 0, True, d)
    online.add_reward(ep, 0, 1.0, True, False)  # one-decision episodes: each is a stored row at once

for j in range(10000):
    decide(j)
for k in range(1, 10 ** 6):
    decide(10 ** 6 + k)
    online.step()
    save_checkpoint(sys.argv[1], online, {"round": k})
    print(k, flush=True)
"""


def _consistent_round(ckpt: Path) -> int:
    online, state = load_checkpoint(ckpt)
    k = int(state["round"])
    assert online.ensemble.num_updates == online.steps == k, (online.steps, k)
    assert online.replay.added == online.counts["transitions_received"] == 10000 + k, (online.replay.added, k)
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
                # What this test guards is the checkpoint on disk, so a child that does not exit is killed
                # and that is checked; where it hung goes to the log.
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
