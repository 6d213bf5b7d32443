"""learner_node: the stack's asynchronous learner, with Mechanic on every optimiser it owns.

Two algorithms (parameter ``algorithm``, the same as policy_node's):

``select`` (default) -- value-guided selection (:mod:`mechanic_rl_ros.rl.select`): a thin adapter around
:class:`~mechanic_rl_ros.rl.select.SelectLearner`, :class:`~mechanic_rl_ros.rl.select.CandidateReplay` and
:class:`~mechanic_rl_ros.rl.select_stream.SelectStream`. Each decision's features, proposals and choice
come with its Transition; joined with the chunk's rewards and the next decision they become replay rows;
after ``warmup_decisions`` rows the critic makes ``utd`` gradient steps per new row on a worker thread, and
every ``critic_publish_every`` steps the critic alone goes out as ``PolicyWeights`` (the diffusion policy
never changes). Checkpoints hold learner, replay, pending decisions and join state, and an exported
``critic/`` that ``mechanic-rl eval --critic`` evaluates.

``dppo`` -- a thin adapter around :class:`mechanic_rl_ros.rl.dppo.DPPO` and
:class:`mechanic_rl_ros.rl.buffer.RolloutBuffer`:

* joins ``Transition`` (policy_node) and ``StepReward`` (reward_node) by
  (episode, step): a transition's decision payload becomes a decision step of
  the buffer, each reward is added to the chunk its step belongs to; a reward
  that arrives before its transition waits for it. Duplicates (replayed by
  transient-local QoS after a restart) are recognised and ignored; nothing is
  dropped silently -- every refusal is counted and reported;
* runs an update on a worker thread whenever ``batch_size`` complete decisions
  are there, and every ``publish_every`` updates publishes the fine-tuned
  network as ``PolicyWeights`` (reliable, transient-local, depth 1: a
  restarted policy gets the latest at once);
* publishes ``LearnerStats`` after each update and ``/diagnostics``;
* checkpoints (learner: networks, optimisers incl. Mechanic state, counters;
  buffer; join state) every ``checkpoint_every`` updates and at shutdown, and
  resumes from ``<run_dir>/learner`` when it exists.

A NaN loss or gradient (NonFiniteUpdateError) rolls the learner back to its
last good state; nothing is published for that update.
"""
from __future__ import annotations

import json
import os
import shutil
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

from mechanic_rl_ros.control.join import Join
from mechanic_rl_ros.msg import EpisodeEvent, LearnerStats, StepReward, Transition
from mechanic_rl_ros.nodes.common import Param, declare_parameters, publish_diagnostics, run_node
from mechanic_rl_ros.rl.buffer import RolloutBuffer
from mechanic_rl_ros.rl.persist import recover_dir, replace_dir
from mechanic_rl_ros.rl.config import load_config
from mechanic_rl_ros.rl.dppo import DPPO
from mechanic_rl_ros.rl.errors import NonFiniteUpdateError
from mechanic_rl_ros.rl.select import (CandidateReplay, SelectLearner, critic_arch_id, export_critic,
                                       load_select_config, policy_weights_id)
from mechanic_rl_ros.rl.select_stream import SelectStream
from mechanic_rl_ros.wire import WireError, topics
from mechanic_rl_ros.wire.transition import decision_from_transition
from mechanic_rl_ros.wire.weights import weights_message

#: every parameter, with what it means (``ros2 param describe learner_node <name>``); config/learner.yaml sets them.
#: The algorithm's own settings (DPPO, Mechanic, critic) are in config/rl.yaml.
PARAMETERS = [
    Param("checkpoint", "", "pretrained policy checkpoint directory the learner starts from (ignored when resuming "
          "from run_dir); the launch sets it"),
    Param("algorithm", "select", "select = value-guided selection among the frozen policy's proposals (critic "
          "ensemble, off-policy, config/select.yaml); dppo = DPPO on the fine-tuned denoiser (config/rl.yaml, "
          "thousands of decisions per update: simulator scale); must match policy_node's", choices=("select", "dppo")),
    Param("select_config", "", "algorithm select: YAML of the selection settings, shared with policy_node; '' = "
          "config/select.yaml"),
    Param("seed", 0, "algorithm select: learner seed (critic initialisation, batch sampling)", range=(0, None)),
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
    Param("stats_topic", topics.LEARNER_STATS.name, "mechanic_rl_ros/LearnerStats after each update (losses, Mechanic "
          "scale, success rate), for rqt"),
    Param("marker_topic", topics.LEARNER_STATUS_TEXT.name, "visualization_msgs/MarkerArray text with the key figures, for "
          "RViz"),
    Param("history_depth", 2000, "[messages] transient-local history asked of the transition and reward "
          "publishers: what a restarted learner can get replayed", range=(1, None)),
    Param("success_window", 20, "[episodes] window of the reported success rate", range=(1, None)),
    Param("diagnostics_period", 1.0, "[wall s] period of /diagnostics", range=(0.01, None)),
]


class LearnerNode(Node):
    def __init__(self) -> None:
        super().__init__("learner_node")
        self.cfg = cfg = declare_parameters(self, PARAMETERS)
        self.select = cfg["algorithm"] == "select"
        if not self.select and cfg["batch_size"] < cfg["min_batch_size"]:
            raise ValueError(f"parameter batch_size: got {cfg['batch_size']}; expected at least min_batch_size = "
                             f"{cfg['min_batch_size']} decisions per DPPO update: smaller batches make the update "
                             "mostly noise and drive the policy down (docs/learner.md, studies/pg_snr.py). Set "
                             "min_batch_size too to run small batches on purpose")
        torch.set_num_threads(int(cfg["torch_threads"]))
        if cfg["niceness"] and hasattr(os, "nice"):
            os.nice(int(cfg["niceness"]))  # before any worker thread exists: every thread inherits it
        run_dir = Path(os.path.abspath(os.path.expanduser(cfg["run_dir"])))
        if str(run_dir) != cfg["run_dir"]:
            self.get_logger().info(f"run_dir {cfg['run_dir']!r} taken from the current directory {os.getcwd()}: "
                                   f"{run_dir}")
        self.dir = run_dir / "learner"
        self.lock = threading.Lock()
        self.join = Join()
        self.counts = {"transitions_received": 0, "transitions_duplicate": 0, "rewards_received": 0,
                       "rewards_duplicate": 0, "rewards_unmatched": 0, "decisions_refused": 0, "updates_failed": 0,
                       "episodes_aborted": 0, "decisions_dropped_aborted": 0, "transitions_after_abort": 0,
                       "grad_steps_done": 0, "critic_published_version": 0, "policy_version_seen": 0}
        #: episodes the robot stopped under (EpisodeEvent ABORTED): nothing of them is learned from
        self.aborted: set[int] = set()
        self.resumed = self._build_select() if self.select else self._build()
        self.outcomes: deque[bool] = deque(maxlen=int(cfg["success_window"]))
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
        if self.select:
            if self.learner.version > 0:
                self._publish_critic()  # a restarted learner sends its critic at once
            self.get_logger().info(
                f"learner ready ({'resumed from ' + str(self.dir) if self.resumed else 'fresh'}, checkpoints to "
                f"{self.dir}): value-guided selection, {self.learner.cfg.num_candidates} proposals, "
                f"{self.learner.cfg.num_critics} critics, optimizer={self.learner.cfg.optimizer}, UTD {cfg['utd']}, "
                f"warm-up {cfg['warmup_decisions']} decisions, critic version {self.learner.version}, "
                f"{self.learner.num_updates} gradient steps so far")
            return
        if self.learner.policy_version > 0:
            self._publish_weights()  # a restarted learner re-announces its latest weights
        self.get_logger().info(
            f"learner ready ({'resumed from ' + str(self.dir) if self.resumed else 'fresh from ' + cfg['checkpoint']}"
            f"{'' if self.resumed else ', checkpoints to ' + str(self.dir)}): "
            f"optimizer={cfg['optimizer']} K'={self.learner.finetune_steps} batch={cfg['batch_size']} decisions, "
            f"policy version {self.learner.policy_version}, {self.learner.num_updates} updates so far")

    # ------------------------------------------------------------ build / resume
    def _resume_state(self, algorithm: str) -> dict | None:
        """The node state of ``<run_dir>/learner`` (join, counts, aborted episodes restored), or None for a fresh
        start, which needs the ``checkpoint`` parameter. A directory of the other algorithm is refused."""
        recover_dir(self.dir, "node_state.json")  # a save cut short between its two renames
        if not (self.dir / "node_state.json").is_file():
            if not self.cfg["checkpoint"]:
                raise ValueError("parameter checkpoint: empty and no learner state in run_dir; expected the "
                                 "pretrained policy checkpoint directory")
            return None
        state = json.loads((self.dir / "node_state.json").read_text())
        found = state.get("algorithm", "dppo")  # checkpoints from before the selection learner are DPPO's
        if found != algorithm:
            raise ValueError(f"parameter algorithm: {algorithm}, but {self.dir} holds a {found} learner; give "
                             f"another run_dir or algorithm:={found}")
        self.join.load(state["join"])
        self.counts.update(state["counts"])
        self.aborted = {int(e) for e in state.get("aborted", [])}
        return state

    def _build(self) -> bool:
        cfg = self.cfg
        overrides = [f"learner.actor_optimizer={cfg['optimizer']}", f"learner.critic_optimizer={cfg['optimizer']}"]
        rl = load_config([cfg["rl_config"]] if cfg["rl_config"] else None, overrides)
        if self._resume_state("dppo") is not None:
            self.learner = DPPO.load(self.dir)
            self.buffer = RolloutBuffer.load(self.dir / "buffer.npz")
            return True
        self.learner = DPPO.from_checkpoint(Path(cfg["checkpoint"]), rl.learner)
        # whole episodes only: an episode the robot aborts is dropped before any of it is learned from
        self.buffer = RolloutBuffer(action_horizon=self.learner.policy.cfg.action_horizon,
                                    capacity=int(cfg["buffer_capacity"]), whole_episodes=True)
        return False

    def _build_select(self) -> bool:
        """The selection learner, fresh (its dimensions from the policy checkpoint) or resumed from run_dir."""
        from mechanic_rl_ros.policy import DiffusionPolicy

        cfg = self.cfg
        self.rng = np.random.default_rng(int(cfg["seed"]) + 29)
        state = self._resume_state("select")
        if state is not None:
            self.learner = SelectLearner.load(self.dir / "learner")
            self.policy_arch_id = state["policy_arch_id"]
            self.policy_weights = state.get("policy_weights")
            self.replay = CandidateReplay.load(self.dir / "replay.npz")
            lc = self.learner.cfg
            self.stream = SelectStream(self.replay, gamma=lc.gamma if lc.reads_returns else None)
            self.stream.load(self.dir / "stream.npz")
            return True
        policy = DiffusionPolicy.from_checkpoint(Path(cfg["checkpoint"]))  # its dimensions and arch id only
        pc, self.policy_arch_id = policy.cfg, policy.arch_id
        self.policy_weights = policy_weights_id(cfg["checkpoint"])
        scfg = load_select_config(cfg["select_config"], feat_dim=policy.net.cond_dim,
                                  act_dim=pc.action_horizon * pc.action_dim, seed=int(cfg["seed"]),
                                  optimizer=cfg["optimizer"])
        del policy
        self.learner = SelectLearner(scfg)
        self.replay = CandidateReplay(int(cfg["replay_capacity"]), scfg.feat_dim, scfg.act_dim, scfg.num_candidates)
        self.stream = SelectStream(self.replay, gamma=scfg.gamma if scfg.reads_returns else None)
        return False

    def save(self) -> None:
        """Learner + buffer + join state, written to a temporary directory then swapped in (never half-written:
        :func:`replace_dir`, :func:`recover_dir`)."""
        with self.lock:
            tmp = self.dir.with_name("learner.tmp")
            if tmp.exists():
                shutil.rmtree(tmp)
            state = {"join": self.join.state(), "counts": self.counts, "aborted": sorted(self.aborted)}
            if self.select:
                self.learner.save(tmp / "learner")
                self.replay.save(tmp / "replay.npz")
                self.stream.save(tmp / "stream.npz")
                export_critic(self.learner, tmp / "critic", self.policy_arch_id, self.policy_weights)
                state.update(algorithm="select", policy_arch_id=self.policy_arch_id, policy_weights=self.policy_weights)
            else:
                self.learner.save(tmp)
                self.buffer.save(tmp / "buffer.npz")
                state["algorithm"] = "dppo"
            # written last: its presence marks the directory complete
            (tmp / "node_state.json").write_text(json.dumps(state))
            replace_dir(tmp, self.dir)

    # ------------------------------------------------------------ data
    def _on_transition(self, msg: Transition) -> None:
        key = (int(msg.episode), int(msg.step))
        with self.lock:
            if key[0] in self.aborted:
                self.counts["transitions_after_abort"] += 1
                return
            new, waiting = self.join.add_step(key, int(msg.chunk))
            if not new:
                self.counts["transitions_duplicate"] += 1
                return
            self.counts["transitions_received"] += 1
            self.counts["policy_version_seen"] = max(self.counts["policy_version_seen"], int(msg.policy_version))
            if msg.chunk_step == 0:
                try:
                    decision = decision_from_transition(msg)
                    if decision is None:
                        raise WireError("decision", "empty on the first step of a chunk (chunk_step 0)")
                    if not self.select:
                        self.buffer.add_decision(decision)
                    elif decision.proposals is None:
                        raise WireError("decision", "no features/proposals/chosen: is policy_node running "
                                                    "algorithm dppo while this learner runs select?")
                    else:
                        self.stream.add_decision(key[0], int(msg.chunk), decision.features, decision.proposals,
                                                 decision.chosen)
                except ValueError as exc:  # WireError included
                    self.counts["decisions_refused"] += 1
                    self.get_logger().error(f"decision of episode {key[0]} chunk {msg.chunk} refused: {exc}",
                                            throttle_duration_sec=1.0)
            if self.select:
                self.stream.add_step(key[0], int(msg.chunk))
        if waiting is not None:
            with self.lock:
                chunk = self.join.credit(key)
            self._apply_reward(key, chunk, *waiting)

    def _on_reward(self, msg: StepReward) -> None:
        key = (int(msg.episode), int(msg.step))
        args = (float(msg.reward), bool(msg.terminal and not msg.truncated), bool(msg.truncated))
        with self.lock:
            if key[0] in self.aborted:
                return
            new, chunk = self.join.add_reward(key, args)
            if not new:
                self.counts["rewards_duplicate"] += 1
                return
            self.counts["rewards_received"] += 1
        if chunk is not None:  # else its transition is still on the way
            self._apply_reward(key, chunk, *args)

    def _apply_reward(self, key: tuple[int, int], chunk: int, reward: float, terminated: bool,
                      truncated: bool) -> None:
        with self.lock:
            if self.select:
                ok = self.stream.add_reward(key[0], chunk, reward, terminated or truncated)
            else:
                ok = self.buffer.add_step_reward(key[0], chunk, reward, terminated=terminated, truncated=truncated)
            if not ok:
                self.counts["rewards_unmatched"] += 1

    def _on_event(self, msg: EpisodeEvent) -> None:
        if msg.event == EpisodeEvent.ABORTED:
            with self.lock:
                if int(msg.episode) in self.aborted:
                    return  # replayed (transient-local) after a restart
                self.aborted.add(int(msg.episode))
                n = (self.stream if self.select else self.buffer).drop_episode(int(msg.episode))
                self.counts["episodes_aborted"] += 1
                self.counts["decisions_dropped_aborted"] += n
            self.get_logger().info(f"episode {msg.episode} aborted by the robot ({msg.detail}): its {n} held "
                                   f"decisions dropped, nothing of it is learned from")
            return
        if msg.event in (EpisodeEvent.SUCCESS, EpisodeEvent.FAILURE, EpisodeEvent.TIMEOUT):
            self.outcomes.append(msg.event == EpisodeEvent.SUCCESS)

    # ------------------------------------------------------------ learning
    def _owed(self) -> int:
        """Gradient steps due: ``utd`` per complete decision after the warm-up, less those made."""
        ready = self.replay.added - int(self.cfg["warmup_decisions"])
        if ready <= 0:
            return 0
        return int(self.cfg["utd"]) * ready - self.counts["grad_steps_done"]

    def _maybe_update(self) -> None:
        if self.updating:
            return
        if self.select:
            if self._owed() > 0:
                self.updating = True
                threading.Thread(target=self._update_select, daemon=True).start()
            return
        with self.lock:
            if not self.buffer.ready(int(self.cfg["batch_size"])):
                return
            batch = self.buffer.take_batch(int(self.cfg["batch_size"]))
        self.updating = True
        threading.Thread(target=self._update, args=(batch,), daemon=True).start()

    def _update(self, batch) -> None:
        try:
            t0 = time.perf_counter()
            try:
                stats = self.learner.update(batch)
            except NonFiniteUpdateError as exc:
                self.counts["updates_failed"] += 1
                self.get_logger().error(f"update refused, weights unchanged and not published: {exc}")
                return
            dt = time.perf_counter() - t0
            if not stats.get("decisions_used", 0):
                self.get_logger().info(f"batch of {len(batch)} decisions refused as stale "
                                       f"(max_staleness {self.learner.cfg.max_staleness}); no update",
                                       throttle_duration_sec=5.0)
                return
            self.samples_per_s = float(np.sum(batch.env_steps)) / max(dt, 1e-9)
            self.last_stats = stats
            n = self.learner.update_calls
            if n % int(self.cfg["publish_every"]) == 0:
                self._publish_weights()
            self._publish_stats(stats)
            self.get_logger().info(
                f"update {n}: {len(batch)} decisions in {dt:.2f} s, actor loss {stats.get('actor_loss', float('nan')):.4f}, "
                f"critic loss {stats.get('critic_loss', float('nan')):.4f}, Mechanic scale "
                f"{stats.get('actor_scale', float('nan')):.3g}, policy version {self.learner.policy_version}")
            if n % int(self.cfg["checkpoint_every"]) == 0:
                self.save()
        except Exception as exc:  # keep learning on the next batch; say why this one failed
            if not rclpy.ok(context=self.context):
                return  # shutting down while publishing
            self.counts["updates_failed"] += 1
            self.get_logger().error(f"update failed: {exc!r}")
        finally:
            self.updating = False

    def _update_select(self) -> None:
        """Gradient steps until none is owed (``utd`` per new decision); publish and checkpoint on schedule."""
        try:
            cfg, lr = self.cfg, self.learner
            rng = self.rng
            stats: dict[str, list[float]] = {}
            t0 = time.perf_counter()
            done = 0
            while self._owed() > 0 and not self.stopping and rclpy.ok(context=self.context):
                with self.lock:
                    batch = self.replay.sample(lr.cfg.batch_size, rng)
                out = lr.update(batch)
                with self.lock:
                    self.counts["grad_steps_done"] += 1
                done += 1
                if out.get("skipped"):
                    self.counts["updates_failed"] += 1
                    self.get_logger().error("gradient step refused: non-finite loss or gradient; critic unchanged",
                                            throttle_duration_sec=5.0)
                for k, v in out.items():
                    stats.setdefault(k, []).append(v)
                steps = self.counts["grad_steps_done"]
                if steps % int(cfg["critic_publish_every"]) == 0:
                    self.last_stats = {k: float(np.nanmean(v)) for k, v in stats.items()}
                    self.samples_per_s = done * lr.cfg.batch_size / max(time.perf_counter() - t0, 1e-9)
                    self._publish_critic()
                    self._publish_stats(self.last_stats)
                    self.get_logger().info(
                        f"{steps} gradient steps on {self.replay.added} decisions: critic loss "
                        f"{self.last_stats.get('critic_loss', float('nan')):.4f}, Q {self.last_stats.get('q_mean', float('nan')):.3f}, "
                        f"Mechanic scale {self.last_stats.get('critic_scale', float('nan')):.3g}; critic version "
                        f"{self.counts['critic_published_version']} published")
                    stats, done, t0 = {}, 0, time.perf_counter()
                if steps % int(cfg["critic_checkpoint_every"]) == 0:
                    self.save()
        except Exception as exc:  # keep learning later; say why this went wrong
            if rclpy.ok(context=self.context):
                self.counts["updates_failed"] += 1
                self.get_logger().error(f"update failed: {exc!r}")
        finally:
            self.updating = False

    def _publish_critic(self) -> None:
        """The critic as ``PolicyWeights``. Its version is the learner's, raised past every version published
        or seen in use before: a learner resumed from an older checkpoint would otherwise publish versions the
        policy node refuses as older than the one it runs."""
        lr = self.learner
        c = self.counts
        version = max(lr.version, c["critic_published_version"] + 1, c["policy_version_seen"] + 1)
        c["critic_published_version"] = version
        msg = weights_message(lr.critic.state_dict(), version=version,
                              architecture_id=critic_arch_id(self.policy_arch_id, lr.cfg), finetune_steps=0,
                              num_updates=lr.num_updates)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.weights_pub.publish(msg)

    def _publish_weights(self) -> None:
        lr = self.learner
        msg = weights_message(lr.policy.ft_net.state_dict(), version=lr.policy_version,  # type: ignore[union-attr]
                              architecture_id=lr.policy.arch_id, finetune_steps=lr.finetune_steps,
                              num_updates=lr.num_updates)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.weights_pub.publish(msg)
        self.get_logger().info(f"published policy version {msg.version} ({len(msg.payload) / 1e6:.1f} MB)")

    def _publish_stats(self, stats: dict[str, float]) -> None:
        m = LearnerStats()
        m.header.stamp = self.get_clock().now().to_msg()
        m.num_updates = int(self.learner.num_updates)
        m.policy_version = int(self.counts["critic_published_version"] if self.select else self.learner.policy_version)
        for f in ("actor_loss", "critic_loss", "approx_kl", "clip_fraction"):
            setattr(m, f, float(stats.get(f, float("nan"))))
        m.actor_scale = float(stats.get("actor_scale", float("nan")))
        m.critic_scale = float(stats.get("critic_scale", float("nan")))
        m.samples_per_second = float(self.samples_per_s)
        m.transitions_received = self.counts["transitions_received"]
        if self.select:  # off-policy: nothing is stale; duplicates and refusals are in /diagnostics
            m.buffer_size = len(self.replay)
            m.transitions_stale = 0
            m.transitions_unmatched = self.counts["rewards_unmatched"]
        else:
            m.buffer_size = len(self.buffer)
            m.transitions_stale = int(self.learner.counters.get("refused_stale", 0) + self.buffer.counters.dropped_stale)
            m.transitions_unmatched = self.counts["rewards_unmatched"] + self.buffer.counters.unmatched_rewards
        m.success_rate = float(sum(self.outcomes) / len(self.outcomes)) if self.outcomes else 0.0
        self.stats_pub.publish(m)
        text = Marker(ns="learner_status", id=0, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
        text.header.frame_id, text.header.stamp = "fr3_link0", m.header.stamp
        text.pose.position.x, text.pose.position.z, text.pose.orientation.w = 0.5, 0.9, 1.0
        text.scale.z = 0.05
        text.color.r = text.color.g = text.color.b = text.color.a = 1.0
        text.text = (f"critic v{m.policy_version} | gradient steps {m.num_updates} | success {m.success_rate:.2f} | "
                     f"Mechanic scale {m.critic_scale:.3g} | replay {m.buffer_size}" if self.select else
                     f"policy v{m.policy_version} | updates {m.num_updates} | success {m.success_rate:.2f} | "
                     f"Mechanic scale {m.actor_scale:.3g} | KL {m.approx_kl:.3g}")
        self.marker_pub.publish(MarkerArray(markers=[text]))

    def _publish_diagnostics(self) -> None:
        if self.select:
            lr = self.learner
            values = {**self.counts, **{f"replay_{k}": v for k, v in self.replay.counters().items()},
                      **{f"stream_{k}": v for k, v in self.stream.counters.items()},
                      "stream_pending": len(self.stream), "policy_version": self.counts["critic_published_version"],
                      "num_updates": lr.num_updates, "nonfinite_skipped": lr.nonfinite_skipped,
                      "rewards_waiting": len(self.join.waiting)}
            level = DiagnosticStatus.WARN if self.counts["updates_failed"] else DiagnosticStatus.OK
            publish_diagnostics(self, self.diag_pub, "learner_node: value-guided selection + Mechanic",
                                self.policy_arch_id, level, f"critic version {self.counts['critic_published_version']}, "
                                f"{lr.num_updates} "
                                f"gradient steps", values)
            return
        values = {**self.counts, **{f"buffer_{k}": v for k, v in vars(self.buffer.counters).items()},
                  "buffer_size": len(self.buffer), "buffer_complete": self.buffer.num_complete(),
                  "policy_version": self.learner.policy_version, "num_updates": self.learner.num_updates,
                  "refused_stale": self.learner.counters.get("refused_stale", 0),
                  "rewards_waiting": len(self.join.waiting)}
        level = DiagnosticStatus.WARN if self.counts["updates_failed"] else DiagnosticStatus.OK
        publish_diagnostics(self, self.diag_pub, "learner_node: DPPO + Mechanic", self.learner.policy.arch_id, level,
                            f"version {self.learner.policy_version}, {self.learner.num_updates} updates", values)

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
