"""Damped least-squares inverse kinematics of the FR3 TCP on the MuJoCo model.

Used by the scripted experts: each control step they ask for the joint
configuration that puts the TCP at a Cartesian waypoint, starting from the
previous solution, so consecutive solutions are close and the joint motion is
smooth. A null-space term pulls the redundant degree of freedom towards a
preferred posture so the elbow does not drift over an episode.
"""
from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from mechanic_rl_ros.control import fr3


@dataclass
class IKConfig:
    """Tunables of :class:`DLSIK`."""

    #: Damping of the least-squares solve (larger = more robust near singularities, slower).
    damping: float = 0.03
    #: Gauss-Newton iterations per solve.
    max_iterations: int = 30
    #: Stop when position error [m] and orientation error [rad] are below these.
    position_tolerance: float = 2e-4
    orientation_tolerance: float = 2e-3
    #: Weight of orientation error relative to position error [m/rad].
    orientation_weight: float = 0.3
    #: Gain of the null-space pull towards the preferred posture.
    nullspace_gain: float = 0.2
    #: Largest joint change per iteration [rad].
    max_step: float = 0.2
    #: Keep solutions this far inside the position limits [rad].
    limit_margin: float = 0.05


def orientation_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Rotation vector (world frame) that turns ``current`` into ``target`` (3x3 each)."""
    r = target @ current.T
    quat = np.empty(4)
    mujoco.mju_mat2Quat(quat, r.reshape(-1))
    if quat[0] < 0:
        quat = -quat
    vec = np.empty(3)
    mujoco.mju_quat2Vel(vec, quat, 1.0)
    return vec


class DLSIK:
    """IK solver on a private ``MjData`` of the given model (the sim's data is untouched)."""

    def __init__(self, model: mujoco.MjModel, config: IKConfig | None = None):
        self.model = model
        self.config = config or IKConfig()
        self.data = mujoco.MjData(model)
        self._site = model.site("tcp").id
        self._qadr = np.array([model.jnt_qposadr[model.joint(n).id] for n in fr3.JOINT_NAMES])
        self._dadr = np.array([model.jnt_dofadr[model.joint(n).id] for n in fr3.JOINT_NAMES])
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def forward(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """TCP position and rotation matrix for joint configuration ``q``."""
        self.data.qpos[self._qadr] = q
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self._site].copy(), self.data.site_xmat[self._site].reshape(3, 3).copy()

    def solve(
        self,
        position: np.ndarray,
        rotation: np.ndarray,
        q_init: np.ndarray,
        q_posture: np.ndarray | None = None,
    ) -> np.ndarray:
        """Joint configuration near ``q_init`` reaching the TCP pose (position, 3x3 rotation)."""
        c = self.config
        q = np.array(q_init, dtype=np.float64)
        posture = fr3.Q_HOME if q_posture is None else q_posture
        lo, hi = fr3.Q_MIN + c.limit_margin, fr3.Q_MAX - c.limit_margin
        m, d = self.model, self.data
        eye = np.eye(6)
        for _ in range(c.max_iterations):
            d.qpos[self._qadr] = q
            mujoco.mj_kinematics(m, d)
            mujoco.mj_comPos(m, d)
            err_p = position - d.site_xpos[self._site]
            err_r = orientation_error(rotation, d.site_xmat[self._site].reshape(3, 3))
            if np.linalg.norm(err_p) < c.position_tolerance and np.linalg.norm(err_r) < c.orientation_tolerance:
                break
            mujoco.mj_jacSite(m, d, self._jacp, self._jacr, self._site)
            jac = np.vstack([self._jacp[:, self._dadr], c.orientation_weight * self._jacr[:, self._dadr]])
            err = np.concatenate([err_p, c.orientation_weight * err_r])
            jjt = jac @ jac.T
            pinv = jac.T @ np.linalg.inv(jjt + (c.damping**2) * eye)
            # The posture pull is projected with the (nearly) undamped inverse so
            # that it does not leak into the task-space error.
            null = np.eye(7) - jac.T @ np.linalg.inv(jjt + 1e-6 * eye) @ jac
            dq = pinv @ err + null @ (c.nullspace_gain * (posture - q))
            step = np.max(np.abs(dq))
            if step > c.max_step:
                dq *= c.max_step / step
            q = np.clip(q + dq, lo, hi)
        return q
