"""operator_node: the simulated operator on the topics a person's SpaceMouse or gamepad publishes.

A thin adapter around :class:`mechanic_rl_ros.sim.operator.SimulatedOperator` (its module docstring says when
it takes over and how it corrects), for the embedded simulation:

* reads the simulator's privileged ``TaskState`` (cube pose; ``task_state_topic``), the arm's
  ``/joint_states`` (arm joints by name; finger opening = the sum of the two finger joints) and the
  ``EpisodeEvent`` stream (``START`` resets the operator, an episode's end -- SUCCESS, FAILURE, TIMEOUT,
  ABORTED -- lets go at once);
* publishes, every 1 / ``rate`` s of the node's clock (sim time under ``use_sim_time``), what spacenav_node
  would: ``geometry_msgs/Twist`` on ``twist_topic`` (device units, base frame) and ``sensor_msgs/Joy`` on
  ``joy_topic`` (stamped; ``axes`` = the Twist's 6 components, ``buttons`` = [close, open]). Zeros while it
  does not intervene, or while its inputs are missing or older than ``input_timeout``, as a device at rest;
* logs each takeover and handback with its reason, and a lift it finishes itself (too little time left for
  the policy), at info; its phases at debug; publishes ``/diagnostics``.

A malformed input (wrong sizes or names, NaN) is logged (rate-limited) and ignored; the node keeps its last
good state.
"""
from __future__ import annotations

import math
import sys
from dataclasses import fields

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import Twist
from rclpy.node import Node
from sensor_msgs.msg import JointState, Joy

from mechanic_rl_ros.control import fr3
from mechanic_rl_ros.msg import EpisodeEvent, TaskState
from mechanic_rl_ros.nodes.common import Param, RateLimitedLog, declare_parameters, publish_diagnostics, run_node
from mechanic_rl_ros.sim.operator import OperatorConfig, SimulatedOperator
from mechanic_rl_ros.sim.tasks import TASK_STATE_DIM, TASK_STATE_FIELDS
from mechanic_rl_ros.wire import topics

#: events that end an episode: the operator lets go
_ENDS = {EpisodeEvent.SUCCESS: "success", EpisodeEvent.FAILURE: "failure", EpisodeEvent.TIMEOUT: "timeout",
         EpisodeEvent.ABORTED: "aborted"}

#: the operator's own tunables, one parameter per OperatorConfig field (description and range from its metadata)
OPERATOR_PARAMETERS = [Param(f.name, f.default, f.metadata["doc"],
                             range=None if f.metadata["range"] == (None, None) else f.metadata["range"])
                       for f in fields(OperatorConfig)]

#: every parameter (``ros2 param describe operator_node <name>``); config/operator.yaml sets them
PARAMETERS = [
    Param("rate", 20.0, "[Hz, node clock] how often the device state is published (policy_node needs >= 10 Hz "
          "while the operator intervenes, or it counts the stream as lost)", range=(10.0, 1000.0)),
    Param("input_timeout", 0.5, "[s, node clock] task state or joint states older than this: the operator sees "
          "nothing and rests (zeros)", range=(0.01, None)),
    Param("task_state_topic", topics.TASK_STATE.name, "the simulator's privileged task state "
          "(mechanic_rl_ros/TaskState, the 13 TASK_STATE_FIELDS)"),
    Param("joint_states_topic", topics.JOINT_STATES.name, "sensor_msgs/JointState with the 7 arm joints and the 2 "
          "finger joints, by name"),
    Param("episode_event_topic", topics.EPISODE_EVENTS.name, "mechanic_rl_ros/EpisodeEvent from reward_node: START "
          "resets the operator, an episode's end lets go"),
    Param("twist_topic", topics.TELEOP_TWIST.name, "geometry_msgs/Twist out: TCP velocity in device units, base frame"),
    Param("joy_topic", topics.TELEOP_JOY.name, "sensor_msgs/Joy out: buttons [close, open], axes = the Twist"),
    Param("error_log_period", 1.0, "[wall s] the same input error is logged at most once per this", range=(0.0, None)),
    Param("diagnostics_period", 1.0, "[wall s] period of /diagnostics", range=(0.01, None)),
    *OPERATOR_PARAMETERS,
]


def _seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


class OperatorNode(Node):
    def __init__(self) -> None:
        super().__init__("operator_node")
        self.cfg = cfg = declare_parameters(self, PARAMETERS)
        try:
            config = OperatorConfig(**{p.name: cfg[p.name] for p in OPERATOR_PARAMETERS})
        except ValueError as exc:  # a relation between two parameters (ranges are checked by rclpy)
            raise ValueError(str(exc).replace("OperatorConfig.", "parameter ")) from None
        self.operator = SimulatedOperator(config)
        self.log = RateLimitedLog(self, cfg["error_log_period"])
        t = topics
        self.twist_pub = self.create_publisher(t.TELEOP_TWIST.type, cfg["twist_topic"], t.TELEOP_TWIST.publisher)
        self.joy_pub = self.create_publisher(t.TELEOP_JOY.type, cfg["joy_topic"], t.TELEOP_JOY.publisher)
        self.diag_pub = self.create_publisher(t.DIAGNOSTICS.type, t.DIAGNOSTICS.name, t.DIAGNOSTICS.qos)
        self.create_subscription(t.TASK_STATE.type, cfg["task_state_topic"], self._on_task_state, t.TASK_STATE.qos)
        self.create_subscription(t.JOINT_STATES.type, cfg["joint_states_topic"], self._on_joint_states,
                                 t.JOINT_STATES.qos)
        self.create_subscription(t.EPISODE_EVENTS.type, cfg["episode_event_topic"], self._on_event,
                                 t.EPISODE_EVENTS.qos)
        #: the last good inputs and when they came [s, node clock]: task state [13]; arm joints [7], finger opening
        self.state: np.ndarray | None = None
        self.state_at = -math.inf
        self.q: np.ndarray | None = None
        self.width = 0.0
        self.joints_at = -math.inf
        #: the running episode (None: between episodes) and the newest one heard of
        self.episode: int | None = None
        self.newest = -1
        self.counts = {"takeovers": 0, "handbacks": 0, "cut_short": 0, "inputs_rejected": 0, "stale_ticks": 0}
        self.reasons: dict[str, int] = {}
        self.phase = "idle"  #: the operator's phase at the last tick (its changes are logged at debug level)
        self.create_timer(1.0 / cfg["rate"], self._tick)
        self.create_timer(cfg["diagnostics_period"], self._publish_diagnostics, clock=rclpy.clock.Clock())
        self.get_logger().info(f"simulated operator ready: {cfg['rate']:.0f} Hz on {cfg['twist_topic']} and "
                               f"{cfg['joy_topic']}; reaction {config.reaction_delay} s, at most "
                               f"{config.max_takeovers} takeovers an episode")

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # ----------------------------------------------------------------- inputs
    def _reject(self, topic: str, why: str) -> None:
        self.counts["inputs_rejected"] += 1
        self.log.error(topic, f"{topic}: {why}; ignored, keeping the last good one")

    def _on_task_state(self, msg: TaskState) -> None:
        names, values = list(msg.names), np.asarray(msg.values, dtype=np.float64)
        if names and names != list(TASK_STATE_FIELDS):
            return self._reject(self.cfg["task_state_topic"], f"names {names}; expected {list(TASK_STATE_FIELDS)}")
        if values.shape != (TASK_STATE_DIM,) or not np.all(np.isfinite(values)):
            return self._reject(self.cfg["task_state_topic"], f"values {values.tolist()}; expected "
                                f"{TASK_STATE_DIM} finite numbers")
        self.state, self.state_at = values, self._now()

    def _on_joint_states(self, msg: JointState) -> None:
        names, pos = list(msg.name), np.asarray(msg.position, dtype=np.float64)
        missing = [n for n in fr3.ALL_JOINT_NAMES if n not in names]
        if missing or len(pos) != len(names):
            return self._reject(self.cfg["joint_states_topic"], f"name {names} with {len(pos)} positions; expected "
                                f"{list(fr3.ALL_JOINT_NAMES)} each with a position")
        picked = pos[[names.index(n) for n in fr3.ALL_JOINT_NAMES]]
        if not np.all(np.isfinite(picked)):
            return self._reject(self.cfg["joint_states_topic"], f"positions {picked.tolist()}; expected finite")
        self.q, self.width, self.joints_at = picked[:7], float(picked[7:].sum()), self._now()

    def _on_event(self, msg: EpisodeEvent) -> None:
        episode, now = int(msg.episode), self._now()
        if episode < self.newest:
            return  # an older episode's event (a transient-local replay)
        self.newest = episode
        if msg.event == EpisodeEvent.START:
            stamp = _seconds(msg.header.stamp)
            self.operator.reset(stamp if 0.0 < stamp <= now else now)
            self.episode = episode
        elif msg.event in _ENDS and self.episode == episode:
            lasted = self.operator.stop(now)
            self.episode = None
            if lasted is not None:
                self.counts["cut_short"] += 1
                self.get_logger().info(f"episode {episode} ended ({_ENDS[msg.event]}) {lasted:.1f} s into an "
                                       f"intervention ({self.phase}); letting go")
            self.phase = "idle"

    # ------------------------------------------------------------------- tick
    def _tick(self) -> None:
        now = self._now()
        cmd = None
        if self.episode is not None and self.state is not None and self.q is not None:
            if now - min(self.state_at, self.joints_at) <= self.cfg["input_timeout"]:
                cmd = self.operator.act(now, self.q, self.width, self.state)
            else:
                self.counts["stale_ticks"] += 1
                self.log.info("stale", f"inputs older than {self.cfg['input_timeout']} s (task state "
                              f"{now - self.state_at:.2f} s, joint states {now - self.joints_at:.2f} s): resting",
                              period=5.0)
        if cmd is not None and cmd.event:
            self._log_event(cmd, now)
        if cmd is not None and cmd.phase != self.phase:
            change = (f"episode {self.episode}: {self.phase} -> {cmd.phase} {cmd.intervening_for:.1f} s into the "
                      "intervention")
            if cmd.phase == "finish":
                self.get_logger().info(change + ": too little time left for the policy, lifting on to the goal")
            else:
                self.get_logger().debug(change)
            self.phase = cmd.phase
        linear = cmd.linear if cmd is not None else np.zeros(3)
        angular = cmd.angular if cmd is not None else np.zeros(3)
        buttons = cmd.buttons if cmd is not None else (0, 0)
        twist = Twist()
        twist.linear.x, twist.linear.y, twist.linear.z = (float(v) for v in linear)
        twist.angular.x, twist.angular.y, twist.angular.z = (float(v) for v in angular)
        joy = Joy(axes=[float(v) for v in (*linear, *angular)], buttons=[int(b) for b in buttons])
        joy.header.stamp = self.get_clock().now().to_msg()
        self.twist_pub.publish(twist)
        self.joy_pub.publish(joy)

    def _log_event(self, cmd, now: float) -> None:
        into = self.operator.episode_time(now) or 0.0
        if cmd.event == "takeover":
            self.counts["takeovers"] += 1
            self.reasons[cmd.reason] = self.reasons.get(cmd.reason, 0) + 1
            self.get_logger().info(f"episode {self.episode}: takeover ({cmd.reason}) {into:.1f} s into the episode, "
                                   f"starting with {cmd.phase}")
        else:
            self.counts["handbacks"] += 1
            self.get_logger().info(f"episode {self.episode}: handback after {cmd.intervening_for:.1f} s "
                                   f"({cmd.reason}) {into:.1f} s into the episode")

    def _publish_diagnostics(self) -> None:
        op = self.operator
        running = "no episode" if self.episode is None else f"episode {self.episode}"
        message = f"{running}: {'intervening (' + op.reason + ', ' + op.phase + ')' if op.intervening else 'watching'}"
        values = {**self.counts, **{f"takeovers_{k}": v for k, v in self.reasons.items()},
                  "takeovers_this_episode": op.takeovers}
        publish_diagnostics(self, self.diag_pub, "operator_node: simulated operator", "sim", DiagnosticStatus.OK,
                            message, values)


def main(argv: list[str] | None = None) -> int:
    return run_node(OperatorNode, argv)


if __name__ == "__main__":
    sys.exit(main())
