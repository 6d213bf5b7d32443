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

The layers a distillation learner trains (``partial``) are double-buffered:
:meth:`PolicyPlanner.stage_weights` checks them and copies them into a standby
network (:meth:`DiffusionPolicy.stage_partial`: a copy of the policy network
that shares every parameter but those layers) on the caller's thread, while the
active network serves inference; the swap at the start of the next plan
exchanges the two networks, two reference assignments with no copy. The
planning thread never waits for a copy: when a staging is being written at that
instant, the swap is left for the next plan.

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
            (the distillation learner's layers, double-buffered: see the
            module docstring), not the fine-tuned copy.

    ``swap_seconds``: how long the last swap between two chunks took (with
    ``partial``, the exchange of the two networks alone).
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
        #: (tensors, version, K') staged and not swapped in yet; with ``partial`` the tensors are already in the
        #: policy's standby network and the entry holds None for them
        self._pending: tuple[Mapping[str, Any] | None, int, int | None] | None = None
        self.swap_seconds = float("nan")  #: how long the last swap of staged weights took
        self._lock = threading.Lock()  # held while weights are staged; the swap does not wait for it

    def __getstate__(self) -> dict[str, Any]:
        """For :class:`~mechanic_rl_ros.policy.planner_process.PlannerProcess`: no lock, no staged weights (the
        policy leaves its standby network behind too; the child builds its own at its first staging)."""
        state = dict(self.__dict__)
        del state["_lock"]
        state["_pending"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def stage_weights(self, tensors: Mapping[str, Any], version: int, finetune_steps: int | None) -> bool:
        """Verified weights to swap in before the next plan (the newest staged wins); False when refused.

        With ``partial`` they are checked against the policy network and copied into its standby network
        here, on the caller's thread (the policy node's weights intake, the planner process's weights thread),
        under the planner's lock, so that the swap between two chunks is the exchange of two references; a
        mismatch is reported through ``on_weights`` at once and changes nothing (the weights staged before,
        if any, stay staged). Other weights are loaded by the swap itself."""
        if self.partial and self.selector is None:
            try:
                with self._lock:
                    self.policy.stage_partial(tensors)
                    self._pending = (None, int(version), finetune_steps)
            except (ValueError, RuntimeError) as exc:
                if self.on_weights is not None:
                    self.on_weights(int(version), exc)
                return False
            return True
        with self._lock:
            self._pending = (tensors, int(version), finetune_steps)
        return True

    def _swap(self) -> None:
        """Staged weights into service (the start of a plan, on the planning thread). Never waits: when a
        staging holds the lock at this instant, the swap is left for the next plan."""
        if self._pending is None or not self._lock.acquire(blocking=False):
            return
        try:
            pending, self._pending = self._pending, None
            if pending is not None and pending[0] is None:  # partial: already in the standby network
                start = time.perf_counter()
                self.policy.swap_standby()
                self.swap_seconds = time.perf_counter() - start  # the exchange of the two networks alone
                self.version = pending[1]
        finally:
            self._lock.release()
        if pending is None:
            return
        tensors, version, k_ft = pending
        err = None
        if tensors is not None:
            start = time.perf_counter()
            try:
                if self.selector is not None:
                    self.selector.load(tensors, version)
                else:
                    self.policy.load_finetuned(tensors, k_ft)
                self.version = version
            except (ValueError, RuntimeError) as exc:
                err = exc
            self.swap_seconds = time.perf_counter() - start  # the load into the network, between two chunks
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
