"""control/gripper.py: the policy's 10 Hz widths become one franka_gripper goal at a time (no ROS)."""
from __future__ import annotations

import numpy as np
import pytest

from mechanic_rl_ros.control.gripper import GRASP, MOVE, GripperCommander, GripperConfig

DT = 0.1  # the policy's control period [s]


def test_a_noisy_stream_of_widths_becomes_one_goal_per_real_change():
    cmd = GripperCommander(GripperConfig(hysteresis=0.01))
    rng = np.random.default_rng(0)
    wanted = np.r_[np.full(30, 0.08), np.full(30, 0.0), np.full(30, 0.08)] + rng.normal(0, 0.003, 90)
    goals = []
    for k, w in enumerate(wanted):
        goal = cmd.request(w, now=k * DT, measured_width=0.08)
        if goal is not None:
            goals.append((k, goal))
            cmd.done(True)  # answered within the period
    kinds = [g.kind for _, g in goals]
    assert kinds == [GRASP, MOVE], goals  # close once, open once; the noise never sends a goal
    assert goals[0][0] == 30 and goals[1][0] == 60
    assert goals[0][1].width == pytest.approx(max(wanted[30], 0.0)) and goals[0][1].force == GripperConfig().force


def test_never_more_than_one_goal_in_flight():
    cmd = GripperCommander(GripperConfig(hysteresis=0.005, goal_timeout=5.0))
    assert cmd.request(0.0, now=0.0, measured_width=0.08).kind == GRASP
    # while the grasp runs (1 s), the policy changes its mind every period: nothing is sent
    for k in range(1, 10):
        assert cmd.request(0.08 if k % 2 else 0.03, now=k * DT) is None
    assert cmd.counts["widths_held_back"] == 9 and cmd.in_flight
    cmd.done(True)
    goal = cmd.request(0.08, now=1.0)  # the latest wish goes out once the grasp is answered
    assert goal.kind == MOVE and goal.width == 0.08
    assert cmd.counts["goals_sent"] == 2


def test_the_first_goal_uses_the_measured_width_and_reset_forgets_the_last_goal():
    cmd = GripperCommander()
    assert cmd.request(0.079, now=0.0, measured_width=0.08) is None  # already there
    goal = cmd.request(0.02, now=0.1, measured_width=0.08)
    assert goal.kind == GRASP
    cmd.done(False)  # no object: libfranka's grasp fails, but it is not retried at 10 Hz
    assert cmd.request(0.02, now=0.2) is None
    assert cmd.counts["goals_failed"] == 1
    cmd.reset()  # new episode: the reset opened the hand
    assert cmd.request(0.02, now=0.3, measured_width=0.08).kind == GRASP
    cmd.done(True)
    cmd.reset()
    assert cmd.request(0.05, now=0.4).kind == MOVE  # nothing known: move, which works either way


def test_an_unanswered_goal_is_given_up_after_the_timeout():
    cmd = GripperCommander(GripperConfig(goal_timeout=2.0))
    cmd.request(0.0, now=0.0, measured_width=0.08)
    assert cmd.request(0.08, now=1.9) is None
    assert cmd.request(0.08, now=2.0).kind == MOVE
    assert cmd.counts["goals_timed_out"] == 1
    cmd.done(True)  # the late answer belongs to the MOVE now in flight
    assert not cmd.in_flight


def test_widths_are_clipped_and_bad_values_name_the_field():
    cmd = GripperCommander()
    assert cmd.request(0.5, now=0.0, measured_width=0.0).width == 0.08
    with pytest.raises(ValueError, match=r"gripper width: got nan; expected a finite width in \[0.0, 0.08\] m"):
        cmd.request(float("nan"), now=0.1)
    with pytest.raises(ValueError, match=r"gripper_force: got 100.0; expected a value in \[1e-06, 70.0\]"):
        GripperConfig(force=100.0)


def test_a_goal_goes_where_the_predicted_motion_ends():
    """The policy's widths pass through an intermediate value on the way to closed (0.08, 0.065, 0.0): a grasp
    to 0.065 would stop the fingers wider than the cube until its answer let the next goal out, while the arm
    already lifts (the stack's episodes failed that way). With the chunk's predicted widths, one grasp to 0."""
    cmd = GripperCommander(GripperConfig(hysteresis=0.01))
    goal = cmd.request(0.065, now=0.0, measured_width=0.08, ahead=[0.0, 0.002, 0.0, 0.001, 0.08, 0.08])
    assert goal.kind == GRASP and goal.width == 0.0  # the re-opening after the run is a goal of its own
    cmd.done(True)
    assert cmd.request(0.002, now=0.1, ahead=[0.0, 0.004]) is None  # already on its way there
    # opening: to the widest width of the run; a width that is not finite ends the run
    goal = cmd.request(0.05, now=0.2, ahead=[0.07, 0.075, float("nan"), 0.08])
    assert goal.kind == MOVE and goal.width == 0.075
    cmd.done(True)
    # without a prediction (a person's command), the width asked for now, as before
    assert cmd.request(0.03, now=0.3).width == 0.03


def test_a_closing_that_comes_later_in_the_chunk_is_not_sent_early():
    cmd = GripperCommander(GripperConfig(hysteresis=0.01))
    # open now, closing in five periods: nothing to send (the hand is open)
    assert cmd.request(0.08, now=0.0, measured_width=0.08, ahead=[0.08, 0.08, 0.08, 0.08, 0.0]) is None
    # a wobble below the hysteresis before the turn back keeps the run going; the turn back ends it
    goal = cmd.request(0.06, now=0.1, measured_width=0.08, ahead=[0.04, 0.045, 0.02, 0.035, 0.0])
    assert goal.kind == GRASP and goal.width == pytest.approx(0.02)
