"""The one learner interface every algorithm of the stack implements, and the registry that names them.

A :class:`Learner` is what learner_node and the headless trainers drive, the same object with the same
calls in the same units, whichever the algorithm:

* input -- :meth:`~Learner.add_step` (an executed control step; the first step of a chunk carries its
  :class:`~mechanic_rl_ros.control.decision.Decision`), :meth:`~Learner.add_reward` (that step's reward),
  :meth:`~Learner.end_episode` (its outcome, for the success rate; the terminal reward already ended it
  for learning), :meth:`~Learner.abort_episode` (the robot stopped it: nothing of it is learned from).
  A step a person commanded (``intervention``) is never taken as the policy's own action: a learner that
  :attr:`~Learner.learns_from_interventions` takes it as a demonstration (:meth:`~Learner._correction`),
  any other ignores the whole episode from its first intervened step on;
  Steps and rewards arrive in any order and possibly twice (transient-local history replayed after a restart): the
  :class:`~mechanic_rl_ros.control.join.Join` behind these calls pairs them by (episode, step), holds a
  reward that came before its step, and ignores duplicates; every refusal is counted in :attr:`counts`;
* learning -- :meth:`~Learner.owed` says how many units of learning are due (gradient steps of the
  selection critic, DPPO updates), :meth:`~Learner.step` makes one; :attr:`~Learner.steps` counts them,
  and :attr:`publish_every` / :attr:`checkpoint_every` are in the same unit;
* output -- :meth:`~Learner.payload` (the tensors and version that go on the wire as ``PolicyWeights``),
  :meth:`~Learner.report` (figures for ``LearnerStats``, ``/diagnostics`` and the log);
* persistence -- :meth:`~Learner.save` writes the whole learner (networks, optimisers, buffers, join,
  counters) into a directory swapped in whole; :func:`open_learner` resumes it or starts fresh.

Each algorithm is a subclass registered in :data:`ALGORITHMS` under the name the ``algorithm`` parameter
takes. Thread use: ingestion and :meth:`step` may run on different threads; :attr:`lock` guards the
shared state, and a step holds it only while it takes its batch. No ROS imports.
"""
from __future__ import annotations

import abc
import importlib
import json
import shutil
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping

from mechanic_rl_ros.control.join import Join

from .persist import recover_dir, replace_dir

#: written last into a learner's directory: its presence marks the directory complete
STATE_FILE = "node_state.json"

#: ``algorithm`` parameter -> "module:class" of its :class:`Learner` (imported when first asked for)
ALGORITHMS: dict[str, str] = {
    "select": "mechanic_rl_ros.rl.online_selection:OnlineSelection",
    "dppo": "mechanic_rl_ros.rl.online_dppo:OnlineDPPO",
    "distill": "mechanic_rl_ros.rl.online_distill:OnlineDistill",
}


@dataclass
class Payload:
    """What goes on the wire as ``PolicyWeights``: the network's tensors and the version they carry."""

    tensors: Mapping[str, Any]
    version: int
    arch_id: str
    finetune_steps: int
    num_updates: int


@dataclass
class StepResult:
    """One unit of learning: its statistics; ``refused`` says why nothing changed (non-finite loss or
    gradient, a stale batch), ``failed`` whether that counts as a failed update."""

    stats: dict[str, float] = field(default_factory=dict)
    refused: str | None = None
    failed: bool = False
    samples: float = 0.0  #: what the step trained on (decisions or control steps), for samples per second


@dataclass
class Report:
    """The figures a learner reports: for ``LearnerStats`` (``version``, ``num_updates``, ``buffer_size``,
    ``stale``, ``unmatched``), the headline of ``/diagnostics`` (``title``, ``arch_id``, ``message``) and its
    key-value ``values``."""

    version: int
    num_updates: int
    buffer_size: int
    stale: int
    unmatched: int
    title: str
    arch_id: str
    message: str
    values: dict[str, Any]


class Learner(abc.ABC):
    """The interface (see the module docstring). Subclasses implement the algorithm-specific hooks
    (``_decision``, ``_executed``, ``_credit``, ``_drop``), :meth:`owed`, :meth:`step`, :meth:`payload`,
    :meth:`report`, ``_save_parts`` and :meth:`load`."""

    algorithm: ClassVar[str] = ""
    #: False: the first intervened step of an episode drops what is held of it and the rest of it is
    #: ignored (its later chunks follow the operator's correction, not the policy's own course)
    learns_from_interventions: ClassVar[bool] = False
    #: [steps] publish the payload every this many steps; checkpoint every :attr:`checkpoint_every`
    publish_every: int = 1
    checkpoint_every: int = 1

    def __init__(self) -> None:
        self.lock = threading.RLock()
        #: outcomes (True: success) of the last episodes that ended, for the success rate
        self.outcomes: deque[bool] = deque(maxlen=20)
        self.join = Join()
        #: episodes the robot stopped under: nothing of them is learned from
        self.aborted: set[int] = set()
        #: episodes a person took over in, for a learner that does not learn from interventions
        self.ignored: set[int] = set()
        self.counts = {"transitions_received": 0, "transitions_duplicate": 0, "rewards_received": 0,
                       "rewards_duplicate": 0, "rewards_unmatched": 0, "decisions_refused": 0, "updates_failed": 0,
                       "episodes_aborted": 0, "decisions_dropped_aborted": 0, "transitions_after_abort": 0,
                       "grad_steps_done": 0, "critic_published_version": 0, "policy_version_seen": 0,
                       "steps_intervened": 0, "episodes_intervened": 0, "decisions_dropped_intervened": 0}

    # ------------------------------------------------------------ input
    def add_step(self, episode: int, step: int, chunk: int, policy_version: int = 0, first: bool = False,
                 decision: Any = None, refusal: str | None = None, intervention: bool = False,
                 action: Any = None) -> str | None:
        """An executed control step of (``episode``, ``chunk``); ``first``: the chunk's first step, which
        carries its ``decision`` (or the ``refusal``, why it could not be read); ``intervention``: a person
        commanded it (a chunk of its own, whose decision holds only the observation history); ``action``: the
        command sent [8], where known. Returns why a decision was refused (counted), None otherwise. A reward
        that waited for this step is credited now."""
        key = (int(episode), int(step))
        error = None
        with self.lock:
            if key[0] in self.aborted:
                self.counts["transitions_after_abort"] += 1
                return None
            if key[0] in self.ignored:
                self.counts["steps_intervened"] += bool(intervention)
                return None
            new, waiting = self.join.add_step(key, int(chunk))
            if not new:
                self.counts["transitions_duplicate"] += 1
                return None
            self.counts["transitions_received"] += 1
            self.counts["policy_version_seen"] = max(self.counts["policy_version_seen"], int(policy_version))
            if intervention:
                self.counts["steps_intervened"] += 1
                if not self.learns_from_interventions:
                    self.ignored.add(key[0])
                    self.counts["episodes_intervened"] += 1
                    self.counts["decisions_dropped_intervened"] += self._drop(key[0])
                    return None
            if action is not None:
                self._action(key[0], key[1], action, intervention)
            if first:
                try:
                    if refusal is not None:
                        raise ValueError(refusal)
                    if decision is None:
                        raise ValueError("decision: empty on the first step of a chunk (chunk_step 0)")
                    if intervention:
                        self._correction(key[0], key[1], int(chunk), decision)
                    else:
                        self._decision(key[0], int(chunk), decision)
                except ValueError as exc:
                    self.counts["decisions_refused"] += 1
                    error = str(exc)
            self._executed(key[0], int(chunk))
            if waiting is not None:
                self._apply(key[0], self.join.credit(key), *waiting)
        return error

    def add_reward(self, episode: int, step: int, reward: float, terminated: bool, truncated: bool) -> None:
        """The reward of step (``episode``, ``step``); ``terminated``: the episode ended in a terminal state
        (success or failure), ``truncated``: it reached its time limit."""
        key = (int(episode), int(step))
        args = (float(reward), bool(terminated and not truncated), bool(truncated))
        with self.lock:
            if key[0] in self.aborted or key[0] in self.ignored:
                return
            new, chunk = self.join.add_reward(key, args)
            if not new:
                self.counts["rewards_duplicate"] += 1
                return
            self.counts["rewards_received"] += 1
            if chunk is not None:  # else its step is still on the way
                self._apply(key[0], chunk, *args)

    def end_episode(self, episode: int, success: bool) -> None:
        """``episode`` ended (success, failure or time limit): its outcome counts in :attr:`success_rate`."""
        self.outcomes.append(bool(success))

    @property
    def success_rate(self) -> float:
        """Successes among the last ``outcomes.maxlen`` episodes that ended (0 before any)."""
        return sum(self.outcomes) / len(self.outcomes) if self.outcomes else 0.0

    def abort_episode(self, episode: int) -> int | None:
        """Drop everything held of ``episode`` and refuse what comes of it later; how many decisions were
        dropped, None if it was aborted already (a replayed event)."""
        with self.lock:
            if int(episode) in self.aborted:
                return None
            self.aborted.add(int(episode))
            n = self._drop(int(episode))
            self.counts["episodes_aborted"] += 1
            self.counts["decisions_dropped_aborted"] += n
            return n

    def _apply(self, episode: int, chunk: int, reward: float, terminated: bool, truncated: bool) -> None:
        if not self._credit(episode, chunk, reward, terminated, truncated):
            self.counts["rewards_unmatched"] += 1

    @abc.abstractmethod
    def _decision(self, episode: int, chunk: int, decision: Any) -> None:
        """Take the decision of (episode, chunk); ValueError (naming the field) refuses it."""

    def _executed(self, episode: int, chunk: int) -> None:
        """A step of (episode, chunk) was executed (its decision's step included)."""

    def _action(self, episode: int, step: int, action: Any, intervention: bool) -> None:
        """The command sent at (episode, step), by a person if ``intervention``."""

    def _correction(self, episode: int, step: int, chunk: int, decision: Any) -> None:
        """A step a person commanded, with the observation history it was commanded from (a learner that
        :attr:`learns_from_interventions` takes it as a demonstration); ValueError refuses it."""

    @abc.abstractmethod
    def _credit(self, episode: int, chunk: int, reward: float, terminated: bool, truncated: bool) -> bool:
        """Add a step's reward to its chunk; False if nothing held takes it."""

    @abc.abstractmethod
    def _drop(self, episode: int) -> int:
        """Forget what is held of an aborted episode; how many decisions."""

    # ------------------------------------------------------------ learning and output
    @property
    @abc.abstractmethod
    def steps(self) -> int:
        """Units of learning made so far (the unit of :meth:`owed`, :attr:`publish_every`, ...)."""

    @property
    def offline_steps(self) -> int:
        """Units of learning owed before any episode (an offline stage on demonstrations; 0: none). learner_node
        publishes the payload when :attr:`steps` reaches it, and policy_node holds the first episode until then."""
        return 0

    @property
    @abc.abstractmethod
    def trained(self) -> bool:
        """Whether the learner has changed its network yet (before, there is nothing to publish)."""

    @abc.abstractmethod
    def owed(self) -> int:
        """Units of learning due now."""

    @abc.abstractmethod
    def step(self) -> StepResult:
        """Make one unit of learning."""

    @abc.abstractmethod
    def payload(self) -> Payload:
        """The network to publish now (its version raised past every one published or seen in use)."""

    @abc.abstractmethod
    def report(self) -> Report:
        """Figures for the stats topic, /diagnostics and the log."""

    def summary(self, stats: Mapping[str, float]) -> str:
        """One log line about the learner after ``stats``."""
        return f"{self.steps} steps"

    def ready_line(self) -> str:
        """What the learner is, for the start-up log line."""
        return self.algorithm

    # ------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """The whole learner, written to ``<directory>.tmp`` then swapped in (never half-written:
        :func:`~mechanic_rl_ros.rl.persist.replace_dir`)."""
        d = Path(directory)
        with self.lock:
            tmp = d.with_name(d.name + ".tmp")
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
            extra = self._save_parts(tmp)
            state = {"join": self.join.state(), "counts": self.counts, "aborted": sorted(self.aborted),
                     "ignored": sorted(self.ignored), "algorithm": self.algorithm, **extra}
            (tmp / STATE_FILE).write_text(json.dumps(state))  # last: its presence marks the directory complete
            replace_dir(tmp, d)
        return d

    @abc.abstractmethod
    def _save_parts(self, directory: Path) -> dict[str, Any]:
        """Write the algorithm's parts into ``directory``; entries for the state file."""

    def _load_common(self, state: Mapping[str, Any]) -> None:
        self.join.load(state["join"])
        self.counts.update(state["counts"])
        self.aborted = {int(e) for e in state.get("aborted", [])}
        self.ignored = {int(e) for e in state.get("ignored", [])}

    @classmethod
    @abc.abstractmethod
    def load(cls, directory: str | Path, params: Mapping[str, Any] | None = None) -> "Learner":
        """The learner :meth:`save` wrote (``params``: schedule settings that may change on resume)."""

    @classmethod
    @abc.abstractmethod
    def from_params(cls, params: Mapping[str, Any]) -> "Learner":
        """A fresh learner from learner_node's parameters (``checkpoint``: the pretrained policy)."""


def learner_class(algorithm: str) -> type[Learner]:
    """The :class:`Learner` registered as ``algorithm`` (ValueError naming the choices otherwise)."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm {algorithm!r}; expected one of {sorted(ALGORITHMS)}")
    module, name = ALGORITHMS[algorithm].split(":")
    return getattr(importlib.import_module(module), name)


def saved_algorithm(directory: str | Path) -> str | None:
    """The algorithm of the learner saved in ``directory`` (a save cut short is taken back first), None if
    there is none. Directories from before the selection learner are DPPO's."""
    d = Path(directory)
    recover_dir(d, STATE_FILE)
    if not (d / STATE_FILE).is_file():
        return None
    return json.loads((d / STATE_FILE).read_text()).get("algorithm", "dppo")


def open_learner(params: Mapping[str, Any], directory: str | Path) -> tuple[Learner, bool]:
    """(learner, resumed): the ``params["algorithm"]`` learner saved in ``directory``, or a fresh one from
    ``params["checkpoint"]``. A directory of another algorithm, or neither a directory nor a checkpoint, is
    refused with a ValueError naming the parameter."""
    cls = learner_class(params["algorithm"])
    found = saved_algorithm(directory)
    if found is not None:
        if found != cls.algorithm:
            raise ValueError(f"parameter algorithm: {cls.algorithm}, but {directory} holds a {found} learner; give "
                             f"another run_dir or algorithm:={found}")
        return cls.load(directory, params), True
    if not params.get("checkpoint"):
        raise ValueError("parameter checkpoint: empty and no learner state in run_dir; expected the "
                         "pretrained policy checkpoint directory")
    return cls.from_params(params), False
