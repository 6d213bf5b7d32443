"""The runner's progress record (stack/monitor.py, no ROS): robot minutes from the episodes' control steps,
the success window, the scale of the network the learner trains, and the files it writes."""
from __future__ import annotations

import csv
import math

from mechanic_rl_ros.stack.monitor import Progress


def test_robot_minutes_windows_and_the_trained_networks_scale(tmp_path):
    p = Progress(window=2)
    p.on_stats(10, 10, math.nan, math.nan, 0.1, critic_scale=2e-5)  # selection: only the critic is trained
    assert p.actor_scale == 2e-5
    line = p.on_episode_end(0, 1, 300, 1.0)
    assert "0.50 robot min" in line and "policy v10" in line
    p.on_episode_end(1, 3, 600, 0.0)
    p.on_episode_end(2, 1, 300, 1.0)
    assert p.control_steps == 1200 and p.robot_minutes == 2.0
    assert p.success_rate() == 0.5 and abs(p.success_rate(50) - 2 / 3) < 1e-12
    p.on_stats(20, 3, 1e-3, 0.5, 0.1, critic_scale=7.0)  # DPPO: the actor's scale
    assert p.actor_scale == 1e-3
    paths = p.write(tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "episodes.csv")))
    assert [r["robot_min"] for r in rows] == ["0.500", "1.500", "2.000"]
    assert (tmp_path / "learning_curve.png") in paths and (tmp_path / "learning_curve.png").stat().st_size > 10_000
