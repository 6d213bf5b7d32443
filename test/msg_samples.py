"""Deterministic, fully populated instances of every message in msg/.

Shared by the publishing child process and the asserting test, so a field that
does not survive the trip shows up as an inequality.
"""
from __future__ import annotations

import numpy as np

from mechanic_rl_ros.control.decision import Decision
from mechanic_rl_ros.msg import EpisodeEvent, LearnerStats, StepReward, TaskState
from mechanic_rl_ros.wire.tensors import as_float64_array, tensor_to_msg
from mechanic_rl_ros.wire.transition import ExecutedStep, transition_message
from mechanic_rl_ros.wire.weights import weights_message


def _stamp(msg, sec: int, nsec: int, frame: str):
    msg.header.stamp.sec = sec
    msg.header.stamp.nanosec = nsec
    msg.header.frame_id = frame
    return msg


def samples() -> dict[str, object]:
    rng = np.random.default_rng(1234)
    out: dict[str, object] = {}

    out["Tensor"] = tensor_to_msg("observation.state", rng.standard_normal((2, 8)).astype(np.float32))

    weights = weights_message({"w": rng.standard_normal((3, 4)).astype(np.float32), "b": np.arange(4, dtype=np.float32)},
                              version=7, architecture_id="arch-0123abcd", finetune_steps=2, num_updates=350)
    out["PolicyWeights"] = _stamp(weights, 12, 34, "learner")

    decision = Decision(obs={"qpos": rng.standard_normal((2, 7)).astype(np.float32),
                             "images": {"scene": rng.integers(0, 255, (2, 8, 8, 3), dtype=np.uint8)}},
                        chain=rng.standard_normal((3, 16, 8)).astype(np.float32),
                        chain_logprob=rng.standard_normal(2).astype(np.float64), policy_version=7, episode=3, chunk=2,
                        stamps=np.array([99.9, 100.0]))
    step = ExecutedStep(episode=3, step=17, chunk=2, chunk_step=0, policy_version=7,
                        action=np.array([0.1, -0.7, 0.0, -2.3, 0.0, 1.57, 0.78, 0.04]), clamped=True)
    out["Transition"] = _stamp(transition_message(step, decision), 100, 500_000_000, "fr3_link0")

    sr = _stamp(StepReward(), 5, 6, "")
    sr.episode, sr.step, sr.reward, sr.sparse_reward = 3, 17, 0.25, 1.0
    sr.success, sr.terminal, sr.truncated = True, True, False
    out["StepReward"] = sr

    ev = _stamp(EpisodeEvent(), 7, 8, "")
    ev.episode, ev.event, ev.steps, ev.episode_return, ev.detail = 3, EpisodeEvent.TIMEOUT, 120, 4.5, "seed=42"
    out["EpisodeEvent"] = ev

    st = _stamp(LearnerStats(), 9, 10, "")
    st.num_updates, st.policy_version = 1000, 9
    st.actor_loss, st.critic_loss, st.approx_kl, st.clip_fraction = -0.5, 0.125, 0.015625, 0.25
    st.actor_scale, st.critic_scale = 1.5e-3, 2.5e-2
    st.samples_per_second, st.buffer_size = 250.0, 4096
    st.transitions_received, st.transitions_stale, st.transitions_unmatched = 10_000, 12, 3
    st.success_rate = 0.75
    out["LearnerStats"] = st

    ts = _stamp(TaskState(), 11, 12, "world")
    ts.task = "lift"
    ts.names = ["cube_x", "cube_y", "cube_z"]
    ts.values = as_float64_array([0.5, -0.05, 0.02])
    ts.success, ts.failure, ts.shaped_reward = False, True, 0.375
    out["TaskState"] = ts
    return out
