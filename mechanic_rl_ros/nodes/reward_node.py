"""reward_node: per-step rewards, episode bookkeeping and resets.

A thin adapter around :class:`mechanic_rl_ros.control.episodes.EpisodeBook`.

* listens to the policy's executed steps (``Transition``, only episode / step /
  stamp are used) and, in ``sim`` mode, to the simulator's privileged
  ``TaskState``; in ``real`` mode a timer at the control rate stands in for the
  task state and the operator ends episodes with keys on ``operator_topic``
  (std_msgs/String: ``success``, ``failure``, ``intervention``);
* publishes ``StepReward`` for every executed step of a running episode and
  ``EpisodeEvent`` (START, SUCCESS, FAILURE, TIMEOUT, RESET_DONE, INTERVENTION);
* resets between episodes: ``sim`` calls the simulator's ResetEpisode service
  (seed = ``seed_base`` + episode) and stamps START with the reset instant it
  answers, so that policy_node acts at that instant as the headless
  environment does; ``real`` drives the arm to the home pose
  through the controller's command topic with the stack's safety filter
  (trajectories within the FR3's 1 kHz limits at ``home_velocity_scale``), and
  opens the gripper (franka_gripper move action);
* reads the robot's state (franka_msgs/FrankaRobotState, ``robot_state_topic``;
  the newest message, 20 times a second):
  when the robot leaves move mode (a reflex, a user stop) or its state stops
  coming for ``robot_state_timeout`` (franka_ros2 from 3.3 deactivates the
  broadcaster with the hardware on an error) under a running episode, the
  episode ends with ``ABORTED`` (the learner drops all of it) and no reset
  starts until the robot is back in move mode. Recovery is franka_ros2's
  sequence: franka_hardware's error-recovery action, then controller_manager's
  set_hardware_component_state (``hardware_component`` active) and
  switch_controller (``recovery_controllers``); automatically in ``sim`` mode,
  on the operator's ``recover`` key in ``real`` mode (parameter ``recovery``),
  since on a real arm someone should look at why it stopped;
* when policy_node stops commanding in the running episode while the robot is
  fine (a person's teleop stream went silent while they steered: the arm
  holds), the episode ends with ``ABORTED`` too, and the next one starts;
* with ``learner_pace`` > 0, holds each episode's start until the learner (its ``LearnerStats``) has made
  that many gradient steps per robot minute while it still owes some (:mod:`mechanic_rl_ros.control.pace`):
  a simulated run then learns as much per robot minute whatever the machine's speed;
* publishes ``/diagnostics`` (episodes, success rate, late steps, robot errors, time held for the learner).
"""
from __future__ import annotations

import sys
import time
from collections import deque

import rclpy
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.node import Node
from std_msgs.msg import String

from mechanic_rl_ros.msg import EpisodeEvent, LearnerStats, StepReward, TaskState, Transition
from mechanic_rl_ros.control.episodes import EpisodeBook, EpisodeConfig, Outcome, StepResult, TaskSample
from mechanic_rl_ros.control.pace import LearnerPace, PaceConfig
from mechanic_rl_ros.nodes.franka import FrankaRecovery
from mechanic_rl_ros.nodes.reward_home import HomeMotion
from mechanic_rl_ros.nodes.reward_params import PARAMETERS, home_safety_config
from mechanic_rl_ros.nodes.common import (LatestMessage, declare_parameters, publish_diagnostics, run_node,
                                         set_realtime_priority)
from mechanic_rl_ros.wire import topics
from mechanic_rl_ros.wire.robot_state import RobotStatus, read_robot_state

_EVENT = {Outcome.SUCCESS: EpisodeEvent.SUCCESS, Outcome.FAILURE: EpisodeEvent.FAILURE, Outcome.TIMEOUT: EpisodeEvent.TIMEOUT}


def stamp_seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


class RewardNode(Node):
    def __init__(self) -> None:
        super().__init__("reward_node")
        self.cfg = cfg = declare_parameters(self, PARAMETERS)
        set_realtime_priority(self, int(cfg["realtime_priority"]))  # its homing motions are commands too
        self.book = EpisodeBook(EpisodeConfig(
            reward=cfg["reward"], max_steps=int(cfg["max_steps"]), control_dt=float(cfg["control_dt"]),
            terminate_on_success=bool(cfg["terminate_on_success"]),
        ))
        t = topics
        # transient-local: a restarted learner gets the last history_depth rewards replayed
        self.reward_pub = self.create_publisher(t.STEP_REWARDS.type, cfg["step_reward_topic"],
                                                t.STEP_REWARDS.profile(int(cfg["history_depth"])))
        self.event_pub = self.create_publisher(t.EPISODE_EVENTS.type, cfg["episode_event_topic"], t.EPISODE_EVENTS.qos)
        self.diag_pub = self.create_publisher(t.DIAGNOSTICS.type, t.DIAGNOSTICS.name, t.DIAGNOSTICS.qos)
        self.create_subscription(t.TRANSITIONS.type, cfg["transition_topic"], self._on_transition,
                                 t.TRANSITIONS.profile(int(cfg["history_depth"])))
        self.create_subscription(t.OPERATOR_KEY.type, cfg["operator_topic"], self._on_operator, t.OPERATOR_KEY.qos)
        self.sim = cfg["mode"] == "sim"
        if self.sim:
            self.create_subscription(t.TASK_STATE.type, cfg["task_state_topic"], self._on_task_state, t.TASK_STATE.qos)
            self.reset_client = self.create_client(t.RESET.type, cfg["reset_service"])
            self.home: HomeMotion | None = None  # the real mode's reset (below)
            home_safety_config(cfg)  # its home_* parameters are checked at start-up in sim mode too
        else:
            self.create_timer(cfg["control_dt"], self._on_real_tick)
            self.home = HomeMotion(self, cfg, on_home=lambda: self._begin(detail="home"))
        self.next_episode = 0
        self.resetting = False
        self.reset_started = 0.0
        self.outcomes: deque[bool] = deque(maxlen=int(cfg["success_window"]))
        self.counts = {"episodes": 0, "successes": 0, "rewards_published": 0, "resets_failed": 0,
                       "episodes_aborted": 0, "robot_errors": 0, "recoveries": 0, "recoveries_failed": 0,
                       "resets_without_policy_stop": 0}
        #: the last robot state and when it came [s, node clock]; what stopped the robot while it is stopped
        self.robot: RobotStatus | None = None
        self.robot_received = -float("inf")
        self.robot_fault: str | None = None
        self.recovery: FrankaRecovery | None = None  # franka_ros2's recovery sequence, when the robot is watched
        self.last_recovery = -float("inf")
        #: the last episode that ended and when [monotonic s]; the last one policy_node stopped commanding in
        self.ended: tuple[int, float] | None = None
        self.policy_stopped = -1
        #: policy_node said it is ready (any message on policy_stopped_topic): wait_for_policy lets episodes start
        self.policy_heard = False
        if cfg["wait_for_policy"] and not cfg["policy_stopped_topic"]:
            raise ValueError("parameter wait_for_policy: true needs policy_stopped_topic, where policy_node says it "
                             "is ready; got an empty policy_stopped_topic")
        if cfg["policy_stopped_topic"]:
            self.create_subscription(t.POLICY_STOPPED.type, cfg["policy_stopped_topic"], self._on_policy_stopped,
                                     t.POLICY_STOPPED.qos)
        self.pace = LearnerPace(PaceConfig(float(cfg["learner_pace"]), float(cfg["control_dt"]),
                                           float(cfg["learner_pace_max_wait"])))
        if self.pace.enabled:
            self.create_subscription(LearnerStats, cfg["learner_stats_topic"], self._on_learner_stats,
                                     t.LEARNER_STATS.qos)
        self.watch_robot = bool(cfg["robot_state_topic"])
        self.automatic_recovery = cfg["recovery"] == "automatic" or (cfg["recovery"] == "auto" and self.sim)
        if self.watch_robot:
            # the 1 kHz robot state, newest only, taken by the 20 Hz episode watch (LatestMessage)
            self.robot_state = LatestMessage(self, t.ROBOT_STATE.type, cfg["robot_state_topic"], t.ROBOT_STATE.qos,
                                             "robot_state")
            self.recovery = FrankaRecovery(self, cfg["error_recovery_action"], cfg["controller_manager"],
                                           cfg["hardware_component"], cfg["recovery_controllers"],
                                           self._on_recovery_done)
        self.create_timer(cfg["diagnostics_period"], self._publish_diagnostics, clock=rclpy.clock.Clock())
        self.create_timer(0.05, self._drive_episodes, clock=rclpy.clock.Clock())
        self.get_logger().info(f"reward node ready: mode={cfg['mode']} reward={cfg['reward']} max_steps={cfg['max_steps']}"
                               + (f", each episode's start held until the learner has made {cfg['learner_pace']:g} "
                                  f"gradient steps per robot minute" if self.pace.enabled else ""))

    # ----------------------------------------------------------- episodes
    def _drive_episodes(self) -> None:
        """Start the next episode's reset whenever none is running or resetting and the robot is in move mode."""
        if self.watch_robot:
            self._take_robot_state()
            if not self._watch_robot():
                return
        if self.book.running or self.resetting:
            if self.resetting and time.monotonic() - self.reset_started > self.cfg["reset_timeout"]:
                self.counts["resets_failed"] += 1
                self.get_logger().error(f"reset of episode {self.next_episode} timed out after "
                                        f"{self.cfg['reset_timeout']} s; retrying")
                self.resetting = False
            return
        if self.cfg["max_episodes"] and self.counts["episodes"] >= self.cfg["max_episodes"]:
            return  # (episodes that ended with an outcome; an aborted one is made up by the next)
        if self.cfg["wait_for_policy"] and not self.policy_heard:
            self.get_logger().info(f"waiting for policy_node to be ready ({self.cfg['policy_stopped_topic']}): it "
                                   f"loads the policy, and holds the first episode for the learner's offline stage "
                                   f"if there is one", throttle_duration_sec=30.0)
            return
        if not self._policy_stopped() or not self._learner_caught_up():
            return
        self.resetting, self.reset_started = True, time.monotonic()
        if self.sim:
            if not self.reset_client.service_is_ready():
                self.resetting = False
                self.get_logger().info(f"waiting for {self.cfg['reset_service']}", throttle_duration_sec=5.0)
                return
            seed = int(self.cfg["seed_base"]) + self.next_episode
            future = self.reset_client.call_async(topics.RESET.type.Request(seed=seed))
            future.add_done_callback(self._on_reset_done)
        else:
            self.home.start()

    def _on_policy_stopped(self, msg) -> None:
        if not self.policy_heard and self.cfg["wait_for_policy"] and self.next_episode == 0:
            self.get_logger().info("policy_node is ready: episodes start")
        self.policy_heard = True
        self.policy_stopped = max(self.policy_stopped, int(msg.data))
        if self.book.running and int(msg.data) == self.book.episode and self._robot_problem() is None:
            self._abort("policy_node stopped commanding under the running episode (its log says why: a lost "
                        "teleop stream)")

    def _policy_stopped(self) -> bool:
        """True once policy_node has stopped commanding in the episode that ended last (or after the timeout)."""
        if not self.cfg["policy_stopped_topic"] or self.ended is None or self.policy_stopped >= self.ended[0]:
            return True
        waited = time.monotonic() - self.ended[1]
        if waited < self.cfg["policy_stop_timeout"]:
            return False
        self.counts["resets_without_policy_stop"] += 1
        self.get_logger().warning(f"policy_node did not say it stopped commanding in episode {self.ended[0]} within "
                                  f"{self.cfg['policy_stop_timeout']} s ({self.cfg['policy_stopped_topic']}); "
                                  f"resetting anyway")
        self.policy_stopped = self.ended[0]
        return True

    def _on_learner_stats(self, msg: LearnerStats) -> None:
        self.pace.on_stats(int(msg.num_updates), int(msg.updates_owed))

    def _learner_caught_up(self) -> bool:
        """False while learner_pace holds the next episode for the learner (logged; the hold is counted)."""
        holding, gave_up = self.pace.holding_since is not None, self.pace.gave_up
        steps = self.counts["rewards_published"]  # every executed step is rewarded once
        why = self.pace.hold(time.monotonic(), steps)
        if why is not None:
            self.get_logger().info(f"episode {self.next_episode} waits: {why}", throttle_duration_sec=30.0)
            return False
        if self.pace.gave_up > gave_up:
            self.get_logger().warning(f"episode {self.next_episode} starts although the learner is behind: it did "
                                      f"not catch up within learner_pace_max_wait {self.cfg['learner_pace_max_wait']} "
                                      f"s (last report: {self.pace.updates} gradient steps, {self.pace.owed} owed)")
        elif holding:
            self.get_logger().info(f"episode {self.next_episode} starts: the learner has caught up "
                                   f"({self.pace.updates} gradient steps at {self.pace.robot_minutes(steps):.2f} robot min)")
        return True

    def _on_reset_done(self, future) -> None:
        res = future.result()
        if res is None or not res.success:
            self.counts["resets_failed"] += 1
            self.get_logger().error(f"reset failed: {getattr(res, 'message', 'no answer')}; retrying")
            self.resetting = False
            return
        self._begin(detail=f"seed={res.seed}", stamp=res.stamp)

    def _begin(self, detail: str, stamp=None) -> None:
        """RESET_DONE and START of the next episode, stamped ``stamp`` (the simulator's reset instant: the
        first state of the episode carries it) or, without one, now."""
        e = self.next_episode
        self.next_episode += 1
        self.book.start(e)
        self.resetting = False
        self._event(EpisodeEvent.RESET_DONE, detail, stamp)
        self._event(EpisodeEvent.START, detail, stamp)
        self.get_logger().info(f"episode {e} started ({detail})")

    def _event(self, kind: int, detail: str = "", stamp=None) -> None:
        ev = EpisodeEvent()
        ev.header.stamp = stamp if stamp is not None and (stamp.sec or stamp.nanosec) else self.get_clock().now().to_msg()
        ev.episode, ev.event, ev.steps = max(self.book.episode, 0), kind, self.book.steps_done
        ev.episode_return, ev.detail = float(self.book.episode_return), detail
        ev.intervened_steps = self.book.intervened_steps
        self.event_pub.publish(ev)

    def _publish(self, results: list[StepResult], stamp) -> None:
        for r in results:
            msg = StepReward()
            msg.header.stamp = stamp
            msg.episode, msg.step, msg.reward, msg.sparse_reward = r.episode, r.step, r.reward, r.sparse_reward
            msg.success, msg.terminal, msg.truncated = r.success, r.terminal, r.truncated
            self.reward_pub.publish(msg)
            self.counts["rewards_published"] += 1
            if r.outcome is not None:
                self.ended = (r.episode, time.monotonic())
                self.counts["episodes"] += 1
                self.counts["successes"] += r.outcome is Outcome.SUCCESS
                self.outcomes.append(r.outcome is Outcome.SUCCESS)
                self._event(_EVENT[r.outcome], f"return={self.book.episode_return:.3f}")
                rate = sum(self.outcomes) / len(self.outcomes)
                self.get_logger().info(
                    f"episode {r.episode} {r.outcome.value} after {r.step + 1} steps, return "
                    f"{self.book.episode_return:.3f}; success rate {rate:.2f} over last {len(self.outcomes)}")

    # ----------------------------------------------------------- callbacks
    def _on_transition(self, msg: Transition) -> None:
        try:
            self.book.step_executed(int(msg.episode), int(msg.step), stamp_seconds(msg.header.stamp),
                                    bool(msg.intervention))
        except ValueError as exc:
            self.get_logger().error(f"transition refused: {exc}", throttle_duration_sec=1.0)

    def _on_task_state(self, msg: TaskState) -> None:
        sample = TaskSample(stamp_seconds(msg.header.stamp), bool(msg.success), bool(msg.failure), float(msg.shaped_reward))
        self._publish(self.book.task_state(sample), msg.header.stamp)

    def _on_real_tick(self) -> None:
        now = self.get_clock().now()
        sample = TaskSample(now.nanoseconds * 1e-9, False, False, 0.0)
        self._publish(self.book.task_state(sample), now.to_msg())

    def _on_operator(self, msg: String) -> None:
        key = msg.data.strip().lower()
        if key == "recover":
            if self.watch_robot and self.robot_fault is not None and not self._recovering() and self._policy_stopped():
                self._recover()
            else:
                self.get_logger().info(f"operator 'recover': nothing to recover from (robot fault: "
                                       f"{self.robot_fault}, recovery running: {self._recovering()})")
            return
        if key == "intervention":
            self._event(EpisodeEvent.INTERVENTION, "operator")
            return
        outcome = {"success": Outcome.SUCCESS, "failure": Outcome.FAILURE}.get(key)
        if outcome is None:
            self.get_logger().error(f"{self.cfg['operator_topic']}: data {msg.data!r} is not one of "
                                    "'success', 'failure', 'intervention', 'recover'")
            return
        result = self.book.operator(outcome)
        if result is not None:
            self._publish([result], self.get_clock().now().to_msg())
        elif not self.book.running and not self.resetting:
            self.ended = (self.book.episode, time.monotonic())
            self._event(_EVENT[outcome], "operator, no step pending")

    def _take_robot_state(self) -> None:
        """The newest robot state, if one came since the last look (its age counts from the look that took it)."""
        msg = self.robot_state.take()
        if msg is None:
            return
        try:
            status = read_robot_state(msg)
        except ValueError as exc:
            self.get_logger().error(f"{self.robot_state.topic}: {exc}", throttle_duration_sec=1.0)
            return
        self.robot, self.robot_received = status, self._clock_now()

    def destroy_node(self) -> None:
        if self.watch_robot:
            self.robot_state.destroy()
        super().destroy_node()

    def _clock_now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _robot_problem(self) -> str | None:
        """Why the robot cannot act now, or None."""
        if self.robot is None:
            return "no robot state received yet"
        age = self._clock_now() - self.robot_received
        if age > self.cfg["robot_state_timeout"]:
            return (f"robot state silent for {age:.2f} s (franka_ros2 deactivates its broadcaster on an error; "
                    f"last mode {self.robot.describe()})")
        return None if self.robot.executing else f"robot {self.robot.describe()}"

    def _watch_robot(self) -> bool:
        """True when the robot is in move mode. Else: a fault under an episode or a reset ends it (ABORTED);
        an automatic recovery starts when due."""
        problem = self._robot_problem()
        if problem is None:
            if self.robot_fault is not None:
                last = ", ".join(self.robot.last_errors) or "none"
                self.get_logger().info(f"robot back in move mode after: {self.robot_fault}; last motion errors: "
                                       f"{last}; episodes resume")
                self.robot_fault = None
            return True
        idle = self.robot is not None and self.robot.mode == "idle" and not self.robot.errors
        if self.robot_fault is None and (self.book.running or self.resetting or not (idle or self.robot is None)):
            self._on_fault(problem)
        if self.robot_fault is None:
            # before the first robot state, or idle between episodes (a controller not started yet): wait
            self.get_logger().info(f"waiting for the robot: {problem}", throttle_duration_sec=5.0)
        elif (self.automatic_recovery and not self._recovering()
              and time.monotonic() - self.last_recovery > self.cfg["recovery_retry"] and self._policy_stopped()):
            self._recover()  # (only once policy_node stopped: a command after re-activation would be stale)
        return False

    def _abort(self, why: str) -> None:
        """End the running episode without an outcome (ABORTED: nothing of it is learned from)."""
        e = self.book.episode
        self.book.abort()
        self.ended = (e, time.monotonic())
        self.counts["episodes_aborted"] += 1
        self._event(EpisodeEvent.ABORTED, why)
        self.get_logger().error(f"{why}; episode {e} aborted, nothing of it is learned from")

    def _on_fault(self, problem: str) -> None:
        self.robot_fault = problem
        self.counts["robot_errors"] += 1
        if self.book.running:
            self._abort(problem)
        else:
            self.get_logger().error(f"{problem} (no episode running)")
        self.resetting = False  # a reset under way restarts once the robot moves again
        if self.home is not None:
            self.home.cancel()
        if not self.automatic_recovery:
            self.get_logger().warning(f"press 'recover' on {self.cfg['operator_topic']} once the arm is clear, to run "
                                      f"{self.cfg['error_recovery_action']} and re-activate "
                                      f"{self.cfg['hardware_component']} and {list(self.cfg['recovery_controllers'])}")

    # -------------------------------------------------------- error recovery
    def _recover(self) -> None:
        """franka_ros2's recovery (:class:`FrankaRecovery`), if its interfaces are there."""
        self.last_recovery = time.monotonic()
        missing = self.recovery.missing()
        if missing:
            self.counts["recoveries_failed"] += 1
            self.get_logger().error(f"recovery impossible, not available: {missing}; the robot stays stopped "
                                    f"(retrying in {self.cfg['recovery_retry']} s)", throttle_duration_sec=5.0)
            return
        self.recovery.start()

    def _recovering(self) -> bool:
        return self.recovery is not None and self.recovery.running

    def _on_recovery_done(self, success: bool, why: str) -> None:
        if success:
            self.counts["recoveries"] += 1
            self.get_logger().info("recovery done; waiting for the robot state in move mode")
        else:
            self.counts["recoveries_failed"] += 1
            self.get_logger().error(f"recovery failed: {why}")

    def _publish_diagnostics(self) -> None:
        rate = sum(self.outcomes) / len(self.outcomes) if self.outcomes else 0.0
        values = {**self.counts, "episode": self.book.episode, "late_steps": self.book.late_steps,
                  "pending_steps": self.book.pending_steps(), "success_rate": f"{rate:.3f}"}
        if self.pace.enabled:
            values.update(learner_pace_holds=self.pace.holds, learner_pace_held_s=f"{self.pace.held_seconds:.1f}",
                          learner_pace_gave_up=self.pace.gave_up, learner_updates=self.pace.updates)
        message = f"episode {self.book.episode} {'running' if self.book.running else 'resetting'}"
        publish_diagnostics(self, self.diag_pub, "reward_node: episodes", self.cfg["mode"], DiagnosticStatus.OK,
                            message, values)


def main(argv: list[str] | None = None) -> int:
    return run_node(RewardNode, argv)

if __name__ == "__main__":
    sys.exit(main())
