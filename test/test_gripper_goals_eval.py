"""scripts/gripper_goals_eval.py: the headless hand takes the goals policy_node's GripperCommander sends."""
import importlib.util
from pathlib import Path

import numpy as np

from mechanic_rl_ros.control import fr3
from mechanic_rl_ros.sim import make_env

_spec = importlib.util.spec_from_file_location(
    "gripper_goals_eval", Path(__file__).resolve().parents[1] / "scripts" / "gripper_goals_eval.py")
gg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gg)


def test_widths_become_one_goal_at_a_time_on_the_simulated_hand():
    env = gg.GoalGripperEnv(make_env(task="lift", render=False))
    try:
        obs, _ = env.reset(seed=3)
        q = np.asarray(obs["qpos"], dtype=np.float64)
        opened = env.sim.gripper_width()
        assert opened > 0.07

        def step(width):
            return env.step(np.concatenate([q, [width]]))

        step(0.0)  # closing: a grasp to 0 goes out at once
        assert env.commander.counts["goals_sent"] == 1 and env.commander.last_goal.kind == "grasp"
        step(0.08)  # opening again while the grasp is in flight: held back, the hand keeps closing
        assert env.commander.counts["widths_held_back"] == 1 and env.target == 0.0
        for _ in range(20):  # the fingers stop on the closed hand; the goal ends, then the move goes out
            step(0.08)
        assert env.commander.counts["goals_succeeded"] >= 1
        assert env.commander.last_goal.kind == "move" and env.target == 0.08
        for _ in range(20):
            step(0.08 + 0.005)  # within the hysteresis: no new goal
        assert env.commander.counts["goals_sent"] == 2
        assert env.sim.gripper_width() > 0.07
        env.reset(seed=4)  # a reset re-opens the hand: nothing is in flight, the last goal is forgotten
        assert not env.commander.in_flight and env.commander.last_goal is None
        assert env.target == env.sim.gripper_width() <= fr3.GRIPPER_MAX_WIDTH
    finally:
        env.close()
