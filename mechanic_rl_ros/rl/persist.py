"""Directories replaced whole: a learner's checkpoint is either the old one or the new one, never a
mix, whatever kills the process (Ctrl-C, SIGKILL, power loss) and whenever.

Used by the learner node (its ``learner/`` directory) and the headless off-policy trainers (``ckpt/``),
with the learners' own ``learner.pt`` + ``learner.json`` format (:func:`save_learner`).
No ROS imports.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch


def replace_dir(tmp: Path, dest: Path) -> None:
    """Make the complete directory ``tmp`` the new ``dest``, never leaving a half-written one.

    Files are flushed to disk before anything is renamed. The old ``dest`` is
    renamed to ``<dest>.old`` first (a directory cannot be renamed over a
    non-empty one), then ``tmp`` to ``dest``; a crash between the two renames
    leaves both complete, and :func:`recover_dir` picks the newer.
    """
    for path in [*tmp.rglob("*"), tmp]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    old = dest.with_name(dest.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    fd = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if old.exists():
        shutil.rmtree(old)


def recover_dir(dest: Path, marker: str) -> None:
    """Undo a :func:`replace_dir` cut short between its renames.

    ``marker`` is the file written last into the temporary directory
    ``<dest>.tmp``, so its presence means that directory is complete. When
    ``dest`` is missing, the complete ``<dest>.tmp`` (newer) or else
    ``<dest>.old`` becomes ``dest``.
    """
    if dest.exists():
        return
    for candidate in (dest.with_name(dest.name + ".tmp"), dest.with_name(dest.name + ".old")):
        if (candidate / marker).is_file():
            candidate.rename(dest)
            return


def save_learner(directory: str | Path, state: dict, fmt: str, config: dict) -> Path:
    """A learner as ``learner.pt`` (tensors only, read back with ``weights_only=True``) + ``learner.json``
    (``fmt`` and the learner's config)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    torch.save(state, d / "learner.pt")
    (d / "learner.json").write_text(json.dumps({"format": fmt, "config": config}, indent=1))
    return d


def read_learner(directory: str | Path, fmt: str, device) -> tuple[dict, dict]:
    """(config, state) of :func:`save_learner`; ValueError if the directory holds another format."""
    d = Path(directory)
    meta = json.loads((d / "learner.json").read_text())
    if meta.get("format") != fmt:
        raise ValueError(f"{d}: not a {fmt} checkpoint (format {meta.get('format')!r})")
    return meta["config"], torch.load(d / "learner.pt", map_location=device, weights_only=True)


def write_checkpoint(directory: str | Path, parts: dict, state: dict, marker: str) -> Path:
    """A trainer's checkpoint directory, all parts from the same moment, swapped in whole.

    ``parts`` maps a name inside the directory to a function that writes it there (a learner's
    ``save``, a replay buffer's ``save``); ``state`` (JSON) is written last as ``marker``. The
    directory is built as ``<directory>.tmp`` and put in place by :func:`replace_dir`, so Ctrl-C or
    SIGKILL at any moment leaves the previous checkpoint loadable."""
    d = Path(directory)
    tmp = d.with_name(d.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for name, write in parts.items():
        write(tmp / name)
    (tmp / marker).write_text(json.dumps(state))
    replace_dir(tmp, d)
    return d
