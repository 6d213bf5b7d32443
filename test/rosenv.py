"""Helpers for tests that start real ROS 2 processes.

Every test that uses DDS gets its own ROS_DOMAIN_ID, so two test runs (or two
tests) on one machine never hear each other, and discovery is kept on the
loopback interface.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_used: set[int] = set()


def fresh_domain_id() -> int:
    """A domain id in [1, 200] not used before by this test process."""
    rng = random.Random(os.getpid() ^ int.from_bytes(os.urandom(4), "little"))
    while True:
        d = rng.randint(1, 200)
        if d not in _used:
            _used.add(d)
            return d


def ros_env(domain_id: int, **extra: str) -> dict[str, str]:
    """Environment for a child ROS process on ``domain_id``, loopback only."""
    env = dict(os.environ)
    env.update(
        ROS_DOMAIN_ID=str(domain_id),
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        PYTHONUNBUFFERED="1",
        MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"),
    )
    env.pop("ROS_LOCALHOST_ONLY", None)
    env.update(extra)
    return env


def start_python(script_args: list[str], domain_id: int, log: Path, **extra: str) -> subprocess.Popen:
    """Start ``python <args>`` as a separate process with its own log file."""
    fh = open(log, "wb")
    return subprocess.Popen(
        [sys.executable, *script_args],
        cwd=REPO,
        env=ros_env(domain_id, **extra),
        stdout=fh,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
