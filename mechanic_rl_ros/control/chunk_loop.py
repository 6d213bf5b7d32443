"""The act-observe-replan loop of a chunked policy, written once.

Diffusion Policy (Chi et al., RSS 2023, Sec. III-A) predicts T_p actions from
the last T_o observations, executes T_a of them, observes, and replans. On a
robot the next chunk has to be planned *before* the current one runs out, so
that the arm never waits for the model: with ``replan_margin`` = m the plan
for the next chunk starts at the tick at which m actions of the current chunk
remain. That chunk then starts ``lead`` = m control periods after the
observation it was planned from, and executes the actions the model predicted
for those instants (:meth:`DiffusionPolicy.executable` with ``lead``), not
those for the instant of its observation, which has passed.

One tick of :class:`ChunkLoop`, at control period t:

1. :meth:`ChunkLoop.observe` the observation o_t (into the T_o history);
2. if :meth:`ChunkLoop.wants_plan`: :meth:`ChunkLoop.request` a plan from the
   history up to o_t, with ``lead`` = the actions of the current chunk still
   to run (this tick's included);
3. :meth:`ChunkLoop.pop` the action a_t. A planned chunk is adopted only when
   the current one is used up, so new weights (swapped before an inference)
   act between chunks.

On the wall clock a plan can come late (a loaded CPU). The model predicted
T_p actions, of which a chunk executes T_a; the rest, predicted for the
instants after the chunk (:attr:`Chunk.tail`), carries the arm on along the
same prediction until the next chunk is there (``pop(extend=True)``), as an
action queue of asynchronous inference does, instead of holding it
(stop-and-go). Only when the tail is used up too does the arm hold.

Every path runs exactly this: the policy node (planning on a worker thread,
:meth:`request` / :meth:`offer` / :meth:`pop` from its control timer),
evaluation and demonstrations (:meth:`ChunkLoop.act`, planning synchronously)
and the batched RL collector (:meth:`ChunkLoop.drain`, planning many loops in
one batch). With the same planner the three give the same actions.

Only numpy and the standard library are used; what plans is a callable.
"""
from __future__ import annotations

import math
import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from mechanic_rl_ros.control.decision import Decision
from mechanic_rl_ros.control.history import ObsHistory


@dataclass
class PlanRequest:
    """What a planner needs to make the next chunk."""

    history: dict[str, Any]   #: the stacked T_o observation history (ObsHistory.stacked())
    observation: Mapping[str, Any]  #: the newest raw observation (a scripted expert acts on it)
    stamps: np.ndarray        #: float64 [T_o] stamps of the history [s] (0 where no clock)
    index: int                #: chunk number within the episode
    lead: int                 #: control periods from the newest observation to the chunk's first action
    episode: int = 0          #: the episode the loop was reset for


@dataclass
class Chunk:
    """One planned chunk: the actions to execute and what the learner needs."""

    actions: np.ndarray                  #: [n, A] real units, executed one per tick
    index: int                           #: chunk number within the episode
    version: int = 0                     #: weights version that planned it
    decision: Decision | None = None     #: the RL decision, where a learner wants one
    predicted: np.ndarray | None = None  #: [T_p, A] the whole prediction (for RViz)
    #: [m, A] the predicted actions for the instants after ``actions`` (run only while the next chunk is late)
    tail: np.ndarray | None = None

    def length(self, extend: bool = False) -> int:
        """Actions this chunk can run: its own, plus its tail with ``extend``."""
        return len(self.actions) + (len(self.tail) if extend and self.tail is not None else 0)

    def action(self, k: int) -> np.ndarray:
        """Action ``k`` of the chunk, counted on into the tail."""
        n = len(self.actions)
        return self.actions[k] if k < n else self.tail[k - n]

    def after(self, k: int) -> np.ndarray:
        """The predicted actions after action ``k`` [m, A], its tail included: what the policy means to do
        next (the gripper's goals go to where its motion ends, control/gripper.py)."""
        rest = [self.actions[k + 1:]] + ([self.tail[max(0, k + 1 - len(self.actions)):]]
                                         if self.tail is not None else [])
        return np.concatenate(rest, axis=0)


Planner = Callable[[PlanRequest], Chunk]


class ChunkLoop:
    """The act-observe-replan state machine of one robot (see the module docstring).

    Args:
        obs_horizon, cameras, lowdim_keys: the policy's T_o and inputs (what
            :class:`ObsHistory` keeps).
        replan_margin: plan the next chunk when this many actions of the
            current one remain (0: plan when it is used up).
    """

    def __init__(self, obs_horizon: int, cameras: Sequence[str] = (), lowdim_keys: Sequence[str] = (),
                 replan_margin: int = 0):
        if replan_margin < 0:
            raise ValueError(f"replan_margin: must be >= 0, got {replan_margin}")
        self.replan_margin = int(replan_margin)
        self.history = ObsHistory(obs_horizon, cameras, lowdim_keys)
        self._stamps: list[float] = []
        self._latest: Mapping[str, Any] | None = None
        self.reset()

    @classmethod
    def for_policy(cls, policy: Any, replan_margin: int = 0) -> "ChunkLoop":
        """A loop with the horizons and inputs of ``policy`` (anything with a ``PolicyConfig`` as ``.cfg``)."""
        cfg = policy.cfg
        return cls(cfg.obs_horizon, cfg.cameras, cfg.lowdim_keys, replan_margin)

    # ------------------------------------------------------------- state
    def reset(self, episode: int = 0) -> None:
        """Start episode ``episode``: empty history, no chunk, chunk numbering from 0."""
        self.episode = int(episode)
        self.history.reset()
        self._stamps.clear()
        self._latest = None
        self.current: Chunk | None = None
        self.position = 0
        self.next: Chunk | None = None
        self.chunks_planned = 0

    def remaining(self) -> int:
        """Actions of the current chunk not yet popped (its tail not counted)."""
        return 0 if self.current is None else max(0, len(self.current.actions) - self.position)

    # ------------------------------------------------------------- a tick
    def observe(self, obs: Mapping[str, Any], stamp: float = 0.0) -> None:
        """Step 1: the observation of this tick."""
        self.history.push(obs)
        self._stamps = (self._stamps + [float(stamp)])[-self.history.horizon:]
        self._latest = obs

    def wants_plan(self, in_flight: bool = False) -> bool:
        """Step 2's condition: no plan running or waiting, and at most ``replan_margin`` actions left."""
        return not in_flight and self.next is None and self.remaining() <= self.replan_margin

    def request(self) -> PlanRequest:
        """Step 2: the input of the next plan; numbers the chunk."""
        if self._latest is None:
            raise RuntimeError("ChunkLoop.request before any observation")
        req = PlanRequest(self.history.stacked(), self._latest, self.history_stamps(), self.chunks_planned,
                          self.remaining(), self.episode)
        self.chunks_planned += 1
        return req

    def history_stamps(self) -> np.ndarray:
        """float64 [T_o] the stamps of the history, the oldest repeated where it is not full yet."""
        stamps = np.array(self._stamps, dtype=np.float64)
        return np.concatenate([np.full(self.history.horizon - len(stamps), stamps[0]), stamps])

    def offer(self, chunk: Chunk) -> None:
        """A planned chunk; it runs when the current one is used up."""
        self.next = chunk

    def pop(self, extend: bool = False) -> tuple[np.ndarray, Chunk, int] | None:
        """Step 3: (action, its chunk, its position in the chunk), or None when no action is ready.

        ``extend``: with the current chunk used up and the next one not ready, the current chunk's tail
        (positions from T_a on) runs until it is (module docstring)."""
        if self.remaining() == 0:
            if self.next is not None:
                self.current, self.position, self.next = self.next, 0, None
            elif not (extend and self.current is not None and self.position < self.current.length(True)):
                return None
        assert self.current is not None
        k = self.position
        self.position += 1
        return self.current.action(k), self.current, k

    # ------------------------------------------------- synchronous drivers
    def act(self, obs: Mapping[str, Any], planner: Planner, stamp: float = 0.0) -> tuple[np.ndarray, Chunk, int]:
        """One whole tick with a synchronous planner: observe, plan if due, pop."""
        self.observe(obs, stamp)
        if self.wants_plan():
            self.offer(planner(self.request()))
        item = self.pop()
        if item is None:
            raise RuntimeError("the planner returned a chunk without actions")
        return item

    def drain(self) -> list[tuple[np.ndarray, Chunk, int]]:
        """Pop every action up to the next planning tick (at least one), for executing them as a block.

        The caller executes them in order and :meth:`observe` s the
        observation after each, except that the observation after the last one
        starts the next tick; so a batched driver does, per loop: observe ->
        (plan all loops that :meth:`wants_plan` in one batch) -> drain ->
        execute -> observe all but the last -> repeat with the last.
        """
        items = []
        while True:
            item = self.pop()
            if item is None:
                break
            items.append(item)
            if self.wants_plan():
                break
        if not items:
            raise RuntimeError("ChunkLoop.drain with no chunk to run: plan first")
        return items


class AdaptiveMargin:
    """A replan margin that covers the inference time measured on this machine (the wall clock's).

    A plan requested with m actions of the current chunk left is needed m control periods later. With
    ``floor`` = the configured margin and ``ceiling`` = the policy's largest lead, the margin is the least m
    with m * control_dt >= the ``quantile`` of the last ``window`` inference times plus ``slack`` of a
    period (tick jitter): a slow or loaded machine plans earlier (its chunks start from older observations)
    instead of holding the arm. Each chunk's lead is the margin it was planned with, so it still executes the
    actions predicted for the instants it runs at.
    """

    def __init__(self, floor: int, ceiling: int, control_dt: float, quantile: float = 0.95, window: int = 50,
                 slack: float = 0.25):
        if not 0 <= floor <= ceiling:
            raise ValueError(f"replan_margin: {floor}; expected 0..{ceiling}")
        self.floor, self.ceiling, self.control_dt = int(floor), int(ceiling), float(control_dt)
        self.quantile, self.slack = float(quantile), float(slack)
        self._seconds: deque[float] = deque(maxlen=int(window))

    def record(self, seconds: float) -> None:
        """The wall time one plan took."""
        self._seconds.append(float(seconds))

    def margin(self) -> int:
        if not self._seconds:
            return self.floor
        need = float(np.quantile(np.asarray(self._seconds), self.quantile)) / self.control_dt + self.slack
        return int(min(self.ceiling, max(self.floor, math.ceil(need))))


class BackgroundPlanning:
    """A :class:`ChunkLoop` ticked from a control timer, with its planner on a worker thread.

    :meth:`tick` never blocks on inference unless asked to (``wait``, used on
    simulated time, where waiting costs no robot time): a plan that is not
    ready when the current chunk runs out makes :meth:`tick` return the
    chunk's tail with ``extend`` (the wall clock; positions >= T_a), and None
    once that is used up too (or without ``extend``): the caller holds the arm. A planner exception is kept in
    :attr:`failure` (the caller reports it and holds); results planned for an
    earlier episode are dropped.
    """

    def __init__(self, loop: ChunkLoop, planner: Planner, niceness: int = 0, adapt: AdaptiveMargin | None = None,
                 extend: bool = False):
        self.loop = loop
        self.extend = bool(extend)
        self.planner = planner
        self.adapt = adapt
        self.in_flight = False
        self.flight_started = 0.0
        self.failure: Exception | None = None
        self._generation = 0
        self._requests: queue.Queue = queue.Queue()
        self._results: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self.niceness = int(niceness)
        self._worker = threading.Thread(target=self._serve, name="planner", daemon=True)
        self._worker.start()

    def reset(self, episode: int) -> None:
        """Start an episode; a plan still running for the previous one is dropped when it arrives."""
        self._generation += 1
        self.loop.reset(episode)

    def suspend(self) -> None:
        """A person takes over: drop the chunks (and the plan in flight), keep the history and the numbering;
        the next :meth:`tick` plans a fresh chunk from the then current observation."""
        self._generation += 1
        loop = self.loop
        loop.current, loop.next, loop.position = None, None, 0

    def observe(self, obs: Mapping[str, Any], stamp: float = 0.0) -> tuple[dict[str, Any], np.ndarray, int]:
        """A tick a person commands: the observation joins the history, nothing is planned. Returns the
        history (stacked T_o observations), its stamps and a fresh chunk number for the step."""
        loop = self.loop
        loop.observe(obs, stamp)
        self.poll()  # a plan from before the takeover is dropped (its generation has passed)
        index, loop.chunks_planned = loop.chunks_planned, loop.chunks_planned + 1
        return loop.history.stacked(), loop.history_stamps(), index

    def tick(self, obs: Mapping[str, Any], stamp: float = 0.0, wait: float = 0.0) -> tuple[np.ndarray, Chunk, int] | None:
        """One control tick (see :class:`ChunkLoop`); None when no action is ready.

        ``wait`` [s]: how long to wait for a plan when no action is left. A plan of an earlier episode (or from
        before a takeover) that arrives meanwhile frees the planner without giving an action; the plan this
        tick needs is then asked for at once, within the same wait."""
        loop = self.loop
        loop.observe(obs, stamp)
        if self.adapt is not None:
            loop.replan_margin = self.adapt.margin()
        deadline = time.monotonic() + wait
        while True:
            if loop.wants_plan(self.in_flight):
                self.in_flight, self.flight_started = True, time.monotonic()
                self._requests.put((self._generation, loop.request()))
            self.poll()
            left = deadline - time.monotonic()
            if (left <= 0 or not self.in_flight or self.failure is not None or loop.remaining() > 0
                    or loop.next is not None):
                return loop.pop(self.extend)
            self.poll(left)

    def poll(self, wait: float = 0.0) -> None:
        """Move a finished plan to the loop (waiting up to ``wait`` seconds for one)."""
        try:
            item = self._results.get(timeout=wait) if wait > 0 else self._results.get_nowait()
        except queue.Empty:
            return
        generation, result, seconds = item
        self.in_flight = False
        if self.adapt is not None and not isinstance(result, Exception):
            self.adapt.record(seconds)
        if generation != self._generation:
            return
        if isinstance(result, Exception):
            self.failure = result
        else:
            self.loop.offer(result)

    def take_failure(self) -> Exception | None:
        failure, self.failure = self.failure, None
        return failure

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker (waits for a plan in progress, so no inference runs under interpreter teardown)."""
        self._stop.set()
        self._worker.join(timeout=timeout)

    def _serve(self) -> None:
        if self.niceness > 0 and hasattr(os, "setpriority"):
            # Linux schedules threads on their own: this one yields the CPU to the control tick's thread, also
            # when the node put its threads on a real-time policy (the denoiser never at the tick's priority)
            tid = threading.get_native_id()
            if hasattr(os, "sched_getscheduler") and os.sched_getscheduler(tid) != os.SCHED_OTHER:
                os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + self.niceness))
        while not self._stop.is_set():
            try:
                generation, req = self._requests.get(timeout=0.2)
            except queue.Empty:
                continue
            started = time.monotonic()
            try:
                result: Any = self.planner(req)
            except Exception as exc:  # noqa: BLE001 - a failing model makes the caller hold, not crash
                result = exc
            self._results.put((generation, result, time.monotonic() - started))


@dataclass
class EpisodeRecord:
    """What :func:`run_episode` saw."""

    success: bool
    steps: int
    chunks: int
    total_reward: float


def run_episode(env: Any, loop: ChunkLoop, planner: Planner, seed: int | None = None, episode: int = 0,
                on_action: Callable[[Mapping[str, Any], np.ndarray], None] | None = None,
                on_observation: Callable[[Mapping[str, Any], Mapping[str, Any], bool], None] | None = None
                ) -> EpisodeRecord:
    """Roll out one episode of a gym-style ``env`` (``reset(seed=) -> (obs, info)``, ``step(a)``) with ``loop``.

    ``on_observation(obs, info, success_so_far)`` sees the first observation
    and the one after every step; ``on_action(obs, action)`` each action just
    before it is executed (recorders of videos and bags hook in here).
    """
    obs, info = env.reset(seed=seed)
    loop.reset(episode)
    success, steps, total, done = False, 0, 0.0, False
    if on_observation is not None:
        on_observation(obs, info, success)
    while not done:
        action = np.asarray(loop.act(obs, planner)[0], dtype=np.float64)
        if on_action is not None:
            on_action(obs, action)
        obs, reward, terminated, truncated, info = env.step(action)
        steps += 1
        total += float(reward)
        success = success or bool(info.get("success", False))
        done = bool(terminated or truncated)
        if on_observation is not None:
            on_observation(obs, info, success)
    return EpisodeRecord(success, steps, loop.chunks_planned, total)
