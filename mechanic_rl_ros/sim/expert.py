"""Scripted experts: IK-based state machines that solve the tasks from the
observation (proprioception + privileged task state).

Each expert moves a *virtual* TCP pose towards the current phase's goal with a
speed and acceleration limit, and converts it to joint targets with damped
least-squares IK seeded by its previous solution. The result is a smooth,
low-jerk joint trajectory at 10 Hz that a policy can imitate from images and
proprioception.

The noisy mode (``noise > 0``) makes imperfect demonstrations with three kinds of
error, all scaled by ``noise``: a per-episode error in the perceived cube
position (grasps or pushes miss), temporally correlated joint-target noise
(wobbly motion), and per-episode speed variation. Noise never feeds back into the
expert's own state, so trajectories stay smooth around the intended path.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from mechanic_rl_ros.control import fr3
from mechanic_rl_ros.control.chunk_loop import Chunk, PlanRequest
from mechanic_rl_ros.sim.ik import DLSIK, IKConfig
from mechanic_rl_ros.sim.tasks import PushConfig

#: Noise level of the "noisy expert" used for imperfect demonstrations.
DEFAULT_NOISE = 1.0

#: Hand orientation at yaw 0: TCP z pointing down, fingers opening along world y.
_R_DOWN = np.diag([1.0, -1.0, -1.0])


@dataclass
class ExpertConfig:
    """Tunables of the scripted experts. Noise terms are given at ``noise = 1``."""

    #: Overall noise scale: 0 = clean expert, 1 = the default noisy expert.
    noise: float = 0.0
    #: Std of the per-episode error in the perceived cube x/y position [m].
    cube_offset_std: float = 0.017
    #: Std of the joint-target noise [rad] and its step-to-step correlation.
    action_noise_std: float = 0.012
    action_noise_correlation: float = 0.8
    #: Per-episode speed factor drawn from 1 +- this.
    speed_jitter: float = 0.25
    #: Cartesian speed limits of the virtual TCP [m/s]: free motion, near the cube.
    travel_speed: float = 0.25
    fine_speed: float = 0.1
    #: Cartesian acceleration limit of the virtual TCP [m/s^2].
    max_acceleration: float = 1.0
    #: Yaw rate limit of the hand [rad/s].
    yaw_speed: float = 1.0
    #: Distance of the pre-grasp / pre-push pose above the table [m].
    approach_height: float = 0.10
    ik: IKConfig = field(default_factory=IKConfig)


@dataclass(frozen=True)
class ExpertWorld:
    """What an expert knows of the world it acts in, given to it (by :meth:`FR3Env.expert`) rather than read
    from an environment, so the expert depends on no environment class."""

    #: the MuJoCo model of the arm, for the expert's IK
    model: Any
    #: [s] the period of one action
    control_dt: float
    #: [m] half the cube's edge
    cube_half_size: float
    #: the task's configuration (:class:`PushConfig` for push; unused by lift)
    task_config: Any = None
    #: id of the episode being played, asked before every action: a new one resets the expert (None: call
    #: :meth:`ScriptedExpert.reset` yourself at each episode's start)
    episode: Callable[[], int] | None = None
    #: [m] height of the table top in the base frame (the scene's ``table_height``)
    table_height: float = 0.0


class ScriptedExpert:
    """Base expert: virtual-TCP motion, IK and noise. Subclasses implement ``_plan``.

    With ``world.episode`` it resets itself whenever a new episode starts;
    call :meth:`reset` yourself when driving it otherwise.
    """

    def __init__(self, world: ExpertWorld, config: ExpertConfig | None = None, seed: int | None = None):
        self.world = world
        self.config = config or ExpertConfig()
        if not math.isfinite(self.config.noise) or self.config.noise < 0:
            raise ValueError(f"ExpertConfig.noise must be a finite value >= 0, got {self.config.noise}")
        if not world.control_dt > 0:
            raise ValueError(f"ExpertWorld.control_dt must be > 0, got {world.control_dt}")
        self.ik = DLSIK(world.model, self.config.ik)
        self.rng = np.random.default_rng(seed)
        self._episode = None
        self.phase = ""

    # ----------------------------------------------------------------- public
    def reset(self, obs: dict | None = None) -> None:
        """Forget the current episode; the next :meth:`act` starts a new plan."""
        c = self.config
        self._episode = self._episode_now()
        self._q = None
        self._p = None
        self._v = np.zeros(3)
        self._yaw = 0.0
        self._width = fr3.GRIPPER_MAX_WIDTH
        self._counter = 0
        self._noise_state = np.zeros(7)
        self.phase = "start"
        self._cube_offset = np.append(self.rng.normal(0.0, c.cube_offset_std * c.noise, 2), 0.0)
        self._speed = 1.0 + c.noise * self.rng.uniform(-c.speed_jitter, c.speed_jitter)
        self._reset_plan()

    def act(self, obs: dict) -> np.ndarray:
        """Action for this observation: 7 joint targets [rad] + gripper width [m]."""
        if self._episode is None or self._episode != self._episode_now():
            self.reset()
        q_meas = np.asarray(obs["qpos"], dtype=np.float64)
        if self._q is None:
            self._q = q_meas.copy()
            self._p, rot = self.ik.forward(self._q)
            self._yaw = math.atan2(rot[1, 0], rot[0, 0])
        state = np.asarray(obs["task_state"], dtype=np.float64)
        cube = state[0:3] + self._cube_offset
        cube_yaw = quat_yaw(state[3:7])
        goal = state[7:10]
        tcp = state[10:13]
        width = float(np.asarray(obs["gripper"]).reshape(-1)[0])
        target_p, target_yaw, speed, self._width = self._plan(cube, cube_yaw, goal, tcp, width)
        self._advance(target_p, target_yaw, speed * self._speed)
        rot = _rotz(self._yaw) @ _R_DOWN
        self._q = self.ik.solve(self._p, rot, self._q)
        q_cmd = self._q + self._action_noise()
        return np.append(q_cmd, self._width)

    # -------------------------------------------------------------- internals
    def _episode_now(self):
        """The running episode's id (the one this expert last reset for, when nobody tells it)."""
        if self.world.episode is None:
            return self._episode if self._episode is not None else 0
        return self.world.episode()

    def _reset_plan(self) -> None:
        pass

    def _plan(self, cube, cube_yaw, goal, tcp, width):
        """Return (target TCP position, target yaw, speed, gripper width)."""
        raise NotImplementedError

    def _advance(self, target: np.ndarray, target_yaw: float, speed: float) -> None:
        """Move the virtual TCP one control step towards ``target``."""
        c = self.config
        dt = self.world.control_dt
        error = target - self._p
        # Proportional approach (slows down near the target) under a speed limit.
        v_des = error / max(dt, 0.3)
        norm = np.linalg.norm(v_des)
        if norm > speed:
            v_des *= speed / norm
        dv = v_des - self._v
        dv_norm = np.linalg.norm(dv)
        if dv_norm > c.max_acceleration * dt:
            dv *= c.max_acceleration * dt / dv_norm
        self._v = self._v + dv
        self._p = self._p + self._v * dt
        dyaw = wrap(target_yaw - self._yaw)
        self._yaw += float(np.clip(dyaw, -c.yaw_speed * dt, c.yaw_speed * dt))

    def _action_noise(self) -> np.ndarray:
        c = self.config
        if c.noise == 0:
            return np.zeros(7)
        rho = c.action_noise_correlation
        innovation = self.rng.normal(0.0, c.action_noise_std * c.noise * math.sqrt(1 - rho**2), 7)
        self._noise_state = rho * self._noise_state + innovation
        return self._noise_state

    def _near(self, target: np.ndarray, tol: float) -> bool:
        return bool(np.linalg.norm(self._p - target) < tol and np.linalg.norm(self._v) < 0.05)


class LiftExpert(ScriptedExpert):
    """Approach above the cube, descend, close, lift; re-try after a missed grasp."""

    def _reset_plan(self) -> None:
        self.phase = "approach"
        self._lift_z = None
        self._last_width = fr3.GRIPPER_MAX_WIDTH

    def _plan(self, cube, cube_yaw, goal, tcp, width):
        c = self.config
        h = self.world.cube_half_size
        table = self.world.table_height
        # The cube is symmetric under 90 deg turns: pick the grasp yaw nearest 0.
        grasp_yaw = wrap(cube_yaw, math.pi / 2)
        above = np.array([cube[0], cube[1], table + h + c.approach_height])
        grasp = np.array([cube[0], cube[1], max(cube[2] - 0.3 * h, table + 0.6 * h)])
        open_w, closed_w = fr3.GRIPPER_MAX_WIDTH, 0.0

        if self.phase == "approach":
            if self._near(above, 0.01) and abs(wrap(self._yaw - grasp_yaw)) < 0.05:
                self.phase = "descend"
            return above, grasp_yaw, c.travel_speed, open_w
        if self.phase == "descend":
            if self._near(grasp, 0.004):
                self.phase, self._counter = "close", 0
            return grasp, grasp_yaw, c.fine_speed, open_w
        if self.phase == "close":
            self._counter += 1
            settled = self._counter >= 3 and abs(width - self._last_width) < 5e-4
            self._last_width = width
            if settled or self._counter >= 10:
                self.phase = "lift"
                self._lift_z = goal[2] + 0.04
            return self._p.copy(), self._yaw, c.fine_speed, closed_w
        if self.phase == "lift":
            if width < 0.01:  # closed on nothing: open and try again
                self.phase = "retry"
            target = np.array([self._p[0], self._p[1], self._lift_z])
            return target, self._yaw, c.fine_speed * 1.5, closed_w
        # retry: rise with the gripper open, then approach again
        target = np.array([self._p[0], self._p[1], table + h + c.approach_height])
        if self._near(target, 0.01):
            self.phase = "approach"
        return target, self._yaw, c.travel_speed, open_w


class PushExpert(ScriptedExpert):
    """Close the gripper, go behind the cube on the cube-goal line, push along it.

    Closed loop: the push point follows the cube, and when the pusher falls too
    far off the line (the cube turned or slid sideways) it lifts and realigns.
    """

    #: Distance of the pusher behind the cube face before the push [m].
    standoff = 0.03
    #: Lateral misalignment that triggers a re-approach [m].
    max_lateral = 0.02

    def _reset_plan(self) -> None:
        self.phase = "approach"

    def _plan(self, cube, cube_yaw, goal, tcp, width):
        c = self.config
        h = self.world.cube_half_size
        task_cfg: PushConfig = self.world.task_config
        to_goal = goal[:2] - cube[:2]
        dist = float(np.linalg.norm(to_goal))
        direction = to_goal / max(dist, 1e-6)
        pusher_radius = 0.012
        table = self.world.table_height
        push_z = table + 0.6 * h
        behind = cube[:2] - direction * (h + pusher_radius + self.standoff)
        above = np.array([behind[0], behind[1], table + h + c.approach_height])
        start = np.array([behind[0], behind[1], push_z])
        closed_w = 0.0

        if self.phase == "approach":
            if self._near(above, 0.01):
                self.phase = "descend"
            return above, 0.0, c.travel_speed, closed_w
        if self.phase == "descend":
            if self._near(start, 0.005):
                self.phase = "push"
            return start, 0.0, c.fine_speed, closed_w
        if self.phase == "push":
            rel = self._p[:2] - cube[:2]
            lateral = abs(rel[0] * direction[1] - rel[1] * direction[0])
            if dist < 0.6 * task_cfg.success_radius:
                self.phase = "done"
            elif lateral > self.max_lateral or float(rel @ direction) > 0:
                self.phase = "retreat"
            # Advance along the cube->goal line while pulling the pusher back
            # onto the line behind the cube's centre (this guides the cube).
            on_line = cube[:2] - direction * (h + pusher_radius)
            offset = on_line - self._p[:2]
            lateral_fix = offset - (offset @ direction) * direction
            aim = self._p[:2] + 0.05 * direction + lateral_fix
            return np.array([aim[0], aim[1], push_z]), 0.0, c.fine_speed * 0.8, closed_w
        if self.phase == "retreat":
            up = np.array([self._p[0], self._p[1], table + h + c.approach_height])
            if self._near(up, 0.01):
                self.phase = "approach"
            return up, 0.0, c.travel_speed, closed_w
        # done: back off upwards
        up = np.array([self._p[0], self._p[1], table + h + c.approach_height])
        return up, 0.0, c.fine_speed, closed_w


class ExpertPlanner:
    """A scripted expert as the planner of a :class:`~mechanic_rl_ros.control.chunk_loop.ChunkLoop`:
    a chunk of one action from the newest observation (use the loop with ``obs_horizon=1``)."""

    def __init__(self, expert: ScriptedExpert):
        self.expert = expert

    def __call__(self, req: PlanRequest) -> Chunk:
        if req.index == 0:
            self.expert.reset(req.observation)
        return Chunk(np.asarray(self.expert.act(req.observation), dtype=np.float64)[None], req.index)


EXPERTS: dict[str, type[ScriptedExpert]] = {"lift": LiftExpert, "push": PushExpert}


def default_expert_config(task: str) -> ExpertConfig:
    """Per-task defaults. The noise magnitudes are tuned so that the noisy expert
    (``noise=DEFAULT_NOISE``) succeeds roughly 70-80 % of the time on each task
    (pushing is more sensitive to a misperceived cube, lifting to wobble)."""
    if task == "push":
        return ExpertConfig(cube_offset_std=0.01, action_noise_std=0.015)
    return ExpertConfig()


def quat_yaw(quat: np.ndarray) -> float:
    """Yaw [rad] of a w-x-y-z quaternion."""
    w, x, y, z = quat
    return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


def wrap(angle: float, period: float = 2 * math.pi) -> float:
    """Wrap ``angle`` into [-period/2, period/2)."""
    return (angle + period / 2) % period - period / 2


def _rotz(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
