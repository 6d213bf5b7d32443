"""Errors a learner raises instead of changing its state."""
from __future__ import annotations


class NonFiniteUpdateError(ValueError):
    """An update produced a NaN/inf loss or gradient; the learner rolled back to its last good state."""
