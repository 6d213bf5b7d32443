"""Repeated injected reflexes on a running stack, and what each recovery did (issue 32, "recovery that
always recovers"). Shared by the wall-clock integration test (test_reflex_recovery.py) and
bench/bench_stack.py ``--inject N``.

Each round waits until the policy acts again in a fresh episode (``moving`` transitions of it reached the
learner), injects a reflex through ``/sim/inject_reflex`` (as a collision would stop the FR3) and waits for
the robot state to say ``move`` again: franka_robot_state_broadcaster is inactive from the reflex until
reward_node's recovery re-activated the controllers, so the first robot state after the injection is the
re-activated robot. A recovery that does not recover -- the loop the issue saw, a reflex of the robot's own
checks 4-23 ms after each re-activation, retried every ``recovery_retry`` -- never lets the policy act in a new
episode, and the round says so (its figures None). The first robot state after each re-activation also names
the errors of the reflex recovered from (``last_motion_errors``): the injected ``joint_reflex``, or the
check a reflex after the last re-activation broke.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from franka_msgs.msg import FrankaRobotState
from std_srvs.srv import Trigger

from mechanic_rl_ros.msg import EpisodeEvent
from mechanic_rl_ros.wire.robot_state import read_robot_state

from stack_checks import StackObserver

#: the robot state topic franka_robot_state_broadcaster publishes
ROBOT_STATE = "/franka_robot_state_broadcaster/robot_state"
#: [s] a gap in the robot state this long is the broadcaster's silence (it publishes at 50 Hz; reward_node
#: takes 0.5 s of silence for a fault, so a recovery is never faster)
SILENCE = 0.25


@dataclass
class Round:
    """One injected reflex: the episode acting when it was sent, the episodes reward_node aborted from then
    until the robot moved again, and [s] from the injection to the robot in move mode again and to the
    policy's first transition of the next episode (None: not within the round's timeout)."""

    episode: int
    injected: float  # [s, monotonic]
    aborted: tuple[int, ...] = ()
    to_move: float | None = None
    to_acting: float | None = None
    #: the errors the re-activated robot reports as those of the reflex it recovered from
    recovered_from: tuple[str, ...] = ()


class ReflexRounds:
    """Injects reflexes into the stack ``obs`` observes and times each recovery."""

    def __init__(self, obs: StackObserver):
        self.obs = obs
        self.inject = obs.node.create_client(Trigger, "/sim/inject_reflex")
        #: (monotonic receive time, stamp, robot mode, last motion errors) of every robot state
        self.modes: list[tuple[float, str, tuple[str, ...]]] = []
        obs.node.create_subscription(FrankaRobotState, ROBOT_STATE, self._on_state, 50)
        self.rounds: list[Round] = []

    def _on_state(self, msg) -> None:
        status = read_robot_state(msg)
        self.modes.append((time.monotonic(), status.stamp, status.mode, tuple(status.last_errors)))

    def acting_episode(self, after: int, moving: int, timeout: float) -> int | None:
        """The first episode above ``after`` with ``moving`` transitions at the learner (None: timeout)."""
        def found():
            counts: dict[int, int] = {}
            for t in self.obs.transitions:
                if t.episode > after:
                    counts[t.episode] = counts.get(t.episode, 0) + 1
            return next((e for e, n in sorted(counts.items()) if n >= moving), None)
        self.obs.spin_until(lambda: found() is not None, timeout)
        return found()

    def run(self, count: int, timeout: float, moving=lambda k: 2 + k % 4, log=print) -> list[Round]:
        """``count`` rounds; each waits up to ``timeout`` s for the robot to move again and for the policy to
        act in a new episode. ``moving(k)``: transitions of an episode before round ``k`` injects (varied, so
        that the reflexes hit the first chunk as well as later ones). Stops at the first round that does not
        recover (its figures None)."""
        assert self.inject.wait_for_service(timeout_sec=30), "/sim/inject_reflex not available"
        # the silence after a reflex shows only against states seen before it: this subscription, made just now,
        # must have found the broadcaster first (discovery takes seconds on a loaded machine)
        assert self.obs.spin_until(lambda: len(self.modes) >= 5, timeout), "no robot state from the broadcaster"
        last = max((t.episode for t in self.obs.transitions), default=0) - 1  # from the episode acting now
        for k in range(count):
            episode = self.acting_episode(last, moving(k), timeout)
            if episode is None:
                log(f"[reflexes] round {k}: no episode acting after episode {last} within {timeout:.0f} s")
                self.rounds.append(Round(last + 1, time.monotonic()))
                break
            events, seen = len(self.obs.events), max(0, len(self.modes) - 1)
            start = time.monotonic()  # (times count from the request: its answer can come late under load)
            start_wall = time.time()
            fut = self.inject.call_async(Trigger.Request())
            assert self.obs.spin_until(fut.done, 10) and fut.result().success, "inject_reflex failed"
            r = Round(episode, start)
            self.rounds.append(r)
            # the broadcaster went inactive with the reflex: the first state after it is the re-activated robot
            self.obs.spin_until(lambda: self._back(seen, start_wall) is not None, timeout)
            back = self._back(seen, start_wall)
            if back is not None:
                r.to_move, r.recovered_from = back[0] - start, back[1]
            # (reward_node aborts the episode before it recovers: by now its event is here)
            r.aborted = tuple(e.episode for e in self.obs.events[events:] if e.event == EpisodeEvent.ABORTED)
            last = max((episode, *r.aborted))
            following = self.acting_episode(last, 1, max(0.0, timeout - (time.monotonic() - start)))
            r.to_acting = time.monotonic() - start if following is not None else None
            log(f"[reflexes] round {k}: injected in episode {episode}, aborted {list(r.aborted)}; move again after "
                f"{_ms(r.to_move)} (recovered from {list(r.recovered_from)}), policy acting in episode {following} "
                f"after {_ms(r.to_acting)}")
            if r.to_move is None or following is None:
                break
        return self.rounds

    def _back(self, seen: int, start_wall: float) -> tuple[float, tuple[str, ...]] | None:
        """The first robot state in move mode stamped after the broadcaster's silence that followed the injection
        at ``start_wall`` [s, wall clock] (states still on their way when the reflex came are stamped before it;
        the stamps, not the receive times, show the silence: a loaded test process may take a backlog in at
        once)."""
        for t, stamp, mode, errors in self.modes[seen:]:
            if stamp > start_wall + SILENCE and mode == "move":
                return t, errors
        return None

    def summary(self) -> str:
        moves = sorted(r.to_move for r in self.rounds if r.to_move is not None)
        acting = sorted(r.to_acting for r in self.rounds if r.to_acting is not None)
        text = f"{len(moves)}/{len(self.rounds)} recovered"
        if moves:
            text += (f"; injection -> move mode again: median {_ms(moves[len(moves) // 2])}, max {_ms(moves[-1])}")
        if acting:
            text += (f"; -> policy acting in the next episode: median {_ms(acting[len(acting) // 2])}, "
                     f"max {_ms(acting[-1])}")
        return text


def _ms(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds * 1e3:.0f} ms"
