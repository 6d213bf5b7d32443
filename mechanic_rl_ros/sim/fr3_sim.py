"""The simulated FR3 as a robot: joint targets in, physics steps, camera images and
joint states out. No task logic lives here (see :mod:`.tasks`), so a ROS node can
drive this class at its own rate with the same semantics as the real position
interface, and the gym-style environment can drive it at the 10 Hz control rate.

Command semantics (mirroring a ros2_control position interface fed by a
trajectory controller): :meth:`FR3Sim.command` takes a 7-joint position target
and a gripper width, clamps them to the FR3 position limits and to what the
velocity limits allow within one control period, and the joint target is then
ramped linearly from the previous target to the new one over ``control_dt``
while the PD controller tracks it at the physics rate.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import mujoco
import numpy as np

from mechanic_rl_ros.control import fr3
from mechanic_rl_ros.sim.model import SceneConfig, build_mjcf

#: Cameras defined in the MJCF.
CAMERAS: tuple[str, ...] = ("scene", "wrist")


@dataclass
class SimConfig:
    """Robot-level settings of the simulator."""

    scene: SceneConfig = field(default_factory=SceneConfig)
    #: Control period [s]: one ``command`` is ramped in over this time.
    control_dt: float = 0.1
    #: Joint targets are kept this far inside the FR3 position limits [rad]
    #: (equal to the end-stop margin of the scene, so targets never press on it).
    position_margin: float = 0.02
    #: Fraction of the FR3 velocity limits a target may ask for.
    velocity_scale: float = 1.0
    #: Also limit the change of target velocity between control steps to this
    #: fraction of the FR3 acceleration limit (as libfranka's rate limiter
    #: does); ``None`` turns the acceleration limit off.
    acceleration_scale: float | None = 1.0
    #: Gripper width rate limit [m/s].
    gripper_speed: float = fr3.GRIPPER_MAX_SPEED


class FR3Sim:
    """A MuJoCo FR3 with a Franka Hand, a cube and a goal marker on a table.

    Attributes ``model`` and ``data`` are the raw MuJoCo objects (read them,
    but set robot targets only through :meth:`command`).
    """

    def __init__(self, config: SimConfig | None = None, model: mujoco.MjModel | None = None):
        self.config = config or SimConfig()
        self.model = model if model is not None else mujoco.MjModel.from_xml_string(build_mjcf(self.config.scene))
        self.data = mujoco.MjData(self.model)
        ratio = self.config.control_dt / self.model.opt.timestep
        self.n_substeps = int(round(ratio))
        if self.n_substeps < 1 or abs(ratio - self.n_substeps) > 1e-6:
            raise ValueError(
                f"SimConfig.control_dt ({self.config.control_dt}) must be a positive multiple "
                f"of the physics timestep ({self.model.opt.timestep})"
            )
        m = self.model
        self._arm_qpos = np.array([m.jnt_qposadr[m.joint(n).id] for n in fr3.JOINT_NAMES])
        self._arm_dof = np.array([m.jnt_dofadr[m.joint(n).id] for n in fr3.JOINT_NAMES])
        self._finger_qpos = np.array([m.jnt_qposadr[m.joint(n).id] for n in fr3.FINGER_JOINT_NAMES])
        self._finger_dof = np.array([m.jnt_dofadr[m.joint(n).id] for n in fr3.FINGER_JOINT_NAMES])
        self._cube_qpos = m.jnt_qposadr[m.joint("cube_joint").id]
        self._cube_dof = m.jnt_dofadr[m.joint("cube_joint").id]
        self._goal_mocap = m.body_mocapid[m.body("goal").id]
        self._tcp_site = m.site("tcp").id
        self._arm_act = np.array([m.actuator(f"{n}_act").id for n in fr3.JOINT_NAMES])
        self._arm_vel_act = np.array([m.actuator(f"{n}_vel").id for n in fr3.JOINT_NAMES])
        self._gripper_act = m.actuator("gripper_act").id
        self._target_from = np.zeros(8)
        self._target_to = np.zeros(8)
        self._ramp_step = 0
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(
        self,
        q: np.ndarray | None = None,
        gripper_width: float = fr3.GRIPPER_MAX_WIDTH,
        cube_pose: np.ndarray | None = None,
        goal_pos: np.ndarray | None = None,
    ) -> None:
        """Put the world in a given state at rest and hold it there.

        ``q`` defaults to the home pose; ``cube_pose`` is (x, y, z, qw, qx, qy, qz);
        ``goal_pos`` is the goal marker's position.
        """
        q = fr3.Q_HOME.copy() if q is None else _check_vector("q", q, 7)
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[self._arm_qpos] = q
        width = float(np.clip(gripper_width, fr3.GRIPPER_MIN_WIDTH, fr3.GRIPPER_MAX_WIDTH))
        self.data.qpos[self._finger_qpos] = width / 2
        if cube_pose is not None:
            self.data.qpos[self._cube_qpos : self._cube_qpos + 7] = _check_vector("cube_pose", cube_pose, 7)
        if goal_pos is not None:
            self.data.mocap_pos[self._goal_mocap] = _check_vector("goal_pos", goal_pos, 3)
        target = np.append(q, width)
        self._target_from[:] = target
        self._target_to[:] = target
        self._ramp_step = self.n_substeps + 1
        self._apply_ctrl(target, np.zeros(7))
        mujoco.mj_forward(self.model, self.data)

    def command(self, q_target: np.ndarray, gripper_width: float) -> np.ndarray:
        """Set a new joint position target and gripper width; return what was applied.

        The returned 8-vector is the clamped command (7 joint targets [rad] and a
        width [m]); it is reached by a linear ramp over ``control_dt``.
        """
        q_target = _check_vector("q_target", q_target, 7)
        width = float(_check_vector("gripper_width", np.atleast_1d(gripper_width), 1)[0])
        previous = self._current_target()
        dt = self.config.control_dt
        cfg = self.config
        q = fr3.clamp_joint_command(
            q_target,
            previous[:7],
            dt,
            cfg.position_margin,
            cfg.velocity_scale,
            dq_previous=None if cfg.acceleration_scale is None else self._command_velocity(),
            acceleration_scale=cfg.acceleration_scale or 1.0,
        )
        max_dw = self.config.gripper_speed * dt
        w = float(np.clip(width, previous[7] - max_dw, previous[7] + max_dw))
        w = float(np.clip(w, fr3.GRIPPER_MIN_WIDTH, fr3.GRIPPER_MAX_WIDTH))
        self._target_from[:] = previous
        self._target_to[:7] = q
        self._target_to[7] = w
        self._ramp_step = 0
        return self._target_to.copy()

    def step_physics(self, n: int | None = None) -> None:
        """Advance ``n`` physics steps (default: one control period)."""
        n = self.n_substeps if n is None else int(n)
        m, d = self.model, self.data
        table = None
        for _ in range(n):
            if self._ramp_step <= self.n_substeps:
                if table is None:
                    table = self._ctrl_table()
                d.ctrl[:] = table[self._ramp_step]
                self._ramp_step += 1
            mujoco.mj_step(m, d)
        # mj_step leaves positions one step ahead of the derived quantities
        # (site poses, tendon lengths, contacts); bring those up to date.
        mujoco.mj_forward(m, d)

    def _command_velocity(self) -> np.ndarray:
        """Target velocity of the ramp in progress (zero once it has ended)."""
        if self._ramp_step > self.n_substeps:
            return np.zeros(7)
        return (self._target_to[:7] - self._target_from[:7]) / self.config.control_dt

    def _current_target(self) -> np.ndarray:
        alpha = min(1.0, self._ramp_step / self.n_substeps)
        return self._target_from + alpha * (self._target_to - self._target_from)

    def _ctrl_table(self) -> np.ndarray:
        """Actuator controls for ramp steps 1..n (ramp with velocity feed-forward),
        then one row holding the end point at zero velocity; row k-1 is step k."""
        n = self.n_substeps
        alpha = (np.arange(1, n + 1) / n)[:, None]
        delta = self._target_to - self._target_from
        table = np.zeros((n + 1, self.model.nu))
        table[:n, self._arm_act] = self._target_from[:7] + alpha * delta[:7]
        table[:n, self._arm_vel_act] = delta[:7] / self.config.control_dt
        table[:n, self._gripper_act] = self._target_from[7] + alpha[:, 0] * delta[7]
        table[n, self._arm_act] = self._target_to[:7]
        table[n, self._gripper_act] = self._target_to[7]
        return table

    def _apply_ctrl(self, target: np.ndarray, velocity: np.ndarray) -> None:
        self.data.ctrl[self._arm_act] = target[:7]
        self.data.ctrl[self._arm_vel_act] = velocity
        self.data.ctrl[self._gripper_act] = target[7]

    @property
    def time(self) -> float:
        """Simulated time since the last reset [s]."""
        return float(self.data.time)

    @property
    def physics_dt(self) -> float:
        return float(self.model.opt.timestep)

    @property
    def target(self) -> np.ndarray:
        """The 8-vector (joint targets, width) the controller is tracking right now."""
        return self._current_target()

    @property
    def commanded(self) -> np.ndarray:
        """The last applied (clamped) command, the end point of the current ramp."""
        return self._target_to.copy()

    def qpos(self) -> np.ndarray:
        """Arm joint positions [rad], float64[7]."""
        return self.data.qpos[self._arm_qpos].copy()

    def qvel(self) -> np.ndarray:
        """Arm joint velocities [rad/s], float64[7]."""
        return self.data.qvel[self._arm_dof].copy()

    def effort(self) -> np.ndarray:
        """Arm joint torques applied by the controller [Nm], float64[7]."""
        return self.data.qfrc_actuator[self._arm_dof].copy()

    def gripper_width(self) -> float:
        """Finger opening width [m] (sum of both finger positions)."""
        return float(self.data.qpos[self._finger_qpos].sum())

    def joint_state(self) -> dict[str, np.ndarray | tuple[str, ...]]:
        """All nine joints (arm + fingers) as ``sensor_msgs/JointState`` fields."""
        d = self.data
        return {
            "name": fr3.ALL_JOINT_NAMES,
            "position": np.concatenate([d.qpos[self._arm_qpos], d.qpos[self._finger_qpos]]),
            "velocity": np.concatenate([d.qvel[self._arm_dof], d.qvel[self._finger_dof]]),
            "effort": np.concatenate([d.qfrc_actuator[self._arm_dof], d.qfrc_actuator[self._finger_dof]]),
        }

    def tcp_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """TCP position [m] and 3x3 rotation matrix in the base frame."""
        return (
            self.data.site_xpos[self._tcp_site].copy(),
            self.data.site_xmat[self._tcp_site].reshape(3, 3).copy(),
        )

    def cube_pose(self) -> np.ndarray:
        """Cube (x, y, z, qw, qx, qy, qz)."""
        return self.data.qpos[self._cube_qpos : self._cube_qpos + 7].copy()

    def cube_velocity(self) -> np.ndarray:
        """Cube linear (world) and angular velocity, float64[6]."""
        return self.data.qvel[self._cube_dof : self._cube_dof + 6].copy()

    def goal_pos(self) -> np.ndarray:
        return self.data.mocap_pos[self._goal_mocap].copy()

    def set_goal_visible(self, visible: bool) -> None:
        """Show or hide the goal disc (changes the model, so all users of it)."""
        self.model.geom_rgba[self.model.geom("goal").id, 3] = 1.0 if visible else 0.0

    def finger_contacts(self, geom_name: str = "cube") -> tuple[bool, bool]:
        """Whether the left / right finger pad touches the given geom."""
        m, d = self.model, self.data
        target = m.geom(geom_name).id
        left, right = m.geom("leftfinger_pad").id, m.geom("rightfinger_pad").id
        touch_l = touch_r = False
        for i in range(d.ncon):
            g1, g2 = d.contact[i].geom1, d.contact[i].geom2
            if target not in (g1, g2):
                continue
            other = g2 if g1 == target else g1
            touch_l |= other == left
            touch_r |= other == right
        return touch_l, touch_r

    # -------------------------------------------------------------- rendering
    def render(self, camera: str, height: int, width: int | None = None) -> np.ndarray:
        """Render one camera offscreen; returns uint8[height, width, 3] (RGB)."""
        if camera not in CAMERAS:
            raise ValueError(f"camera must be one of {CAMERAS}, got {camera!r}")
        return render_camera(self.model, self.data, camera, height, width or height, self._renderers)

    def close(self) -> None:
        """Release the GL contexts of the renderers."""
        for r in self._renderers.values():
            r.close()
        self._renderers.clear()


def render_camera(
    model: mujoco.MjModel,
    data: mujoco.MjData,
    camera: str,
    height: int,
    width: int,
    cache: dict[tuple[int, int], mujoco.Renderer],
) -> np.ndarray:
    """Render with a renderer from ``cache`` (one per image size), creating it if needed."""
    key = (int(height), int(width))
    renderer = cache.get(key)
    if renderer is None:
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, key[1])
        model.vis.global_.offheight = max(model.vis.global_.offheight, key[0])
        try:
            renderer = mujoco.Renderer(model, key[0], key[1])
        except Exception as exc:  # no GL context: say how to get one
            raise RuntimeError(
                f"offscreen rendering failed with MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}: {exc}. "
                "Headless machines need MUJOCO_GL=egl (Debian: libegl1 libegl-mesa0 libgl1-mesa-dri) "
                "or MUJOCO_GL=osmesa (libosmesa6), set before mujoco is imported."
            ) from exc
        cache[key] = renderer
    renderer.update_scene(data, camera=camera)
    return renderer.render()


def _check_vector(name: str, value, size: int) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array of {size} values, got {value!r}") from exc
    if arr.shape != (size,):
        raise ValueError(f"{name} must have shape ({size},), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {arr}")
    return arr.copy()


def quat_to_yaw(quat: np.ndarray) -> float:
    """Yaw (rotation about world z) of a (w, x, y, z) quaternion."""
    w, x, y, z = quat
    return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
