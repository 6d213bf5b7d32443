"""What one control tick of the policy does -- send, hold or skip, and why -- without ROS.

policy_node's timer calls the steps of :class:`ControlTick` in this order
and acts on what they answer; each step either lets the tick go on or ends it
with a :class:`Verdict`:

0. :meth:`ControlTick.robot_ready` -- outside move mode the episode is given
   up; without a current robot state nothing is sent. On sim time
   :meth:`ControlTick.controller_follows` compares the robot's last command
   with the committed trajectory: a message the controller never got makes
   policy_node seed a fresh filter from where the controller is. Nothing is
   sent while nothing subscribes to the command topic
   (:meth:`ControlTick.controller_listening`).
1. :meth:`ControlTick.on_grid` -- on sim time (the lock-step simulator) a tick
   off the control period's grid runs while the simulator steps a period on its
   own (its idle timeout): whatever it sent would be read late or taken as the
   next period's command, so nothing is sent (*skip*, ``ticks_off_grid``).
2. :meth:`ControlTick.observe` -- the observation of the tick's instant. On
   sim time the clock goes out before that instant's joint state and frame,
   so the tick waits up to ``input_wait`` wall seconds for the inputs that are
   due (after the wait it acts on the latest, counted in ``inputs_behind``). A
   stale or missing input makes it *hold* (``hold_stale``).
3. :meth:`ControlTick.seedable` -- a fresh safety filter is seeded only from a
   joint state measured after the reset that began the episode (else it would
   glide back to where the arm was): until then nothing is sent.
4. :meth:`ControlTick.after_planning` -- no action ready: *hold*
   (``hold_no_action``; a chunk in flight for longer than
   ``inference_timeout`` is reported as a dead model). On sim time a tick
   that waited while the simulator ran on is *skipped* (``ticks_late``): its
   trajectory would be played late, off the committed one.
5. :meth:`ControlTick.release` -- a trajectory is stamped when the safety
   filter starts on it and published as soon as it is made. On the wall
   clock the filter repeats the committed trajectory for ``delivery_budget``
   + ``switch_lead`` after the stamp (:meth:`ControlTick.lead`), so the
   filter's computation, the process's other threads and DDS delivery share
   that whole budget before the controller's switch could change a command;
   one ready later than ``delivery_budget`` + half the ``switch_lead`` after
   its stamp is not sent (*skip*, ``sent_late``). On sim time the clock
   stands still while the tick computes and the lead is ``switch_lead``.

A skipped or held tick leaves the committed trajectory playing (it ends at
rest within the FR3's limits).
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from mechanic_rl_ros.control.observation import ObservationAssembler, StaleObservation

SEND, HOLD, SKIP, WAIT, GIVE_UP = "send", "hold", "skip", "wait", "give_up"
#: [wall s] how often a tick on sim time looks again for inputs in flight
INPUT_POLL = 0.002
#: [control periods] how far from the grid a tick on sim time may be
GRID_TOLERANCE = 1e-6
#: [s] a clock that moved more than this during the tick has run on
CLOCK_MOVED = 1e-9
#: [wall s] least time between two logged lines of one kind of expected verdict (off the grid, late, waiting)
INFO_PERIOD = 1.0


@dataclass(frozen=True)
class Verdict:
    """Why a tick ends without sending a fresh action.

    ``action``: :data:`HOLD` (send the committed trajectory's hold, which brakes to rest), :data:`SKIP` (send
    nothing; the committed trajectory plays on), :data:`WAIT` (send nothing, not a fault: the episode's
    first inputs or a current robot state are coming) or :data:`GIVE_UP` (the robot left move mode: the
    episode is given up). ``count``: the counter it adds to; ``missed``: counted as a missed tick once the
    episode has moved, else as a start wait. ``problem``: the kind of fault to report as an error (None:
    expected, worth an info line); ``text``: what to log.
    """

    action: str
    count: str
    text: str = ""
    problem: str | None = None
    missed: bool = False


@dataclass(frozen=True)
class TickConfig:
    """policy_node's parameters that shape a tick (their descriptions are policy_node's)."""

    control_dt: float  # [s]
    input_wait: float = 0.8  # [wall s] on sim time
    inference_timeout: float = 2.0  # [wall s]
    wait_for_inference: bool = True  # on sim time
    delivery_budget: float = 0.075  # [s] on the wall clock
    switch_lead: float = 0.02  # [s] the safety filter's

    def __post_init__(self) -> None:
        for name in ("control_dt", "inference_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: {getattr(self, name)}; expected > 0")
        for name in ("input_wait", "delivery_budget", "switch_lead"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}: {getattr(self, name)}; expected >= 0")
        if not self.delivery_budget + self.switch_lead < self.control_dt:
            raise ValueError(f"delivery_budget: {self.delivery_budget} s + switch_lead {self.switch_lead} s must be "
                             f"less than the control period {self.control_dt} s (a message would repeat its "
                             f"predecessor's braking tail)")


class ControlTick:
    """The decisions of a control tick (module docstring); ``sim_time``: the node runs on the simulator's clock.

    ``monotonic`` and ``sleep`` are the wall clock the waits use (injectable for tests).
    """

    def __init__(self, config: TickConfig, sim_time: bool, monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.config, self.sim_time = config, sim_time
        #: [s] stamp -> ready to publish of the last messages on the wall clock (the filter's computation and
        #: the waits for the CPU and the interpreter lock): the part of delivery_budget this node uses
        self.ready_delays: deque[float] = deque(maxlen=1000)
        #: [s] stamp -> handed to DDS (after the gripper goal and the publish call)
        self.sent_delays: deque[float] = deque(maxlen=1000)
        self.monotonic, self.sleep = monotonic, sleep

    def delay_report(self) -> dict[str, str]:
        """p50 / p99 [ms] of stamp -> ready and stamp -> published of the last messages (wall clock only)."""
        out = {}
        for name, delays in (("ready", self.ready_delays), ("sent", self.sent_delays)):
            if delays:
                ms = np.asarray(delays) * 1e3
                out.update({f"{name}_ms_p{q}": f"{np.percentile(ms, q):.1f}" for q in (50, 99)})
        return out

    @staticmethod
    def robot_ready(robot, age: float, max_age: float) -> Verdict | None:
        """None if the robot is known to be in move mode; ``robot``: its last reported state (``executing``,
        ``describe()``; :class:`mechanic_rl_ros.wire.robot_state.RobotStatus`) or None, ``age`` [s] old.

        Out of move mode (a reflex, a user stop) the episode is given up (:data:`GIVE_UP`): its commands would
        not execute. Without a current robot state nothing is sent (:data:`WAIT`): the controller may be
        inactive (franka_ros2 deactivates it with the broadcaster on an error), and a hold arriving after its
        re-activation would start from where the arm was before it stopped.
        """
        if robot is not None and not robot.executing:
            return Verdict(GIVE_UP, "episodes_given_up", f"robot {robot.describe()}")
        if robot is None or age > max_age:
            text = "no robot state received yet" if robot is None else f"robot state {age:.3f} s old (max_age {max_age})"
            return Verdict(WAIT, "hold_robot_state", f"not commanding: {text}")
        return None

    @staticmethod
    def controller_listening(subscribers: int, topic: str) -> Verdict | None:
        """None if something subscribes to the command topic (``subscribers``: the publisher's matched
        subscriptions). Before DDS has matched the controller's subscription (start-up under load) a command
        is lost, and the safety filter would go on from a trajectory the arm never played: nothing is sent."""
        if subscribers > 0:
            return None
        return Verdict(WAIT, "hold_no_controller", f"not commanding: nothing subscribes to {topic} yet")

    def controller_follows(self, robot, commanded: Callable[[float], np.ndarray | None]) -> str | None:
        """On sim time: None if the robot's last command (q_d, at its state's stamp) lies on the trajectory the
        safety filter committed (``commanded(t)``: :meth:`SafetyFilter.commanded`), else what is off.

        A message the controller never got (a trajectory published before DDS matched the controller's
        subscription: the first command of a loaded start-up) leaves the filter going on along a path the arm
        never took, and the next message would start off the controller's path: a step (11 mrad in a CI run),
        a velocity reflex. In lock-step q_d is the committed trajectory's sample to rounding; on the wall clock
        the robot state's timing is not exact enough for this check, which is not made there."""
        if not self.sim_time or robot is None or robot.desired_q is None:
            return None
        q = commanded(robot.stamp)
        if q is None:
            return None
        gap = float(np.max(np.abs(np.asarray(robot.desired_q, float) - q)))
        if gap <= LOST_COMMAND:
            return None
        return (f"the controller's command at {robot.stamp:.3f} s lies {gap * 1e3:.3f} mrad off the trajectory "
                f"last sent: a message did not reach it")

    def on_grid(self, now: float) -> Verdict | None:
        """None if a tick at ``now`` [s, node clock] may act; on sim time only ticks on the grid may."""
        dt = self.config.control_dt
        if self.sim_time and abs(now / dt - round(now / dt)) > GRID_TOLERANCE:
            return Verdict(SKIP, "ticks_off_grid", f"tick at {now:.3f} s, off the {dt} s grid: the simulator is "
                                                   f"stepping on its own; nothing sent")
        return None

    def observe(self, assembler: ObservationAssembler, now: float) -> tuple[dict[str, Any], float, bool] | Verdict:
        """(observation, its stamp, whether it is behind the tick's instant), or the hold of a stale input."""
        deadline = self.monotonic() + (self.config.input_wait if self.sim_time else 0.0)
        while True:
            try:
                obs, stamp = assembler.snapshot(now)
                if self.sim_time and assembler.due(now):
                    # lock-step: this instant's joint state and frame are in flight (the clock goes out first)
                    if self.monotonic() < deadline:
                        self.sleep(INPUT_POLL)
                        continue
                    return obs, stamp, True
                return obs, stamp, False
            except StaleObservation as exc:
                if self.monotonic() < deadline:  # on sim time: the inputs of this instant are in flight
                    self.sleep(INPUT_POLL)
                    continue
                text = str(exc)
                # an input that has not arrived yet (start-up, a camera starting later): waiting, not a fault
                waiting = text.startswith("no ") and text.endswith("received yet")
                return Verdict(HOLD, "hold_stale", f"holding: {exc}", problem=None if waiting else "stale",
                               missed=True)

    @staticmethod
    def seedable(inputs_stamp: float, episode_started: float) -> Verdict | None:
        """None if inputs whose oldest is stamped ``inputs_stamp`` may start the episode: seed a fresh safety
        filter (the joint state) and plan its first chunk (the frames).

        ``episode_started``: the START event's stamp, the simulator's reset instant (the state published at the
        reset carries it and every state before the reset an earlier stamp) or, on the real arm, the moment the
        home motion ended. A frame from before it shows the last episode's scene."""
        if inputs_stamp < episode_started:
            # seeding from a joint state of before the reset would glide to where the arm was
            return Verdict(WAIT, "hold_stale", missed=True)
        return None

    def start_missed(self, idle_tick_at: float, episode_started: float) -> bool:
        """Whether an episode's START came after the tick of its own instant, which then found no episode.

        On sim time the lock-step simulator does not advance before that tick's command: without it, it idles
        for its timeout and the episode's first action comes a control period late, after the cube has settled,
        where the headless environment acts at the reset. ``idle_tick_at``: the last tick without an episode."""
        return self.sim_time and idle_tick_at >= episode_started - GRID_TOLERANCE * self.config.control_dt

    def inference_wait(self) -> float:
        """[wall s] how long the tick waits for a late chunk: on sim time waiting costs no robot time."""
        return self.config.inference_timeout if (self.config.wait_for_inference and self.sim_time) else 0.0

    def after_planning(self, item, now: float, clock_now: float, in_flight: bool,
                       flight_started: float) -> Verdict | None:
        """None if the planned ``item`` (action, chunk, k) may be sent by the tick of ``now``.

        ``clock_now``: the node's clock after planning; ``in_flight``, ``flight_started``: the planner's chunk
        in flight and when [monotonic s] it started.
        """
        if item is None:
            timeout = self.config.inference_timeout
            dead = in_flight and self.monotonic() - flight_started > timeout
            return Verdict(HOLD, "hold_no_action", f"no chunk after {timeout} s, holding" if dead else "",
                           problem="model" if dead else None, missed=True)
        if self.sim_time and clock_now > now + CLOCK_MOVED:
            # the lock-step simulator ran on (its idle timeout) while this tick waited: a trajectory for this
            # instant would be played late, off the committed one (a step), and any message would be taken as
            # the next period's command
            _, chunk, k = item
            return Verdict(SKIP, "ticks_late", f"the simulator ran on from {now:.3f} s to at least {clock_now:.3f} "
                                               f"s while this tick waited; action {k} of chunk {chunk.index} not "
                                               f"executed")
        return None

    def lead(self) -> float:
        """[s] how long after its stamp a message repeats the committed trajectory (the safety filter's lead).

        Sim time: ``switch_lead`` (the lock-step JTC reads a message within microseconds of its stamp). Wall
        clock: ``delivery_budget`` + ``switch_lead``, since the message is stamped when the filter starts on it
        (a message is never early: early, the JTC would interpolate from its "point before", one period off
        the path; see control/trajectory.py) and the filter, the process and DDS all take their time before
        the controller reads it.
        """
        return self.config.switch_lead + (0.0 if self.sim_time else self.config.delivery_budget)

    def worth_resending(self, end_time: float | None, now: float) -> bool:
        """Whether a hold that re-sends the committed trajectory (ending at ``end_time``; None: no stamp) at
        ``now`` can still reach the controller before that trajectory ends. On the wall clock a message may
        take the whole lead to arrive; one that comes after its trajectory's end is refused by the JTC
        ("ends in the past"), and the controller holds that end (at rest) by itself anyway."""
        return self.sim_time or end_time is None or end_time > now + self.lead()

    def release(self, stamp: float, clock: Callable[[], float], has_trajectory: bool,
                what: str = "") -> Verdict | None:
        """Whether the message stamped ``stamp`` may still go out at the node's ``clock()`` (None: send it now).

        On the wall clock one ready more than ``delivery_budget`` + half the ``switch_lead`` after its stamp
        is not sent (``what``: the action it carried, for the log): the controller would likely read it past
        its lead, after the two trajectories have parted (a step, a reflex). On sim time one is not sent once
        the lock-step simulator has left its instant (it ran out its idle timeout while the tick waited for a
        gripper goal's acceptance): read a period late, a stamped trajectory switches off the path playing,
        and a settling message (no stamp) glides a period behind what the filter assumes.
        """
        if not has_trajectory:
            return None
        if self.sim_time:
            now = clock()
            if now > stamp + CLOCK_MOVED:
                return Verdict(SKIP, "ticks_late", f"the simulator ran on from {stamp:.3f} s to at least {now:.3f} s "
                                                   f"before the trajectory went out{what}")
            return None
        late = clock() - stamp
        self.ready_delays.append(late)
        if late > self.config.delivery_budget + 0.5 * self.config.switch_lead:
            return Verdict(SKIP, "sent_late", f"trajectory for {stamp:.3f} s ready {late * 1e3:.0f} ms after "
                                              f"its stamp: not sent{what}")
        return None


#: [rad] the robot's last command further than this from the committed trajectory's: the controller is not
#: playing what the filter sent (in lock-step they agree to about 1e-9 rad)
LOST_COMMAND = 1e-5
#: [rad/s] the robot's last command counts as at rest below this speed
AT_REST = 1e-6
#: [rad] a robot state and a joint state within this of each other were measured at the same pose
SAME_MEASUREMENT = 1e-5


def filter_seed(q_measured: np.ndarray, robot=None, episode_started: float = -float("inf")
                ) -> tuple[np.ndarray, float | None]:
    """Where a fresh safety filter starts, and its settling time (None: the configured one).

    ``robot``: the robot's last reported state (``desired_q``, ``desired_dq``, ``measured_q``, ``stamp``;
    :class:`mechanic_rl_ros.wire.robot_state.RobotStatus`), or None. The robot's own last command (q_d) when
    the arm is commanded at rest there and the robot state was measured with the joint positions this tick
    observes (so it is from after this episode's reset, not a state from before it, whose q_d the controller
    has left): the filter continues the command exactly and needs no settling. Else the measured position,
    from which the first message lets the controller glide in ``settle_time``: starting a stamped trajectory
    anywhere else but at the command is a step.
    """
    if (robot is not None and robot.desired_q is not None and robot.measured_q is not None
            and robot.stamp >= episode_started and np.abs(robot.desired_dq).max() < AT_REST
            and np.abs(robot.measured_q - q_measured).max() < SAME_MEASUREMENT):
        return robot.desired_q, 0.0
    return q_measured, None
