"""Manipulation tasks on the simulated FR3: initial-state sampling, privileged task
state, success predicate and rewards.

Every task shares one task-state layout (:data:`TASK_STATE_FIELDS`, 13 floats), so
batched code, recorders and loaders never need to know which task produced it:
cube position (3), cube orientation quaternion w-x-y-z (4), goal position (3) and
TCP position (3). For ``lift`` the goal is the point the cube centre must reach.

Rewards: ``sparse`` is 1.0 on a success step and 0.0 otherwise; ``shaped`` lies in
[0, 1], equals 1.0 on success and rises with progress (reach, grasp, lift / push).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mechanic_rl_ros.control import fr3
from mechanic_rl_ros.sim.fr3_sim import FR3Sim

TASK_STATE_FIELDS: tuple[str, ...] = (
    "cube_x", "cube_y", "cube_z",
    "cube_qw", "cube_qx", "cube_qy", "cube_qz",
    "goal_x", "goal_y", "goal_z",
    "tcp_x", "tcp_y", "tcp_z",
)  # fmt: skip
TASK_STATE_DIM = len(TASK_STATE_FIELDS)


@dataclass
class LiftConfig:
    """Lift: grasp the cube and raise it ``lift_height`` above the table."""

    #: Nominal cube position on the table (x, y) [m], in the robot base frame.
    cube_center: tuple[float, float] = (0.5, 0.0)
    #: Cube x and y are drawn uniformly within +-this of the centre [m].
    cube_xy_range: float = 0.05
    #: Cube yaw is drawn uniformly within +-this [rad].
    cube_yaw_range: float = 0.5
    #: Success when the cube's bottom is this far above the table [m].
    lift_height: float = 0.10
    #: Uniform noise on the initial arm joints around home [rad].
    initial_joint_noise: float = 0.02
    #: Episode time limit in control steps (10 Hz: 80 steps = 8 s).
    max_steps: int = 80
    #: End the episode (terminated=True) on the first success step.
    terminate_on_success: bool = True


@dataclass
class PushConfig:
    """Push: slide the cube along the table into a goal disc."""

    #: Nominal cube position (x, y) [m] and uniform range +-[m] around it.
    cube_center: tuple[float, float] = (0.45, 0.0)
    cube_xy_range: float = 0.04
    #: Cube yaw range +-[rad].
    cube_yaw_range: float = 0.4
    #: Nominal goal offset from the cube (x, y) [m]: pushing away from the robot.
    goal_offset: tuple[float, float] = (0.15, 0.0)
    #: Goal drawn uniformly within +-this around cube + offset [m].
    goal_xy_range: float = 0.05
    #: Success when the cube centre is within this distance of the goal [m].
    success_radius: float = 0.03
    initial_joint_noise: float = 0.02
    #: Episode time limit in control steps (10 Hz: 100 steps = 10 s).
    max_steps: int = 100
    terminate_on_success: bool = True


@dataclass
class TaskStatus:
    success: bool
    #: The episode cannot succeed any more (cube fell off the table).
    failed: bool
    shaped_reward: float

    @property
    def sparse_reward(self) -> float:
        return 1.0 if self.success else 0.0


def _table(sim: FR3Sim) -> float:
    """Height of the table top [m] in the base frame (the scene's ``table_height``; 0 in the training scene)."""
    return float(sim.config.scene.table_height)


def _yaw_quat(yaw: float) -> np.ndarray:
    return np.array([math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)])


class Task:
    """Base class: subclasses set ``name`` and implement sampling and evaluation."""

    name = ""
    config: LiftConfig | PushConfig
    goal_visible = False

    def __init__(self, config=None):
        self.config = config if config is not None else self.default_config()
        self._initial_cube = np.zeros(7)
        self._initial_distance = 1.0

    @staticmethod
    def default_config():
        raise NotImplementedError

    @property
    def max_steps(self) -> int:
        return self.config.max_steps

    def reset(self, sim: FR3Sim, rng: np.random.Generator) -> None:
        """Sample an initial state with ``rng`` and put ``sim`` into it."""
        raise NotImplementedError

    def evaluate(self, sim: FR3Sim) -> TaskStatus:
        raise NotImplementedError

    def goal(self, sim: FR3Sim) -> np.ndarray:
        return sim.goal_pos()

    def task_state(self, sim: FR3Sim) -> np.ndarray:
        """The privileged 13-float task state (see :data:`TASK_STATE_FIELDS`)."""
        tcp, _ = sim.tcp_pose()
        return np.concatenate([sim.cube_pose(), self.goal(sim), tcp]).astype(np.float32)

    def _reset_common(self, sim: FR3Sim, rng: np.random.Generator, cube_xy, goal_pos) -> None:
        c = self.config
        q = fr3.Q_HOME + rng.uniform(-c.initial_joint_noise, c.initial_joint_noise, 7)
        yaw = rng.uniform(-c.cube_yaw_range, c.cube_yaw_range)
        h = sim.config.scene.cube_half_size
        cube = np.concatenate([[cube_xy[0], cube_xy[1], _table(sim) + h], _yaw_quat(yaw)])
        sim.reset(q=q, cube_pose=cube, goal_pos=goal_pos)
        sim.set_goal_visible(self.goal_visible)
        self._initial_cube = cube

    def _off_table(self, sim: FR3Sim) -> bool:
        return bool(sim.cube_pose()[2] < _table(sim) - 0.05)


class LiftTask(Task):
    """Grasp the cube and raise it by ``lift_height``."""

    name = "lift"
    config: LiftConfig

    @staticmethod
    def default_config() -> LiftConfig:
        return LiftConfig()

    def reset(self, sim: FR3Sim, rng: np.random.Generator) -> None:
        c = self.config
        xy = np.asarray(c.cube_center) + rng.uniform(-c.cube_xy_range, c.cube_xy_range, 2)
        # The goal marker stays hidden below the table; the goal is the lift point.
        self._reset_common(sim, rng, xy, goal_pos=np.array([xy[0], xy[1], _table(sim) - 0.2]))

    def goal(self, sim: FR3Sim) -> np.ndarray:
        cube0 = self._initial_cube
        return np.array([cube0[0], cube0[1], cube0[2] + self.config.lift_height])

    def evaluate(self, sim: FR3Sim) -> TaskStatus:
        h = sim.config.scene.cube_half_size
        cube = sim.cube_pose()[:3]
        tcp, _ = sim.tcp_pose()
        height = cube[2] - h - _table(sim)
        success = bool(height >= self.config.lift_height)
        reach = 1.0 - math.tanh(10.0 * float(np.linalg.norm(tcp - cube)))
        left, right = sim.finger_contacts("cube")
        grasp = 1.0 if (left and right) else 0.0
        lift = float(np.clip(height / self.config.lift_height, 0.0, 1.0)) * grasp
        shaped = 1.0 if success else 0.3 * reach + 0.2 * grasp + 0.5 * lift
        return TaskStatus(success=success, failed=self._off_table(sim), shaped_reward=float(shaped))


class PushTask(Task):
    """Push the cube into the goal disc."""

    name = "push"
    config: PushConfig
    goal_visible = True

    @staticmethod
    def default_config() -> PushConfig:
        return PushConfig()

    def reset(self, sim: FR3Sim, rng: np.random.Generator) -> None:
        c = self.config
        xy = np.asarray(c.cube_center) + rng.uniform(-c.cube_xy_range, c.cube_xy_range, 2)
        goal_xy = xy + np.asarray(c.goal_offset) + rng.uniform(-c.goal_xy_range, c.goal_xy_range, 2)
        self._reset_common(sim, rng, xy, goal_pos=np.array([goal_xy[0], goal_xy[1], _table(sim)]))
        self._initial_distance = float(np.linalg.norm(goal_xy - xy))

    def evaluate(self, sim: FR3Sim) -> TaskStatus:
        h = sim.config.scene.cube_half_size
        cube = sim.cube_pose()[:3]
        goal = sim.goal_pos()
        tcp, _ = sim.tcp_pose()
        dist = float(np.linalg.norm(cube[:2] - goal[:2]))
        success = bool(dist <= self.config.success_radius and cube[2] - _table(sim) < 2 * h)
        direction = (goal[:2] - cube[:2]) / max(dist, 1e-6)
        push_point = np.append(cube[:2] - direction * (h + 0.01), _table(sim) + h)
        reach = 1.0 - math.tanh(10.0 * float(np.linalg.norm(tcp - push_point)))
        progress = float(np.clip(1.0 - dist / max(self._initial_distance, 1e-6), 0.0, 1.0))
        shaped = 1.0 if success else 0.3 * reach + 0.7 * progress
        return TaskStatus(success=success, failed=self._off_table(sim), shaped_reward=float(shaped))


#: Registry of task name -> task class.
TASKS: dict[str, type[Task]] = {"lift": LiftTask, "push": PushTask}


def make_task(name: str, config=None) -> Task:
    """Instantiate a task by name (see :data:`TASKS`)."""
    if name not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {name!r}")
    return TASKS[name](config)
