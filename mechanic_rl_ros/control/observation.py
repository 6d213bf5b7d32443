"""Assembling one time-aligned observation from the latest sensor inputs.

A robot's inputs arrive on their own clocks (camera frames, joint states, the
simulator's task state); the policy needs one observation per control tick in
which every part is recent (``max_age``) and the parts agree in time
(``max_skew``). :class:`ObservationAssembler` keeps the latest value of each
input and refuses, with :class:`StaleObservation`, to make an observation
from stale or skewed parts: the caller then holds the arm instead of guessing.

On simulated time a control tick can do better than "the latest": the
simulator publishes the clock before the joint states and frames of that
instant, so at tick t the latest frame is usually the one of t - 0.1 s and the
latest joint state that of t - 0.02 s, an observation the policy never saw in
training (its demonstrations pair each frame with the joint state of the same
instant, as the headless evaluation does). :meth:`ObservationAssembler.due`
names the inputs whose next sample, at the rate they arrive, belongs to an
instant up to ``now`` and has not come yet; policy_node waits for them
(``input_wait``) before it takes the snapshot.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from mechanic_rl_ros.control import fr3


class StaleObservation(RuntimeError):
    """No observation fit for the policy: an input is missing, too old, or out of sync."""


@dataclass
class Stamped:
    value: Any
    stamp: float
    #: [s] stamp difference to the sample before (0 until two samples came)
    period: float = 0.0


@dataclass
class ObservationAssembler:
    """Latest value of each input; ``snapshot`` returns a time-aligned observation.

    Joint states are matched by *name* (``fr3_joint1..7``, the gripper width is
    the sum of ``fr3_finger_joint1..2``), never by position in the message.
    """

    cameras: Sequence[str] = ()
    lowdim_keys: Sequence[str] = ("qpos", "gripper")
    image_size: int = 96
    #: An input older than this at snapshot time is stale [s].
    max_age: float = 0.3
    #: Largest stamp difference allowed between the inputs of one observation [s].
    max_skew: float = 0.15
    inputs: dict[str, Stamped] = field(default_factory=dict)

    #: [s] a sample due within this of ``now`` counts as due (stamps are rounded to ns; periods measured)
    DUE_TOLERANCE = 1e-4

    def _store(self, key: str, value: Any, stamp: float) -> None:
        old = self.inputs.get(key)
        period = stamp - old.stamp if old is not None and stamp > old.stamp else (old.period if old else 0.0)
        self.inputs[key] = Stamped(value, stamp, period)

    def due(self, now: float) -> list[str]:
        """The required inputs whose next sample belongs to an instant up to ``now`` and has not come yet.

        An input's next sample is expected one period (the stamp difference of
        its last two samples) after its last one. Inputs seen fewer than two
        times, or whose rate would put the next sample after ``now``, are never
        due: a tick never waits for what the sensor would not have sent yet.
        """
        return [key for key in self.required() if (item := self.inputs.get(key)) is not None and item.period > 0
                and item.stamp < now - self.DUE_TOLERANCE and item.stamp + item.period <= now + self.DUE_TOLERANCE]

    def set_joint_state(self, names: Sequence[str], positions: Sequence[float], velocities: Sequence[float],
                        stamp: float) -> None:
        """Store a JointState; raises ValueError naming the field when names or values are wrong."""
        names = list(names)
        missing = [n for n in fr3.ALL_JOINT_NAMES if n not in names]
        if missing:
            raise ValueError(f"name: missing {missing}; expected all of {list(fr3.ALL_JOINT_NAMES)}, got {names}")
        if len(positions) != len(names):
            raise ValueError(f"position: {len(positions)} values for {len(names)} names")
        idx = [names.index(n) for n in fr3.ALL_JOINT_NAMES]
        pos = np.asarray(positions, dtype=np.float64)[idx]
        if not np.all(np.isfinite(pos)):
            raise ValueError(f"position: must be finite, got {pos}")
        vel = np.asarray(velocities, dtype=np.float64)[idx[:7]] if len(velocities) == len(names) else np.zeros(7)
        self._store("joints", {"qpos": pos[:7].astype(np.float32), "gripper": np.array([pos[7] + pos[8]], np.float32),
                               "qvel": np.nan_to_num(vel).astype(np.float32)}, stamp)

    def set_image(self, camera: str, rgb: np.ndarray, stamp: float) -> None:
        if camera not in self.cameras:
            raise ValueError(f"camera: {camera!r} is not one of the policy's cameras {list(self.cameras)}")
        if rgb.shape != (self.image_size, self.image_size, 3) or rgb.dtype != np.uint8:
            raise ValueError(f"image: expected rgb8 {self.image_size}x{self.image_size}, got {rgb.dtype} {rgb.shape} "
                             "(is camera_node's output size the policy's image size?)")
        self._store(f"image:{camera}", rgb, stamp)

    def set_task_state(self, values: Sequence[float], stamp: float) -> None:
        v = np.asarray(values, dtype=np.float32)
        if not np.all(np.isfinite(v)):
            raise ValueError(f"values: must be finite, got {v}")
        self._store("task_state", v, stamp)

    def required(self) -> list[str]:
        req = ["joints"] + [f"image:{c}" for c in self.cameras]
        if "task_state" in self.lowdim_keys:
            req.append("task_state")
        return req

    def oldest(self) -> float:
        """The stamp of the oldest required input (-inf before each has come)."""
        items = [self.inputs.get(key) for key in self.required()]
        return -float("inf") if None in items else min(item.stamp for item in items)

    def snapshot(self, now: float) -> tuple[dict[str, Any], float]:
        """(observation, newest stamp) for ``ObsHistory.push``; raises StaleObservation."""
        stamps = {}
        for key in self.required():
            item = self.inputs.get(key)
            if item is None:
                raise StaleObservation(f"no {key} received yet")
            age = now - item.stamp
            if age > self.max_age:
                raise StaleObservation(f"{key} is {age:.3f} s old (max_age {self.max_age} s)")
            stamps[key] = item.stamp
        skew = max(stamps.values()) - min(stamps.values())
        if skew > self.max_skew:
            raise StaleObservation(f"inputs {stamps} are {skew:.3f} s apart (max_skew {self.max_skew} s)")
        joints = self.inputs["joints"].value
        obs: dict[str, Any] = {k: joints[k] for k in ("qpos", "gripper", "qvel")}
        if "task_state" in self.inputs:
            obs["task_state"] = self.inputs["task_state"].value
        if self.cameras:
            obs["images"] = {c: self.inputs[f"image:{c}"].value for c in self.cameras}
        return obs, max(stamps.values())
