"""Value-guided selection as a :class:`~mechanic_rl_ros.rl.learner.Learner`: the stack's default algorithm.

Each decision's features, proposals and choice (the first step of its chunk) and the chunk's step
rewards go through the join into a :class:`~mechanic_rl_ros.rl.selection_stream.SelectStream`, which
makes a replay row of a decision once its rewards and the next decision are known
(:class:`~mechanic_rl_ros.rl.replay.CandidateReplay`). After ``warmup_decisions`` rows the critic
ensemble (:class:`~mechanic_rl_ros.rl.selection.SelectLearner`) owes ``utd`` gradient steps per row:

    owed = utd * (rows stored - warmup_decisions) - gradient steps made,

the update-to-data ratio of off-policy RL counted in decisions, the same in learner_node and in
``mechanic-rl train-select``. The payload is the critic alone; the diffusion policy never changes.
The schedule (:class:`SelectionSchedule`) is read from config/learner.yaml (learner_node's parameters),
the critic's settings from config/select.yaml, by the node and the headless trainer alike.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .learner import STATE_FILE, Learner, Payload, Report, StepResult
from .replay import CandidateReplay
from .selection import (DEFAULT_SELECT_CONFIG, SelectConfig, SelectLearner, critic_arch_id, export_critic,
                        load_select_config, policy_weights_id)
from .selection_stream import SelectStream
from mechanic_rl_ros.resources import config_file

#: learner_node's parameters file, whose selection schedule the headless trainer reads too
DEFAULT_LEARNER_CONFIG = config_file("learner.yaml")


@dataclass
class SelectionSchedule:
    """When the selection learner learns, publishes and checkpoints (learner_node's parameters of the
    same names; config/learner.yaml holds their defaults)."""

    utd: int                      #: gradient steps per new decision (update-to-data ratio)
    warmup_decisions: int         #: complete decisions before the first gradient step
    replay_capacity: int          #: [decisions] held in the replay buffer
    critic_publish_every: int     #: [gradient steps] between two published critics
    critic_checkpoint_every: int  #: [gradient steps] between two checkpoints

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "SelectionSchedule":
        return cls(**{f.name: int(params[f.name]) for f in fields(cls)})


def load_schedule(path: str | Path | None = None, **overrides: Any) -> SelectionSchedule:
    """The :class:`SelectionSchedule` of a learner_node parameters file (``None``: config/learner.yaml), with
    ``overrides`` (those not None) on top; a missing key raises ValueError naming the file."""
    from mechanic_rl_ros.config_files import load_yaml

    p = Path(path) if path else DEFAULT_LEARNER_CONFIG
    params = dict((load_yaml(p, "learner config").get("learner_node") or {}).get("ros__parameters") or {})
    params.update({k: v for k, v in overrides.items() if v is not None})
    missing = [f.name for f in fields(SelectionSchedule) if f.name not in params]
    if missing:
        raise ValueError(f"learner config {p}: learner_node.ros__parameters lacks {missing}")
    return SelectionSchedule.from_params(params)


class OnlineSelection(Learner):
    """See the module docstring. ``policy_arch_id`` / ``policy_weights``: the frozen policy whose features
    and proposals the critic scores (they go with the exported critic and the wire's architecture id)."""

    algorithm = "select"

    def __init__(self, cfg: SelectConfig, schedule: SelectionSchedule, policy_arch_id: str,
                 policy_weights: str | None = None):
        super().__init__()
        self.ensemble = SelectLearner(cfg)
        self.replay = CandidateReplay(schedule.replay_capacity, cfg.feat_dim, cfg.act_dim, cfg.num_candidates)
        self.stream = SelectStream(self.replay)
        self.policy_arch_id, self.policy_weights = policy_arch_id, policy_weights
        self.rng = np.random.default_rng(cfg.seed + 29)
        self.set_schedule(schedule)

    def set_schedule(self, schedule: SelectionSchedule) -> None:
        """Take a (new) schedule; the replay keeps its capacity."""
        self.schedule = schedule
        self.publish_every = schedule.critic_publish_every
        self.checkpoint_every = schedule.critic_checkpoint_every

    @property
    def cfg(self) -> SelectConfig:
        return self.ensemble.cfg

    # ------------------------------------------------------------ input
    def _decision(self, episode: int, chunk: int, decision: Any) -> None:
        if decision.proposals is None:
            raise ValueError("decision: no features/proposals/chosen: is policy_node running algorithm dppo "
                             "while this learner runs select?")
        self.stream.add_decision(episode, chunk, decision.features, decision.proposals, decision.chosen)

    def _executed(self, episode: int, chunk: int) -> None:
        self.stream.add_step(episode, chunk)

    def _credit(self, episode: int, chunk: int, reward: float, terminated: bool, truncated: bool) -> bool:
        return self.stream.add_reward(episode, chunk, reward, terminated or truncated)

    def _drop(self, episode: int) -> int:
        return self.stream.drop_episode(episode)

    # ------------------------------------------------------------ learning
    @property
    def steps(self) -> int:
        return self.counts["grad_steps_done"]

    @property
    def trained(self) -> bool:
        return self.ensemble.version > 0

    def owed(self) -> int:
        ready = self.replay.added - self.schedule.warmup_decisions
        return max(0, self.schedule.utd * ready - self.steps) if ready > 0 else 0

    def step(self) -> StepResult:
        """One gradient step of the critic ensemble on a batch drawn uniformly from the replay."""
        with self.lock:
            batch = self.replay.sample(self.cfg.batch_size, self.rng)
        stats = self.ensemble.update(batch)
        with self.lock:
            self.counts["grad_steps_done"] += 1
        if stats.get("skipped"):
            return StepResult(stats, "gradient step refused: non-finite loss or gradient; critic unchanged",
                              failed=True)
        return StepResult(stats, samples=float(self.cfg.batch_size))

    def choose(self, feat: Any, cands: Any, t: Any = None) -> Any:
        """[B] the critic's choice among proposals ``cands`` [B, N, act_dim] at features ``feat`` [B, F]."""
        return self.ensemble.choose(feat, cands, t)

    # ------------------------------------------------------------ output
    def payload(self) -> Payload:
        """The critic. Its version is the learner's, raised past every version published or seen in use
        before: a learner resumed from an older checkpoint would otherwise publish versions the policy node
        refuses as older than the one it runs."""
        c, ensemble = self.counts, self.ensemble
        version = max(ensemble.version, c["critic_published_version"] + 1, c["policy_version_seen"] + 1)
        c["critic_published_version"] = version
        return Payload(ensemble.critic.state_dict(), version, critic_arch_id(self.policy_arch_id, ensemble.cfg), 0,
                       ensemble.num_updates)

    def report(self) -> Report:
        ensemble = self.ensemble
        version = self.counts["critic_published_version"]
        values = {**self.counts, **{f"replay_{k}": v for k, v in self.replay.counters().items()},
                  **{f"stream_{k}": v for k, v in self.stream.counters.items()},
                  "stream_pending": len(self.stream), "policy_version": version,
                  "num_updates": ensemble.num_updates, "nonfinite_skipped": ensemble.nonfinite_skipped,
                  "rewards_waiting": len(self.join.waiting)}
        # off-policy: nothing is stale; duplicates and refusals are in the values
        return Report(version, ensemble.num_updates, len(self.replay), 0, self.counts["rewards_unmatched"],
                      "value-guided selection + Mechanic", self.policy_arch_id,
                      f"critic version {version}, {ensemble.num_updates} gradient steps", values)

    def summary(self, stats: Mapping[str, float]) -> str:
        nan = float("nan")
        return (f"{self.steps} gradient steps on {self.replay.added} decisions: critic loss "
                f"{stats.get('critic_loss', nan):.4f}, Q {stats.get('q_mean', nan):.3f}, Mechanic scale "
                f"{stats.get('critic_scale', nan):.3g}; critic version {self.counts['critic_published_version']}")

    def ready_line(self) -> str:
        c, s = self.cfg, self.schedule
        return (f"value-guided selection, {c.num_candidates} proposals, {c.num_critics} critics, "
                f"optimizer={c.optimizer}, UTD {s.utd}, warm-up {s.warmup_decisions} decisions, critic version "
                f"{self.ensemble.version}, {self.ensemble.num_updates} gradient steps so far")

    # ------------------------------------------------------------ persistence
    def _save_parts(self, directory: Path) -> dict[str, Any]:
        self.ensemble.save(directory / "learner")
        self.replay.save(directory / "replay.npz")
        self.stream.save(directory / "stream.npz")
        export_critic(self.ensemble, directory / "critic", self.policy_arch_id, self.policy_weights)
        return {"policy_arch_id": self.policy_arch_id, "policy_weights": self.policy_weights,
                "schedule": asdict(self.schedule), "sampler": self.rng.bit_generator.state}

    @classmethod
    def load(cls, directory: str | Path, params: Mapping[str, Any] | None = None) -> "OnlineSelection":
        """The learner :meth:`save` wrote; ``params`` (learner_node's) replace its schedule, except the
        replay's capacity, which is the saved replay's."""
        d = Path(directory)
        state = json.loads((d / STATE_FILE).read_text())
        replay = CandidateReplay.load(d / "replay.npz")
        schedule = {**(state.get("schedule") or asdict(load_schedule())),
                    **{f.name: params[f.name] for f in fields(SelectionSchedule) if params and f.name in params},
                    "replay_capacity": replay.capacity}
        ensemble = SelectLearner.load(d / "learner")
        self = cls(ensemble.cfg, SelectionSchedule.from_params(schedule), state["policy_arch_id"],
                   state.get("policy_weights"))
        self.ensemble, self.replay = ensemble, replay
        self.stream = SelectStream(replay)
        self.stream.load(d / "stream.npz")
        if "sampler" in state:  # a resumed learner draws the batches it would have drawn
            self.rng.bit_generator.state = state["sampler"]
        self._load_common(state)
        return self

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "OnlineSelection":
        """Fresh, its dimensions from the policy ``checkpoint``; the critic's settings from
        ``select_config`` (config/select.yaml) with ``seed`` and ``optimizer`` on top."""
        from mechanic_rl_ros.policy import DiffusionPolicy

        policy = DiffusionPolicy.from_checkpoint(Path(params["checkpoint"]))  # its dimensions and arch id only
        pc = policy.cfg
        cfg = load_select_config(params.get("select_config"), feat_dim=policy.net.cond_dim,
                                 act_dim=pc.action_horizon * pc.action_dim,
                                 **{k: params[k] for k in ("seed", "optimizer") if params.get(k) is not None})
        return cls(cfg, SelectionSchedule.from_params(params), policy.arch_id,
                   policy_weights_id(params["checkpoint"]))
