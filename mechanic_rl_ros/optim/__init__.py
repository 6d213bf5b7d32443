"""Learning-rate tuning and weight averaging (pure torch, no ROS imports)."""

from .factory import build_optimizer, mechanic_scale
from .ema import EMA
from .mechanic import Mechanic

__all__ = ["EMA", "Mechanic", "build_optimizer", "mechanic_scale"]
