"""DPPO as a :class:`~mechanic_rl_ros.rl.learner.Learner`: fine-tuning the denoiser itself, at simulator scale.

Each decision (the first step of its chunk: observation, denoising chain, log-probabilities) becomes a
decision step of a :class:`~mechanic_rl_ros.rl.buffer.RolloutBuffer` that holds whole episodes only (an
aborted one is dropped before any of it is learned from); each step reward is added to its chunk. One
unit of learning is one :meth:`~mechanic_rl_ros.rl.dppo.DPPO.update` on ``batch_size`` complete
decisions (Ren et al., "Diffusion Policy Policy Optimization", 2024), owed whenever that many are held.
The payload is the fine-tuned denoiser (``policy.ft_net``). Settings: config/rl.yaml (DPPO, Mechanic,
critic) and learner_node's ``batch_size``, ``buffer_capacity``, ``publish_every``, ``checkpoint_every``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .buffer import RolloutBuffer
from .config import load_config
from .dppo import DPPO
from .errors import NonFiniteUpdateError
from .learner import Learner, Payload, Report, StepResult


def check_batch_size(batch_size: int, min_batch_size: int) -> None:
    """Refuse a batch below ``min_batch_size``: smaller batches make the update mostly noise."""
    if batch_size < min_batch_size:
        raise ValueError(f"parameter batch_size: got {batch_size}; expected at least min_batch_size = "
                         f"{min_batch_size} decisions per DPPO update: smaller batches make the update "
                         "mostly noise and drive the policy down (docs/learner.md, studies/pg_snr.py). Set "
                         "min_batch_size too to run small batches on purpose")


class OnlineDPPO(Learner):
    """See the module docstring."""

    algorithm = "dppo"

    def __init__(self, dppo: DPPO, buffer: RolloutBuffer, batch_size: int, publish_every: int = 1,
                 checkpoint_every: int = 5):
        super().__init__()
        self.dppo, self.buffer = dppo, buffer
        self.batch_size = int(batch_size)
        self.publish_every, self.checkpoint_every = int(publish_every), int(checkpoint_every)

    # ------------------------------------------------------------ input
    def _decision(self, episode: int, chunk: int, decision: Any) -> None:
        self.buffer.add_decision(decision)

    def _credit(self, episode: int, chunk: int, reward: float, terminated: bool, truncated: bool) -> bool:
        return self.buffer.add_step_reward(episode, chunk, reward, terminated=terminated, truncated=truncated)

    def _drop(self, episode: int) -> int:
        return self.buffer.drop_episode(episode)

    # ------------------------------------------------------------ learning
    @property
    def steps(self) -> int:
        return self.dppo.update_calls

    @property
    def trained(self) -> bool:
        return self.dppo.policy_version > 0

    def owed(self) -> int:
        with self.lock:
            return int(self.buffer.ready(self.batch_size))

    def step(self) -> StepResult:
        """One DPPO update on the ``batch_size`` oldest complete decisions."""
        with self.lock:
            batch = self.buffer.take_batch(self.batch_size)
        try:
            stats = self.dppo.update(batch)
        except NonFiniteUpdateError as exc:
            return StepResult({}, f"update refused, weights unchanged and not published: {exc}", failed=True)
        if not stats.get("decisions_used", 0):
            return StepResult(stats, f"batch of {len(batch)} decisions refused as stale (max_staleness "
                                     f"{self.dppo.cfg.max_staleness}); no update")
        return StepResult(stats, samples=float(np.sum(batch.env_steps)))

    # ------------------------------------------------------------ output
    def payload(self) -> Payload:
        dppo = self.dppo
        net = dppo.policy.ft_net
        return Payload(net.state_dict(), dppo.policy_version, dppo.policy.arch_id,  # type: ignore[union-attr]
                       dppo.finetune_steps, dppo.num_updates)

    def report(self) -> Report:
        dppo, buf = self.dppo, self.buffer
        values = {**self.counts, **{f"buffer_{k}": v for k, v in vars(buf.counters).items()},
                  "buffer_size": len(buf), "buffer_complete": buf.num_complete(),
                  "policy_version": dppo.policy_version, "num_updates": dppo.num_updates,
                  "refused_stale": dppo.counters.get("refused_stale", 0), "rewards_waiting": len(self.join.waiting)}
        return Report(dppo.policy_version, dppo.num_updates, len(buf),
                      int(dppo.counters.get("refused_stale", 0) + buf.counters.dropped_stale),
                      self.counts["rewards_unmatched"] + buf.counters.unmatched_rewards, "DPPO + Mechanic",
                      dppo.policy.arch_id, f"version {dppo.policy_version}, {dppo.num_updates} updates", values)

    def summary(self, stats: Mapping[str, float]) -> str:
        nan = float("nan")
        return (f"update {self.steps}: actor loss {stats.get('actor_loss', nan):.4f}, critic loss "
                f"{stats.get('critic_loss', nan):.4f}, Mechanic scale {stats.get('actor_scale', nan):.3g}, "
                f"policy version {self.dppo.policy_version}")

    def ready_line(self) -> str:
        dppo = self.dppo
        return (f"DPPO, optimizer={dppo.cfg.actor_optimizer} K'={dppo.finetune_steps} batch={self.batch_size} "
                f"decisions, policy version {dppo.policy_version}, {dppo.num_updates} updates so far")

    # ------------------------------------------------------------ persistence
    def _save_parts(self, directory: Path) -> dict[str, Any]:
        self.dppo.save(directory)
        self.buffer.save(directory / "buffer.npz")
        return {}

    @classmethod
    def load(cls, directory: str | Path, params: Mapping[str, Any] | None = None) -> "OnlineDPPO":
        import json

        from .learner import STATE_FILE

        d = Path(directory)
        p = dict(params or {})
        check_batch_size(int(p.get("batch_size", 1)), int(p.get("min_batch_size", 1)))
        self = cls(DPPO.load(d), RolloutBuffer.load(d / "buffer.npz"), int(p.get("batch_size", 1)),
                   int(p.get("publish_every", 1)), int(p.get("checkpoint_every", 5)))
        self._load_common(json.loads((d / STATE_FILE).read_text()))
        return self

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "OnlineDPPO":
        """Fresh from the policy ``checkpoint``, config/rl.yaml (with ``rl_config`` merged over it) and the
        ``optimizer`` for actor and critic."""
        check_batch_size(int(params["batch_size"]), int(params["min_batch_size"]))
        overrides = [f"learner.actor_optimizer={params['optimizer']}",
                     f"learner.critic_optimizer={params['optimizer']}"]
        rl = load_config([params["rl_config"]] if params.get("rl_config") else None, overrides)
        dppo = DPPO.from_checkpoint(Path(params["checkpoint"]), rl.learner)
        buffer = RolloutBuffer(action_horizon=dppo.policy.cfg.action_horizon,
                               capacity=int(params["buffer_capacity"]), whole_episodes=True)
        return cls(dppo, buffer, int(params["batch_size"]), int(params["publish_every"]),
                   int(params["checkpoint_every"]))
