"""`mechanic-rl eval` with the stack's gripper: widths become franka_gripper goals, as policy_node sends them.

Headless (`run_episode`, `mechanic-rl eval`), the policy's gripper width goes to the simulated hand every
control period and the fingers track it. In the ROS stack it goes through `GripperCommander`
(control/gripper.py: one goal at a time, 1 cm hysteresis, grasp when closing, move when opening), which is
what franka_gripper on a real FR3 accepts, and sim_node ends a goal once the fingers have stopped for
0.1 s of sim time (nodes/sim_node.py, `_drive_fingers`). This diagnostic runs the evaluation with the
commander between the policy and the hand, ending goals the way sim_node does (checked once per control
period), to see whether those semantics account for the stack running below the same policy headless
(docs/offpolicy.md, "Round 5").

    PYTHONPATH=$PWD MUJOCO_GL=egl .venv/bin/python studies/gripper_goals_eval.py \\
        --checkpoint checkpoints/lift_demos --episodes 200 --seed 1000 --replan-margin 2 --threads 1 \\
        --video-episodes 0 --out runs/eval_demos_gripper_goals

Every argument is `mechanic-rl eval`'s (`--help` lists them); the environment is wrapped, nothing else.
"""
from __future__ import annotations

import sys

import numpy as np

import mechanic_rl_ros.sim as sim_package
from mechanic_rl_ros.control.gripper import GripperCommander, GripperConfig
from mechanic_rl_ros.jobs import evaluate
from mechanic_rl_ros.nodes.sim_node import FINGER_SETTLE, FINGER_STOPPED

CONTROL_PERIOD = 0.1  # [s] one env.step


class GoalGripperEnv:
    """An environment whose gripper takes the goals `GripperCommander` sends (policy_node's defaults)."""

    def __init__(self, env, config: GripperConfig | None = None):
        self.env = env
        self.commander = GripperCommander(config or GripperConfig())
        self.target = 0.0
        self.goal_started = 0.0
        self.previous_width: float | None = None
        self.now = 0.0

    def __getattr__(self, name):
        return getattr(self.env, name)

    def reset(self, *args, **kwargs):
        out = self.env.reset(*args, **kwargs)
        if self.commander.in_flight:
            self.commander.done(False)  # sim_node aborts a goal the reset re-opened the hand under
        self.commander.reset()
        self.target = self.env.sim.gripper_width()
        self.previous_width, self.now = None, 0.0
        return out

    def step(self, action):
        width = self.env.sim.gripper_width()
        speed = 0.0 if self.previous_width is None else abs(width - self.previous_width) / CONTROL_PERIOD
        if self.commander.in_flight and self.now - self.goal_started >= FINGER_SETTLE and speed <= FINGER_STOPPED:
            self.commander.done(True)  # fingers stopped: sim_node answers the goal
        goal = self.commander.request(float(action[7]), self.now, measured_width=width)
        if goal is not None:
            self.target, self.goal_started = goal.width, self.now
        action = np.array(action, dtype=np.float64, copy=True)
        action[7] = self.target
        self.previous_width = width
        self.now += CONTROL_PERIOD
        return self.env.step(action)


def main(argv: list[str] | None = None) -> int:
    make_env = sim_package.make_env
    sim_package.make_env = lambda *a, **k: GoalGripperEnv(make_env(*a, **k))
    try:
        return evaluate.main(argv)
    finally:
        sim_package.make_env = make_env


if __name__ == "__main__":
    sys.exit(main())
