"""One executed step on the wire: :class:`~mechanic_rl_ros.control.decision.Decision` <-> ``Transition``.

The policy node publishes a ``Transition`` for every command it sends; the
first step of a chunk also carries that chunk's :class:`Decision` as named
``Tensor`` arrays (``decision`` field):

* ``observation.<key>`` -- the T_o observation history, one array per
  :func:`~mechanic_rl_ros.control.decision.flatten_obs` key
  (``observation.qpos``, ``observation.images.scene``, ...);
* ``observation_stamps`` -- float64 [T_o], their stamps [s];
* ``chain`` -- float32 [K+1, T_p, A], the whole sampled denoising chain;
* ``chain_logprob`` -- float64 [K], the behaviour log-probability of each
  denoising transition (empty for a deterministic sample);
* under value-guided selection also ``features`` -- float32 [F],
  ``proposals`` -- float32 [N, T_a * A] and ``chosen`` -- int64 [1]
  (:class:`Decision`).

Which of the K steps are trained (K') is the learner's choice; the weights it
sends back say K' (:mod:`mechanic_rl_ros.wire.weights`).

A step a person commanded (``intervention``) is a chunk of its own; its
decision carries only the observation history (and its stamps): no chain, the
policy did not choose the action. :func:`decision_from_transition` gives it an
empty chain ``[0, 0, A]``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mechanic_rl_ros.control.decision import Decision, flatten_obs, unflatten_obs
from mechanic_rl_ros.msg import Transition
from mechanic_rl_ros.wire.tensors import (WireError, as_float64_array, tensor_to_msg, tensors_from_msgs)

OBS_PREFIX = "observation."
STAMPS = "observation_stamps"
CHAIN = "chain"
CHAIN_LOGPROB = "chain_logprob"
FEATURES, PROPOSALS, CHOSEN = "features", "proposals", "chosen"


@dataclass
class ExecutedStep:
    """The fields of a ``Transition`` besides its decision."""

    episode: int
    step: int
    chunk: int
    chunk_step: int
    policy_version: int
    action: np.ndarray   #: float64 [8]: the 7 joint targets [rad] and the gripper width [m] actually sent
    clamped: bool
    intervention: bool = False  #: a person commanded it, not the policy


def transition_message(step: ExecutedStep, decision: Decision | None) -> Transition:
    """A ``Transition`` for ``step``; ``decision`` goes with the first step of its chunk (else None)."""
    msg = Transition()
    msg.header.frame_id = "fr3_link0"
    msg.episode, msg.step, msg.chunk, msg.chunk_step = step.episode, step.step, step.chunk, step.chunk_step
    msg.policy_version = int(step.policy_version)
    msg.action = as_float64_array(step.action)
    msg.clamped = bool(step.clamped)
    msg.intervention = bool(step.intervention)
    if decision is not None:
        tensors = {OBS_PREFIX + k: v for k, v in flatten_obs(decision.obs).items()}
        if decision.stamps is not None:
            tensors[STAMPS] = np.asarray(decision.stamps, dtype=np.float64)
        if not step.intervention:
            tensors[CHAIN] = np.asarray(decision.chain, dtype=np.float32)
            tensors[CHAIN_LOGPROB] = np.asarray(decision.chain_logprob, dtype=np.float64)
        if decision.proposals is not None:
            tensors[FEATURES] = np.asarray(decision.features, dtype=np.float32)
            tensors[PROPOSALS] = np.asarray(decision.proposals, dtype=np.float32)
            tensors[CHOSEN] = np.array([decision.chosen], dtype=np.int64)
        msg.decision = [tensor_to_msg(name, arr) for name, arr in tensors.items()]
    return msg


def executed_step(msg: Transition) -> ExecutedStep:
    """The step fields of a ``Transition``; WireError when ``action`` is not 8 finite numbers."""
    action = np.asarray(msg.action, dtype=np.float64)
    if action.shape != (8,) or not np.all(np.isfinite(action)):
        raise WireError("action", f"got {action.tolist()}; expected 8 finite numbers (7 joints [rad], gripper [m])")
    return ExecutedStep(int(msg.episode), int(msg.step), int(msg.chunk), int(msg.chunk_step), int(msg.policy_version),
                        action, bool(msg.clamped), bool(msg.intervention))


def decision_from_transition(msg: Transition) -> Decision | None:
    """The :class:`Decision` a ``Transition`` carries (None when its ``decision`` field is empty).

    Raises :class:`WireError` naming the field for missing, malformed or
    non-finite arrays.
    """
    if len(msg.decision) == 0:
        return None
    tensors = tensors_from_msgs(msg.decision, "decision")
    if msg.intervention:
        tensors.setdefault(CHAIN, np.zeros((0, 0, len(msg.action)), np.float32))
        tensors.setdefault(CHAIN_LOGPROB, np.zeros(0))
    for name in (CHAIN, CHAIN_LOGPROB):
        if name not in tensors:
            raise WireError("decision", f"no {name!r} tensor; got {sorted(tensors)}")
    chain, logp = tensors[CHAIN], tensors[CHAIN_LOGPROB]
    if chain.ndim != 3 or logp.ndim != 1 or (logp.shape[0] not in (0, chain.shape[0] - 1)):
        raise WireError("decision", f"chain {list(chain.shape)} and chain_logprob {list(logp.shape)}; expected "
                                    "[K+1, T_p, A] and [K] (or [0] for a deterministic sample)")
    for name in (CHAIN, CHAIN_LOGPROB):
        if not np.all(np.isfinite(tensors[name])):
            raise WireError(f"decision {name!r}", "contains NaN or Inf")
    obs = unflatten_obs({k[len(OBS_PREFIX):]: v for k, v in tensors.items() if k.startswith(OBS_PREFIX)})
    if not obs:
        raise WireError("decision", f"no '{OBS_PREFIX}*' tensors; got {sorted(tensors)}")
    features, proposals, chosen = _selection(tensors)
    return Decision(obs=obs, chain=chain, chain_logprob=logp, policy_version=int(msg.policy_version),
                    episode=int(msg.episode), chunk=int(msg.chunk), stamps=tensors.get(STAMPS),
                    features=features, proposals=proposals, chosen=chosen)


def _selection(tensors: dict[str, np.ndarray]) -> tuple[np.ndarray | None, np.ndarray | None, int]:
    """``features``, ``proposals``, ``chosen`` of a selection decision (all three or none), checked."""
    present = [n for n in (FEATURES, PROPOSALS, CHOSEN) if n in tensors]
    if not present:
        return None, None, -1
    if len(present) < 3:
        raise WireError("decision", f"has {present} but not all of {[FEATURES, PROPOSALS, CHOSEN]}")
    feat, props, chosen = tensors[FEATURES], tensors[PROPOSALS], tensors[CHOSEN]
    if feat.ndim != 1 or props.ndim != 2 or chosen.shape != (1,) or chosen.dtype.kind not in "iu":
        raise WireError("decision", f"features {list(feat.shape)}, proposals {list(props.shape)}, chosen "
                                    f"{list(chosen.shape)} {chosen.dtype}; expected [F], [N, T_a*A] and one integer")
    if not 0 <= int(chosen[0]) < props.shape[0]:
        raise WireError("decision 'chosen'", f"got {int(chosen[0])}; expected 0..{props.shape[0] - 1}")
    for name in (FEATURES, PROPOSALS):
        if not np.all(np.isfinite(tensors[name])):
            raise WireError(f"decision {name!r}", "contains NaN or Inf")
    return feat, props, int(chosen[0])
