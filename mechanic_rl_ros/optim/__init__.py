"""Learning-rate tuning (pure torch, no ROS imports)."""

from .factory import build_optimizer, mechanic_scale
from .mechanic import Mechanic

__all__ = ["Mechanic", "build_optimizer", "mechanic_scale"]
