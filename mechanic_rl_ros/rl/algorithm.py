"""The learner interface the rest of the stack sees, independent of the RL algorithm.

The stack's loop is *collect -> update -> new weights*: the policy node samples
with the latest weights it received and stamps every decision with that
weights version; the learner turns complete decision steps into a
:class:`~mechanic_rl_ros.rl.buffer.Batch`, calls :meth:`RLAlgorithm.update`,
and publishes :meth:`RLAlgorithm.policy_weights` whenever the version moved.
DPPO (:class:`~mechanic_rl_ros.rl.dppo.DPPO`) is the first implementation;
another algorithm only has to provide the same members.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Protocol, runtime_checkable

from .buffer import Batch


class NonFiniteUpdateError(ValueError):
    """An update produced a NaN/inf loss or gradient; the learner rolled back to its last good state."""


@dataclass(frozen=True)
class PolicyWeights:
    """One versioned set of policy weights, the content of the ``PolicyWeights`` message.

    ``payload`` is safetensors bytes of the fine-tuned network (the policy's
    ``ft_net``), loadable with ``DiffusionPolicy.load_weights_bytes(payload,
    arch_id=..., sha256=..., which="ft_net")``; its metadata repeats
    ``arch_id``, ``finetune_steps`` (K': the receiver must run the last K'
    denoising steps with these weights) and ``policy_version``.
    """

    version: int           #: strictly increasing per learner run; 0 = the pretrained checkpoint
    num_updates: int       #: gradient steps that produced this version
    arch_id: str
    sha256: str            #: lowercase hex SHA-256 of ``payload``
    payload: bytes
    finetune_steps: int    #: K'
    encoding: str = "safetensors"


@runtime_checkable
class RLAlgorithm(Protocol):
    """What a learner node needs from an RL algorithm.

    Attributes:
        policy_version: version of the weights :meth:`policy_weights` returns;
            bumps when an update changed the policy.
        num_updates: gradient steps done so far.
    """

    policy_version: int
    num_updates: int

    def update(self, batch: Batch) -> dict[str, float]:
        """One learner update on complete decision steps; returns statistics (see the implementation).

        Must use the behaviour log-probabilities in ``batch``, refuse data too
        many versions old and count it, and leave every piece of state
        untouched when it raises.
        """
        ...

    def policy_weights(self) -> PolicyWeights:
        """The current policy weights, serialised (cached per version)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume (networks, optimisers, counters, random state)."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        ...

    def save(self, directory: str | Path) -> Path:
        """Write a checkpoint directory without pickle (safetensors + JSON; optimiser state may use
        ``torch.save`` read back with ``weights_only=True``, local files only)."""
        ...
