"""Simulated time <-> the stack's clock in real-time mode, tied rigidly as one clock is on the real FR3.

On the robot, the JointTrajectoryController and the nodes read one clock: a
message stamped t is sampled on the controller's timeline at t. The simulator
has its own time (since its last reset) and, on a shared machine, falls behind
the wall clock now and then and catches up. Two things follow for a faithful
simulation (``sim_node``):

* stamps are placed with one fixed map per episode (:class:`ClockMap`, anchored
  at start and at each reset), never with the lag of the moment a message is
  read: two trajectories that the safety filter chained at their switch
  instant are then chained on the simulated timeline too. Placed with
  different lags they are shifted against each other by the drift in between,
  and a 1 ms shift at 0.5 rad/s is a position step that libfranka answers with
  a reflex -- a failure of the simulator, not of the stack;
* a message may not act before the simulated instant of its arrival
  (:meth:`ClockMap.arrived`): while the simulation lags, it waits until the
  simulation gets there, as the real controller could not have read it earlier.

Pure Python; no ROS.
"""
from __future__ import annotations


class ClockMap:
    """``wall = anchor_wall + (sim - anchor_sim) / rate``; re-anchored at resets (``rate``: sim s per wall s)."""

    def __init__(self, rate: float = 1.0, wall: float = 0.0, sim: float = 0.0):
        if not rate > 0:
            raise ValueError(f"rate: must be > 0 (simulated seconds per wall second), got {rate}")
        self.rate = float(rate)
        self.anchor = (float(wall), float(sim))

    def anchor_at(self, wall: float, sim: float) -> None:
        """Tie wall time ``wall`` to simulated time ``sim`` (the lag so far is dropped)."""
        self.anchor = (float(wall), float(sim))

    def wall_of(self, sim: float) -> float:
        """The instant on the stack's clock that simulated time ``sim`` stands for."""
        wall, sim0 = self.anchor
        return wall + (sim - sim0) / self.rate

    def sim_of(self, wall: float) -> float:
        """Inverse of :meth:`wall_of`: where a stamp lies on the simulated timeline."""
        wall0, sim0 = self.anchor
        return sim0 + (wall - wall0) * self.rate

    def lag(self, wall_now: float, sim: float) -> float:
        """[wall s] how far the simulation at ``sim`` is behind ``wall_now`` (negative: ahead)."""
        return wall_now - self.wall_of(sim)

    def arrived(self, arrival_wall: float, sim: float) -> bool:
        """Whether a message that reached the simulator at ``arrival_wall`` may act at simulated time ``sim``."""
        return self.sim_of(arrival_wall) <= sim
