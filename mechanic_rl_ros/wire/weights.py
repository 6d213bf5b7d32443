"""Policy weights on the wire: encode once, hash once, parse once, check everything.

A ``PolicyWeights`` message carries canonical safetensors bytes
(:func:`mechanic_rl_ros.policy.checkpoint.state_dict_to_bytes`, the one
encoder of the project), their sha256, a version and the architecture id. The
safetensors metadata repeats the architecture id and says for how many of the
last denoising steps the weights are meant (``finetune_steps``, K').

:func:`weights_message` is the learner's side; :func:`verify_weights` the
policy's: it refuses anything corrupt, truncated, non-finite, of another
architecture, of the wrong tensor names or shapes, or for another K', with a
:class:`~mechanic_rl_ros.wire.tensors.WireError` naming the field, and returns
the parsed tensors so that nothing is hashed or parsed a second time.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as _st_load

from mechanic_rl_ros.msg import PolicyWeights
from mechanic_rl_ros.policy.checkpoint import safetensors_metadata, sha256_hex, state_dict_to_bytes
from mechanic_rl_ros.wire.tensors import WireError, as_uint8_array, field_bytes

#: the only weights encoding this stack defines.
ENCODING = "safetensors"


def weights_message(state_dict: Mapping[str, Any], *, version: int, architecture_id: str,
                    finetune_steps: int, num_updates: int = 0) -> PolicyWeights:
    """A ``PolicyWeights`` message for ``state_dict`` (torch tensors or numpy arrays)."""
    payload = state_dict_to_bytes(state_dict, {"arch_id": architecture_id, "finetune_steps": str(int(finetune_steps)),
                                               "policy_version": str(int(version))})
    msg = PolicyWeights()
    msg.version = int(version)
    msg.num_updates = int(num_updates)
    msg.architecture_id = architecture_id
    msg.encoding = ENCODING
    msg.sha256 = sha256_hex(payload)
    msg.payload = as_uint8_array(payload)
    return msg


@dataclass
class VerifiedWeights:
    """The content of a ``PolicyWeights`` message that passed :func:`verify_weights`."""

    version: int
    num_updates: int
    sha256: str
    finetune_steps: int | None       #: K' from the metadata (None when the sender did not say)
    tensors: dict[str, np.ndarray]   #: name -> read-only array


def verify_weights(msg: PolicyWeights, *, architecture_id: str | None = None,
                   expected_shapes: Mapping[str, tuple[int, ...]] | None = None,
                   finetune_steps: int | None = None) -> VerifiedWeights:
    """Check a ``PolicyWeights`` message and return its tensors.

    In order: ``encoding``; ``sha256`` (format, then match); ``architecture_id``
    (when given; the metadata's copy must agree); the payload parses as
    safetensors; K' in the metadata equals ``finetune_steps`` (when both are
    given); tensor names and shapes equal ``expected_shapes`` (when given);
    every floating-point value is finite. The first failure raises
    :class:`WireError` naming the field or tensor.
    """
    if msg.encoding != ENCODING:
        raise WireError("encoding", f"got {msg.encoding!r}; expected {ENCODING!r}")
    digest = msg.sha256.lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise WireError("sha256", f"got {msg.sha256!r}; expected 64 lowercase hex characters")
    payload = field_bytes(msg.payload)
    actual = sha256_hex(payload)
    if actual != digest:
        raise WireError("sha256", f"payload of {len(payload)} bytes hashes to {actual}, message says {digest} "
                                  "(truncated or corrupt)")
    if architecture_id is not None and msg.architecture_id != architecture_id:
        raise WireError("architecture_id", f"got {msg.architecture_id!r}; this policy is {architecture_id!r}")
    try:
        meta = safetensors_metadata(payload)
        tensors = _st_load(payload)
    except (SafetensorError, ValueError, struct.error) as exc:
        raise WireError("payload", f"not a valid safetensors buffer ({exc})") from None
    if meta.get("arch_id", msg.architecture_id) != msg.architecture_id:
        raise WireError("payload", f"metadata arch_id {meta['arch_id']!r} differs from architecture_id "
                                   f"{msg.architecture_id!r}")
    sent_k = meta.get("finetune_steps")
    if sent_k is not None and not sent_k.isdigit():
        raise WireError("payload", f"metadata finetune_steps {sent_k!r}; expected a non-negative integer")
    sent_k = None if sent_k is None else int(sent_k)
    if finetune_steps is not None and sent_k is not None and sent_k != finetune_steps:
        raise WireError("payload", f"weights fine-tuned for the last {sent_k} denoising steps; this policy runs "
                                   f"finetune_steps = {finetune_steps}")
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
    return VerifiedWeights(int(msg.version), int(msg.num_updates), digest, sent_k, tensors)
