"""Learning-rate tuning (pure torch, no ROS imports)."""

from .mechanic import Mechanic

__all__ = ["Mechanic"]
