"""Episode bookkeeping: which executed step earned which reward, and when an
episode ends. Pure Python (the reward node is a thin adapter around it).

Timing convention (an MDP's r_t = r(s_{t+1})): the reward of control step t,
whose command was sent at time tau_t, is read from the first task state stamped
at or after tau_t + control_dt -- the state the command produced. Steps wait in
a FIFO until such a state arrives, so rewards come out in step order and
exactly once per executed step of the running episode.

An episode ends at the first step whose state is a success (when
``terminate_on_success``) or a failure (terminal), or at step ``max_steps - 1``
(time limit: truncated, the learner bootstraps there). Steps that arrive for an
episode that is not running (in flight while it ended) earn no reward and are
counted in ``late_steps``.

On the real robot there is no task state: the operator's success / failure
keys end the episode (:meth:`EpisodeBook.operator`) and every step earns the
sparse reward of its outcome.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum

REWARD_KINDS = ("sparse", "shaped")


class Outcome(Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    TIMEOUT = "timeout"


@dataclass
class EpisodeConfig:
    """Settings of the episode book (reward_node parameters of the same names)."""

    #: Which reward the learner gets: ``sparse`` (1 on success) or ``shaped``.
    reward: str = "sparse"
    #: Time limit in control steps (10 Hz: 100 steps = 10 s).
    max_steps: int = 100
    #: Control period [s]; the state ``control_dt`` after a command rewards it.
    control_dt: float = 0.1
    #: End the episode at the first successful state.
    terminate_on_success: bool = True
    #: Slack on the ``control_dt`` wait, for clocks with rounding [s].
    stamp_tolerance: float = 1e-3

    def __post_init__(self) -> None:
        if self.reward not in REWARD_KINDS:
            raise ValueError(f"reward: got {self.reward!r}; expected one of {REWARD_KINDS}")
        if self.max_steps < 1:
            raise ValueError(f"max_steps: must be >= 1, got {self.max_steps}")
        if not self.control_dt > 0:
            raise ValueError(f"control_dt: must be > 0, got {self.control_dt}")


@dataclass
class StepResult:
    """The reward of one executed step (fields as in StepReward.msg)."""

    episode: int
    step: int
    reward: float
    sparse_reward: float
    success: bool
    terminal: bool
    truncated: bool
    #: Set on the last step of an episode.
    outcome: Outcome | None = None


@dataclass
class TaskSample:
    stamp: float
    success: bool
    failure: bool
    shaped_reward: float


@dataclass
class EpisodeBook:
    """Turns executed steps and task states into per-step rewards and episode ends."""

    config: EpisodeConfig = field(default_factory=EpisodeConfig)
    episode: int = -1
    running: bool = False
    episode_return: float = 0.0
    steps_done: int = 0
    late_steps: int = 0
    #: steps of the running episode a person commanded instead of the policy
    intervened_steps: int = 0
    _pending: deque = field(default_factory=deque)

    def start(self, episode: int) -> None:
        """Begin ``episode`` (after its reset is done)."""
        if episode <= self.episode:
            raise ValueError(f"episode: {episode} does not follow {self.episode}")
        self.episode, self.running = episode, True
        self.episode_return, self.steps_done, self.intervened_steps = 0.0, 0, 0
        self._pending.clear()

    def step_executed(self, episode: int, step: int, stamp: float, intervention: bool = False) -> None:
        """Record that step ``step`` of ``episode`` was commanded at ``stamp`` [s] (``intervention``: by a
        person, not the policy)."""
        if not self.running or episode != self.episode:
            self.late_steps += 1
            return
        expected = self.steps_done + len(self._pending)
        if step != expected:
            raise ValueError(f"step: got {step} in episode {episode}; expected {expected} (steps arrive in order)")
        self._pending.append((step, stamp, bool(intervention)))

    def task_state(self, sample: TaskSample) -> list[StepResult]:
        """Reward every pending step whose control period has elapsed at ``sample``."""
        out: list[StepResult] = []
        while self.running and self._pending:
            step, stamp, intervened = self._pending[0]
            if sample.stamp + self.config.stamp_tolerance < stamp + self.config.control_dt:
                break
            self._pending.popleft()
            self.intervened_steps += intervened
            out.append(self._finish_step(step, sample.success, sample.failure, sample.shaped_reward))
        return out

    def operator(self, outcome: Outcome) -> StepResult | None:
        """End the running episode on an operator key (real robot).

        The outcome is attached to the oldest pending step (or, with none
        pending, to a zero-length close of the episode: returns None).
        """
        if not self.running:
            return None
        if not self._pending:
            self.running = False
            return None
        step, _, intervened = self._pending.popleft()
        self.intervened_steps += intervened
        success = outcome is Outcome.SUCCESS
        result = self._finish_step(step, success, outcome is Outcome.FAILURE, 1.0 if success else 0.0, forced=outcome)
        return result

    def abort(self) -> int:
        """End the running episode without an outcome (the robot stopped under it); returns how many of its
        steps were waiting for a reward. They earn none: the learner drops the whole episode."""
        if not self.running:
            return 0
        n = len(self._pending)
        self.running = False
        self.late_steps += n
        self._pending.clear()
        return n

    def pending_steps(self) -> int:
        return len(self._pending)

    def _finish_step(self, step: int, success: bool, failure: bool, shaped: float,
                     forced: Outcome | None = None) -> StepResult:
        cfg = self.config
        sparse = 1.0 if success else 0.0
        reward = sparse if cfg.reward == "sparse" else float(shaped)
        terminal = failure or (success and cfg.terminate_on_success) or forced is not None
        truncated = not terminal and step + 1 >= cfg.max_steps
        outcome = None
        if terminal:
            outcome = forced or (Outcome.SUCCESS if success and cfg.terminate_on_success else Outcome.FAILURE)
        elif truncated:
            outcome = Outcome.TIMEOUT
        self.steps_done += 1
        self.episode_return += reward
        if outcome is not None:
            self.running = False
            self.late_steps += len(self._pending)
            self._pending.clear()
        return StepResult(self.episode, step, reward, sparse, success, terminal, truncated, outcome)
