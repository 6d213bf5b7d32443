"""Running statistics for reward scaling."""
from __future__ import annotations

from typing import Mapping

import numpy as np


class RunningMeanStd:
    """Running mean/variance with the parallel update of Chan et al. (1979); starts at (0, 1, count=1e-4)
    like DPPO's reward scaler."""

    def __init__(self) -> None:
        self.mean, self.var, self.count = 0.0, 1.0, 1e-4

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        if x.size == 0:
            return
        b_mean, b_var, b_n = float(x.mean()), float(x.var()), float(x.size)
        delta = b_mean - self.mean
        tot = self.count + b_n
        m2 = self.var * self.count + b_var * b_n + delta * delta * self.count * b_n / tot
        self.mean, self.var, self.count = self.mean + delta * b_n / tot, m2 / tot, tot

    def state(self) -> dict[str, float]:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load(self, d: Mapping[str, float]) -> None:
        self.mean, self.var, self.count = float(d["mean"]), float(d["var"]), float(d["count"])
