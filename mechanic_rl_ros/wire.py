"""Encoding and checked decoding of the stack's own messages.

Everything that crosses a topic is plain bytes with a declared layout; this
module is the single place that turns arrays and weights into message fields
and back, and it refuses anything malformed with a :class:`WireError` that
names the offending field and what was expected. Nothing here unpickles.

Large buffers are assigned to ``uint8[]`` fields as ``array.array('B', ...)``
built straight from bytes: the generated message setters otherwise iterate the
buffer element by element in Python.

Depends on numpy, safetensors and the generated message classes only (no
rclpy, no torch) so that any node or tool can use it.
"""
from __future__ import annotations

import array
import hashlib
import math
from typing import Mapping

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as _st_load
from safetensors.numpy import save as _st_save

from mechanic_rl_ros.msg import PolicyWeights, Tensor

#: dtypes a Tensor message may carry, by their wire name.
TENSOR_DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
    "int64": np.dtype("<i8"),
    "uint8": np.dtype("u1"),
    "bool": np.dtype("?"),
}

#: the only weights encoding this stack defines.
WEIGHTS_ENCODING = "safetensors"


class WireError(ValueError):
    """A message field does not hold what its definition promises.

    ``field`` is the dotted name of the offending field (``"payload"``,
    ``"decision[2].data"``, ``"tensor 'unet.down.0.weight'"``).
    """

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def as_uint8_array(data: bytes | bytearray | memoryview) -> array.array:
    """Wrap bytes for a ``uint8[]`` field without a per-element Python loop."""
    return array.array("B", bytes(data) if isinstance(data, memoryview) else data)


def as_float64_array(values) -> array.array:
    """Wrap a float sequence / numpy array for a ``float64[]`` field."""
    return array.array("d", np.ascontiguousarray(values, dtype="<f8").tobytes())


def field_bytes(value) -> bytes:
    """Bytes of a ``uint8[]`` field as received (array.array, bytes or list)."""
    if isinstance(value, array.array):
        return value.tobytes()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return bytes(bytearray(value))


# --------------------------------------------------------------------- tensors
def tensor_to_msg(name: str, value: np.ndarray) -> Tensor:
    """Pack a numpy array into a :class:`Tensor` message."""
    arr = np.asarray(value)
    wire_name = next((k for k, d in TENSOR_DTYPES.items() if d == arr.dtype.newbyteorder("<") or d == arr.dtype), None)
    if wire_name is None:
        raise WireError(f"tensor {name!r}.dtype", f"unsupported dtype {arr.dtype}; expected one of {sorted(TENSOR_DTYPES)}")
    arr = np.ascontiguousarray(arr, dtype=TENSOR_DTYPES[wire_name])
    msg = Tensor()
    msg.name = name
    msg.dtype = wire_name
    msg.shape = array.array("I", [int(s) for s in arr.shape])
    msg.data = as_uint8_array(arr.tobytes())
    return msg


def tensor_from_msg(msg: Tensor, field: str = "tensor") -> np.ndarray:
    """Unpack and check a :class:`Tensor` message; returns a read-only array."""
    dtype = TENSOR_DTYPES.get(msg.dtype)
    if dtype is None:
        raise WireError(f"{field}.dtype", f"got {msg.dtype!r}; expected one of {sorted(TENSOR_DTYPES)}")
    shape = tuple(int(s) for s in msg.shape)
    data = field_bytes(msg.data)
    expected = math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise WireError(
            f"{field}.data",
            f"has {len(data)} bytes; shape {list(shape)} of {msg.dtype} needs {expected}",
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def tensors_from_msgs(msgs, field: str = "decision") -> dict[str, np.ndarray]:
    """Decode a ``Tensor[]`` field into a name -> array dict (names unique)."""
    out: dict[str, np.ndarray] = {}
    for i, m in enumerate(msgs):
        if m.name in out:
            raise WireError(f"{field}[{i}].name", f"duplicate tensor name {m.name!r}")
        out[m.name] = tensor_from_msg(m, f"{field}[{i}]")
    return out


# --------------------------------------------------------------------- weights
def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def encode_weights(tensors: Mapping[str, np.ndarray]) -> bytes:
    """Serialise named arrays with safetensors (names sorted, deterministic)."""
    return _st_save({k: np.ascontiguousarray(v) for k, v in sorted(tensors.items())})


def weights_to_msg(payload: bytes, version: int, architecture_id: str, num_updates: int = 0) -> PolicyWeights:
    """Build a :class:`PolicyWeights` message around safetensors ``payload``."""
    msg = PolicyWeights()
    msg.version = int(version)
    msg.num_updates = int(num_updates)
    msg.architecture_id = architecture_id
    msg.encoding = WEIGHTS_ENCODING
    msg.sha256 = sha256_hex(payload)
    msg.payload = as_uint8_array(payload)
    return msg


def weights_from_msg(
    msg: PolicyWeights,
    architecture_id: str | None = None,
    expected_shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> dict[str, np.ndarray]:
    """Verify a :class:`PolicyWeights` message and return its tensors.

    Checks, in order: ``encoding``, ``sha256`` (format and match),
    ``architecture_id`` (when given), that the payload parses as safetensors,
    that the tensor names and shapes equal ``expected_shapes`` (when given),
    and that every floating-point value is finite. The first failure raises
    :class:`WireError` naming the field or tensor.
    """
    if msg.encoding != WEIGHTS_ENCODING:
        raise WireError("encoding", f"got {msg.encoding!r}; expected {WEIGHTS_ENCODING!r}")
    digest = msg.sha256.lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise WireError("sha256", f"got {msg.sha256!r}; expected 64 lowercase hex characters")
    payload = field_bytes(msg.payload)
    actual = sha256_hex(payload)
    if actual != digest:
        raise WireError("sha256", f"payload of {len(payload)} bytes hashes to {actual}, message says {digest} (truncated or corrupt)")
    if architecture_id is not None and msg.architecture_id != architecture_id:
        raise WireError("architecture_id", f"got {msg.architecture_id!r}; this policy is {architecture_id!r}")
    try:
        tensors = _st_load(payload)
    except (SafetensorError, ValueError) as exc:
        raise WireError("payload", f"not a valid safetensors buffer ({exc})") from None
    if expected_shapes is not None:
        missing = sorted(set(expected_shapes) - set(tensors))
        extra = sorted(set(tensors) - set(expected_shapes))
        if missing:
            raise WireError("payload", f"missing tensor(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if extra:
            raise WireError("payload", f"unexpected tensor(s) {extra[:5]}{' ...' if len(extra) > 5 else ''}")
        for name, shape in expected_shapes.items():
            if tuple(tensors[name].shape) != tuple(shape):
                raise WireError(f"tensor {name!r}", f"shape {list(tensors[name].shape)}; expected {list(shape)}")
    for name, t in tensors.items():
        if t.dtype.kind == "f" and not np.isfinite(t).all():
            raise WireError(f"tensor {name!r}", "contains NaN or Inf")
    return tensors
