"""policy_node with sim_node and reward_node as separate processes (lock-step
sim time): it acts at control rate inside episodes, publishes one Transition
per executed step, hot-swaps good weights between chunks, refuses bad ones,
and holds position on joint states with wrong names. The module's node runs
algorithm dppo (stochastic chains, fine-tuned-network weights); the default,
selection, runs in test_finetune_stack.py."""
from __future__ import annotations

import numpy as np
import pytest
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from mechanic_rl_ros.control import fr3
from mechanic_rl_ros.msg import EpisodeEvent, PolicyWeights, Transition
from mechanic_rl_ros.wire.transition import decision_from_transition
from mechanic_rl_ros.wire.weights import weights_message

from rosenv import fresh_domain_id, start_python
from stack_fixtures import start_lockstep_stack, EVENTS, HISTORY, LATCHED, Probe, make_checkpoint


def _weights_msg(policy, version, mutate=None):
    state = {k: v.detach().clone() for k, v in policy.ft_net.state_dict().items()}
    first = next(iter(state))
    state[first] += 0.01 * version
    if mutate:
        mutate(state)
    return weights_message(state, version=version, architecture_id=policy.arch_id, finetune_steps=5)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("policy_node")
    policy = make_checkpoint(tmp / "ckpt", finetune_steps=5)
    domain = fresh_domain_id()
    procs = start_lockstep_stack(tmp, domain, tmp / "ckpt", max_steps=20)
    probe = Probe(domain)
    transitions = probe.record(Transition, "/learner/transitions", HISTORY)
    events = probe.record(EpisodeEvent, "/reward/events", EVENTS)
    commands = probe.record(JointTrajectory, "/fr3_position_trajectory_controller/joint_trajectory")
    weights_pub = probe.node.create_publisher(PolicyWeights, "/policy/weights", LATCHED)
    js_pub = probe.node.create_publisher(JointState, "/joint_states", 10)

    def logs():
        return "\n".join(f"--- {n}\n{(tmp / f'{n}.log').read_text()[-3000:]}" for n in procs)

    yield {"policy": policy, "probe": probe, "transitions": transitions, "events": events, "commands": commands,
           "weights_pub": weights_pub, "js_pub": js_pub, "procs": procs, "logs": logs, "tmp": tmp}
    probe.close()
    for p in procs.values():
        p.terminate()
    for p in procs.values():
        p.wait(20)


def test_acts_and_publishes_one_transition_per_step(stack):
    probe, tr, logs = stack["probe"], stack["transitions"], stack["logs"]
    assert probe.spin_until(lambda: len(tr) >= 30, 120), logs()
    first = [t for t in tr if t.episode == tr[0].episode]
    assert [t.step for t in first] == list(range(len(first))), "steps must be consecutive from 0"
    for t in first[:16]:
        assert t.chunk_step == t.step % 8 and t.chunk == t.step // 8
        d = decision_from_transition(t)
        if t.chunk_step == 0:
            assert d.chain.shape == (11, 16, 8) and d.chain_logprob.shape == (10,)   # the whole chain, K = 10
            assert d.obs["images"]["scene"].shape == (2, 96, 96, 3) and d.obs["qpos"].shape == (2, 7)
            assert (d.episode, d.chunk) == (t.episode, t.chunk) and d.stamps.shape == (2,)
        else:
            assert d is None
        q = np.array(t.action[:7])
        assert np.all(q >= fr3.Q_MIN) and np.all(q <= fr3.Q_MAX)
    assert any(e.event == EpisodeEvent.TIMEOUT for e in stack["events"]) or probe.spin_until(
        lambda: any(e.event == EpisodeEvent.TIMEOUT for e in stack["events"]), 60), logs()


def test_good_weights_are_adopted_bad_ones_refused(stack):
    probe, tr, policy, logs = stack["probe"], stack["transitions"], stack["policy"], stack["logs"]
    pub = stack["weights_pub"]
    bad = []
    m = _weights_msg(policy, 5)
    m.sha256 = "0" * 64
    bad.append(("corrupt", m))
    m = _weights_msg(policy, 6)
    m.payload = m.payload[: len(m.payload) // 2]
    bad.append(("truncated", m))
    bad.append(("nan", _weights_msg(policy, 7, lambda s: s[next(iter(s))].fill_(float("nan")))))
    m = _weights_msg(policy, 8)
    m.architecture_id = "someone-elses-net"
    bad.append(("architecture", m))
    text = (stack["tmp"] / "policy.log").read_text
    # /policy/weights keeps only the latest message (depth 1: only the newest weights matter), so a message
    # published before the previous one reached the node replaces it; send each once the last was judged
    for i, (what, msg) in enumerate(bad):
        pub.publish(msg)
        assert probe.spin_until(lambda: text().count("refused, keeping version 0") >= i + 1, 30), (what, logs())
    for needle in ("sha256: payload of", "contains NaN or Inf", "architecture_id: got 'someone-elses-net'"):
        assert needle in text(), needle
    n = len(tr)
    assert probe.spin_until(lambda: len(tr) > n + 10, 60), logs()
    assert all(t.policy_version == 0 for t in tr), "refused weights must never be used"

    pub.publish(_weights_msg(policy, 9))
    assert probe.spin_until(lambda: any(t.policy_version == 9 for t in tr), 60), logs()
    swapped = [t for t in tr if t.policy_version == 9]
    assert swapped[0].chunk_step == 0, "weights change only between chunks"

    # the running version again (a restarted learner re-announces its latest) is nothing to do: no error
    errors = text().count("[ERROR]")
    pub.publish(_weights_msg(policy, 9))
    n = len(tr)
    assert probe.spin_until(lambda: len(tr) > n + 10, 60), logs()
    assert text().count("[ERROR]") == errors, text()[-2000:]
    # an older version, or other weights under the running version's number, are refused
    pub.publish(_weights_msg(policy, 4))
    assert probe.spin_until(lambda: "weights version 4 refused, keeping version 9" in text(), 30), logs()
    pub.publish(_weights_msg(policy, 9, lambda s: s[next(iter(s))].add_(1.0)))
    assert probe.spin_until(lambda: "weights version 9 refused, keeping version 9" in text(), 30), logs()
    n = len(tr)
    assert probe.spin_until(lambda: len(tr) > n + 10, 60), logs()
    assert {t.policy_version for t in tr[n:]} == {9}


def test_wrong_joint_names_hold_position_without_crashing(stack):
    probe, logs = stack["probe"], stack["logs"]

    def wrong_names():
        js = JointState(name=[f"panda_joint{i}" for i in range(1, 10)], position=[0.0] * 9)
        js.header.stamp = probe.node.get_clock().now().to_msg()
        return js

    text = (stack["tmp"] / "policy.log").read_text
    assert probe.publish_until(stack["js_pub"], wrong_names, lambda: "name: missing ['fr3_joint1'" in text(), 20), logs()
    n = len(stack["transitions"])
    assert probe.spin_until(lambda: len(stack["transitions"]) > n + 5, 60), "the node stopped acting"
    assert all(p.poll() is None for p in stack["procs"].values()), logs()


def test_unknown_image_encoding_is_refused_and_the_arm_holds(tmp_path):
    """A camera that only sends an encoding the policy cannot use: clear error, no action, hold, no crash."""
    from sensor_msgs.msg import Image

    make_checkpoint(tmp_path / "ckpt")
    domain = fresh_domain_id()
    sim_time = ["-p", "use_sim_time:=true"]
    procs = {
        "sim": start_python(["-m", "mechanic_rl_ros.nodes.sim_node", "--ros-args", "--params-file", "config/sim.yaml",
                             "-p", "mode:=lockstep", "-p", "lockstep_idle_timeout:=0.1", *sim_time],
                            domain, tmp_path / "sim.log"),
        "reward": start_python(["-m", "mechanic_rl_ros.nodes.reward_node", "--ros-args", "--params-file",
                                "config/reward.yaml", *sim_time], domain, tmp_path / "reward.log"),
        "policy": start_python(["-m", "mechanic_rl_ros.nodes.policy_node", "--ros-args", "--params-file",
                                "config/policy_node.yaml", "-p", f"checkpoint:={tmp_path / 'ckpt'}",
                                "-p", "image_topics:=[/bad_camera/image]", *sim_time], domain, tmp_path / "policy.log"),
    }
    probe = Probe(domain)
    transitions = probe.record(Transition, "/learner/transitions", HISTORY)
    events = probe.record(EpisodeEvent, "/reward/events", EVENTS)
    commands = probe.record(JointTrajectory, "/fr3_position_trajectory_controller/joint_trajectory")
    bad = probe.node.create_publisher(Image, "/bad_camera/image", 10)
    text = (tmp_path / "policy.log").read_text
    try:
        assert probe.spin_until(lambda: any(e.event == EpisodeEvent.START for e in events), 60), text()

        def yuv():
            img = Image(height=96, width=96, encoding="yuv422", step=192)
            img.data = bytes(96 * 192)
            img.header.stamp = probe.node.get_clock().now().to_msg()
            return img

        assert probe.publish_until(bad, yuv, lambda: "encoding: got 'yuv422'; expected 'rgb8'" in text(), 30), text()
        assert probe.spin_until(lambda: "holding: no image:scene received yet" in text() and len(commands) > 5, 30), text()
        held = np.array([c.points[-1].positions for c in commands[-5:]])  # where each message comes to rest
        assert np.abs(held - held[0]).max() < 1e-3, "holding must keep the arm where it is"
        assert not transitions, "no step may be executed without a valid observation"
        assert all(p.poll() is None for p in procs.values())
    finally:
        probe.close()
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            p.wait(20)


def test_a_replan_margin_beyond_the_prediction_is_refused_at_start(tmp_path):
    make_checkpoint(tmp_path / "ckpt")
    proc = start_python(["-m", "mechanic_rl_ros.nodes.policy_node", "--ros-args", "--params-file",
                         "config/policy_node.yaml", "-p", f"checkpoint:={tmp_path / 'ckpt'}",
                         "-p", "replan_margin:=8"], fresh_domain_id(), tmp_path / "policy.log")
    assert proc.wait(120) != 0
    assert "parameter replan_margin: 8; expected 0..7" in (tmp_path / "policy.log").read_text()
