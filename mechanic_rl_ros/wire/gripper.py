"""A :class:`~mechanic_rl_ros.control.gripper.GripperGoal` as franka_gripper's action goal, and its answer.

franka_gripper (franka_ros2) answers ``Move``, ``Grasp`` and ``Homing`` goals
with ``success`` and an ``error`` text; the goal succeeds or aborts with it.
"""
from __future__ import annotations

from franka_msgs.action import Grasp, Move
from franka_msgs.msg import GraspEpsilon

from mechanic_rl_ros.control.gripper import GRASP, MOVE, GripperGoal
from mechanic_rl_ros.wire import topics

#: the action each kind of goal goes to
ACTIONS = {MOVE: topics.GRIPPER_MOVE, GRASP: topics.GRIPPER_GRASP}


def goal_message(goal: GripperGoal):
    """The ``franka_msgs/action/Move`` or ``Grasp`` goal for ``goal``."""
    if goal.kind == MOVE:
        return Move.Goal(width=float(goal.width), speed=float(goal.speed))
    if goal.kind == GRASP:
        return Grasp.Goal(width=float(goal.width), speed=float(goal.speed), force=float(goal.force),
                          epsilon=GraspEpsilon(inner=float(goal.epsilon_inner), outer=float(goal.epsilon_outer)))
    raise ValueError(f"goal kind: got {goal.kind!r}; expected {MOVE!r} or {GRASP!r}")
