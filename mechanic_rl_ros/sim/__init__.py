"""Simulated FR3 (MuJoCo): world, tasks, scripted experts, gym-style and batched
environments, demonstration recording. No ROS imports.

Entry points::

    from mechanic_rl_ros.sim import make_env, BatchedEnv, TASKS
    env = make_env(task="lift", render=True, cameras=("scene",), image_size=96, seed=0)
    env = make_env(task="lift", world="dim_light cube_mass=0.3")  # a changed scene (sim/world.py)
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(action)  # float[8]

Offscreen rendering needs a headless GL back end: importing this package sets
``MUJOCO_GL=egl`` unless the variable is already set (use ``osmesa`` where EGL is
unavailable). It only takes effect if mujoco has not been imported before.
"""
import os

os.environ.setdefault("MUJOCO_GL", "egl")

from mechanic_rl_ros.sim.batched import BatchedEnv, BatchedExpert
from mechanic_rl_ros.sim.env import (
    ACTION_DIM,
    ACTION_HIGH,
    ACTION_LOW,
    EnvConfig,
    FR3Env,
    make_env,
)
from mechanic_rl_ros.sim.expert import (DEFAULT_NOISE, ExpertConfig, ExpertPlanner, ExpertWorld, LiftExpert,
                                        PushExpert, ScriptedExpert)
from mechanic_rl_ros.sim.fr3_sim import CAMERAS, FR3Sim, SimConfig
from mechanic_rl_ros.sim.model import ControllerConfig, SceneConfig
from mechanic_rl_ros.sim.tasks import TASK_STATE_DIM, TASK_STATE_FIELDS, TASKS, LiftConfig, PushConfig
from mechanic_rl_ros.sim.world import World, load_world

__all__ = [
    "ACTION_DIM",
    "ACTION_HIGH",
    "ACTION_LOW",
    "BatchedEnv",
    "BatchedExpert",
    "CAMERAS",
    "ControllerConfig",
    "DEFAULT_NOISE",
    "EnvConfig",
    "ExpertPlanner",
    "ExpertConfig",
    "ExpertWorld",
    "FR3Env",
    "FR3Sim",
    "LiftConfig",
    "LiftExpert",
    "PushConfig",
    "PushExpert",
    "SceneConfig",
    "ScriptedExpert",
    "SimConfig",
    "TASKS",
    "TASK_STATE_DIM",
    "TASK_STATE_FIELDS",
    "World",
    "load_world",
    "make_env",
]
