"""EpisodeBook: per-step rewards with r_t = r(s_{t+1}), terminal and time-limit ends."""
import pytest

from mechanic_rl_ros.control.episodes import EpisodeBook, EpisodeConfig, Outcome, TaskSample


def S(t, success=False, failure=False, shaped=0.0):
    return TaskSample(t, success, failure, shaped)


def test_step_is_rewarded_by_the_state_one_period_later():
    book = EpisodeBook(EpisodeConfig(reward="shaped", max_steps=10, control_dt=0.1))
    book.start(0)
    book.step_executed(0, 0, stamp=1.0)
    assert book.task_state(S(1.05, shaped=0.3)) == []          # too early
    [r] = book.task_state(S(1.1, shaped=0.4))
    assert (r.episode, r.step, r.reward, r.terminal, r.truncated, r.outcome) == (0, 0, 0.4, False, False, None)


def test_success_ends_episode_and_later_steps_are_late():
    book = EpisodeBook(EpisodeConfig(reward="sparse", max_steps=10))
    book.start(3)
    book.step_executed(3, 0, 0.0)
    book.step_executed(3, 1, 0.1)
    results = book.task_state(S(0.2, success=True))
    assert [(r.step, r.reward, r.terminal) for r in results] == [(0, 1.0, True)]
    assert results[0].outcome is Outcome.SUCCESS and not book.running
    assert book.late_steps == 1  # step 1 was in flight
    book.step_executed(3, 2, 0.2)
    assert book.late_steps == 2 and book.task_state(S(1.0)) == []


def test_time_limit_truncates_last_step():
    book = EpisodeBook(EpisodeConfig(max_steps=3))
    book.start(0)
    out = []
    for t in range(3):
        book.step_executed(0, t, 0.1 * t)
        out += book.task_state(S(0.1 * (t + 1)))
    assert [(r.step, r.truncated, r.terminal) for r in out] == [(0, False, False), (1, False, False), (2, True, False)]
    assert out[-1].outcome is Outcome.TIMEOUT and book.steps_done == 3


def test_failure_is_terminal_and_out_of_order_steps_refused():
    book = EpisodeBook(EpisodeConfig())
    book.start(0)
    with pytest.raises(ValueError, match="step: got 1 in episode 0; expected 0"):
        book.step_executed(0, 1, 0.0)
    book.step_executed(0, 0, 0.0)
    [r] = book.task_state(S(0.1, failure=True))
    assert r.terminal and r.outcome is Outcome.FAILURE and r.reward == 0.0
    with pytest.raises(ValueError, match="episode: 0 does not follow 0"):
        book.start(0)


def test_operator_success_on_real_robot():
    book = EpisodeBook(EpisodeConfig())
    book.start(0)
    book.step_executed(0, 0, 0.0)
    r = book.operator(Outcome.SUCCESS)
    assert r.success and r.terminal and r.reward == 1.0 and r.outcome is Outcome.SUCCESS


def test_bad_config_names_field():
    with pytest.raises(ValueError, match="reward: got 'dense'"):
        EpisodeConfig(reward="dense")


def test_abort_ends_the_episode_without_an_outcome_or_rewards():
    """A reflex under a running episode: its pending steps earn nothing, later steps are late, the next starts."""
    book = EpisodeBook(EpisodeConfig(max_steps=10))
    book.start(0)
    book.step_executed(0, 0, 0.0)
    book.step_executed(0, 1, 0.1)
    assert book.abort() == 2 and not book.running and book.late_steps == 2
    assert book.task_state(TaskSample(1.0, True, False, 1.0)) == []
    book.step_executed(0, 2, 0.2)
    assert book.late_steps == 3 and book.abort() == 0
    book.start(1)
    assert book.running and book.episode == 1


def test_the_steps_a_person_commanded_are_counted_up_to_the_episodes_end():
    book = EpisodeBook(EpisodeConfig(max_steps=10, control_dt=0.1))
    book.start(0)
    for step, person in enumerate([False, True, True, False]):
        book.step_executed(0, step, stamp=1.0 + 0.1 * step, intervention=person)
    book.task_state(S(1.25))  # steps 0 and 1 rewarded
    assert book.intervened_steps == 1
    [r] = book.task_state(S(1.3, success=True))
    assert r.outcome is Outcome.SUCCESS and book.intervened_steps == 2  # step 3 came after the end
    book.start(1)
    assert book.intervened_steps == 0
