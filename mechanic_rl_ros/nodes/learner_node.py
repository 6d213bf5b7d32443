"""learner_node: the stack's asynchronous learner, with Mechanic on every optimiser it owns.

A thin adapter around one :class:`~mechanic_rl_ros.rl.learner.Learner`, whichever algorithm the
``algorithm`` parameter names (the same as policy_node's; :data:`~mechanic_rl_ros.rl.learner.ALGORITHMS`):
``select`` (default), value-guided selection among the frozen policy's proposals
(:mod:`mechanic_rl_ros.rl.online_selection`), where only a critic is trained and published; ``dppo``, DPPO
on the fine-tuned denoiser (:mod:`mechanic_rl_ros.rl.online_dppo`). The node

* hands every ``Transition`` (policy_node), ``StepReward`` (reward_node) and aborted ``EpisodeEvent`` to
  the learner, which joins them by (episode, step), ignores duplicates (replayed by transient-local QoS
  after a restart) and counts every refusal;
* runs the learning the learner owes on a worker thread, publishes its payload as ``PolicyWeights``
  (reliable, transient-local, depth 1: a restarted policy gets the latest at once) every
  ``publish_every`` of its steps with a status marker, ``LearnerStats`` (steps made and owed: reward_node's
  ``learner_pace`` reads them) every ``stats_every`` steps, with every publication and when it has caught
  up, and ``/diagnostics``;
* checkpoints the learner every ``checkpoint_every`` steps and at shutdown into ``<run_dir>/learner``,
  and resumes from there when it exists (:func:`~mechanic_rl_ros.rl.learner.open_learner`).

A step refused for a NaN loss or gradient leaves the learner at its last good state; it is counted and
logged, and nothing is published for it. The headless trainers (``mechanic-rl train-select``,
``train-rl``) drive the same learner objects.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from visualization_msgs.msg import Marker, MarkerArray

from mechanic_rl_ros.msg import EpisodeEvent, LearnerStats, StepReward, Transition
from mechanic_rl_ros.nodes.common import Param, declare_parameters, publish_diagnostics, run_node
from mechanic_rl_ros.rl.learner import ALGORITHMS, open_learner
from mechanic_rl_ros.wire import topics
from mechanic_rl_ros.data.interventions import InterventionRecorder
from mechanic_rl_ros.wire.transition import decision_from_transition, executed_step
from mechanic_rl_ros.wire.weights import weights_message

#: every parameter, with what it means (``ros2 param describe learner_node <name>``); config/learner.yaml sets them.
#: The algorithm's own settings (DPPO, Mechanic, critic) are in config/rl.yaml.
PARAMETERS = [
    Param("checkpoint", "", "pretrained policy checkpoint directory the learner starts from (ignored when resuming "
          "from run_dir); the launch sets it"),
    Param("algorithm", "select", "select = value-guided selection among the frozen policy's proposals (critic "
          "ensemble, off-policy, config/select.yaml); dppo = DPPO on the fine-tuned denoiser (config/rl.yaml, "
          "thousands of decisions per update: simulator scale); must match policy_node's",
          choices=tuple(ALGORITHMS)),
    Param("select_config", "", "algorithm select: YAML of the selection settings, shared with policy_node; '' = "
          "config/select.yaml"),
    Param("seed", 0, "algorithm select and distill: learner seed (initialisation, batch sampling)", range=(0, None)),
    Param("utd", 10, "algorithm select: gradient steps per new decision (update-to-data ratio)", range=(1, None)),
    Param("warmup_decisions", 80, "algorithm select: complete decisions (about 8 control steps each) before the "
          "first gradient step; until the first critic is published the policy runs as pretrained",
          range=(1, None)),
    Param("replay_capacity", 100000, "algorithm select: [decisions] held in the replay buffer (the oldest are "
          "overwritten)", range=(1, None)),
    Param("critic_publish_every", 100, "algorithm select: [gradient steps] between two published critics",
          range=(1, None)),
    Param("critic_checkpoint_every", 1000, "algorithm select: [gradient steps] between two checkpoints (and "
          "always at shutdown)", range=(1, None)),
    Param("distill_config", "", "algorithm distill: YAML of the distillation settings (trained layers, demo "
          "fraction, UTD) and/or key=value overrides, shared with policy_node; '' = config/distill.yaml"),
    Param("demos", "", "algorithm distill: directory of demonstration bags mixed into every batch (mechanic-rl "
          "collect --out, or ros2 bag record of the stack's topics); '' = none"),
    Param("weights_publish_every", 100, "algorithm distill: [gradient steps] between two published policy weights",
          range=(1, None)),
    Param("weights_checkpoint_every", 500, "algorithm distill: [gradient steps] between two checkpoints (and always "
          "at shutdown); <run_dir>/learner/policy is then an ordinary policy checkpoint", range=(1, None)),
    Param("rl_config", "", "algorithm dppo: extra YAML merged over config/rl.yaml (DPPO, Mechanic, critic); '' = "
          "its defaults"),
    Param("optimizer", "mechanic", "mechanic = Mechanic(Adam(lr=1)), no learning rate to choose; adam = plain Adam "
          "with config/rl.yaml actor_lr / critic_lr", choices=("mechanic", "adam")),
    Param("run_dir", "runs/finetune", "checkpoints go to <run_dir>/learner, and a learner resumes from there when it "
          "exists; a relative path is taken from the node's current directory (the launch passes an absolute one)"),
    Param("batch_size", 2600, "algorithm dppo: [decisions] complete action chunks per DPPO update (at least min_batch_size)",
          range=(1, None)),
    Param("min_batch_size", 2600, "[decisions] the smallest batch_size the node starts with: studies/pg_snr.py "
          "measured that the policy gradient's signal only equals its noise at about 2 600 decisions per update "
          "(docs/learner.md); with 16 the stack drove the shipped policy from about 45 % to 0 % success in 130 "
          "episodes. Lower it only for tests and deliberate experiments", range=(1, None)),
    Param("buffer_capacity", 4096, "[decisions] held in the buffer; the oldest are dropped (and counted) beyond this",
          range=(1, None)),
    Param("publish_every", 1, "[updates] publish new weights every this many updates", range=(1, None)),
    Param("checkpoint_every", 5, "[updates] write a checkpoint every this many updates (and always at shutdown)",
          range=(1, None)),
    Param("torch_threads", 1, "CPU threads torch uses for the updates", range=(1, None)),
    Param("niceness", 10, "the learner process runs this much nicer than the control nodes (0 leaves it "
          "equal): on a shared machine the updates take the CPU the control loop leaves", range=(0, 19)),
    Param("transition_topic", topics.TRANSITIONS.name, "the policy's executed steps (mechanic_rl_ros/Transition)"),
    Param("step_reward_topic", topics.STEP_REWARDS.name, "reward_node's per-step rewards (mechanic_rl_ros/StepReward)"),
    Param("episode_event_topic", topics.EPISODE_EVENTS.name, "episode outcomes (mechanic_rl_ros/EpisodeEvent), for the "
          "success rate"),
    Param("weights_topic", topics.WEIGHTS.name, "where new versioned weights go (mechanic_rl_ros/PolicyWeights, "
          "reliable, transient-local)"),
    Param("stats_topic", topics.LEARNER_STATS.name, "mechanic_rl_ros/LearnerStats every stats_every steps, with "
          "every publication of weights and when the learner has caught up (losses, Mechanic scale, success rate, "
          "steps made and owed), for rqt and reward_node's learner_pace"),
    Param("stats_every", 10, "[learner steps] between two LearnerStats (their losses are the means over them)",
          range=(1, None)),
    Param("marker_topic", topics.LEARNER_STATUS_TEXT.name, "visualization_msgs/MarkerArray text with the key figures, for "
          "RViz"),
    Param("history_depth", 2000, "[messages] transient-local history asked of the transition and reward "
          "publishers: what a restarted learner can get replayed", range=(1, None)),
    Param("record_interventions", True, "save each intervention (the steps a person or the simulated operator "
          "commanded, with their observations) as a demonstration bag under <run_dir>/interventions, which "
          "finetune-demos and demos:= read"),
    Param("success_window", 20, "[episodes] window of the reported success rate", range=(1, None)),
    Param("diagnostics_period", 1.0, "[wall s] period of /diagnostics", range=(0.01, None)),
]


class LearnerNode(Node):
    def __init__(self) -> None:
        super().__init__("learner_node")
        self.cfg = cfg = declare_parameters(self, PARAMETERS)
        torch.set_num_threads(int(cfg["torch_threads"]))
        if cfg["niceness"] and hasattr(os, "nice"):
            os.nice(int(cfg["niceness"]))  # before any worker thread exists: every thread inherits it
        run_dir = Path(os.path.abspath(os.path.expanduser(cfg["run_dir"])))
        if str(run_dir) != cfg["run_dir"]:
            self.get_logger().info(f"run_dir {cfg['run_dir']!r} taken from the current directory {os.getcwd()}: "
                                   f"{run_dir}")
        self.dir = run_dir / "learner"
        self.recorder = InterventionRecorder(run_dir / "interventions", 0.1) if cfg["record_interventions"] else None
        self.learner, resumed = open_learner(cfg, self.dir)
        self.learner.outcomes = deque(maxlen=int(cfg["success_window"]))
        self.updating = False
        self.stopping = False  #: set at shutdown: the update thread stops after its current step
        self.last_stats: dict[str, float] = {}
        self.samples_per_s = 0.0

        t = topics
        depth = int(cfg["history_depth"])
        self.weights_pub = self.create_publisher(t.WEIGHTS.type, cfg["weights_topic"], t.WEIGHTS.qos)
        self.stats_pub = self.create_publisher(t.LEARNER_STATS.type, cfg["stats_topic"], t.LEARNER_STATS.qos)
        self.marker_pub = self.create_publisher(t.LEARNER_STATUS_TEXT.type, cfg["marker_topic"],
                                                t.LEARNER_STATUS_TEXT.qos)
        self.diag_pub = self.create_publisher(t.DIAGNOSTICS.type, t.DIAGNOSTICS.name, t.DIAGNOSTICS.qos)
        data = MutuallyExclusiveCallbackGroup()
        self.create_subscription(t.TRANSITIONS.type, cfg["transition_topic"], self._on_transition,
                                 t.TRANSITIONS.profile(depth), callback_group=data)
        self.create_subscription(t.STEP_REWARDS.type, cfg["step_reward_topic"], self._on_reward,
                                 t.STEP_REWARDS.profile(depth), callback_group=data)
        self.create_subscription(t.EPISODE_EVENTS.type, cfg["episode_event_topic"], self._on_event,
                                 t.EPISODE_EVENTS.qos, callback_group=data)
        self.create_timer(0.2, self._maybe_update, clock=rclpy.clock.Clock())
        self.create_timer(cfg["diagnostics_period"], self._publish_diagnostics, clock=rclpy.clock.Clock())
        if self.learner.trained:
            self._publish_weights()  # a restarted learner re-announces its latest weights at once
            self._publish_stats({})
        self.get_logger().info(
            f"learner ready ({'resumed from ' + str(self.dir) if resumed else 'fresh from ' + cfg['checkpoint']}, "
            f"checkpoints to {self.dir}): {self.learner.ready_line()}")

    def save(self) -> None:
        """The whole learner, swapped in whole (never half-written)."""
        self.learner.save(self.dir)

    # ------------------------------------------------------------ data
    def _on_transition(self, msg: Transition) -> None:
        decision = refusal = action = None
        if msg.chunk_step == 0:
            try:
                decision = decision_from_transition(msg)
            except ValueError as exc:  # WireError included
                refusal = str(exc)
        try:
            action = executed_step(msg).action
        except ValueError as exc:
            self.get_logger().error(f"transition of episode {msg.episode} step {msg.step}: {exc}",
                                    throttle_duration_sec=1.0)
        error = self.learner.add_step(int(msg.episode), int(msg.step), int(msg.chunk), int(msg.policy_version),
                                      msg.chunk_step == 0, decision, refusal, bool(msg.intervention), action)
        if msg.intervention and self.recorder is not None and decision is not None and action is not None:
            self.recorder.add(int(msg.episode), int(msg.step), decision.obs, action)
        if error is not None:
            self.get_logger().error(f"decision of episode {msg.episode} chunk {msg.chunk} refused: {error}",
                                    throttle_duration_sec=1.0)

    def _on_reward(self, msg: StepReward) -> None:
        self.learner.add_reward(int(msg.episode), int(msg.step), float(msg.reward), bool(msg.terminal),
                                bool(msg.truncated))

    def _on_event(self, msg: EpisodeEvent) -> None:
        if msg.event == EpisodeEvent.ABORTED:
            if self.recorder is not None:
                self.recorder.drop(int(msg.episode))
            n = self.learner.abort_episode(int(msg.episode))
            if n is not None:  # else replayed (transient-local) after a restart
                self.get_logger().info(f"episode {msg.episode} aborted by the robot ({msg.detail}): its {n} held "
                                       f"decisions dropped, nothing of it is learned from")
            return
        if msg.event in (EpisodeEvent.SUCCESS, EpisodeEvent.FAILURE, EpisodeEvent.TIMEOUT):
            self.learner.end_episode(int(msg.episode), msg.event == EpisodeEvent.SUCCESS)
            if self.recorder is not None and (written := self.recorder.end_episode(int(msg.episode),
                                                                                  msg.event == EpisodeEvent.SUCCESS)):
                self.get_logger().info(f"episode {msg.episode}: {len(written)} intervention(s) saved under "
                                       f"{self.recorder.directory}")

    # ------------------------------------------------------------ learning
    def _maybe_update(self) -> None:
        if not self.updating and self.learner.owed() > 0:
            self.updating = True
            threading.Thread(target=self._update, daemon=True).start()

    def _update(self) -> None:
        """Steps until none is owed; publish and checkpoint on the learner's schedule."""
        try:
            learner = self.learner
            stats: dict[str, list[float]] = {}
            t0, samples = time.perf_counter(), 0.0
            every = int(self.cfg["stats_every"])
            while learner.owed() > 0 and not self.stopping and rclpy.ok(context=self.context):
                before = learner.steps
                result = learner.step()
                if result.refused:
                    if result.failed:
                        learner.counts["updates_failed"] += 1
                    log = self.get_logger().error if result.failed else self.get_logger().info
                    log(result.refused, throttle_duration_sec=5.0)
                n = learner.steps
                if n == before:
                    continue  # nothing learned (a stale batch): no publication is due
                for k, v in result.stats.items():
                    stats.setdefault(k, []).append(v)
                samples += result.samples
                publish = n % learner.publish_every == 0 or n == learner.offline_steps  # policy_node waits for it
                if publish:
                    self._publish_weights()
                if publish or n % every == 0:
                    self.last_stats = {k: float(np.nanmean(v)) for k, v in stats.items()}
                    self.samples_per_s = samples / max(time.perf_counter() - t0, 1e-9)
                    self._publish_stats(self.last_stats)
                    stats, samples, t0 = {}, 0.0, time.perf_counter()
                if publish:
                    self.get_logger().info(learner.summary(self.last_stats) + " published")
                if n % learner.checkpoint_every == 0:
                    self.save()
            if learner.steps and learner.owed() == 0 and not self.stopping:
                self._publish_stats(self.last_stats)  # caught up: nothing holds the episodes for it
        except Exception as exc:  # keep learning later; say why this went wrong
            if rclpy.ok(context=self.context):
                self.learner.counts["updates_failed"] += 1
                self.get_logger().error(f"update failed: {exc!r}")
        finally:
            self.updating = False

    # ------------------------------------------------------------ output
    def _publish_weights(self) -> None:
        p = self.learner.payload()
        msg = weights_message(p.tensors, version=p.version, architecture_id=p.arch_id,
                              finetune_steps=p.finetune_steps, num_updates=p.num_updates)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.weights_pub.publish(msg)

    def _publish_stats(self, stats: dict[str, float]) -> None:
        r = self.learner.report()
        m = LearnerStats()
        m.header.stamp = self.get_clock().now().to_msg()
        m.num_updates, m.policy_version = int(r.num_updates), int(r.version)
        m.updates_owed = int(self.learner.owed())
        for f in ("actor_loss", "critic_loss", "approx_kl", "clip_fraction", "actor_scale", "critic_scale"):
            setattr(m, f, float(stats.get(f, float("nan"))))
        m.samples_per_second = float(self.samples_per_s)
        m.transitions_received = self.learner.counts["transitions_received"]
        m.buffer_size, m.transitions_stale, m.transitions_unmatched = r.buffer_size, r.stale, r.unmatched
        m.success_rate = float(self.learner.success_rate)
        self.stats_pub.publish(m)
        scale = m.actor_scale if np.isfinite(m.actor_scale) else m.critic_scale  # the trained network's
        text = Marker(ns="learner_status", id=0, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
        text.header.frame_id, text.header.stamp = "fr3_link0", m.header.stamp
        text.pose.position.x, text.pose.position.z, text.pose.orientation.w = 0.5, 0.9, 1.0
        text.scale.z = 0.05
        text.color.r = text.color.g = text.color.b = text.color.a = 1.0
        text.text = (f"{self.cfg['algorithm']} v{m.policy_version} | steps {m.num_updates} | success "
                     f"{m.success_rate:.2f} | Mechanic scale {scale:.3g} | buffer {m.buffer_size}")
        self.marker_pub.publish(MarkerArray(markers=[text]))

    def _publish_diagnostics(self) -> None:
        r = self.learner.report()
        level = DiagnosticStatus.WARN if self.learner.counts["updates_failed"] else DiagnosticStatus.OK
        publish_diagnostics(self, self.diag_pub, f"learner_node: {r.title}", r.arch_id, level, r.message, r.values)

    def destroy_node(self) -> None:
        self.stopping = True
        deadline = time.monotonic() + 60.0
        while self.updating and time.monotonic() < deadline:
            time.sleep(0.05)
        self.save()
        self.get_logger().info(f"checkpoint written to {self.dir}")
        super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    return run_node(LearnerNode, argv, threads=2)


if __name__ == "__main__":
    sys.exit(main())
