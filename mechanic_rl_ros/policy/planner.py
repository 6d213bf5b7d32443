"""The diffusion policy as the planner of a :class:`~mechanic_rl_ros.control.chunk_loop.ChunkLoop`.

:class:`PolicyPlanner` turns a :class:`~mechanic_rl_ros.control.chunk_loop.PlanRequest`
into a :class:`~mechanic_rl_ros.control.chunk_loop.Chunk`: it samples T_p
actions from the T_o history, keeps the T_a actions for the instants the
chunk will run at (``lead``), and records the :class:`Decision` a learner
trains on. The policy node, ``mechanic-rl eval`` and the tests use this one
class, so a seed gives the same actions everywhere.

Chunk j of a planner's lifetime draws its noise from a generator seeded with
``seed * 100003 + j + 1``, so results do not depend on what else used the
global random state. New weights given to :meth:`PolicyPlanner.stage_weights`
are swapped in at the start of the next plan, never inside one.

With a ``selector`` (value-guided selection, :mod:`mechanic_rl_ros.rl.selection`)
the frozen policy encodes the history once, denoises N proposals from N
draws x_K ~ N(0, I) in one batched deterministic DDIM call, and the
selector's critic picks the one to run; the weights staged are then the
critic's, and the diffusion policy never changes.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable, Mapping

import numpy as np
import torch

from mechanic_rl_ros.control.chunk_loop import Chunk, PlanRequest
from mechanic_rl_ros.control.decision import Decision

from .policy import DiffusionPolicy


def propose(policy: DiffusionPolicy, feat: torch.Tensor, x_init: torch.Tensor,
            leads: list[int]) -> tuple[Any, torch.Tensor]:
    """N proposals per state for value-guided selection: deterministic DDIM from ``x_init`` [B * N, T_p, A]
    conditioned on each state's encoding ``feat`` [B, F] (computed once), in one batched call. Returns the
    sample (batch B * N, state-major) and the proposals as executable chunks [B, N, T_a * A] (normalised;
    state i's for its ``leads[i]``). Used by the policy node's planner and the headless trainer alike."""
    b = feat.shape[0]
    n = x_init.shape[0] // b
    out = policy.sample(None, stochastic=False, x_init=x_init, cond=feat.repeat_interleave(n, dim=0))
    norm = out.actions_norm.view(b, n, *out.actions_norm.shape[1:])
    cands = torch.stack([policy.executable(norm[i], lead) for i, lead in enumerate(leads)]).reshape(b, n, -1)
    return out, cands


class PolicyPlanner:
    """Plans chunks with a :class:`DiffusionPolicy` (see the module docstring).

    Args:
        policy: the policy, in eval mode.
        stochastic: sample as the RL sampler does (DPPO's stochastic DDIM,
            recorded chain and log-probabilities) instead of deterministic DDIM.
        noise_clip: with ``stochastic``, clip each N(0, I) draw to +-this (0: off).
        seed: see the module docstring.
        version: the weights version the policy starts with.
        on_weights: called after every swap attempt with ``(version, None)``
            or ``(version, exception)``; a failed swap keeps the old weights.
        selector: a :class:`~mechanic_rl_ros.rl.selection.CriticSelector` (see the
            module docstring); ``stochastic`` is then ignored.
        partial: staged weights are a part of the policy network itself
            (:meth:`DiffusionPolicy.load_partial`, the distillation learner's
            layers), not the fine-tuned copy.
    """

    def __init__(self, policy: DiffusionPolicy, *, stochastic: bool = False, noise_clip: float = 0.0,
                 seed: int = 0, version: int = 0,
                 on_weights: Callable[[int, Exception | None], None] | None = None, selector: Any = None,
                 partial: bool = False):
        self.policy = policy
        self.partial = bool(partial)
        self.selector = selector
        self.stochastic = bool(stochastic)
        self.noise_clip = float(noise_clip)
        self.seed = int(seed)
        self.version = int(version)
        self.calls = 0
        self.on_weights = on_weights
        self.latencies: deque[float] = deque(maxlen=200)
        self._pending: tuple[Mapping[str, Any], int, int | None] | None = None
        self.swap_seconds = float("nan")  #: how long the last swap of staged weights took
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        """For :class:`~mechanic_rl_ros.policy.planner_process.PlannerProcess`: no lock, no staged weights."""
        state = dict(self.__dict__)
        del state["_lock"]
        state["_pending"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def stage_weights(self, tensors: Mapping[str, Any], version: int, finetune_steps: int | None) -> bool:
        """Verified fine-tuned-network tensors to swap in before the next plan (the newest staged wins); False
        when refused. With ``partial`` the network adopts the tensors themselves: the caller hands them over
        and keeps no reference; they are checked against the network here, on the caller's thread, so that
        the swap between two chunks is the pointer swap alone (a mismatch is reported through ``on_weights``
        at once)."""
        if self.partial and self.selector is None:
            try:
                tensors = self.policy.check_partial(tensors, adopt=True)
            except (ValueError, RuntimeError) as exc:
                if self.on_weights is not None:
                    self.on_weights(int(version), exc)
                return False
        with self._lock:
            self._pending = (tensors, int(version), finetune_steps)
        return True

    def _swap(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return
        tensors, version, k_ft = pending
        start = time.perf_counter()
        try:
            if self.selector is not None:
                self.selector.load(tensors, version)
            elif self.partial:
                self.policy.load_partial(tensors, adopt=True, checked=True)
            else:
                self.policy.load_finetuned(tensors, k_ft)
            self.version = version
            err = None
        except (ValueError, RuntimeError) as exc:
            err = exc
        self.swap_seconds = time.perf_counter() - start  # the copy into the network alone, between two chunks
        if self.on_weights is not None:
            self.on_weights(version, err)

    def __call__(self, req: PlanRequest) -> Chunk:
        self._swap()
        self.calls += 1
        gen = torch.Generator().manual_seed(self.seed * 100003 + self.calls)
        if self.selector is not None:
            return self._select(req, gen)
        start = time.perf_counter()
        with torch.inference_mode():
            out = self.policy.sample(self.policy.batch_single(req.history), stochastic=self.stochastic,
                                     generator=gen, noise_clip=self.noise_clip if self.stochastic else None)
        self.latencies.append(time.perf_counter() - start)
        predicted = out.actions[0].cpu().numpy().astype(np.float64)
        if not np.all(np.isfinite(predicted)):
            raise FloatingPointError("the model produced non-finite actions")
        logp = (out.logprobs[0].cpu().numpy().astype(np.float64) if out.logprobs is not None
                else np.zeros(0, np.float64))
        decision = Decision(obs=req.history, chain=out.chain[0].cpu().numpy().astype(np.float32),
                            chain_logprob=logp, policy_version=self.version, episode=req.episode,
                            chunk=req.index, stamps=req.stamps)
        return Chunk(self.policy.executable(predicted, req.lead), req.index, self.version, decision, predicted,
                     self.policy.tail(predicted, req.lead))

    def _select(self, req: PlanRequest, gen: torch.Generator) -> Chunk:
        """N proposals from one encoding, the selector's choice among them (module docstring)."""
        policy, pc, n = self.policy, self.policy.cfg, self.selector.cfg.num_candidates
        start = time.perf_counter()
        with torch.inference_mode():
            feat = policy.encode(policy.batch_single(req.history))
            x = torch.randn((n, pc.pred_horizon, pc.action_dim), generator=gen)
            out, cands = propose(policy, feat, x, [req.lead])
            cands = cands[0]
            idx = self.selector.choose(feat[0], cands, req.index)
        self.latencies.append(time.perf_counter() - start)
        predicted = out.actions[idx].cpu().numpy().astype(np.float64)
        if not np.all(np.isfinite(predicted)):
            raise FloatingPointError("the model produced non-finite actions")
        decision = Decision(obs=req.history, chain=out.chain[idx].cpu().numpy().astype(np.float32),
                            chain_logprob=np.zeros(0, np.float64), policy_version=self.version, episode=req.episode,
                            chunk=req.index, stamps=req.stamps, features=feat[0].cpu().numpy().astype(np.float32),
                            proposals=cands.cpu().numpy().astype(np.float32), chosen=idx)
        return Chunk(policy.executable(predicted, req.lead), req.index, self.version, decision, predicted,
                     policy.tail(predicted, req.lead))
