"""bench/bench_reflexes.py on a few episodes: the shipped policy, with a hold and a restart, trips no reflex
in the simulator that checks every 1 ms command as the FR3 does (the bench runs >= 200 episodes)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_shipped_policy_with_holds_and_a_restart_trips_no_reflex(capsys):
    spec = importlib.util.spec_from_file_location("bench_reflexes", REPO / "bench" / "bench_reflexes.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    code = bench.main(["--episodes", "8", "--checkpoint", str(REPO / "checkpoints" / "lift_pretrained")])
    out = capsys.readouterr().out
    assert "holds 2, restarts 1" in out, out
    assert "reflexes 0" in out and code == 0, out
