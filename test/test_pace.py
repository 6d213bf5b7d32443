"""LearnerPace: which episode starts wait for the learner, and for how long."""
from __future__ import annotations

import pytest

from mechanic_rl_ros.control.pace import LearnerPace, PaceConfig


def test_no_pace_never_holds():
    pace = LearnerPace(PaceConfig(rate=0.0))
    pace.on_stats(0, 1000)
    assert pace.hold(0.0, 0) is None
    assert pace.hold(1.0, 600) is None and pace.holds == 0


def test_the_online_phase_is_paced_from_the_first_episodes_start():
    pace = LearnerPace(PaceConfig(rate=60.0, control_dt=0.1))  # one gradient step per robot second
    pace.on_stats(500, 0)  # the offline stage
    assert pace.hold(0.0, 0) is None  # the first episode
    assert pace.baseline == 500
    steps = 100  # 10 robot seconds
    pace.on_stats(504, 30)
    why = pace.hold(1.0, steps)
    assert why is not None and "made 4 of 10 gradient steps" in why and "30 owed" in why
    assert pace.hold(5.0, steps) is not None and pace.holds == 1
    pace.on_stats(510, 20)
    assert pace.hold(7.0, steps) is None
    assert pace.held_seconds == pytest.approx(6.0) and pace.gave_up == 0


def test_a_learner_that_owes_nothing_or_never_reported_holds_nothing():
    pace = LearnerPace(PaceConfig(rate=600.0))
    assert pace.hold(0.0, 0) is None  # nothing heard: nothing to pace to
    assert pace.hold(1.0, 100) is None
    pace.on_stats(3, 0)  # far behind, but it has learned all it was given
    assert pace.hold(2.0, 100) is None and pace.holds == 0


def test_a_hold_ends_after_max_wait_even_if_the_learner_never_catches_up():
    pace = LearnerPace(PaceConfig(rate=600.0, max_wait=30.0))
    pace.on_stats(0, 10)
    assert pace.hold(0.0, 0) is None
    assert pace.hold(100.0, 50) is not None
    assert pace.hold(129.0, 50) is not None
    assert pace.hold(131.0, 50) is None and pace.gave_up == 1
    assert pace.hold(132.0, 50) is not None and pace.holds == 2  # the next start waits again


@pytest.mark.parametrize("field, kwargs", [("learner_pace", {"rate": -1.0}), ("learner_pace", {"rate": float("nan")}),
                                           ("learner_pace", {"rate": float("inf")}),
                                           ("learner_pace_max_wait", {"max_wait": 0.0}),
                                           ("control_dt", {"control_dt": 0.0})])
def test_bad_settings_are_refused_by_name(field, kwargs):
    with pytest.raises(ValueError, match=field):
        PaceConfig(**kwargs)
