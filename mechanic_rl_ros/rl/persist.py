"""Directories replaced whole: a learner's checkpoint is either the old one or the new one, never a
mix, whatever kills the process (Ctrl-C, SIGKILL, power loss) and whenever.

Used by the learner node (its ``learner/`` directory) and the headless off-policy trainer (``ckpt/``).
No ROS imports.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path


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
