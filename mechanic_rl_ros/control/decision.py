"""One RL decision: what the policy decided at a chunk boundary, as the learner needs it.

The policy decides once per action chunk (Diffusion Policy executes T_a of the
T_p predicted actions, then replans; DPPO's environment MDP has the same
granularity, Ren et al. 2024, Sec. 4). The same :class:`Decision` object is
made by every producer (the policy node, the headless collector), crosses the
process boundary through :mod:`mechanic_rl_ros.wire.transition`, and is what
the learner's buffer stores. Observations are flattened with one naming
scheme, :func:`flatten_obs`, everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

_IMG_PREFIX = "images."


def flatten_obs(obs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """``{"qpos": a, "images": {"scene": b}}`` -> ``{"qpos": a, "images.scene": b}`` (numpy, no copy)."""
    out: dict[str, np.ndarray] = {}
    for key, value in obs.items():
        if key == "images":
            for cam, img in value.items():
                out[_IMG_PREFIX + cam] = np.asarray(img)
        else:
            out[key] = np.asarray(value)
    return out


def unflatten_obs(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten_obs`."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        if key.startswith(_IMG_PREFIX):
            out.setdefault("images", {})[key[len(_IMG_PREFIX):]] = value
        else:
            out[key] = value
    return out


def index_obs(obs: Mapping[str, Any], idx: Any) -> dict[str, Any]:
    """Rows ``idx`` of every array of a batched observation dict."""
    return unflatten_obs({k: v[idx] for k, v in flatten_obs(obs).items()})


@dataclass
class Decision:
    """One decision step at sampling time (its reward is joined later, by (episode, chunk)).

    ``obs`` is the policy's input, the T_o-step observation history
    (``{"qpos": float32[T_o, 7], ..., "images": {cam: uint8[T_o, H, W, 3]}}``).
    ``chain`` is float32 ``[K'+1, T_p, A]``, the sampled denoising chain from
    the input of the first fine-tuned step to the final normalised action, and
    ``chain_logprob`` float64 ``[K']`` the behaviour log-probability of each of
    those K' transitions (summed over T_p x A); both have K' = 0 for a
    deterministic sample. ``stamps`` are the observation stamps [s] where a
    robot clock gave them.

    Under value-guided selection (:mod:`mechanic_rl_ros.rl.selection`) the
    decision also carries what the selection learner trains on: ``features``
    float32 [F], the frozen policy's encoding of ``obs``; ``proposals``
    float32 [N, T_a * A], the N executable chunks it proposed (normalised);
    and ``chosen``, the index of the one that ran (``chain`` is then that
    proposal's deterministic chain).
    """

    obs: dict[str, Any]
    chain: np.ndarray
    chain_logprob: np.ndarray
    policy_version: int
    episode: int
    chunk: int
    stamps: np.ndarray | None = None
    features: np.ndarray | None = None
    proposals: np.ndarray | None = None
    chosen: int = -1

    @property
    def finetune_steps(self) -> int:
        """K': the number of denoising transitions this decision can be trained on."""
        return int(self.chain_logprob.shape[0])
