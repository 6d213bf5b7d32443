"""Checked decoding of Tensor, Transition and PolicyWeights: malformed input names its field."""
from __future__ import annotations

import array

import numpy as np
import pytest

from mechanic_rl_ros.control.decision import Decision
from mechanic_rl_ros.policy.checkpoint import sha256_hex
from mechanic_rl_ros.wire import tensors as wire
from mechanic_rl_ros.wire.tensors import WireError
from mechanic_rl_ros.wire.transition import ExecutedStep, decision_from_transition, executed_step, transition_message
from mechanic_rl_ros.wire.weights import verify_weights, weights_message


def _weights(finetune_steps=2, **tensors):
    return weights_message(tensors or {"w": np.ones((2, 3), np.float32)}, version=1, architecture_id="arch-a",
                           finetune_steps=finetune_steps)


def test_tensor_round_trip_every_dtype():
    for dtype in ["float32", "float64", "int64", "uint8", "bool"]:
        a = (np.arange(24) % 2).astype(dtype).reshape(2, 3, 4)
        b = wire.tensor_from_msg(wire.tensor_to_msg("x", a))
        assert b.dtype == a.dtype and b.shape == a.shape
        np.testing.assert_array_equal(a, b)


def test_tensor_with_wrong_length_names_data_field():
    m = wire.tensor_to_msg("x", np.zeros((2, 3), np.float32))
    m.data = array.array("B", bytes(20))
    with pytest.raises(WireError, match=r"decision\[4\]\.data: has 20 bytes; shape \[2, 3\] of float32 needs 24"):
        wire.tensor_from_msg(m, "decision[4]")


def test_tensor_with_unknown_dtype_names_dtype_field():
    m = wire.tensor_to_msg("x", np.zeros(2, np.float32))
    m.dtype = "complex64"
    with pytest.raises(WireError) as e:
        wire.tensor_from_msg(m)
    assert e.value.field == "tensor.dtype" and "float32" in str(e.value)


def test_duplicate_tensor_names_refused():
    msgs = [wire.tensor_to_msg("a", np.zeros(1)), wire.tensor_to_msg("a", np.zeros(1))]
    with pytest.raises(WireError, match=r"decision\[1\]\.name: duplicate"):
        wire.tensors_from_msgs(msgs)


def test_weights_accepts_good_message():
    out = verify_weights(_weights(), architecture_id="arch-a", expected_shapes={"w": (2, 3)}, finetune_steps=2)
    np.testing.assert_array_equal(out.tensors["w"], np.ones((2, 3), np.float32))
    assert (out.version, out.finetune_steps, out.sha256) == (1, 2, _weights().sha256)


def test_weights_bytes_are_a_function_of_the_content():
    a = _weights(w=np.ones((2, 3), np.float32), v=np.zeros(4, np.float32))
    b = _weights(v=np.zeros(4, np.float32), w=np.ones((2, 3), np.float32))
    assert a.sha256 == b.sha256 and bytes(a.payload) == bytes(b.payload)


def test_weights_for_another_finetune_steps_are_refused():
    with pytest.raises(WireError, match="fine-tuned for the last 3 denoising steps; this policy runs finetune_steps = 5"):
        verify_weights(_weights(finetune_steps=3), finetune_steps=5)


def test_weights_bad_sha256_is_refused():
    m = _weights()
    m.sha256 = "0" * 64
    with pytest.raises(WireError) as e:
        verify_weights(m)
    assert e.value.field == "sha256" and "corrupt" in str(e.value)


def test_weights_malformed_sha256_is_refused():
    m = _weights()
    m.sha256 = "xyz"
    with pytest.raises(WireError, match="sha256: got 'xyz'; expected 64 lowercase hex"):
        verify_weights(m)


def test_truncated_payload_is_refused_by_hash():
    m = _weights()
    m.payload = m.payload[:-5]
    with pytest.raises(WireError, match="sha256: payload of"):
        verify_weights(m)


def test_truncated_payload_with_matching_hash_is_refused_by_parser():
    m = _weights()
    short = wire.field_bytes(m.payload)[:-5]
    m.payload, m.sha256 = wire.as_uint8_array(short), sha256_hex(short)
    with pytest.raises(WireError, match="payload: not a valid safetensors buffer"):
        verify_weights(m)


def test_wrong_architecture_and_encoding_are_refused():
    m = _weights()
    with pytest.raises(WireError, match="architecture_id: got 'arch-a'; this policy is 'arch-b'"):
        verify_weights(m, architecture_id="arch-b")
    m.encoding = "pickle"
    with pytest.raises(WireError, match="encoding: got 'pickle'; expected 'safetensors'"):
        verify_weights(m)


def test_wrong_shape_missing_and_extra_tensors_are_named():
    m = _weights()
    with pytest.raises(WireError, match=r"tensor 'w': shape \[2, 3\]; expected \[3, 2\]"):
        verify_weights(m, expected_shapes={"w": (3, 2)})
    with pytest.raises(WireError, match=r"missing tensor\(s\) \['v'\]"):
        verify_weights(m, expected_shapes={"w": (2, 3), "v": (1,)})
    with pytest.raises(WireError, match=r"unexpected tensor\(s\) \['w'\]"):
        verify_weights(m, expected_shapes={})


def test_nan_weights_are_refused():
    bad = np.ones((2, 3), np.float32)
    bad[1, 2] = np.nan
    with pytest.raises(WireError, match="tensor 'w': contains NaN or Inf"):
        verify_weights(_weights(w=bad))


def _decision(**kw):
    rng = np.random.default_rng(0)
    d = dict(obs={"qpos": rng.standard_normal((2, 7)).astype(np.float32),
                  "images": {"scene": rng.integers(0, 255, (2, 4, 4, 3), dtype=np.uint8)}},
             chain=rng.standard_normal((4, 16, 8)).astype(np.float32), chain_logprob=rng.standard_normal(3),
             policy_version=5, episode=2, chunk=1, stamps=np.array([0.9, 1.0]))
    d.update(kw)
    return Decision(**d)


def _step(k=0):
    return ExecutedStep(2, 9, 1, k, 5, np.arange(8, dtype=np.float64), False)


def test_decision_round_trips_through_a_transition():
    d = _decision()
    got = decision_from_transition(transition_message(_step(), d))
    np.testing.assert_array_equal(got.obs["images"]["scene"], d.obs["images"]["scene"])
    np.testing.assert_array_equal(got.obs["qpos"], d.obs["qpos"])
    np.testing.assert_array_equal(got.chain, d.chain)
    np.testing.assert_array_equal(got.chain_logprob, d.chain_logprob)
    np.testing.assert_array_equal(got.stamps, d.stamps)
    assert (got.policy_version, got.episode, got.chunk, got.finetune_steps) == (5, 2, 1, 3)
    assert decision_from_transition(transition_message(_step(k=3), None)) is None
    assert executed_step(transition_message(_step(), d)).step == 9


def test_malformed_decisions_and_actions_name_the_field():
    msg = transition_message(_step(), _decision(chain_logprob=np.zeros(7)))
    with pytest.raises(WireError, match=r"decision: chain \[4, 16, 8\] and chain_logprob \[7\]"):
        decision_from_transition(msg)
    bad = np.ones((4, 16, 8), np.float32)
    bad[0, 0, 0] = np.inf
    with pytest.raises(WireError, match="decision 'chain': contains NaN or Inf"):
        decision_from_transition(transition_message(_step(), _decision(chain=bad)))
    msg = transition_message(_step(), _decision())
    msg.action = wire.as_float64_array([0.0] * 7)
    with pytest.raises(WireError, match="action: got .*; expected 8 finite numbers"):
        executed_step(msg)


def test_an_intervened_step_carries_its_observation_history_and_no_chain():
    obs = {"qpos": np.arange(14, dtype=np.float32).reshape(2, 7),
           "images": {"scene": np.full((2, 4, 4, 3), 7, np.uint8)}}
    d = Decision(obs=obs, chain=np.zeros((0, 0, 8), np.float32), chain_logprob=np.zeros(0), policy_version=3,
                 episode=2, chunk=5, stamps=np.array([0.9, 1.0]))
    msg = transition_message(ExecutedStep(2, 11, 5, 0, 3, np.arange(8.0), False, intervention=True), d)
    assert msg.intervention and not any(t.name.startswith("chain") for t in msg.decision)
    back = decision_from_transition(msg)
    assert back.chain.shape[0] == 0 and back.finetune_steps == 0
    np.testing.assert_array_equal(back.obs["qpos"], obs["qpos"])
    np.testing.assert_array_equal(back.obs["images"]["scene"], obs["images"]["scene"])
    assert executed_step(msg).intervention
    msg.intervention = False  # the policy's own decision must carry its chain
    with pytest.raises(WireError, match="chain"):
        decision_from_transition(msg)
