"""A simulated human operator who watches the lift task and takes over the arm when the policy fails at it.

It stands in for a person with a SpaceMouse (spacenav_node) or a gamepad in
the embedded simulation and the tests. It sees what a person at the robot
sees -- the cube's pose, the hand's pose (forward kinematics of the arm's
joint positions) and the finger opening -- and answers, at the device's rate,
with what the device would publish: a Twist in *device units* (policy_node
multiplies the linear part by ``linear_scale`` [m/s] and the angular part by
``angular_scale`` [rad/s], both in the base frame fr3_link0, and zeroes
components below its deadband) and two buttons (``close_button`` held =
grasp, ``open_button`` held = open). At rest it sends zeros, as a device
does. No ROS here: :mod:`mechanic_rl_ros.nodes.operator_node` publishes it;
tests drive it directly.

When it takes over
------------------
A rule has to hold without a break for ``reaction_delay`` (0.3 s, a person's
reaction time) before the operator acts; at most ``max_takeovers`` (2) times
an episode, not within ``cooldown`` (1 s) of its last handback, and not with
less than ``min_time_left`` (2.5 s; ``finish_time`` when the cube is held)
left of the episode's ``episode_duration`` (8 s), too late to help. No rule
fires once the cube is ``progress_lift`` (2 cm) above where it started, or
after it fell off the table. In order of priority (the first due one is the
reported ``reason``):

* ``off_centre_grasp`` (unless ``off_centre_rule`` is false) -- the fingers are closed (opening below
  ``closed_width``, 6.5 cm; the cube is 5 cm wide, the open hand 8 cm) or
  closing (narrowing faster than ``closing_speed``, 2 cm/s) with the cube
  centre more than ``off_centre`` (1.2 cm) from the TCP along the fingers'
  axis (a finger lands on the cube's top, or pushes it away) or more than
  ``off_centre_across`` (2.5 cm) across it (the 2 cm wide pads still grip an
  edge closer than that: in simulation such grasps lift the cube), with the
  hand down at the cube (TCP at most ``grasp_zone_height``, 5 cm, above its
  centre). A centred grasp in progress does not fire it: the closing fingers
  centre the cube along their axis well within the reaction delay.
* ``missed_grasp`` -- the fingers have closed on nothing (opening below
  ``empty_width``, 1 cm) while the cube is still down: the grasp missed, or
  the cube slipped out of a wedged grasp as the hand lifted.
* ``cube_pushed`` -- the cube lies more than ``push_distance`` (2 cm) in the
  plane from where it was at the episode's first :meth:`SimulatedOperator.act`,
  and is not held.
* ``no_progress`` -- ``progress_deadline`` (4 s) into the episode the cube is
  not lifted and the hand has stalled: in the last ``stall_time`` (1 s) it
  came no closer to the cube by ``stall_distance`` (1 cm) and the fingers
  moved less than that. A cube held between the fingers is given
  ``held_grace`` (1 s) more, and then counts as no progress while it rises
  slower than ``lift_speed`` (2 cm/s): the grasp was late or the lift is too
  slow for the 8 s limit. A policy still on its way to the cube is left alone:
  the pretrained lift policy typically succeeds 5-6 s into the episode, and a
  takeover at 4 s costs it those episodes (the operator's own correction takes
  about 3 s).

How it corrects
---------------
If the cube is held (between the closed fingers, centred, opening about the
cube's width) it only lifts. Otherwise it grasps again, in phases:

* ``rise`` -- hold the open button; once the fingers have let go, go up until
  the fingertips clear the cube's top by ``clearance`` / 2;
* ``approach`` -- over the cube centre at ``clearance`` above its top, turning
  the hand about the vertical to the cube's yaw modulo 90 deg; once centred
  within ``off_centre`` / 2, turned and open, straight down to ``grasp_depth``
  below the cube centre, still centring. Only the yaw is steered: a tilt read
  off the measured joints is mostly the arm lagging its command, and steering
  against that lag makes the hand swing;
* ``close`` -- hold the close button from ``close_distance`` above the grasp
  height until the fingers have been still for ``settle_time``; closed on
  nothing, start again at ``rise``;
* ``lift`` -- up, close button held; a slip starts again at ``rise``;
* ``finish`` -- with less than ``finish_time`` (1.2 s) of the episode left at
  the handback height, too little for the policy to take over and lift, the
  operator lifts on to ``finish_lift`` (11 cm, past the task's 10 cm) itself.

Motions are a proportional approach (error / ``time_constant``, never faster
than it can brake at ``max_acceleration`` / 2) capped at ``max_speed``
(0.1 m/s) and ``max_angular_speed``, the commanded velocity changing by at
most ``max_acceleration`` (0.5 m/s^2) and ``max_angular_acceleration`` per
second: smooth, as a hand on a SpaceMouse is. (Faster changes outrun the
stack's safety filter, at half the FR3's joint limits, in the low postures of
a grasp; the arm then lags its command by centimetres and the approach
overshoots.) One gripper button is held through the whole intervention (open
before the grasp, close after), so policy_node sees activity while the hand
stands still and the intervention never ends by itself. It hands back -- zero
Twist, no buttons, as a released device -- once the cube is ``handback_lift``
(4 cm) up, for the policy to finish; the rules may fire again later in the
episode.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, fields, replace

import numpy as np

from mechanic_rl_ros.control import fr3
from mechanic_rl_ros.control.teleop import TeleopConfig
from mechanic_rl_ros.sim.expert import quat_yaw, wrap
from mechanic_rl_ros.sim.tasks import TASK_STATE_DIM

#: the reasons a takeover reports (the rule that fired)
RULES = ("off_centre_grasp", "missed_grasp", "cube_pushed", "no_progress")
#: the phases of a correction
PHASES = ("idle", "rise", "approach", "close", "lift", "finish")
#: [m] an opening this much below / above the cube's width (2 * cube_half_size) still grips it (a turned cube
#: grips wider); narrower, the fingers closed beside it or on nothing
HELD_WIDTH_TOLERANCE = (0.01, 0.02)
#: [m] at a re-grasp the fingers have let go of what they pinched once the opening grew by this
LET_GO = 0.005
#: [m] the lift aims this far beyond handback_lift, so that it does not slow to a crawl just before it
LIFT_OVERSHOOT = 0.02


def _param(default, doc: str, low: float | None = None, high: float | None = None):
    """A config field with its description (``doc``: unit and meaning) and inclusive valid range."""
    return field(default=default, metadata={"doc": doc, "range": (low, high)})


@dataclass(frozen=True)
class OperatorConfig:
    """Every tunable of :class:`SimulatedOperator`; each field's metadata holds its description and valid range
    (operator_node declares them as its ROS parameters from there)."""

    # the device, as policy_node interprets it (the defaults are control.teleop.TeleopConfig's)
    linear_scale: float = _param(TeleopConfig.linear_scale, "[m/s per device unit] policy_node's scale of the "
                                 "Twist's linear part", 1e-6, None)
    angular_scale: float = _param(TeleopConfig.angular_scale, "[rad/s per device unit] policy_node's scale of the "
                                  "Twist's angular part", 1e-6, None)
    close_button: int = _param(TeleopConfig.close_button, "index of the Joy button that closes the gripper", 0, 1)
    open_button: int = _param(TeleopConfig.open_button, "index of the Joy button that opens the gripper", 0, 1)
    # the task
    cube_half_size: float = _param(0.025, "[m] half the cube's edge (sim SceneConfig.cube_half_size)", 0.001, 0.2)
    # when it takes over
    reaction_delay: float = _param(0.3, "[s] a rule must hold this long without a break before the operator acts "
                                   "(a person's reaction time)", 0.0, 5.0)
    closed_width: float = _param(0.065, "[m] a finger opening below this counts as closed (the cube is 0.05 m "
                                 "wide, the open hand 0.08 m)", 0.0, 0.08)
    empty_width: float = _param(0.01, "[m] a finger opening below this has closed on nothing", 0.0, 0.08)
    closing_speed: float = _param(0.02, "[m/s] the opening shrinking faster than this counts as closing",
                                  1e-4, None)
    grasp_zone_height: float = _param(0.05, "[m] off_centre_grasp only while the TCP is at most this far above "
                                      "the cube centre (the hand is down at the cube)", 0.0, 1.0)
    off_centre_rule: bool = _param(True, "take over an off-centre grasp as it closes (off_centre_grasp); false: "
                                   "only once a grasp has failed (missed_grasp, cube_pushed, no_progress), so that "
                                   "off-centre grasps that would still lift are left to the policy")
    off_centre: float = _param(0.012, "[m] a closing grasp whose TCP is farther than this from the cube centre "
                               "along the fingers' axis is off-centre (a finger lands on the cube's top)",
                               0.001, 0.2)
    off_centre_across: float = _param(0.025, "[m] ... or farther than this across the fingers' axis (along the 2 cm "
                                      "wide pads, which still grip an edge up to about this)", 0.001, 0.2)
    push_distance: float = _param(0.02, "[m] the cube farther than this in the plane from its start position, "
                                  "not held, counts as pushed away", 0.001, 1.0)
    progress_deadline: float = _param(4.0, "[s] after the episode's start: the cube not lifted by progress_lift by "
                                      "then counts as no progress", 0.0, None)
    progress_lift: float = _param(0.02, "[m] the cube this far above its start height counts as lifted; no rule "
                                  "fires above it", 0.001, 1.0)
    stall_time: float = _param(1.0, "[s] no_progress: the hand has stalled when in the last this long it came "
                               "no closer to the cube by stall_distance and the fingers moved less than that", 0.1, 10.0)
    stall_distance: float = _param(0.01, "[m] the progress that counts within stall_time", 0.001, 0.5)
    held_grace: float = _param(1.0, "[s] a held cube gets this much longer than progress_deadline before "
                               "no_progress fires (a late grasp about to lift)", 0.0, None)
    lift_speed: float = _param(0.02, "[m/s] a held cube rising at least this fast counts as being lifted: "
                               "no_progress waits for it", 0.0, None)
    max_takeovers: int = _param(2, "takeovers at most per episode", 0, 100)
    cooldown: float = _param(1.0, "[s] no new takeover this soon after a handback (policy_node itself waits its "
                             "release time before the policy resumes)", 0.0, None)
    # how it corrects
    max_speed: float = _param(0.1, "[m/s] TCP speed limit of the operator's hand (human-like)", 1e-3, 1.0)
    max_acceleration: float = _param(0.5, "[m/s^2] largest change of the commanded TCP velocity (the safety filter "
                                     "tracks up to about this in the low postures of a grasp)", 1e-3, None)
    max_angular_speed: float = _param(0.6, "[rad/s] hand rotation speed limit", 1e-3, 3.0)
    max_angular_acceleration: float = _param(2.0, "[rad/s^2] largest change of the commanded rotation rate",
                                             1e-3, None)
    time_constant: float = _param(0.3, "[s] proportional approach: the wanted velocity is the error divided by "
                                  "this", 0.01, 10.0)
    clearance: float = _param(0.02, "[m] the TCP's height above the cube's top while moving over it", 0.001, 0.5)
    grasp_depth: float = _param(0.0075, "[m] the TCP this far below the cube centre when closing", -0.1, 0.1)
    min_tcp_height: float = _param(0.015, "[m] the operator never moves the TCP below this height above the "
                                   "table", 0.0, 0.5)
    table_height: float = _param(0.0, "[m] the table's top in the base frame fr3_link0 (sim: 0)", -2.0, 2.0)
    close_distance: float = _param(0.01, "[m] the close starts this far above the grasp height (the fingers take "
                                   "a moment; the hand keeps going down meanwhile)", 0.0, 0.1)
    yaw_tolerance: float = _param(0.05, "[rad] the hand counts as turned to the cube within this", 1e-3, 0.5)
    settle_time: float = _param(0.1, "[s] the fingers still (the opening changing slower than closing_speed / 4) "
                                "this long end the close", 0.0, 5.0)
    max_close_time: float = _param(1.5, "[s] the close ends after this long even if the fingers still move",
                                   0.1, 10.0)
    phase_timeout: float = _param(3.0, "[s] a motion phase that has not finished after this long (the hand "
                                  "stuck) starts the re-grasp again from rise", 0.5, 60.0)
    handback_lift: float = _param(0.04, "[m] the operator hands back once the cube is this far above its start "
                                  "height", 0.001, 1.0)
    episode_duration: float = _param(8.0, "[s] the episode's time limit (lift: 80 steps at 10 Hz); 0 = unknown: "
                                     "min_time_left and finish_time are not applied", 0.0, None)
    min_time_left: float = _param(2.5, "[s] no takeover with less than this left of the episode (a re-grasp takes "
                                  "about 3 s); finish_time for a held cube, which only needs lifting", 0.0, None)
    finish_time: float = _param(1.2, "[s] with less than this left at the handback, the operator finishes the lift "
                                "itself (the policy needs policy_node's release time and its own lift)", 0.0, None)
    finish_lift: float = _param(0.11, "[m] the lift that ends the episode (the lift task's 0.10 m and a margin)",
                                0.001, 1.0)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            kind = type(f.default)
            if kind is bool:
                if not isinstance(value, (bool, np.bool_)):
                    raise ValueError(f"OperatorConfig.{f.name}: got {value!r}; expected true or false")
                continue
            if kind is int and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
                raise ValueError(f"OperatorConfig.{f.name}: got {value!r}; expected an integer")
            if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float, np.floating))
                                  or not math.isfinite(value)):
                raise ValueError(f"OperatorConfig.{f.name}: got {value!r}; expected a finite number")
            low, high = f.metadata["range"]
            if (low is not None and value < low) or (high is not None and value > high):
                raise ValueError(f"OperatorConfig.{f.name}: got {value!r}; expected a value in "
                                 f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]")
        if self.close_button == self.open_button:
            raise ValueError(f"OperatorConfig.open_button: got {self.open_button}, the same as close_button; "
                             "expected the other button")
        if self.handback_lift < self.progress_lift:
            raise ValueError(f"OperatorConfig.handback_lift: got {self.handback_lift}; expected >= progress_lift "
                             f"({self.progress_lift}), else the rules fire again right after a handback")


@dataclass(frozen=True)
class OperatorCommand:
    """What the device sends now: ``linear`` / ``angular`` [device units, base frame], ``buttons`` (0/1 each)."""

    linear: np.ndarray
    angular: np.ndarray
    buttons: tuple[int, int]
    #: the operator is in control (it holds a button throughout)
    intervening: bool
    #: the rule that started the current (or, at a handback, the last) intervention; "" when none
    reason: str
    #: the correction's phase (:data:`PHASES`)
    phase: str = "idle"
    #: "takeover" or "handback" on the call where that happened, else ""
    event: str = ""
    #: [s] how long the current intervention has lasted (at a handback: how long it lasted)
    intervening_for: float = 0.0


def _limit(vec: np.ndarray, norm: float) -> np.ndarray:
    n = float(np.linalg.norm(vec))
    return vec * (norm / n) if n > norm else vec


class SimulatedOperator:
    """The operator of the module docstring. Call :meth:`reset` at each episode's start, :meth:`act` at the
    device's rate, :meth:`stop` when the episode ends."""

    def __init__(self, config: OperatorConfig | None = None):
        self.config = config or OperatorConfig()
        self._start: float | None = None
        self.takeovers = 0
        self._reset_state()

    # ----------------------------------------------------------------- public
    def reset(self, episode_start_time: float) -> None:
        """A new episode started at ``episode_start_time`` [s, the clock ``act`` is given]."""
        if not math.isfinite(episode_start_time):
            raise ValueError(f"episode_start_time: got {episode_start_time!r}; expected a finite time [s]")
        self._start = float(episode_start_time)
        self.takeovers = 0
        self._reset_state()

    def stop(self, now: float) -> float | None:
        """The episode ended at ``now`` [s]: let go at once and stay at rest until the next :meth:`reset`.
        Returns how long an intervention it cut short had lasted [s] (None: none was running)."""
        lasted = self.intervention_time(now) if self.intervening else None
        self._start = None
        self._reset_state()
        return lasted

    @property
    def intervening(self) -> bool:
        """The operator is in control now."""
        return self.phase != "idle"

    def episode_time(self, now: float) -> float | None:
        """[s] how far into the running episode ``now`` is (None: no episode runs)."""
        return None if self._start is None else now - self._start

    def _time_left(self, now: float) -> float | None:
        """[s] left of the episode at ``now`` (None: its duration is not known)."""
        return None if self.config.episode_duration <= 0 else self._start + self.config.episode_duration - now

    def intervention_time(self, now: float) -> float:
        """[s] how long the current intervention has lasted at ``now`` (0 when none runs)."""
        return now - self._taken if self.intervening else 0.0

    def act(self, now: float, q, finger_width: float, task_state) -> OperatorCommand:
        """The device's output at time ``now`` [s] for the arm joints ``q`` [7, rad], the finger opening
        ``finger_width`` [m] and the 13-float ``task_state`` (:data:`~mechanic_rl_ros.sim.tasks.TASK_STATE_FIELDS`,
        positions in fr3_link0). ValueError naming the argument for a wrong size or a non-finite value."""
        q = self._vector("q", q, fr3.NUM_JOINTS)
        state = self._vector("task_state", task_state, TASK_STATE_DIM)
        width = float(self._vector("finger_width", [finger_width], 1)[0])
        if not math.isfinite(now):
            raise ValueError(f"now: got {now!r}; expected a finite time [s]")
        dt = 0.0 if self._last_time is None else min(max(now - self._last_time, 0.0), 0.2)
        moved = dt > 0 and self._last_width is not None
        rate = (width - self._last_width) / dt if moved else 0.0
        rise = (state[2] - self._last_cube_z) / dt if moved else 0.0
        self._last_time, self._last_width, self._last_cube_z = now, width, float(state[2])
        if self._start is None:
            return self._rest()
        pose = fr3.forward_kinematics(q)
        view = _View(tcp=pose[:3, 3], rot=pose[:3, :3], cube=state[0:3], cube_yaw=quat_yaw(state[3:7]),
                     width=width, width_rate=rate, closing=-rate > self.config.closing_speed, cube_rise=rise)
        if self._cube_start is None:
            self._cube_start = view.cube.copy()
        self._history.append((now, float(np.linalg.norm(view.tcp - view.cube)), width))
        while self._history and self._history[0][0] < now - self.config.stall_time - 0.5:
            self._history.popleft()
        if self.phase == "idle":
            return self._watch(now, view)
        return self._correct(now, dt, view)

    # ------------------------------------------------------------- watching
    def _watch(self, now: float, s: "_View") -> OperatorCommand:
        """Not intervening: check the rules; a takeover once one has held for the reaction delay."""
        c = self.config
        holding = {rule: ok for rule, ok in zip(RULES, self._rules(now, s))}
        for rule, ok in holding.items():
            if not ok:
                self._since.pop(rule, None)
            else:
                self._since.setdefault(rule, now)
        left = self._time_left(now)
        allowed = (self.takeovers < c.max_takeovers and now - self._handed_back >= c.cooldown
                   and (left is None or left >= (c.finish_time if self._held(s) else c.min_time_left)))
        due = [r for r in RULES if r in self._since and now - self._since[r] >= c.reaction_delay - 1e-9]
        if not (allowed and due):
            return self._rest()
        self.takeovers += 1
        self.reason, self._taken = due[0], now
        self._since.clear()
        self._v, self._w = np.zeros(3), np.zeros(3)
        self._enter("lift" if self._held(s) else "rise", now, s)
        cmd = self._correct(now, 0.0, s)
        return replace(cmd, event="takeover")

    def _rules(self, now: float, s: "_View") -> tuple[bool, bool, bool, bool]:
        """Whether each rule of :data:`RULES` holds now (before the reaction delay)."""
        c = self.config
        lift = s.cube[2] - self._cube_start[2]
        if lift >= c.progress_lift or s.cube[2] < c.table_height - c.cube_half_size:
            return False, False, False, False
        held, elapsed = self._held(s), now - self._start
        off_centre = (c.off_centre_rule and (s.width < c.closed_width or s.closing) and self._off_centre(s)
                      and s.tcp[2] - s.cube[2] <= c.grasp_zone_height)
        missed = s.width < c.empty_width
        pushed = float(np.linalg.norm(s.cube[:2] - self._cube_start[:2])) > c.push_distance and not held
        if held:
            late = (elapsed >= c.progress_deadline + c.held_grace and s.cube_rise < c.lift_speed)
        else:
            late = elapsed >= c.progress_deadline and self._stalled(now)
        return off_centre, missed, pushed, late

    def _offsets(self, s: "_View") -> tuple[float, float]:
        """[m] the cube centre's distance from the TCP in the plane, (along, across) the fingers' axis."""
        d = s.cube[:2] - s.tcp[:2]
        axis = s.rot[:2, 1] / max(float(np.linalg.norm(s.rot[:2, 1])), 1e-9)  # the hand's y: the fingers' axis
        along = float(d @ axis)
        return abs(along), float(np.linalg.norm(d - along * axis))

    def _off_centre(self, s: "_View") -> bool:
        along, across = self._offsets(s)
        return along > self.config.off_centre or across > self.config.off_centre_across

    def _stalled(self, now: float) -> bool:
        """In the last ``stall_time`` the hand came no closer to the cube by ``stall_distance``, and the fingers
        moved less than that (False until that much history is there)."""
        c = self.config
        then = [h for h in self._history if h[0] <= now - c.stall_time + 1e-9]
        if not then:
            return False
        _, distance, width = then[-1]
        _, distance_now, width_now = self._history[-1]
        return distance - distance_now < c.stall_distance and abs(width - width_now) < c.stall_distance

    def _held(self, s: "_View") -> bool:
        """The cube is between the closed fingers: centred, at the TCP's height, the opening about its width."""
        c = self.config
        low, high = HELD_WIDTH_TOLERANCE
        edge = 2 * c.cube_half_size
        return bool(edge - low <= s.width <= edge + high and s.width < c.closed_width and not self._off_centre(s)
                    and abs(s.tcp[2] - s.cube[2]) <= c.cube_half_size)

    # ------------------------------------------------------------ correcting
    def _enter(self, phase: str, now: float, s: "_View") -> None:
        self.phase, self._phase_start, self._still_since = phase, now, now
        self._descending = False
        self._anchor, self._anchor_width = s.tcp.copy(), s.width

    def _correct(self, now: float, dt: float, s: "_View") -> OperatorCommand:
        """One step of the correction: the phase's target, and the next phase once it is reached."""
        c = self.config
        if s.cube[2] < c.table_height - c.cube_half_size:
            return self._hand_back(now)  # the cube fell off the table: nothing left to do
        for _ in range(len(PHASES)):  # a phase finished on this call hands the call to the next one
            phase = self.phase
            target, close, turn = self._phase_step(now, s)
            if self.phase == "idle":
                return self._hand_back(now)
            if self.phase == phase:
                break
        self._v = self._ramp(self._v, self._wanted(target, s.tcp), c.max_speed, c.max_acceleration, dt)
        w_wanted = np.array([0.0, 0.0, self._yaw_error(s) / c.time_constant if turn else 0.0])
        self._w = self._ramp(self._w, w_wanted, c.max_angular_speed, c.max_angular_acceleration, dt)
        if s.tcp[2] <= c.table_height + c.min_tcp_height and self._v[2] < 0:
            self._v[2] = 0.0
        return self._output(close, now)

    def _phase_step(self, now: float, s: "_View") -> tuple[np.ndarray | None, bool, bool]:
        """(TCP target or None to stand still, close button held, turn the hand) of the current phase; moves
        ``self.phase`` on when the phase is done ("idle": hand back)."""
        c = self.config
        h = c.cube_half_size
        safe_z = s.cube[2] + h + c.clearance
        grasp = np.array([s.cube[0], s.cube[1], max(s.cube[2] - c.grasp_depth, c.table_height + c.min_tcp_height)])
        in_phase = now - self._phase_start
        if self.phase in ("rise", "approach") and in_phase > c.phase_timeout:
            self._enter("rise", now, s)  # stuck (e.g. a finger on the cube's top): start again
        if self.phase == "rise":
            if c.empty_width <= s.width < c.closed_width and s.width < self._anchor_width + LET_GO:
                return None, False, True  # let go of what the fingers may pinch before moving
            if s.tcp[2] >= safe_z - c.clearance / 2:
                self._enter("approach", now, s)  # the fingertips clear the cube's top: over it while still rising
            return np.array([self._anchor[0], self._anchor[1], max(safe_z, self._anchor[2])]), False, True
        if self.phase == "approach":
            # over the cube at the safe height until centred, turned and open; then down, still centring
            planar = float(np.linalg.norm(s.tcp[:2] - grasp[:2]))
            if planar > c.off_centre:
                self._descending = False
            elif (planar < c.off_centre / 2 and abs(self._yaw_error(s)) < c.yaw_tolerance
                  and s.width >= c.closed_width):
                self._descending = True
            if self._descending and abs(s.tcp[2] - grasp[2]) < c.close_distance:
                self._enter("close", now, s)
            return (grasp if self._descending else np.array([grasp[0], grasp[1], safe_z])), False, True
        if self.phase == "close":
            if abs(s.width_rate) > c.closing_speed / 4:
                self._still_since = now
            if (now - self._still_since >= c.settle_time and in_phase >= c.settle_time) or in_phase >= c.max_close_time:
                missed = s.width < 2 * h - HELD_WIDTH_TOLERANCE[0]
                self._enter("rise" if missed else "lift", now, s)  # closed beside the cube: open, try again
            return (grasp if in_phase < c.settle_time else None), True, False
        # lift (to the handback height), finish (on to the success height: too little time left for the policy)
        lift = s.cube[2] - self._cube_start[2]
        left = self._time_left(now)
        if self.phase == "lift" and lift >= c.handback_lift and left is not None and left < c.finish_time:
            self.phase = "finish"
        goal = c.finish_lift if self.phase == "finish" else c.handback_lift
        if lift >= goal:
            self.phase = "idle"
        elif s.width < c.empty_width or (s.tcp[2] - self._anchor[2] > c.handback_lift and lift < c.progress_lift / 2):
            self._enter("rise", now, s)  # the cube slipped out: the fingers met, or the hand rose without it
        top = self._anchor[2] + goal + LIFT_OVERSHOOT
        return np.array([self._anchor[0], self._anchor[1], top]), True, False

    def _wanted(self, target: np.ndarray | None, tcp: np.ndarray) -> np.ndarray:
        """[m/s] towards ``target``: error / time_constant, and never faster than it can stop at the target
        braking at half the acceleration limit (the arm answers late, so braking has to start early)."""
        if target is None:
            return np.zeros(3)
        c = self.config
        error = target - tcp
        distance = float(np.linalg.norm(error))
        speed = min(distance / c.time_constant, math.sqrt(c.max_acceleration * distance))
        return error * (speed / distance) if distance > 1e-9 else np.zeros(3)

    @staticmethod
    def _ramp(current: np.ndarray, wanted: np.ndarray, speed: float, acceleration: float, dt: float) -> np.ndarray:
        """``wanted`` capped at ``speed``, reached from ``current`` at most ``acceleration`` * ``dt`` at a time."""
        step = _limit(_limit(wanted, speed) - current, acceleration * dt)
        return _limit(current + step, speed)

    def _yaw_error(self, s: "_View") -> float:
        """[rad] the turn about the base z axis that aligns the fingers with the cube's faces (the cube repeats
        every 90 deg, so it is at most 45 deg)."""
        hand = math.atan2(s.rot[1, 0], s.rot[0, 0])
        return wrap(s.cube_yaw - hand, math.pi / 2)

    def _hand_back(self, now: float) -> OperatorCommand:
        lasted = now - self._taken
        reason = self.reason
        self._reset_state(keep_episode=True)
        self._handed_back = now
        return OperatorCommand(np.zeros(3), np.zeros(3), (0, 0), False, reason, "idle", "handback", lasted)

    def _output(self, close: bool, now: float) -> OperatorCommand:
        c = self.config
        buttons = [0, 0]
        buttons[c.close_button if close else c.open_button] = 1
        linear = np.clip(self._v / c.linear_scale, -1.0, 1.0)
        angular = np.clip(self._w / c.angular_scale, -1.0, 1.0)
        return OperatorCommand(linear, angular, (buttons[0], buttons[1]), True, self.reason, self.phase, "",
                               now - self._taken)

    def _rest(self) -> OperatorCommand:
        return OperatorCommand(np.zeros(3), np.zeros(3), (0, 0), False, "", "idle")

    def _reset_state(self, keep_episode: bool = False) -> None:
        self.phase = "idle"
        self.reason = ""
        self._since: dict[str, float] = {}
        self._v, self._w = np.zeros(3), np.zeros(3)
        self._phase_start = self._still_since = self._taken = 0.0
        self._anchor, self._anchor_width = np.zeros(3), 0.0
        self._descending = False
        if not keep_episode:
            self._handed_back = -math.inf
            self._cube_start: np.ndarray | None = None
            self._last_time: float | None = None
            self._last_width: float | None = None
            self._last_cube_z = 0.0
            #: (time [s], TCP-cube distance [m], finger opening [m]) of the last stall_time and a bit
            self._history: deque[tuple[float, float, float]] = deque()

    @staticmethod
    def _vector(name: str, value, size: int) -> np.ndarray:
        try:
            arr = np.asarray(value, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: got {value!r}; expected {size} numbers") from None
        if arr.shape != (size,):
            raise ValueError(f"{name}: got {arr.size} values; expected {size}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name}: got non-finite values {arr.tolist()}; expected finite numbers")
        return arr


@dataclass(frozen=True)
class _View:
    """What the operator sees at one instant (base frame fr3_link0, SI units)."""

    tcp: np.ndarray
    rot: np.ndarray
    cube: np.ndarray
    cube_yaw: float
    width: float
    #: [m/s] how fast the opening changes
    width_rate: float
    closing: bool
    #: [m/s] how fast the cube rises
    cube_rise: float
