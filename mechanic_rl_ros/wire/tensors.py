"""Arrays on the wire: the ``Tensor`` message and ``uint8[]`` / ``float64[]`` fields.

Everything that crosses a topic is plain bytes with a declared layout; this
module turns numpy arrays into message fields and back and refuses anything
malformed with a :class:`WireError` that names the offending field and what
was expected. Nothing here unpickles.

Large buffers are assigned to ``uint8[]`` fields as ``array.array('B', ...)``
built straight from bytes: the generated message setters otherwise iterate the
buffer element by element in Python.

Depends on numpy and the generated message classes only.
"""
from __future__ import annotations

import array
import math

import numpy as np

from mechanic_rl_ros.msg import Tensor

#: dtypes a Tensor message may carry, by their wire name.
TENSOR_DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
    "int64": np.dtype("<i8"),
    "uint8": np.dtype("u1"),
    "bool": np.dtype("?"),
}


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
