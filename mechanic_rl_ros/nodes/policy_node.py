"""policy_node: the diffusion policy at control rate, behind the safety filter.

* assembles observations from the preprocessed camera image(s) and
  ``/joint_states`` (matched by joint name, time-aligned within ``max_skew``),
  keeps the T_o history, and runs inference on a worker thread, starting the
  next chunk ``replan_margin`` actions before the current one runs out; that
  chunk then executes the actions predicted for the instants it runs at
  (:meth:`DiffusionPolicy.executable` with ``lead``), not those for the
  instant of its observation, which has passed;
* executes the chunk at ``control_rate``; every command passes
  :class:`mechanic_rl_ros.control.safety.SafetyFilter`, which turns it into a
  JointTrajectory within the FR3's 1 kHz limits (position, position-dependent
  velocity, acceleration, jerk, TCP workspace above the table, TCP speed)
  that ends at rest, for the JointTrajectoryController (``command_type``
  trajectory; ``array`` sends only the next target, for a forward
  controller); the gripper width goes to franka_gripper's ``move`` /
  ``grasp`` actions, one goal at a time with hysteresis
  (:class:`mechanic_rl_ros.control.gripper.GripperCommander`). Whether a tick
  sends, *holds* (the committed trajectory, braking to rest) or sends nothing
  -- a stale observation, a missing chunk, a dead model, a tick off the
  lock-step grid or late -- is :class:`mechanic_rl_ros.control.tick.ControlTick`'s decision;
* publishes a ``Transition`` for every executed step (the chunk's observation,
  denoising chain and behaviour log-probabilities on its first step);
* hot-swaps the fine-tuned network from ``PolicyWeights`` only between chunks,
  after checking encoding, sha256, architecture id, tensor names/shapes and
  finiteness; bad weights are refused with the reason and the last good ones
  stay;
* acts only inside an episode (``EpisodeEvent`` START .. SUCCESS / FAILURE /
  TIMEOUT / ABORTED from reward_node) and is silent during resets;
* watches the robot's mode (franka_msgs/FrankaRobotState on
  ``robot_state_topic``, 1 kHz on an FR3: each tick takes the newest message,
  :class:`~mechanic_rl_ros.nodes.common.LatestMessage`): out of move mode (a reflex, a user stop) it stops
  acting at once and publishes nothing more for that episode (reward_node
  aborts it, the learner drops it); without a robot state newer than
  ``max_age`` it sends nothing; the next episode's safety filter is seeded
  from a joint state measured after its reset;
* publishes the predicted TCP path as a MarkerArray for RViz and /diagnostics.
"""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from std_msgs.msg import Int64

from mechanic_rl_ros.control import fr3
from mechanic_rl_ros.control.gripper import GripperCommander
from mechanic_rl_ros.control.chunk_loop import Chunk
from mechanic_rl_ros.control.observation import ObservationAssembler
from mechanic_rl_ros.control.decision import Decision
from mechanic_rl_ros.control.safety import SafetyFilter
from mechanic_rl_ros.control.teleop import LOST, OPERATOR, Takeover
from mechanic_rl_ros.control.tick import GIVE_UP, HOLD, INFO_PERIOD, ControlTick, Verdict, filter_seed
from mechanic_rl_ros.msg import EpisodeEvent
from mechanic_rl_ros.nodes.common import (GC_PAUSES, RateLimitedLog, command_message_type, declare_parameters,
                                         joint_command, path_marker, publish_diagnostics, run_node,
                                         set_realtime_priority)
from mechanic_rl_ros.nodes.franka import GripperGoals
from mechanic_rl_ros.nodes.policy_inputs import PolicyInputs
from mechanic_rl_ros.nodes.policy_planning import start_planning
from mechanic_rl_ros.nodes.policy_weights import seconds
from mechanic_rl_ros.nodes.policy_params import PARAMETERS, gripper_config, safety_config, teleop_config, tick_config
from mechanic_rl_ros.policy import DiffusionPolicy
from mechanic_rl_ros.policy.planner_process import PlannerProcess
from mechanic_rl_ros.wire import topics
from mechanic_rl_ros.wire.transition import ExecutedStep, transition_message

ENDS = (EpisodeEvent.SUCCESS, EpisodeEvent.FAILURE, EpisodeEvent.TIMEOUT, EpisodeEvent.ABORTED)


#: the counters of ticks that sent no fresh action while an episode moved (or, on sim time, late / off the grid):
#: missed ticks, as bench_stack reports them
MISSED_TICK_COUNTS = ("hold_no_action", "hold_stale", "hold_model", "ticks_late", "ticks_off_grid")


class PolicyNode(Node):
    def __init__(self) -> None:
        super().__init__("policy_node")
        self.cfg = cfg = declare_parameters(self, PARAMETERS)
        realtime = set_realtime_priority(self, int(cfg["realtime_priority"]))  # the tick and its inputs
        cmd_type = command_message_type(cfg["command_type"])
        if not cfg["checkpoint"]:
            raise ValueError("parameter checkpoint: empty; expected a policy checkpoint directory "
                             "(model.safetensors + config.json, e.g. from 'mechanic-rl pretrain')")
        torch.set_num_threads(int(cfg["torch_threads"]))
        self.policy = DiffusionPolicy.from_checkpoint(Path(cfg["checkpoint"]))
        self.policy.eval()
        pcfg = self.policy.cfg
        self.cameras = tuple(pcfg.cameras)
        if len(cfg["image_topics"]) < len(self.cameras):
            raise ValueError(f"parameter image_topics: {len(cfg['image_topics'])} topics for the policy's cameras "
                             f"{list(self.cameras)}")
        self.dt = 1.0 / cfg["control_rate"]
        self.assembler = ObservationAssembler(self.cameras, pcfg.lowdim_keys, pcfg.image_size,
                                              cfg["max_age"], cfg["max_skew"])
        if not 0 <= cfg["replan_margin"] <= pcfg.max_lead:
            raise ValueError(f"parameter replan_margin: {cfg['replan_margin']}; expected 0..{pcfg.max_lead} "
                             f"(a chunk planned that early must still hold T_a = {pcfg.action_horizon} of the "
                             f"policy's T_p = {pcfg.pred_horizon} predicted actions)")
        # the accepted weights and their intake, the planner (warmed up before the first tick) and its thread
        self.selector, self.weights, self.planner, self.planning = start_planning(
            self.policy, cfg, self.dt, sim_time=self._sim_time(), realtime=realtime, now=self._now,
            logger=self.get_logger(), problem=self._problem)
        self.ticker = ControlTick(tick_config(cfg, self.dt), sim_time=self._sim_time())
        self.safety = SafetyFilter(replace(safety_config(cfg, self.dt), switch_lead=self.ticker.lead()))
        self.episode: int | None = None
        self.episode_started = -float("inf")
        self.idle_tick_at = -float("inf")  # [s] the last tick without an episode
        self.step = 0
        #: a person's takeover (None: teleop off); the last command sent: its 7 joint targets and gripper width
        self.takeover = Takeover(teleop_config(cfg), self.dt) if cfg["teleop"] else None
        self.sent: np.ndarray | None = None
        #: hold_* count ticks of a moving episode that sent no fresh action (missed ticks); start_wait counts the
        #: ticks of an episode before its first action (the arm at rest while its first inputs and chunk come)
        self.counts = {"commands": 0, "transitions": 0, "start_wait": 0, "hold_stale": 0, "hold_no_action": 0,
                       "hold_model": 0,
                       "clamped": 0, "inputs_rejected": 0,
                       "hold_robot_state": 0, "episodes_given_up": 0, "ticks_late": 0,
                       "ticks_off_grid": 0, "sent_late": 0, "inputs_behind": 0, "hold_teleop_lost": 0,
                       "ticks_on_tail": 0, "commands_lost": 0, "hold_no_controller": 0}
        self.last_problem = ""
        self.log = RateLimitedLog(self, cfg["error_log_period"])
        GC_PAUSES.take_over()  # the collector runs where the tick says, never in the middle of one

        t = topics
        arm = t.ARM_COMMAND if cmd_type is t.ARM_COMMAND.type else t.ARM_TRAJECTORY
        self.cmd_pub = self.create_publisher(cmd_type, cfg["command_topic"], arm.qos)
        self.gripper = GripperCommander(gripper_config(cfg))
        self.gripper_goals = GripperGoals(self, cfg["gripper_namespace"], self.gripper, self._problem)
        self.stopped_episode = -1
        self.stopped_pub = self.create_publisher(t.POLICY_STOPPED.type, cfg["stopped_topic"], t.POLICY_STOPPED.qos)
        self.transition_pub = self.create_publisher(t.TRANSITIONS.type, cfg["transition_topic"],
                                                    t.TRANSITIONS.profile(int(cfg["transition_queue_depth"])))
        self.marker_pub = self.create_publisher(t.PREDICTED_PATH.type, cfg["marker_topic"], t.PREDICTED_PATH.qos)
        self.diag_pub = self.create_publisher(t.DIAGNOSTICS.type, t.DIAGNOSTICS.name, t.DIAGNOSTICS.qos)
        # inputs run beside the control tick (two executor threads), so a tick
        # on sim time can wait for the inputs of its own instant. rclpy's multi-threaded executor spins (holding
        # the GIL, starving the tick and the inference thread) while a ready message waits for its busy group, so
        # the long callbacks (weights: verification) and the ones published together with the joint states
        # (robot state) have groups of their own; the tick shares its group only with the episode events, which
        # reset what it uses
        inputs = MutuallyExclusiveCallbackGroup()
        # joint states, images, task state; the robot state and the teleop device are read by the tick
        self.inputs = PolicyInputs(self, cfg, self.cameras, pcfg.lowdim_keys, self.assembler, self.takeover, inputs,
                                   self.counts, self._problem, self._now, self.planning.suspend)
        self.create_subscription(t.WEIGHTS.type, cfg["weights_topic"], self._on_weights, t.WEIGHTS.qos,
                                 callback_group=MutuallyExclusiveCallbackGroup())
        self.create_subscription(t.EPISODE_EVENTS.type, cfg["episode_event_topic"], self._on_event,
                                 t.EPISODE_EVENTS.qos)
        self.create_timer(self.dt, self._tick)
        self.create_timer(cfg["diagnostics_period"], self._publish_diagnostics, clock=rclpy.clock.Clock(),
                          callback_group=MutuallyExclusiveCallbackGroup())
        self.get_logger().info(
            f"policy ready: {cfg['checkpoint']} arch {self.policy.arch_id} cameras={list(self.cameras)} "
            f"lowdim={list(pcfg.lowdim_keys)} T_o={pcfg.obs_horizon} T_p={pcfg.pred_horizon} T_a={pcfg.action_horizon} "
            f"K={pcfg.sampling.inference_steps} K'={pcfg.sampling.finetune_steps} at {cfg['control_rate']} Hz, "
            f"commands as {cfg['command_type']} on {cfg['command_topic']}, "
            + (f"selecting among {self.selector.cfg.num_candidates} proposals by the learner's critic"
               if self.selector else "the policy itself, its distilled layers swapped in from the learner"
               if self.weights.partial
               else f"DPPO ({'stochastic' if cfg['stochastic'] else 'deterministic'} sampling)"))

        #: whether reward_node may start the first episode (start_after_updates: after the learner's offline stage)
        self.ready = False
        if cfg["start_after_updates"] == 0:
            self._announce_ready("")
        else:
            self.get_logger().info(f"holding the arm before the first episode until the learner's weights of "
                                   f"{cfg['start_after_updates']} gradient steps (its offline stage on the "
                                   f"demonstrations) are verified")

    def _on_weights(self, msg) -> None:
        """PolicyWeights to the intake; the first verified ones of the offline stage's end make the node ready."""
        self.weights.on_message(msg)
        if (not self.ready and int(msg.num_updates) >= self.cfg["start_after_updates"]
                and self.weights.accepted(int(msg.version))):
            self._announce_ready(f"after the learner's offline stage ({msg.num_updates} gradient steps, weights "
                                 f"version {msg.version})")

    def _announce_ready(self, why: str) -> None:
        """Tell reward_node (stopped_topic, -1: no episode commanded yet) that the first episode may start."""
        self.ready = True
        if self.stopped_episode < 0:
            self.stopped_pub.publish(Int64(data=-1))
        if why:
            self.get_logger().info(f"ready for the first episode {why}")

    # ------------------------------------------------------------ logging
    def _problem(self, key: str, text: str) -> None:
        self.last_problem = text
        self.log.error(key, text)

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # ------------------------------------------------------------ robot and episodes
    def _robot_ready(self) -> bool:
        """False (and the episode given up, or the tick ended) unless the robot is known to be in move mode."""
        inputs = self.inputs
        if inputs.robot_state is None:
            return True
        inputs.take_robot_state()
        verdict = self.ticker.robot_ready(inputs.robot, self._now() - inputs.robot_state_received, self.cfg["max_age"])
        if verdict is None:
            return True
        if verdict.action != GIVE_UP:
            self._end_tick(verdict)
            return False
        self.counts[verdict.count] += 1
        self.get_logger().warning(f"{verdict.text}: episode {self.episode} given up, its commands would not "
                                  f"execute; acting again at the next episode")
        self._give_up()
        return False

    def _give_up(self) -> None:
        """Stop acting in this episode (the controller holds the last trajectory, which ends at rest)."""
        given_up, self.episode = self.episode, None
        self.planning.reset(-1)
        self.safety = SafetyFilter(self.safety.config)
        self._stopped(given_up)

    def _on_event(self, msg: EpisodeEvent) -> None:
        if msg.event == EpisodeEvent.START:
            if self.episode is not None and msg.episode <= self.episode:
                return  # a replayed (transient-local) event of an episode already seen
            self.episode, self.step, self.sent = int(msg.episode), 0, None
            self.planning.reset(self.episode)
            if self.takeover is not None:
                self.takeover.reset()
            self.safety = SafetyFilter(self.safety.config)
            self.gripper_goals.reset()
            #: the episode starts only from inputs measured at or after the reset that began it
            self.episode_started = seconds(msg.header.stamp)
            self.get_logger().info(f"episode {msg.episode}: acting")
            if self.ticker.start_missed(self.idle_tick_at, self.episode_started):
                self._tick()  # its instant's tick found no episode; the lock-step simulator waits for this one
        elif msg.event in ENDS:
            if self.episode == msg.episode:
                self.episode = None
                self.planning.reset(-1)
            self._stopped(int(msg.episode))
            GC_PAUSES.full()  # between episodes the arm is at rest

    def _stopped(self, episode: int) -> None:
        """Tell reward_node that nothing more is commanded for ``episode``: the reset may move the arm."""
        if episode > self.stopped_episode:
            self.stopped_episode = episode
            self.stopped_pub.publish(Int64(data=episode))

    # ------------------------------------------------------------ control
    def _tick(self) -> None:
        """One control period: the decisions are :class:`ControlTick`'s; this sends, publishes and counts."""
        if self.episode is None:
            self.idle_tick_at = self._now()
            self.planning.poll()
            GC_PAUSES.young()
            return
        if not self._robot_ready():
            return
        tick, now = self.ticker, self._now()
        tick.sim_time = self._sim_time()
        if (verdict := tick.controller_listening(self.cmd_pub.get_subscription_count(),
                                                 self.cmd_pub.topic_name)) is not None:
            return self._end_tick(verdict)
        if self.safety.initialized and (off := tick.controller_follows(self.inputs.robot, self.safety.commanded)):
            self.counts["commands_lost"] += 1
            self.get_logger().warning(f"{off}; the safety filter starts again from the robot's command")
            self.safety = SafetyFilter(self.safety.config)  # seeded below, as at an episode's start
        if (verdict := tick.on_grid(now)) is not None:
            return self._end_tick(verdict)
        seen = tick.observe(self.assembler, now)
        if isinstance(seen, Verdict):
            return self._end_tick(seen)
        obs, stamp, behind = seen
        self.counts["inputs_behind"] += behind
        if not self.safety.initialized:
            if (verdict := tick.seedable(self.assembler.oldest(), self.episode_started)) is not None:
                return self._end_tick(verdict)
            q, settle = filter_seed(obs["qpos"], self.inputs.robot, self.episode_started)
            self.safety.reset(q, now, settle=settle)
        if self.takeover is not None:
            who = self.inputs.who(now, self.episode, self.step)
            if who == LOST:  # the arm holds; the episode is given up (reward_node aborts it)
                self._end_tick(Verdict(HOLD, "hold_teleop_lost"))
                return self._give_up()
            if who == OPERATOR:
                return self._operator_step(obs, stamp, now)
        item = self.planning.tick(obs, stamp, tick.inference_wait())  # on sim time waiting costs no robot time
        failure = self.planning.take_failure()
        if failure is not None:
            self.counts["hold_model"] += 1
            self._problem("model", f"inference failed, holding: {failure!r}")
        verdict = tick.after_planning(item, now, self._now(), self.planning.in_flight, self.planning.flight_started)
        if verdict is not None:
            return self._end_tick(verdict)
        action, chunk, k = item
        if k == 0:
            self._publish_markers(chunk)
        self.counts["ticks_on_tail"] += k >= len(chunk.actions)
        self._execute(action, chunk.index, k, chunk.version, chunk.decision if k == 0 else None,
                      ahead=chunk.after(k)[:, 7])

    def _operator_step(self, obs, stamp: float, now: float) -> None:
        """A tick the operator commands: their action, marked as an intervention, with the observation history
        (a chunk of its own) for the learner."""
        history, stamps, index = self.planning.observe(obs, stamp)
        sent = self.sent if self.sent is not None else np.append(obs["qpos"], self.inputs.finger_width or 0.0)
        action = self.takeover.action(sent[:7], float(sent[7]), now, self.inputs.wall)
        decision = Decision(obs=history, chain=np.zeros((0, 0, len(action)), np.float32), chain_logprob=np.zeros(0),
                            policy_version=self.planner.version, episode=self.episode, chunk=index, stamps=stamps)
        self._execute(action, index, 0, self.planner.version, decision, intervention=True)

    def _execute(self, action: np.ndarray, chunk: int, k: int, version: int, decision: Decision | None,
                 intervention: bool = False, ahead: np.ndarray | tuple = ()) -> None:
        """Send ``action`` through the safety filter and publish its Transition (``k``: its place in the chunk;
        ``ahead``: the gripper widths the chunk predicts after it)."""
        stamp = self._now()
        try:
            res = self.safety.filter(action[:7], float(action[7]), stamp)
        except ValueError as exc:
            return self._end_tick(Verdict(HOLD, "hold_model", f"{'operator' if intervention else 'policy'} "
                                                              f"action refused, holding: {exc}", "action"))
        verdict = self._send(res, ahead, stamp, f", action {k} of chunk {chunk} not executed")
        if verdict is not None:
            self.safety.unsent()  # the committed trajectory plays on (it ends at rest)
            return self._end_tick(verdict)
        self.sent = np.append(res.q, res.gripper_width)
        self.counts["clamped"] += res.clamped
        step = ExecutedStep(self.episode, self.step, chunk, k, version, self.sent.copy(), bool(res.clamped),
                            intervention)
        tr = transition_message(step, decision)
        tr.header.stamp = self.get_clock().now().to_msg()
        self.transition_pub.publish(tr)
        self.counts["transitions"] += 1
        self.step += 1
        GC_PAUSES.young()  # the next deadline is a control period away

    def _end_tick(self, verdict: Verdict) -> None:
        """Count and log a tick that sends no fresh action, and send the hold if that is the verdict."""
        # a missed tick once the episode has moved, else a start wait (its first inputs and chunk are coming)
        self.counts[verdict.count if not verdict.missed or self.step > 0 else "start_wait"] += 1
        if verdict.problem is not None:
            self._problem(verdict.problem, verdict.text)
        elif verdict.text:
            self.log.info(verdict.count, verdict.text, period=INFO_PERIOD)
        if verdict.action == HOLD:
            self._hold()

    def _sim_time(self) -> bool:
        return bool(self.get_parameter("use_sim_time").value)

    def _hold(self) -> None:
        """Brake to the last command; before the first command, hold the measured joint positions."""
        now = self._now()
        if not self.safety.initialized:
            joints = self.assembler.inputs.get("joints")
            if joints is None or self.ticker.seedable(joints.stamp, self.episode_started) is not None:
                # nothing known about the arm since the reset (a state of before it would glide the arm back to
                # where the last episode left it): send nothing, its controller keeps its target
                return
            q, settle = filter_seed(joints.value["qpos"], self.inputs.robot, self.episode_started)
            self.safety.reset(q, now, settle=settle)
        res = self.safety.hold(now)
        traj = res.trajectory
        if traj is not None and not self.ticker.worth_resending(traj.end_time() if traj.stamp is not None else None,
                                                                 now):
            res = replace(res, trajectory=None)
        self._send(res)

    def _send(self, res, ahead: np.ndarray | tuple = (), stamp: float | None = None, what: str = ""
              ) -> Verdict | None:
        """Send the filter's result; a tick's (``stamp``: the instant it was filtered for) only if
        :meth:`ControlTick.release` lets it go: then the verdict of one that is not sent, else None."""
        # sim time: the gripper goal first (the lock-step simulator advances the period once the arm's trajectory
        # is there, and a goal accepted before it moves the hand in that period, as the arm; the trajectory waits
        # for the goal's acceptance). Wall clock: the trajectory first; its lead runs from its stamp, a goal's not
        sim = self._sim_time()
        if sim:
            self._send_gripper(res, sim, ahead)
        if stamp is not None:
            verdict = self.ticker.release(stamp, self._now, res.trajectory is not None, what)
            if verdict is not None:
                return verdict
        if res.trajectory is not None:  # None: settling after a reset, the controller glides on its own
            self.cmd_pub.publish(joint_command(res, self.cfg["command_type"]))
            if res.trajectory.stamp is not None and not sim and "hold" not in res.limited:
                self.ticker.sent_delays.append(self._now() - res.trajectory.stamp)
        if not sim:
            self._send_gripper(res, sim, ahead)
        self.counts["commands"] += 1
        return None

    def _send_gripper(self, res, sim: bool, ahead: np.ndarray | tuple = ()) -> None:
        if np.isfinite(res.gripper_width):
            self.gripper_goals.command(float(res.gripper_width), self._now(), self.inputs.finger_width,
                                       self.cfg["input_wait"] if sim else 0.0, ahead=ahead)

    # ------------------------------------------------------------ outputs
    def _publish_markers(self, chunk: Chunk) -> None:
        """The chunk's predicted TCP path, for RViz."""
        if chunk.predicted is not None:
            tcp = fr3.tcp_positions(np.clip(chunk.predicted[:, :7], fr3.Q_MIN, fr3.Q_MAX))
            self.marker_pub.publish(path_marker(tcp, "fr3_link0", self.get_clock().now().to_msg(),
                                                "predicted_tcp_path"))

    def destroy_node(self) -> None:
        self.planning.close()  # never leave torch running under interpreter teardown
        if isinstance(self.planner, PlannerProcess):
            self.planner.close()
        self.inputs.destroy()
        super().destroy_node()

    def _publish_diagnostics(self) -> None:
        lat = np.array(self.planner.latencies) * 1e3 if self.planner.latencies else np.zeros(1)
        holds = (self.counts["hold_stale"] + self.counts["hold_no_action"] + self.counts["hold_model"]
                 + self.counts["hold_robot_state"])
        level, message = DiagnosticStatus.OK, f"version {self.planner.version}, " + ("acting" if self.episode is not None else "idle")
        if self.last_problem:
            level, message = DiagnosticStatus.WARN, f"{message}; last problem: {self.last_problem}"
        values = {**self.counts, **(self.takeover.counts if self.takeover else {}),
                  "gripper_goal_late": self.gripper_goals.late,
                  **{f"gripper_{k}": v for k, v in self.gripper.counts.items()},
                  "policy_version": self.planner.version, "episode": self.episode, "step": self.step,
                  "holds": holds, "inference_ms_p50": f"{np.percentile(lat, 50):.1f}",
                  "inference_ms_p99": f"{np.percentile(lat, 99):.1f}",
                  "replan_margin": self.planning.loop.replan_margin,
                  **self.ticker.delay_report(), **GC_PAUSES.report(),
                  **self.weights.counts, **{f"weights_{k}": f"{v:.2f}" for k, v in self.weights.timing.items()}}
        publish_diagnostics(self, self.diag_pub, "policy_node: diffusion policy", self.policy.arch_id, level, message,
                            values)


def main(argv: list[str] | None = None) -> int:
    # inputs run beside the control tick: two executor threads
    return run_node(PolicyNode, argv, threads=2)

if __name__ == "__main__":
    sys.exit(main())
