"""MJCF of the simulated world: an FR3 arm with a Franka Hand on a table, a cube,
a goal marker, a fixed scene camera and a wrist camera.

The arm is generated from the modified-DH table in :mod:`mechanic_rl_ros.control.fr3`, so
the simulated kinematics are the published FR3 kinematics by construction. The
geometry is simple (capsules and boxes); masses are close to the published
per-link values so that the joint controller sees realistic loads.

Every joint carries a PD law with velocity feed-forward,
``tau = kp (q_target - q) + kd (dq_target - dq)`` (a MuJoCo ``position`` plus a
``velocity`` actuator) evaluated at the physics rate, saturated at the FR3
effort limits, plus gravity compensation routed through the actuator
(like the FR3's own torque controller). The two fingers are coupled by an
equality constraint and driven through a tendon whose length is the opening width.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mechanic_rl_ros.control import fr3

#: Approximate link masses [kg] of links 1..7 (published Panda identification values).
LINK_MASSES = (4.97, 0.65, 3.23, 3.59, 1.23, 1.67, 0.74)
#: Franka Hand mass [kg] (without fingers) and each finger [kg].
HAND_MASS = 0.73
FINGER_MASS = 0.015
#: Height of the finger joints above the hand origin [m].
FINGER_BASE_Z = 0.0584
#: Mass of each distractor box [kg].
DISTRACTOR_MASS = 0.05


@dataclass
class ControllerConfig:
    """Joint impedance (PD) gains of the simulated FR3 position interface.

    Defaults are stiff enough that a 10 Hz stream of position targets is tracked
    to within a few milliradians, as the real position interface does.
    """

    #: Proportional gains [Nm/rad] of joints 1..7.
    kp: tuple[float, ...] = (1500.0, 1500.0, 1500.0, 1500.0, 600.0, 600.0, 300.0)
    #: Derivative gains [Nm s/rad] of joints 1..7.
    kd: tuple[float, ...] = (80.0, 80.0, 80.0, 80.0, 25.0, 25.0, 12.0)
    #: Reflected rotor inertia added to every arm joint [kg m^2].
    armature: float = 0.1
    #: Viscous joint friction [Nm s/rad].
    joint_damping: float = 0.5
    #: Gripper width controller gain [N/m] and damping [N s/m].
    gripper_kp: float = 1500.0
    gripper_kd: float = 30.0
    #: Maximum squeezing force per finger [N] (Franka Hand: 70 N continuous in total).
    gripper_force: float = 35.0


@dataclass
class SceneConfig:
    """Everything that shapes the generated MJCF."""

    #: Physics time step [s]; the PD controller runs at 1/timestep.
    timestep: float = 0.002
    #: Cube half edge length [m] (a 5 cm cube fits the 8 cm gripper opening).
    cube_half_size: float = 0.025
    #: Cube mass [kg].
    cube_mass: float = 0.1
    #: Sliding friction of cube, fingertips and table.
    friction: float = 1.0
    #: Radius of the (visual-only) goal disc on the table [m].
    goal_radius: float = 0.04
    #: Scene camera position [m] and the point it looks at.
    scene_camera_pos: tuple[float, float, float] = (1.05, -0.12, 0.38)
    scene_camera_target: tuple[float, float, float] = (0.45, 0.0, 0.14)
    #: Vertical field of view of the scene camera [deg].
    scene_camera_fovy: float = 45.0
    #: Wrist camera position in the hand frame [m] and its field of view [deg].
    wrist_camera_pos: tuple[float, float, float] = (0.075, 0.0, 0.01)
    wrist_camera_fovy: float = 75.0
    #: Tilt of the wrist camera towards the fingers [rad].
    wrist_camera_tilt: float = 0.35
    #: Joint end stops engage this far inside the FR3 position limits [rad], so
    #: that even a hard collision cannot push a joint past its published limit.
    joint_limit_margin: float = 0.02
    #: Whether lights cast shadows (costly with software rendering).
    shadows: bool = False
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    # Scene variations (mechanic_rl_ros.sim.world.World sets them; these defaults are the training scene).
    #: Scene camera turned about its own axes after aiming it at the target: (pan, tilt, roll) [deg].
    scene_camera_rotation: tuple[float, float, float] = (0.0, 0.0, 0.0)
    #: Key light direction (base frame) and diffuse colour; the headlight's ambient and diffuse colour.
    light_dir: tuple[float, float, float] = (-0.2, 0.3, -1.0)
    light_diffuse: tuple[float, float, float] = (0.6, 0.6, 0.6)
    headlight_ambient: tuple[float, float, float] = (0.35, 0.35, 0.35)
    headlight_diffuse: tuple[float, float, float] = (0.4, 0.4, 0.4)
    #: Height of the table top in the base frame [m]; the cube and the goal disc start on it.
    table_height: float = 0.0
    #: Table top texture ("checker" or "flat") and its two colours (flat: the first).
    table_texture: str = "checker"
    table_rgb1: tuple[float, float, float] = (0.55, 0.45, 0.35)
    table_rgb2: tuple[float, float, float] = (0.5, 0.4, 0.3)
    #: Cube colour.
    cube_rgba: tuple[float, float, float, float] = (0.85, 0.15, 0.1, 1.0)
    #: Sliding friction of every contact of the cube (None: ``friction``). Set, the cube's contact parameters
    #: take precedence over the fingertip pads' (MuJoCo geom priority), whose stiffness it copies.
    cube_friction: float | None = None
    #: Loose boxes on the table: ((x, y, z) centre [m], half edge [m], rgba) each.
    distractors: tuple = ()


def _fmt(values) -> str:
    return " ".join(f"{float(v):.10g}" for v in values)


def _quat_rotx(angle: float) -> tuple[float, float, float, float]:
    return (math.cos(angle / 2), math.sin(angle / 2), 0.0, 0.0)


def _quat_rotz(angle: float) -> tuple[float, float, float, float]:
    return (math.cos(angle / 2), 0.0, 0.0, math.sin(angle / 2))


def lookat_xyaxes(pos, target) -> str:
    """MJCF ``xyaxes`` for a camera at ``pos`` looking at ``target`` with world z up."""
    pos, target = np.asarray(pos, float), np.asarray(target, float)
    forward = target - pos
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    return _fmt(np.concatenate([right, up]))


def _dh_child_frame(a: float, d: float, alpha: float) -> tuple[np.ndarray, tuple]:
    """Position and orientation of DH frame i in frame i-1 at theta_i = 0."""
    pos = np.array([a, -math.sin(alpha) * d, math.cos(alpha) * d])
    return pos, _quat_rotx(alpha)


_ARM_DEFAULTS = """
    <default class="fr3">
      <joint armature="{armature}" damping="{damping}" actuatorgravcomp="true" solreflimit="0.004 1" solimplimit="0.99 0.999 0.001"
             margin="{limit_margin}"/>
      <geom type="capsule" contype="2" conaffinity="1" group="1" rgba="0.93 0.93 0.93 1"/>
      <default class="fr3_dark"><geom rgba="0.25 0.25 0.27 1"/></default>
      <default class="visual"><geom contype="0" conaffinity="0"/></default>
      <default class="pad">
        <geom type="box" condim="4" friction="{friction} 0.02 0.0001" solref="0.01 1"
              rgba="0.2 0.2 0.2 1" priority="1"/>
      </default>
    </default>"""


def build_mjcf(config: SceneConfig | None = None) -> str:
    """Return the MJCF text of the world described by ``config``."""
    c = config or SceneConfig()
    ctrl = c.controller
    if len(ctrl.kp) != 7 or len(ctrl.kd) != 7:
        raise ValueError("ControllerConfig.kp and .kd must have 7 entries each")

    # Arm: nested bodies, one per DH row; each link has a capsule from its
    # origin to the next joint's origin plus a short "motor housing" capsule
    # along its own joint axis.
    rows = fr3.DH_PARAMS
    arm_xml: list[str] = []
    indent = "    "
    for i in range(7):
        a, d, alpha = rows[i]
        pos, quat = _dh_child_frame(a, d, alpha)
        next_pos, _ = _dh_child_frame(*rows[i + 1])
        name = fr3.JOINT_NAMES[i]
        com = next_pos / 2
        mass = LINK_MASSES[i]
        inertia = mass * 0.004
        geom_class = ' class="visual"' if i == 0 else ""
        lines = [
            f'<body name="fr3_link{i + 1}" pos="{_fmt(pos)}" quat="{_fmt(quat)}" gravcomp="1">',
            f'  <inertial pos="{_fmt(com)}" mass="{mass}" diaginertia="{inertia} {inertia} {inertia}"/>',
            f'  <joint name="{name}" class="fr3" axis="0 0 1" range="{fr3.Q_MIN[i]} {fr3.Q_MAX[i]}"'
            f' actuatorfrcrange="{-fr3.TAU_MAX[i]} {fr3.TAU_MAX[i]}"/>',
            f'  <geom{geom_class} name="fr3_link{i + 1}_housing" fromto="0 0 -0.055 0 0 0.055" size="0.058"'
            + (' class="fr3_dark"' if i in (1, 3, 5) else "") + "/>",
        ]
        if np.linalg.norm(next_pos) > 1e-6:
            lines.append(
                f'  <geom{geom_class} name="fr3_link{i + 1}_tube" fromto="0 0 0 {_fmt(next_pos)}" size="0.05"/>'
            )
        arm_xml.append("\n".join(indent * (i + 2) + ln for ln in lines))

    fa, fd, falpha = rows[7]
    flange_pos, flange_quat = _dh_child_frame(fa, fd, falpha)
    hand_quat = _quat_rotz(fr3.HAND_YAW)
    tilt = c.wrist_camera_tilt
    # Camera looks along its -z; we want it to look along hand +z, tilted
    # towards the fingers (hand -x), with image "up" pointing along hand +x.
    cam_up = np.array([math.cos(tilt), 0.0, math.sin(tilt)])
    cam_right = np.array([0.0, 1.0, 0.0])
    hand_xml = f"""
<body name="fr3_hand" pos="{_fmt(flange_pos)}" quat="{_fmt(np.array(_quat_mul(flange_quat, hand_quat)))}" gravcomp="1">
  <inertial pos="0 0 0.03" mass="{HAND_MASS}" diaginertia="0.002 0.0005 0.002"/>
  <geom name="hand_palm" type="box" pos="0 0 0.03" size="0.025 0.1 0.028" rgba="0.93 0.93 0.93 1"/>
  <geom name="hand_mount" class="fr3_dark" type="cylinder" pos="0 0 0.005" size="0.045 0.008"/>
  <geom name="wrist_cam_body" class="visual" type="box" pos="{_fmt(np.array(c.wrist_camera_pos) + [0.0, 0.0, -0.012])}"
        size="0.012 0.045 0.012" rgba="0.1 0.1 0.1 1"/>
  <site name="tcp" pos="0 0 {fr3.HAND_TCP_OFFSET}" size="0.004" rgba="1 0 0 0" group="4"/>
  <camera name="wrist" pos="{_fmt(c.wrist_camera_pos)}" xyaxes="{_fmt(np.concatenate([cam_right, cam_up]))}"
          fovy="{c.wrist_camera_fovy}"/>
  <body name="fr3_leftfinger" pos="0 0 {FINGER_BASE_Z}" gravcomp="1">
    <inertial pos="0 0.01 0.025" mass="{FINGER_MASS}" diaginertia="2e-6 2e-6 1e-6"/>
    <joint name="{fr3.FINGER_JOINT_NAMES[0]}" type="slide" axis="0 1 0" range="0 0.04"
           armature="0.05" damping="2" margin="0"/>
    <geom name="leftfinger_body" type="box" pos="0 0.013 0.013" size="0.01 0.008 0.015"/>
    <geom name="leftfinger_pad" class="pad" pos="0 0.005 0.0375" size="0.01 0.005 0.0125"/>
  </body>
  <body name="fr3_rightfinger" pos="0 0 {FINGER_BASE_Z}" gravcomp="1">
    <inertial pos="0 -0.01 0.025" mass="{FINGER_MASS}" diaginertia="2e-6 2e-6 1e-6"/>
    <joint name="{fr3.FINGER_JOINT_NAMES[1]}" type="slide" axis="0 -1 0" range="0 0.04"
           armature="0.05" damping="2" margin="0"/>
    <geom name="rightfinger_body" type="box" pos="0 -0.013 0.013" size="0.01 0.008 0.015"/>
    <geom name="rightfinger_pad" class="pad" pos="0 -0.005 0.0375" size="0.01 0.005 0.0125"/>
  </body>
</body>"""
    hand_xml = "\n".join(indent * 9 + ln for ln in hand_xml.strip().splitlines())
    closing = "\n".join(indent * (i + 2) + "</body>" for i in reversed(range(7)))

    # PD with velocity feed-forward: a position actuator (kp) plus a velocity
    # actuator (kd) whose control is the target velocity; the joint's
    # actuatorfrcrange caps their sum (and gravity compensation) at the FR3 effort limit.
    actuators = "\n".join(
        f'    <position name="{n}_act" joint="{n}" kp="{ctrl.kp[i]}"'
        f' ctrlrange="{fr3.Q_MIN[i]} {fr3.Q_MAX[i]}"/>\n'
        f'    <velocity name="{n}_vel" joint="{n}" kv="{ctrl.kd[i]}"'
        f' ctrlrange="{-fr3.DQ_MAX[i]} {fr3.DQ_MAX[i]}"/>'
        for i, n in enumerate(fr3.JOINT_NAMES)
    )
    h = c.cube_half_size
    shadow = "true" if c.shadows else "false"
    th = c.table_height
    scene_xyaxes = lookat_xyaxes(c.scene_camera_pos, c.scene_camera_target)
    if any(c.scene_camera_rotation):
        scene_xyaxes = _rotated_xyaxes(c.scene_camera_pos, c.scene_camera_target, c.scene_camera_rotation)
    cube_friction = c.friction if c.cube_friction is None else c.cube_friction
    # a cube friction of its own must decide the pad contacts too: priority over the pads (priority 1), with
    # the pads' contact stiffness so that only the friction changes
    cube_priority = "" if c.cube_friction is None else ' priority="2" solref="0.01 1"'
    distractors = "".join(
        f"""
    <body name="distractor{i}" pos="{_fmt(pos)}">
      <freejoint name="distractor{i}_joint"/>
      <inertial pos="0 0 0" mass="{DISTRACTOR_MASS}" diaginertia="{_fmt([DISTRACTOR_MASS * (2 * half) ** 2 / 6] * 3)}"/>
      <geom name="distractor{i}" type="box" size="{_fmt([half] * 3)}" rgba="{_fmt(rgba)}" condim="4"
            friction="{c.friction} 0.02 0.0001" contype="1" conaffinity="3"/>
    </body>""" for i, (pos, half, rgba) in enumerate(c.distractors))
    return f"""<mujoco model="fr3_tabletop">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{c.timestep}" integrator="implicitfast" cone="elliptic" impratio="10"/>
  <visual>
    <global offwidth="96" offheight="96"/>
    <quality shadowsize="{2048 if c.shadows else 0}"/>
    <headlight ambient="{_fmt(c.headlight_ambient)}" diffuse="{_fmt(c.headlight_diffuse)}" specular="0 0 0"/>
  </visual>
  <asset>
    <texture name="grid" type="2d" builtin="{c.table_texture}" width="256" height="256"
             rgb1="{_fmt(c.table_rgb1)}" rgb2="{_fmt(c.table_rgb2)}"/>
    <material name="table" texture="grid" texrepeat="6 6"/>
  </asset>
  <default>{_ARM_DEFAULTS.format(limit_margin=c.joint_limit_margin, armature=ctrl.armature, damping=ctrl.joint_damping, friction=c.friction)}
  </default>
  <worldbody>
    <light name="key" pos="0.6 -0.4 1.6" dir="{_fmt(c.light_dir)}" diffuse="{_fmt(c.light_diffuse)}" castshadow="{shadow}"/>
    <geom name="floor" type="plane" pos="0 0 -0.75" size="3 3 0.1" rgba="0.35 0.37 0.4 1"
          contype="0" conaffinity="0"/>
    <geom name="table" type="box" pos="{_fmt((0.35, 0.0, th - 0.025))}" size="0.65 0.6 0.025" material="table"
          contype="1" conaffinity="1" friction="{c.friction} 0.005 0.0001"/>
    <camera name="scene" pos="{_fmt(c.scene_camera_pos)}"
            xyaxes="{scene_xyaxes}" fovy="{c.scene_camera_fovy}"/>
    <body name="fr3_link0" pos="0 0 0" childclass="fr3">
      <geom name="fr3_link0_base" class="visual" type="cylinder" pos="0 0 0.06" size="0.09 0.06"
            rgba="0.93 0.93 0.93 1"/>
{chr(10).join(arm_xml)}
{hand_xml}
{closing}
    </body>
    <body name="cube" pos="{_fmt((0.5, 0.0, th + h))}">
      <freejoint name="cube_joint"/>
      <inertial pos="0 0 0" mass="{c.cube_mass}" diaginertia="{_fmt([c.cube_mass * (2 * h) ** 2 / 6] * 3)}"/>
      <geom name="cube" type="box" size="{h} {h} {h}" rgba="{_fmt(c.cube_rgba)}" condim="4"
            friction="{cube_friction} 0.02 0.0001" contype="1" conaffinity="3"{cube_priority}/>
    </body>{distractors}
    <body name="goal" mocap="true" pos="{_fmt((0.5, 0.15, th))}">
      <geom name="goal" type="cylinder" size="{c.goal_radius} 0.0008" rgba="0.1 0.75 0.2 1"
            contype="0" conaffinity="0"/>
    </body>
  </worldbody>
  <contact>
    <exclude body1="fr3_leftfinger" body2="fr3_rightfinger"/>
  </contact>
  <tendon>
    <fixed name="gripper_width">
      <joint joint="{fr3.FINGER_JOINT_NAMES[0]}" coef="1"/>
      <joint joint="{fr3.FINGER_JOINT_NAMES[1]}" coef="1"/>
    </fixed>
  </tendon>
  <equality>
    <joint joint1="{fr3.FINGER_JOINT_NAMES[0]}" joint2="{fr3.FINGER_JOINT_NAMES[1]}"
           solref="0.005 1" solimp="0.95 0.99 0.001"/>
  </equality>
  <actuator>
{actuators}
    <position name="gripper_act" tendon="gripper_width" kp="{ctrl.gripper_kp}" kv="{ctrl.gripper_kd}"
              ctrlrange="{fr3.GRIPPER_MIN_WIDTH} {fr3.GRIPPER_MAX_WIDTH}"
              forcerange="{-ctrl.gripper_force} {ctrl.gripper_force}"/>
  </actuator>
</mujoco>
"""


def _rotated_xyaxes(pos, target, rotation_deg) -> str:
    """MJCF ``xyaxes`` of the camera :func:`lookat_xyaxes` aims, then turned about its own axes by
    (pan about its y = image up, tilt about its x = image right, roll about its z = backwards) [deg]."""
    axes = np.array([float(v) for v in lookat_xyaxes(pos, target).split()]).reshape(2, 3)
    x, y = axes
    frame = np.stack([x, y, np.cross(x, y)], axis=1)  # columns: the camera's x, y, z in the world
    pan, tilt, roll = (math.radians(float(a)) for a in rotation_deg)
    frame = frame @ _rot("y", pan) @ _rot("x", tilt) @ _rot("z", roll)
    return _fmt(np.concatenate([frame[:, 0], frame[:, 1]]))


def _rot(axis: str, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    if axis == "x":
        return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    if axis == "y":
        return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _quat_mul(q1, q2) -> tuple[float, float, float, float]:
    w1, x1, y1, z1 = q1
    w2, x2, y2, z2 = q2
    return (
        w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
        w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
        w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
    )
