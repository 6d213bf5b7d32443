"""Checked decoding of Tensor and PolicyWeights: malformed input names its field."""
from __future__ import annotations

import array

import numpy as np
import pytest

from mechanic_rl_ros import wire


def _weights(**tensors):
    payload = wire.encode_weights(tensors or {"w": np.ones((2, 3), np.float32)})
    return wire.weights_to_msg(payload, version=1, architecture_id="arch-a")


def test_tensor_round_trip_every_dtype():
    for dtype in ["float32", "float64", "int64", "uint8", "bool"]:
        a = (np.arange(24) % 2).astype(dtype).reshape(2, 3, 4)
        b = wire.tensor_from_msg(wire.tensor_to_msg("x", a))
        assert b.dtype == a.dtype and b.shape == a.shape
        np.testing.assert_array_equal(a, b)


def test_tensor_with_wrong_length_names_data_field():
    m = wire.tensor_to_msg("x", np.zeros((2, 3), np.float32))
    m.data = array.array("B", bytes(20))
    with pytest.raises(wire.WireError, match=r"decision\[4\]\.data: has 20 bytes; shape \[2, 3\] of float32 needs 24"):
        wire.tensor_from_msg(m, "decision[4]")


def test_tensor_with_unknown_dtype_names_dtype_field():
    m = wire.tensor_to_msg("x", np.zeros(2, np.float32))
    m.dtype = "complex64"
    with pytest.raises(wire.WireError) as e:
        wire.tensor_from_msg(m)
    assert e.value.field == "tensor.dtype" and "float32" in str(e.value)


def test_duplicate_tensor_names_refused():
    msgs = [wire.tensor_to_msg("a", np.zeros(1)), wire.tensor_to_msg("a", np.zeros(1))]
    with pytest.raises(wire.WireError, match=r"decision\[1\]\.name: duplicate"):
        wire.tensors_from_msgs(msgs)


def test_weights_accepts_good_message():
    out = wire.weights_from_msg(_weights(), architecture_id="arch-a", expected_shapes={"w": (2, 3)})
    np.testing.assert_array_equal(out["w"], np.ones((2, 3), np.float32))


def test_weights_bad_sha256_is_refused():
    m = _weights()
    m.sha256 = "0" * 64
    with pytest.raises(wire.WireError) as e:
        wire.weights_from_msg(m)
    assert e.value.field == "sha256" and "corrupt" in str(e.value)


def test_weights_malformed_sha256_is_refused():
    m = _weights()
    m.sha256 = "xyz"
    with pytest.raises(wire.WireError, match="sha256: got 'xyz'; expected 64 lowercase hex"):
        wire.weights_from_msg(m)


def test_truncated_payload_is_refused_by_hash():
    m = _weights()
    m.payload = m.payload[:-5]
    with pytest.raises(wire.WireError, match="sha256: payload of"):
        wire.weights_from_msg(m)


def test_truncated_payload_with_matching_hash_is_refused_by_parser():
    m = _weights()
    short = wire.field_bytes(m.payload)[:-5]
    m.payload, m.sha256 = wire.as_uint8_array(short), wire.sha256_hex(short)
    with pytest.raises(wire.WireError, match="payload: not a valid safetensors buffer"):
        wire.weights_from_msg(m)


def test_wrong_architecture_and_encoding_are_refused():
    m = _weights()
    with pytest.raises(wire.WireError, match="architecture_id: got 'arch-a'; this policy is 'arch-b'"):
        wire.weights_from_msg(m, architecture_id="arch-b")
    m.encoding = "pickle"
    with pytest.raises(wire.WireError, match="encoding: got 'pickle'; expected 'safetensors'"):
        wire.weights_from_msg(m)


def test_wrong_shape_missing_and_extra_tensors_are_named():
    m = _weights()
    with pytest.raises(wire.WireError, match=r"tensor 'w': shape \[2, 3\]; expected \[3, 2\]"):
        wire.weights_from_msg(m, expected_shapes={"w": (3, 2)})
    with pytest.raises(wire.WireError, match=r"missing tensor\(s\) \['v'\]"):
        wire.weights_from_msg(m, expected_shapes={"w": (2, 3), "v": (1,)})
    with pytest.raises(wire.WireError, match=r"unexpected tensor\(s\) \['w'\]"):
        wire.weights_from_msg(m, expected_shapes={})


def test_nan_weights_are_refused():
    bad = np.ones((2, 3), np.float32)
    bad[1, 2] = np.nan
    with pytest.raises(wire.WireError, match="tensor 'w': contains NaN or Inf"):
        wire.weights_from_msg(_weights(w=bad))
