"""Checkpoint I/O without pickle: safetensors weights + a JSON config.

A checkpoint directory holds

* ``model.safetensors`` -- the policy's state dict (``net.*`` and, after RL
  fine-tuning, ``ft_net.*``); its header metadata repeats the architecture id;
* ``config.json`` -- format tag, architecture id, the full
  :class:`~mechanic_rl_ros.policy.config.PolicyConfig`, the normaliser
  statistics, the sha256 of the weights file and free-form training info.

The same safetensors encoding is used in memory (:func:`state_dict_to_bytes`)
for the ROS weights message, which carries the bytes, their sha256 and the
architecture id.  Every load compares the architecture id and then every
tensor's name and shape against the receiving model and reports *all*
differences at once.
"""
from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

FORMAT = "mechanic_rl_ros.diffusion_policy/1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class CheckpointMismatchError(ValueError):
    """Weights do not fit the model: wrong architecture id, missing/unexpected tensors or shapes."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def state_dict_to_bytes(state_dict: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> bytes:
    """Serialise a state dict (torch tensors or numpy arrays) to canonical safetensors bytes.

    Canonical: the same tensors and metadata always give the same bytes, so
    the sha256 is a function of the content. safetensors writes its
    ``__metadata__`` from a hash map, whose key order can differ between two
    saves; the header is rewritten with the keys sorted (tensor entries and
    data are left as they are).
    """
    tensors = {k: (v.detach().to("cpu") if isinstance(v, torch.Tensor) else torch.tensor(np.asarray(v))).contiguous()
               for k, v in state_dict.items()}
    data = _st_save(tensors, metadata={str(k): str(v) for k, v in (metadata or {}).items()})
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    if "__metadata__" in header:
        header = {"__metadata__": dict(sorted(header.pop("__metadata__").items())), **header}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data[8 + n:]


def state_dict_from_bytes(data: bytes, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Inverse of :func:`state_dict_to_bytes`; verifies the sha256 first when given."""
    if expected_sha256 is not None:
        got = sha256_hex(data)
        if got != expected_sha256.lower():
            raise CheckpointMismatchError(f"weights sha256 mismatch: expected {expected_sha256}, got {got}")
    return _st_load(bytes(data))


def safetensors_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors blob (8-byte little-endian header size, then JSON header)."""
    (n,) = struct.unpack("<Q", bytes(data[:8]))
    header = json.loads(bytes(data[8:8 + n]))
    return dict(header.get("__metadata__", {}) or {})


def check_state_dict(expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor], *,
                     expected_arch_id: str | None = None, got_arch_id: str | None = None,
                     source: str = "weights") -> None:
    """Raise :class:`CheckpointMismatchError` listing every difference between two state dicts.

    Each line names the tensor, e.g.
    ``tensor 'net.unet.final.1.weight': expected shape (8, 64, 1), got (8, 32, 1)``.
    """
    problems = []
    if expected_arch_id is not None and got_arch_id is not None and expected_arch_id != got_arch_id:
        problems.append(f"architecture id: expected {expected_arch_id}, got {got_arch_id}")
    for name, t in expected.items():
        if name not in got:
            problems.append(f"tensor {name!r}: expected shape {tuple(t.shape)}, missing")
        elif tuple(got[name].shape) != tuple(t.shape):
            problems.append(f"tensor {name!r}: expected shape {tuple(t.shape)}, got {tuple(got[name].shape)}")
        elif got[name].dtype != t.dtype:
            problems.append(f"tensor {name!r}: expected dtype {t.dtype}, got {got[name].dtype}")
    for name in got:
        if name not in expected:
            problems.append(f"tensor {name!r}: unexpected (shape {tuple(got[name].shape)})")
    if problems:
        raise CheckpointMismatchError(f"{source} do not match the model ({len(problems)} problem(s)):\n  "
                                      + "\n  ".join(problems))


def write_checkpoint(directory: str | Path, state_dict: Mapping[str, torch.Tensor], config: dict[str, Any]) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (which gains ``weights_sha256``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    blob = state_dict_to_bytes(state_dict, {"arch_id": str(config["arch_id"]), "format": FORMAT})
    (directory / WEIGHTS_FILE).write_bytes(blob)
    config = dict(config, format=FORMAT, weights=WEIGHTS_FILE, weights_sha256=sha256_hex(blob))
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return directory


def read_checkpoint(directory: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, str]]:
    """Read (config dict, state dict, safetensors metadata); verifies format and weights sha256."""
    directory = Path(directory)
    cfg_path = directory / CONFIG_FILE
    if not cfg_path.is_file():
        raise FileNotFoundError(f"no {CONFIG_FILE} in checkpoint directory {directory}")
    config = json.loads(cfg_path.read_text())
    if config.get("format") != FORMAT:
        raise CheckpointMismatchError(f"{cfg_path}: format {config.get('format')!r}, expected {FORMAT!r}")
    blob = (directory / config.get("weights", WEIGHTS_FILE)).read_bytes()
    state = state_dict_from_bytes(blob, config.get("weights_sha256"))
    return config, state, safetensors_metadata(blob)
