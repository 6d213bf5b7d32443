"""The steps a person commanded, saved with the run as demonstration bags.

Each intervention -- a run of consecutive steps a person (or the simulated operator) commanded -- becomes one
rosbag2 MCAP episode under ``<run_dir>/interventions/episode_<E>_step_<S>/``, in the layout of
:mod:`mechanic_rl_ros.data.rosbag`: per step the newest camera frame of the policy's observation (at the
policy's image size), the joint state (arm joints and the two finger joints from the observed width), the
arm command and the commanded gripper width; ``/demo/episode`` records that it is an intervention, of which
episode and step, and the episode's outcome. So ``mechanic-rl finetune-demos --demos <run_dir>/interventions``
or a learner's ``demos:=`` reads them like any other demonstrations.

What it is given comes from the Transition topic: the intervened steps' observation histories (the last
entry is the step's own observation) and the commands sent. Episodes that end ABORTED are not written (the
robot stopped under them). No ROS imports.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from mechanic_rl_ros.control import fr3
from mechanic_rl_ros.data.rosbag import EpisodeBagWriter


class InterventionRecorder:
    """Collects intervened steps per episode and writes each intervention as a bag when the episode ends."""

    def __init__(self, directory: str | Path, control_dt: float, start_time_ns: int = 0):
        self.directory = Path(directory)
        self.control_dt = float(control_dt)
        self.start_time_ns = int(start_time_ns)
        #: episode -> {step: (newest observation, command sent)}
        self.steps: dict[int, dict[int, tuple[dict[str, Any], np.ndarray]]] = {}
        self.written = 0

    def add(self, episode: int, step: int, obs_history: Mapping[str, Any], action: np.ndarray) -> None:
        """An intervened step: its T_o observation history and the command sent [8]."""
        newest = {k: np.asarray(v)[-1] for k, v in obs_history.items() if k != "images"}
        newest["images"] = {c: np.asarray(im)[-1] for c, im in (obs_history.get("images") or {}).items()}
        self.steps.setdefault(int(episode), {})[int(step)] = (newest, np.asarray(action, np.float64))

    def drop(self, episode: int) -> None:
        self.steps.pop(int(episode), None)

    def end_episode(self, episode: int, success: bool) -> list[Path]:
        """Write the episode's interventions (one bag each); the directories written."""
        steps = self.steps.pop(int(episode), {})
        out: list[Path] = []
        order = sorted(steps)
        segments: list[list[int]] = []
        for s in order:
            if segments and s == segments[-1][-1] + 1:
                segments[-1].append(s)
            else:
                segments.append([s])
        for seg in segments:
            out.append(self._write(int(episode), seg, steps, bool(success)))
        self.written += len(out)
        return out

    def _write(self, episode: int, seg: list[int], steps: Mapping[int, tuple], success: bool) -> Path:
        d = self.directory / f"episode_{episode:06d}_step_{seg[0]:04d}"
        meta = {"source": "intervention", "episode": episode, "first_step": seg[0], "steps": len(seg)}
        with EpisodeBagWriter(d, self.start_time_ns, control_dt=self.control_dt) as bag:
            bag.add_metadata("mechanic_rl_ros.episode", meta)
            bag.write_episode_info(0.0, {**meta, "event": "start"})
            for i, s in enumerate(seg):
                obs, action = steps[s]
                t = i * self.control_dt
                for cam, img in obs["images"].items():
                    bag.write_image(t, cam, img)
                width = float(np.asarray(obs.get("gripper", [0.0])).reshape(-1)[0])
                q = np.asarray(obs["qpos"], np.float64).reshape(-1)
                bag.write_joint_state(t, {"name": [*fr3.JOINT_NAMES, *fr3.FINGER_JOINT_NAMES],
                                          "position": [*q, width / 2, width / 2],
                                          "velocity": [0.0] * 9, "effort": [0.0] * 9})
                bag.write_command(t, action)
            bag.write_episode_info(len(seg) * self.control_dt, {**meta, "event": "end", "success": success,
                                                                "episode_outcome": json.dumps(success)})
        return d
