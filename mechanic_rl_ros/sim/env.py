"""Gym-style environment: one FR3 world, one task, 10 Hz joint-position control.

``step(action)`` takes 8 floats -- 7 joint position targets [rad] and a gripper
opening width [m] -- applies them through :meth:`FR3Sim.command` (clamped to the
FR3 position, velocity and acceleration limits) and integrates one control
period (``control_dt`` = 0.1 s, 50 physics steps of 2 ms).

Observation dict (all numpy):

* ``images``: ``{camera: uint8[H, W, 3]}`` -- only when rendering is on;
* ``qpos``, ``qvel``: float32[7] arm joint positions [rad] / velocities [rad/s];
* ``gripper``: float32[1] finger opening width [m];
* ``task_state``: float32[13] privileged state, see ``TASK_STATE_FIELDS``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import mujoco
import numpy as np

from mechanic_rl_ros.control import fr3
from mechanic_rl_ros.sim.expert import (
    DEFAULT_NOISE,
    EXPERTS,
    ExpertConfig,
    ExpertWorld,
    ScriptedExpert,
    default_expert_config,
)
from mechanic_rl_ros.sim.fr3_sim import CAMERAS, FR3Sim, SimConfig
from mechanic_rl_ros.sim.tasks import TASK_STATE_DIM, TASK_STATE_FIELDS, TASKS, Task, make_task
from mechanic_rl_ros.sim.world import World, load_world

#: Action layout: 7 joint targets then the gripper width.
ACTION_DIM = 8
ACTION_LOW = np.append(fr3.Q_MIN, fr3.GRIPPER_MIN_WIDTH).astype(np.float32)
ACTION_HIGH = np.append(fr3.Q_MAX, fr3.GRIPPER_MAX_WIDTH).astype(np.float32)

REWARD_TYPES = ("sparse", "shaped")


@dataclass
class EnvConfig:
    """Everything that defines an environment instance."""

    #: Task name, one of ``TASKS``.
    task: str = "lift"
    #: Render camera images into the observation (off = state-only, much faster).
    render: bool = False
    #: Cameras to render, a subset of ("scene", "wrist").
    cameras: tuple[str, ...] = ("scene",)
    #: Image height and width [px].
    image_size: tuple[int, int] = (96, 96)
    #: Which reward ``step`` returns; both are always in ``info``.
    reward: str = "sparse"
    #: Robot / physics settings.
    sim: SimConfig = field(default_factory=SimConfig)
    #: Task settings (``None``: the task's defaults).
    task_config: Any = None


def _image_size(value) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        value = (int(value), int(value))
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"image_size must be an int or (height, width), got {value!r}") from exc
    if h < 8 or w < 8 or h > 2048 or w > 2048:
        raise ValueError(f"image_size must be within 8..2048 px, got {(h, w)}")
    return h, w


def validate_config(config: EnvConfig) -> EnvConfig:
    """Check and normalise an :class:`EnvConfig`; raises ``ValueError`` naming the bad field."""
    if config.task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {config.task!r}")
    cams = (config.cameras,) if isinstance(config.cameras, str) else tuple(config.cameras)
    bad = [c for c in cams if c not in CAMERAS]
    if bad or not cams or len(set(cams)) != len(cams):
        raise ValueError(f"cameras must be distinct names from {CAMERAS}, got {config.cameras!r}")
    if config.reward not in REWARD_TYPES:
        raise ValueError(f"reward must be one of {REWARD_TYPES}, got {config.reward!r}")
    return replace(config, cameras=cams, image_size=_image_size(config.image_size))


class FR3Env:
    """Gym-style single environment (``reset`` / ``step`` / ``close``).

    ``model`` may be shared between environments of the same configuration
    (the batched environment does this); each instance owns its ``MjData``.
    """

    def __init__(self, config: EnvConfig | None = None, seed: int | None = None, model: mujoco.MjModel | None = None):
        self.config = validate_config(config or EnvConfig())
        self.task: Task = make_task(self.config.task, self.config.task_config)
        self.sim = FR3Sim(self.config.sim, model=model)
        self.rng = np.random.default_rng(seed)
        self.episode_id = 0
        self.step_count = 0
        self._last_status = None
        self.task.reset(self.sim, self.rng)

    # ------------------------------------------------------------ properties
    @property
    def control_dt(self) -> float:
        """Control period [s] (one ``step``)."""
        return self.config.sim.control_dt

    @property
    def physics_dt(self) -> float:
        """Physics time step [s] (the PD controller's rate is 1 / physics_dt)."""
        return self.sim.physics_dt

    @property
    def max_steps(self) -> int:
        """Time limit in control steps; ``truncated`` becomes True when it is reached."""
        return self.task.max_steps

    action_dim = ACTION_DIM
    action_low = ACTION_LOW
    action_high = ACTION_HIGH
    task_state_dim = TASK_STATE_DIM
    task_state_fields = TASK_STATE_FIELDS

    @property
    def cameras(self) -> tuple[str, ...]:
        return self.config.cameras if self.config.render else ()

    # ------------------------------------------------------------------- API
    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        """Start a new episode. ``seed`` re-seeds the environment's random stream."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.task.reset(self.sim, self.rng)
        self.episode_id += 1
        self.step_count = 0
        status = self.task.evaluate(self.sim)
        return self._observation(), self._info(status, None)

    def step(self, action) -> tuple[dict, float, bool, bool, dict]:
        """Apply one action for one control period."""
        action = check_action(action)
        applied = self.sim.command(action[:7], action[7])
        self.sim.step_physics()
        self.step_count += 1
        status = self.task.evaluate(self.sim)
        reward = status.sparse_reward if self.config.reward == "sparse" else status.shaped_reward
        terminated = status.failed or (status.success and self.task.config.terminate_on_success)
        truncated = self.step_count >= self.task.max_steps and not terminated
        return self._observation(), float(reward), bool(terminated), bool(truncated), self._info(status, applied)

    def expert(self, noise: float = 0.0, seed: int | None = None, config: ExpertConfig | None = None) -> ScriptedExpert:
        """Scripted expert for this environment's task (``noise=DEFAULT_NOISE`` for the noisy one).

        ``config`` defaults to the task's :func:`default_expert_config`; its
        ``noise`` field is replaced by ``noise``. The expert reads only the
        observation and resets itself whenever this environment starts a new episode.
        """
        cfg = replace(config or default_expert_config(self.config.task), noise=float(noise))
        world = ExpertWorld(model=self.sim.model, control_dt=self.control_dt,
                            cube_half_size=self.sim.config.scene.cube_half_size, task_config=self.task.config,
                            episode=lambda: self.episode_id, table_height=self.sim.config.scene.table_height)
        return EXPERTS[self.config.task](world, cfg, seed=seed)

    def render(self, camera: str, image_size=None) -> np.ndarray:
        """Render one camera now (works with ``render=False`` too)."""
        h, w = _image_size(image_size) if image_size is not None else self.config.image_size
        return self.sim.render(camera, h, w)

    def observation(self) -> dict:
        """The current observation (as returned by ``reset``/``step``)."""
        return self._observation()

    def close(self) -> None:
        self.sim.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -------------------------------------------------------------- internals
    def _observation(self) -> dict:
        obs = {
            "qpos": self.sim.qpos().astype(np.float32),
            "qvel": self.sim.qvel().astype(np.float32),
            "gripper": np.array([self.sim.gripper_width()], dtype=np.float32),
            "task_state": self.task.task_state(self.sim),
        }
        if self.config.render:
            h, w = self.config.image_size
            obs["images"] = {cam: self.sim.render(cam, h, w) for cam in self.config.cameras}
        return obs

    def _info(self, status, applied) -> dict:
        return {
            "success": status.success,
            "sparse_reward": status.sparse_reward,
            "shaped_reward": status.shaped_reward,
            "applied_action": applied,
            "episode_step": self.step_count,
            "episode_id": self.episode_id,
        }


def check_action(action) -> np.ndarray:
    """Validate an action: float[8], finite. Raises ``ValueError`` naming the problem."""
    try:
        arr = np.asarray(action, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"action must be a numeric array of 8 floats, got {action!r}") from exc
    if arr.shape != (ACTION_DIM,):
        raise ValueError(
            f"action must have shape (8,) = 7 joint position targets [rad] + gripper width [m], "
            f"got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"action must be finite (no NaN/inf), got {arr}")
    return arr


def make_env(
    task: str = "lift",
    render: bool = False,
    cameras: Sequence[str] = ("scene",),
    image_size: int | tuple[int, int] = 96,
    seed: int | None = None,
    reward: str = "sparse",
    task_config: Any = None,
    sim_config: SimConfig | None = None,
    world: World | str | None = None,
) -> FR3Env:
    """Create an :class:`FR3Env`; the main entry point of the simulator.

    ``world`` varies the scene (:mod:`mechanic_rl_ros.sim.world`: a :class:`World` or a spec string such as
    ``"dim_light"`` or ``"cube_mass=0.3"``; None is the training scene) on top of ``sim_config``.
    """
    config = EnvConfig(
        task=task,
        render=render,
        cameras=cameras,
        image_size=image_size,
        reward=reward,
        sim=load_world(world).sim_config(sim_config or SimConfig()),
        task_config=task_config,
    )
    return FR3Env(config, seed=seed)


__all__ = [
    "ACTION_DIM",
    "ACTION_HIGH",
    "ACTION_LOW",
    "DEFAULT_NOISE",
    "EnvConfig",
    "FR3Env",
    "check_action",
    "make_env",
]
