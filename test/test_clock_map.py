"""Real-time simulation on a lagging machine: stamps are placed with one rigid map (sim/clock_map.py).

The safety filter chains every trajectory to the previous one at its stamp;
the real FR3's controller, reading the same clock as the stack, switches
without a step. The simulator here falls 30 ms behind the wall clock for a
while (a busy machine) and catches up. Placing each stamp with the lag of the
moment it is read (the old sim_node) shifts consecutive trajectories against
each other and ends in a reflex the real robot would not have; the rigid map,
with messages held until the simulation reaches their arrival, does not.
"""
from __future__ import annotations

import numpy as np
import pytest

from mechanic_rl_ros.control.safety import SafetyConfig, SafetyFilter
from mechanic_rl_ros.control.trajectory import Trajectory
from mechanic_rl_ros.sim.clock_map import ClockMap
from mechanic_rl_ros.sim.env import make_env

DELIVERY = 0.003  # [wall s] stamp -> the message reaches the simulator


def _wall_per_step(k: int) -> float:
    """Wall seconds that pass while the simulation advances 2 ms: it falls 30 ms behind, then catches up."""
    if 100 <= k < 130:
        return 0.003  # slower than real time (busy machine)
    if 200 <= k < 230:
        return 0.001  # catching up
    return 0.002


def _run(rigid: bool, seed: int = 0, ticks: int = 40) -> str | None:
    """The first reflex (its violation as text) or None."""
    env = make_env(task="lift", render=False, cameras=("scene",), seed=seed)
    env.reset(seed=seed)
    sim = env.sim
    sim.select_interface("trajectory")
    sim.recover()
    clock = ClockMap(1.0, wall=100.0, sim=sim.time)
    wall = 100.0
    filt = SafetyFilter(SafetyConfig(workspace_min=(-1.0, -1.0, -1.0), workspace_max=(1.0, 1.0, 1.5)))
    filt.reset(sim.qpos()[:7], wall, settle=0.0)
    rng = np.random.default_rng(seed)
    target = sim.qpos()[:7].copy()
    inbox: list[tuple[float, Trajectory]] = []  # (arrival [wall s], message stamped on the wall clock)
    next_tick, sent, k = wall, 0, 0
    while sent < ticks:
        for item in [m for m in inbox if m[0] <= wall and (not rigid or clock.arrived(m[0], sim.time))]:
            inbox.remove(item)
            arrival, msg = item
            # rigid: one map; else the lag of the moment it is read (wall now - sim time)
            start = clock.sim_of(msg.stamp) if rigid else msg.stamp - (wall - sim.time)
            try:
                sim.send_trajectory(Trajectory(start, msg.points))
            except ValueError:
                pass  # ends before the controller's time: refused, as the JTC would
        if wall >= next_tick:
            target = target + rng.normal(0.0, 0.02, 7)
            res = filt.filter(target, None, wall)
            if res.trajectory is not None:
                inbox.append((wall + DELIVERY, res.trajectory))
            sent += 1
            next_tick += 0.1
        sim.step_physics(1)
        wall += _wall_per_step(k)
        k += 1
        if sim.robot_mode == "reflex":
            return str(sim.last_violation)
    return None


def test_clock_map_round_trip_and_lag():
    clock = ClockMap(2.0, wall=10.0, sim=1.0)
    assert clock.sim_of(clock.wall_of(3.5)) == pytest.approx(3.5)
    assert clock.wall_of(3.0) == pytest.approx(11.0)
    assert clock.lag(11.5, 3.0) == pytest.approx(0.5)
    assert clock.arrived(11.0, 3.0) and not clock.arrived(11.01, 3.0)
    clock.anchor_at(20.0, 0.0)
    assert clock.wall_of(0.0) == 20.0
    with pytest.raises(ValueError, match="rate"):
        ClockMap(0.0)


def test_a_lagging_simulation_switches_chained_trajectories_without_a_step():
    assert _run(rigid=True) is None


def test_placing_each_stamp_with_its_own_lag_would_fake_a_reflex():
    """The check above can fail: the old placement makes the same run end in a reflex."""
    assert _run(rigid=False) is not None
