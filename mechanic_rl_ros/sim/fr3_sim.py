"""The simulated FR3 as a robot: trajectories in, physics steps, camera images and
joint states out. No task logic lives here (see :mod:`.tasks`), so a ROS node can
drive this class at its own rate with the same semantics as the real interfaces,
and the gym-style environment can drive it at the 10 Hz control rate.

It fails where the real robot would. Commands reach the arm as on a real FR3
under franka_ros2 (README, "On the real FR3"):

* a JointTrajectoryController on the joint position command interface
  (:class:`~mechanic_rl_ros.control.trajectory.TrajectoryController`, the jazzy
  JTC's interpolation, timing and replacement semantics) is updated every
  1 ms and writes one position command per update -- :meth:`FR3Sim.send_trajectory`;
* or a forward position controller (JointGroupPositionController) that writes
  the last target received every 1 ms, unsmoothed -- :meth:`FR3Sim.send_position`;
* every 1 ms command then passes the FR3's own motion-generator check
  (:class:`~mechanic_rl_ros.control.franka_checks.CommandChecker`: joint
  position, position-dependent velocity, acceleration and jerk limits from
  libfranka). A violation is a *reflex*: the arm stops and holds where it is,
  the robot mode is ``reflex`` with the error's name, and every command is
  ignored until :meth:`FR3Sim.recover` (franka_ros2's error recovery followed by
  re-activating the controller, which then holds the measured position).

The physics runs at 500 Hz (2 ms); each physics step applies the second of
its two 1 ms commands (with the trajectory's velocity as feed-forward) to the
joint PD with gravity compensation, which stands in for the FR3's internal
joint controller. :meth:`FR3Sim.command` is the headless path's shortcut for
what policy_node does: the stack's safety filter turns a 10 Hz target into the
trajectory message, which is then sent as above.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace

import mujoco
import numpy as np

from mechanic_rl_ros.control import fr3
from mechanic_rl_ros.control.franka_checks import DT as INTERFACE_DT
from mechanic_rl_ros.control.franka_checks import INJECTED, CommandChecker, Violation
from mechanic_rl_ros.control.safety import SafetyConfig, SafetyFilter
from mechanic_rl_ros.control.trajectory import Trajectory, TrajectoryController
from mechanic_rl_ros.sim.model import SceneConfig, build_mjcf

#: Cameras defined in the MJCF.
CAMERAS: tuple[str, ...] = ("scene", "wrist")

#: Robot modes, as franka_msgs/msg/FrankaRobotState's ROBOT_MODE_* constants name them.
MODE_MOVE, MODE_IDLE, MODE_REFLEX = "move", "idle", "reflex"


@dataclass
class SimConfig:
    """Robot-level settings of the simulator."""

    scene: SceneConfig = field(default_factory=SceneConfig)
    #: Control period [s] of :meth:`FR3Sim.command` and the default length of :meth:`FR3Sim.step_physics`.
    control_dt: float = 0.1
    #: The safety filter :meth:`FR3Sim.command` applies (what policy_node applies; ``control_dt`` is taken from above).
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    #: The JTC's ``interpolate_from_desired_state`` (config/franka_controllers.yaml sets it true).
    interpolate_from_desired_state: bool = True
    #: Check every 1 ms command against the FR3 limits and stop the arm on a violation (the real robot does).
    reflexes: bool = True
    #: Gripper width rate limit [m/s].
    gripper_speed: float = fr3.GRIPPER_MAX_SPEED


class FR3Sim:
    """A MuJoCo FR3 with a Franka Hand, a cube and a goal marker on a table.

    Attributes ``model`` and ``data`` are the raw MuJoCo objects (read them,
    but set robot targets only through the command methods).
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
        per_step = self.model.opt.timestep / INTERFACE_DT
        self.ticks_per_step = int(round(per_step))
        if self.ticks_per_step < 1 or abs(per_step - self.ticks_per_step) > 1e-6:
            raise ValueError(f"the physics timestep ({self.model.opt.timestep} s) must be a multiple of the FR3's "
                             f"1 ms command period")
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
        self.controller = TrajectoryController(INTERFACE_DT, self.config.interpolate_from_desired_state)
        self.checker = CommandChecker()
        self.safety = SafetyFilter(_with_dt(self.config.safety, self.config.control_dt))
        #: "trajectory" (JTC) or "forward" (forward position controller): which controller is running
        self.interface = "trajectory"
        self._forward_target: np.ndarray | None = None
        self._q_cmd = np.zeros(7)          # last 1 ms joint position command
        self._dq_cmd = np.zeros(7)         # its velocity (what the robot state reports as dq_d)
        self._gripper_target = 0.0          # commanded width
        self._gripper_cmd = 0.0             # rate-limited width the actuator tracks
        self._commanded = np.zeros(8)
        self.robot_mode = MODE_MOVE
        #: the errors of the current reflex (franka_msgs/Errors field names); empty when none
        self.errors: list[str] = []
        self.last_violation: Violation | None = None
        self.reflex_count = 0
        self.commands_ignored = 0
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
        """Put the world in a given state at rest, the controller active and holding it, no error.

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
        self._q_cmd = q.copy()
        self._dq_cmd = np.zeros(7)
        self._gripper_target = self._gripper_cmd = width
        self._commanded = np.append(q, width)
        self.robot_mode, self.errors, self.last_violation = MODE_MOVE, [], None
        self._activate(self.interface)
        self.safety.reset(q, self.time, settle=0.0)  # the controller holds exactly q
        self._apply_ctrl(q, np.zeros(7))
        mujoco.mj_forward(self.model, self.data)

    def _activate(self, interface: str) -> None:
        """Start a controller: it holds the measured position; the robot's check starts from its desired one."""
        if interface not in ("trajectory", "forward"):
            raise ValueError(f"interface: expected 'trajectory' or 'forward', got {interface!r}")
        self.interface = interface
        q = self.qpos()
        self.checker.start(self._q_cmd)
        self._forward_target = None
        if interface == "trajectory":
            self.controller.activate(q, self._q_cmd)
        else:
            self.controller.deactivate()
            self._forward_target = q.copy()

    # --------------------------------------------------------------- commands
    def send_trajectory(self, traj: Trajectory) -> None:
        """A JointTrajectory for the JTC (times on this simulator's clock, :attr:`time`).

        Raises ValueError (naming the field) where the JTC would refuse the
        message; ignored, like every command, while the robot is in a reflex.
        """
        if self.robot_mode == MODE_REFLEX:
            self.commands_ignored += 1
            return
        if self.interface != "trajectory":
            raise ValueError("the trajectory controller is not active (the forward position controller is); "
                             "switch with select_interface('trajectory')")
        self.controller.receive(traj, self.time)
        self._commanded[:7] = np.asarray(traj.points[-1].positions, float)

    def send_position(self, q) -> None:
        """A target for the forward position controller: written unchanged every 1 ms from the next update."""
        q = _check_vector("q", q, 7)
        if self.robot_mode == MODE_REFLEX:
            self.commands_ignored += 1
            return
        if self.interface != "forward":
            raise ValueError("the forward position controller is not active; switch with select_interface('forward')")
        self._forward_target = q
        self._commanded[:7] = q

    def set_gripper(self, width: float) -> float:
        """Commanded gripper opening width [m], reached at the gripper's speed limit; returns the clipped width."""
        w = float(_check_vector("gripper_width", np.atleast_1d(width), 1)[0])
        self._gripper_target = float(np.clip(w, fr3.GRIPPER_MIN_WIDTH, fr3.GRIPPER_MAX_WIDTH))
        self._commanded[7] = self._gripper_target
        return self._gripper_target

    def select_interface(self, interface: str) -> None:
        """Switch controllers (ros2_control switch_controller): the new one starts holding the measured position."""
        if interface != self.interface:
            self._activate(interface)

    def command(self, q_target: np.ndarray, gripper_width: float) -> np.ndarray:
        """The headless path's 10 Hz command: the safety filter's trajectory to the JTC, and a gripper width.

        Returns the 8-vector (7 joint positions [rad] the arm is commanded to
        one control period (+ the filter's switch lead) from now, width [m]).
        While the robot is in a reflex nothing is sent and the measured position is returned.
        """
        q_target = _check_vector("q_target", q_target, 7)
        width = self.set_gripper(gripper_width)
        if self.robot_mode == MODE_REFLEX:
            self.commands_ignored += 1
            return np.append(self.qpos(), width)
        res = self.safety.filter(q_target, None, self.time)
        if res.trajectory is not None:  # None: settling after a re-seed, the controller glides on its own
            self.send_trajectory(res.trajectory)
        return np.append(res.q, width)

    def hold(self) -> None:
        """The headless path's hold: the safety filter's braking trajectory."""
        if self.robot_mode != MODE_REFLEX:
            traj = self.safety.hold(self.time).trajectory
            if traj is not None:
                self.send_trajectory(traj)

    # ---------------------------------------------------------- errors, recovery
    def inject_reflex(self, error: str = INJECTED) -> None:
        """Force a reflex now, as a collision would (tests and ``/sim/inject_reflex``)."""
        self._reflex(Violation(error, "-", float("nan"), float("nan"), 0))

    def recover(self) -> None:
        """franka_ros2's error recovery, then the controller re-activated (it holds the measured position).

        A motion starts at rest where the arm is: the robot's desired position q_d (the last 1 ms command,
        where the robot's check continues from) is set to the measured one, as libfranka starts a motion from
        the state at its start. Left at an older command, the hold's first 1 ms command would jump by however
        far the arm moved since -- after a reflex the arm still settles, and between the error recovery and
        the controllers' activation it sags under gravity by a few microradians, which the robot's jerk
        check (5000 rad/s^3: 5e-6 rad in one tick from rest) answers with a new reflex at every re-activation.

        The stack's safety filter of :meth:`command` is re-seeded from the measured position too.
        """
        self._q_cmd, self._dq_cmd = self.qpos(), np.zeros(7)
        self.robot_mode, self.errors = MODE_MOVE, []
        self._activate(self.interface)
        self.safety.reset(self.qpos(), self.time, settle=0.0)  # re-activated: holds the measured q exactly

    def _reflex(self, violation: Violation) -> None:
        self.robot_mode = MODE_REFLEX
        self.errors = [violation.error]
        self.last_violation = violation
        self.reflex_count += 1
        self._q_cmd, self._dq_cmd = self.qpos(), np.zeros(7)  # the arm stops where it is

    # ---------------------------------------------------------------- physics
    def step_physics(self, n: int | None = None) -> None:
        """Advance ``n`` physics steps (default: one control period), the controller at 1 kHz."""
        n = self.n_substeps if n is None else int(n)
        m, d = self.model, self.data
        k = self.ticks_per_step
        times = self.time + INTERFACE_DT * np.arange(n * k)
        cmds, vels = self._commands(times)
        dw = self.config.gripper_speed * self.physics_dt
        for i in range(n):
            if cmds is None:
                q, v = self._q_cmd, np.zeros(7)
            else:
                q, v = cmds[(i + 1) * k - 1], vels[(i + 1) * k - 1]
            self._gripper_cmd += float(np.clip(self._gripper_target - self._gripper_cmd, -dw, dw))
            self._apply_ctrl(q, v)
            mujoco.mj_step(m, d)
        # mj_step leaves positions one step ahead of the derived quantities
        # (site poses, tendon lengths, contacts); bring those up to date.
        mujoco.mj_forward(m, d)

    def _commands(self, times: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The 1 ms commands at ``times`` and what the robot makes of them (None: holding after a reflex)."""
        if self.robot_mode == MODE_REFLEX:
            return None, None
        if self.interface == "trajectory":
            cmds, vels = self.controller.update(times, self.qpos())
        else:
            cmds = np.repeat(self._forward_target[None], times.size, axis=0)
            vels = np.zeros_like(cmds)
        if self.config.reflexes:
            violation = self.checker.check(cmds)
            if violation is not None:
                ok = violation.index
                if ok:
                    self._q_cmd = cmds[ok - 1].copy()
                self._reflex(violation)
                cmds[ok:] = self._q_cmd
                vels[ok:] = 0.0
                self._dq_cmd = np.zeros(7)
                return cmds, vels
        self._q_cmd, self._dq_cmd = cmds[-1].copy(), vels[-1].copy()
        return cmds, vels

    def _apply_ctrl(self, target: np.ndarray, velocity: np.ndarray) -> None:
        self.data.ctrl[self._arm_act] = target
        self.data.ctrl[self._arm_vel_act] = velocity
        self.data.ctrl[self._gripper_act] = self._gripper_cmd

    @property
    def time(self) -> float:
        """Simulated time since the last reset [s]."""
        return float(self.data.time)

    @property
    def physics_dt(self) -> float:
        return float(self.model.opt.timestep)

    @property
    def target(self) -> np.ndarray:
        """The 8-vector the arm is tracking right now: the last 1 ms joint command and the gripper's rate-limited width."""
        return np.append(self._q_cmd, self._gripper_cmd)

    @property
    def desired(self) -> tuple[np.ndarray, np.ndarray]:
        """The last 1 ms joint command and its velocity: libfranka's q_d and dq_d in the robot state."""
        return self._q_cmd.copy(), self._dq_cmd.copy()

    @property
    def commanded(self) -> np.ndarray:
        """The 8-vector last commanded: where the last trajectory ends (or the forward target), and the width."""
        return self._commanded.copy()

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


def _with_dt(config: SafetyConfig, control_dt: float) -> SafetyConfig:
    return replace(config, control_dt=control_dt)


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
