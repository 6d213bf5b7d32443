"""The learner behind learner_node is the headless learner: same inputs, same steps, same parameters.

A test publisher plays recorded ``EpisodeEvent``, ``StepReward`` and ``Transition`` messages over DDS to
the real learner_node process (value-guided selection, a tiny critic); the node checkpoints at SIGINT.
The same :class:`~mechanic_rl_ros.rl.online_selection.OnlineSelection`, built from the same parameters,
is fed the same inputs in the same order in this process and makes the gradient steps it owes. Both
learners must hold bit-identical critics, targets and counters.

The order is made deterministic without reaching into the node: the abort goes first, then every reward
(each waits in the join for its step), then the transitions in order on one reliable topic, each phase
acknowledged by the node's /diagnostics counters. The warm-up is one decision short of all of them, so
every owed gradient step comes after the last decision is stored.
"""
from __future__ import annotations

import signal

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticArray

from mechanic_rl_ros.control.decision import Decision
from mechanic_rl_ros.msg import EpisodeEvent, StepReward
from mechanic_rl_ros.rl.learner import open_learner
from mechanic_rl_ros.rl.online_selection import OnlineSelection
from mechanic_rl_ros.wire import topics
from mechanic_rl_ros.wire.transition import ExecutedStep, decision_from_transition, transition_message
from rosenv import fresh_domain_id, start_python
from stack_fixtures import Probe, make_checkpoint

CHUNKS, STEPS, N, UTD = 4, 2, 3, 5
ABORTED = 1


def _recording(policy):
    """Three episodes of CHUNKS chunks of STEPS steps: 0 succeeds on its last step, 1 is aborted by the
    robot, 2 reaches the time limit. (transitions, rewards) as messages."""
    rng = np.random.default_rng(0)
    feat_dim, act_dim = policy.net.cond_dim, policy.cfg.action_horizon * policy.cfg.action_dim
    transitions, rewards = [], []
    for ep in range(3):
        for c in range(CHUNKS):
            decision = Decision(obs={"qpos": rng.normal(size=(2, 7)).astype(np.float32)},
                                chain=np.zeros((1, 2, 8), np.float32), chain_logprob=np.zeros(0), policy_version=0,
                                episode=ep, chunk=c, features=rng.normal(size=feat_dim).astype(np.float32),
                                proposals=rng.uniform(-1, 1, (N, act_dim)).astype(np.float32),
                                chosen=int(rng.integers(N)))
            for k in range(STEPS):
                step = c * STEPS + k
                transitions.append(transition_message(ExecutedStep(ep, step, c, k, 0, np.zeros(8), False),
                                                      decision if k == 0 else None))
                last = step == CHUNKS * STEPS - 1
                r = StepReward(episode=ep, step=step, reward=float(last and ep == 0))
                r.terminal, r.truncated = bool(last), bool(last and ep == 2)
                rewards.append(r)
    return transitions, rewards


def _feed(learner, transitions, rewards) -> None:
    """The node's callbacks, in the order the test publishes."""
    learner.abort_episode(ABORTED)
    for m in rewards:
        learner.add_reward(m.episode, m.step, m.reward, m.terminal, m.truncated)
    for m in transitions:
        learner.add_step(m.episode, m.step, m.chunk, m.policy_version, m.chunk_step == 0,
                         decision_from_transition(m) if m.chunk_step == 0 else None)


def _state(learner: OnlineSelection) -> list[torch.Tensor]:
    e = learner.ensemble
    return [p.detach() for p in (*e.critic.parameters(), *e.critic_target.parameters())]


def test_the_node_and_the_headless_trainer_learn_the_same_critic_from_the_same_inputs(tmp_path):
    torch.set_num_threads(1)
    policy = make_checkpoint(tmp_path / "ckpt")
    select = tmp_path / "select.yaml"
    select.write_text(f"num_candidates: {N}\nnum_critics: 2\nhidden: 16\nlayers: 2\nbatch_size: 4\n")
    transitions, rewards = _recording(policy)
    rows = 2 * CHUNKS  # every decision of the two episodes that were not aborted
    params = {"algorithm": "select", "checkpoint": str(tmp_path / "ckpt"), "select_config": str(select),
              "seed": 3, "optimizer": "mechanic", "utd": UTD, "warmup_decisions": rows - 1, "replay_capacity": 64,
              "critic_publish_every": 1000, "critic_checkpoint_every": 1000}

    headless, resumed = open_learner(params, tmp_path / "headless")
    assert not resumed and isinstance(headless, OnlineSelection)
    _feed(headless, transitions, rewards)
    assert headless.replay.added == rows and headless.owed() == UTD
    while headless.owed() > 0:
        assert headless.step().refused is None
    assert headless.steps == UTD and headless.ensemble.num_updates == UTD

    domain = fresh_domain_id()
    node = start_python(["-m", "mechanic_rl_ros.nodes.learner_node", "--ros-args", "--params-file",
                         "config/learner.yaml", *[a for k, v in params.items() for a in ("-p", f"{k}:={v}")],
                         "-p", f"run_dir:={tmp_path / 'run'}", "-p", "diagnostics_period:=0.05"],
                        domain, tmp_path / "learner_node.log")
    log = (tmp_path / "learner_node.log").read_text
    probe = Probe(domain)
    try:
        diag: dict[str, str] = {}

        def on_diag(msg: DiagnosticArray) -> None:
            for st in msg.status:
                if st.name.startswith("learner_node"):
                    diag.clear()
                    diag.update({kv.key: kv.value for kv in st.values})

        probe.node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
        pubs = [probe.node.create_publisher(t.type, t.name, t.profile(2000))
                for t in (topics.EPISODE_EVENTS, topics.STEP_REWARDS, topics.TRANSITIONS)]
        assert probe.spin_until(lambda: all(p.get_subscription_count() > 0 for p in pubs) and diag, 120), log()

        def counted(key: str, n: int) -> bool:
            return diag.get(key) == str(n)

        pubs[0].publish(EpisodeEvent(episode=ABORTED, event=EpisodeEvent.ABORTED, detail="test"))
        assert probe.spin_until(lambda: counted("episodes_aborted", 1), 30), (diag, log()[-3000:])
        for m in rewards:
            pubs[1].publish(m)
        want = headless.counts["rewards_received"]
        assert probe.spin_until(lambda: counted("rewards_received", want), 30), (diag, log()[-3000:])
        for m in transitions:
            pubs[2].publish(m)
        assert probe.spin_until(lambda: counted("grad_steps_done", UTD), 60), (diag, log()[-3000:])
        node.send_signal(signal.SIGINT)
        assert node.wait(60) == 0, log()[-3000:]
    finally:
        probe.close()
        if node.poll() is None:
            node.kill()
            node.wait()
    behind_node, resumed = open_learner(params, tmp_path / "run" / "learner")
    assert resumed and behind_node.steps == UTD, log()[-3000:]
    assert behind_node.counts == headless.counts
    assert behind_node.replay.added == rows and behind_node.ensemble.num_updates == UTD
    for a, b in zip(_state(behind_node), _state(headless)):
        assert torch.equal(a, b)
