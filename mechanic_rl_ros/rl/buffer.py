"""Decision-step rollout buffer, filled incrementally by an asynchronous learner.

It stores :class:`~mechanic_rl_ros.control.decision.Decision` objects, the
same type the policy node and the headless collector make. One RL decision is
one action chunk (Diffusion Policy executes T_a of the T_p
predicted actions, then replans; DPPO's MDP is at the same granularity, Ren et
al. 2024, Sec. 4). A decision step holds

* ``obs`` -- the policy's input, the T_o-step observation history
  (``{"qpos": float32[T_o, 7], ..., "images": {cam: uint8[T_o, H, W, 3]}}``);
* ``chain`` -- float32 ``[K+1, T_p, A]``: the whole sampled denoising chain,
  from x_K to the final (normalised) action;
* ``chain_logprob`` -- ``[K]``, the behaviour log-probability of each
  denoising transition, summed over the T_p x A elements, recorded at
  sampling time (the learner trains the last K' of them);
* ``policy_version`` -- the weights version that sampled it;
* ``episode``, ``chunk`` -- which trajectory, and the decision's index in it;
* later: its reward, the **undiscounted sum** of the per-step rewards of the
  executed steps (DPPO's multi-step wrapper sums them; the discount acts
  between decisions), ``terminated`` (true terminal state: no bootstrap) and
  ``truncated`` (time limit: bootstrap).

A decision step is *complete* when its reward is final and its bootstrap is
known: it terminated, or the next decision of its episode arrived (whose
observation is V's input at ``s'``), or :meth:`RolloutBuffer.set_next_obs`
supplied ``s'``, or it was truncated (with the final observation when given;
otherwise ``V(s)`` of the step itself stands in for ``V(s')``, counted in
``bootstrap_fallbacks``). :meth:`RolloutBuffer.take_batch` hands out the
oldest complete steps as a :class:`Batch`.

Mapping from the ROS messages: ``StepReward.terminal`` means "the episode ends
after this step" for any reason; pass ``terminated = terminal and not
truncated``, ``truncated = truncated``.

Serialisation is pickle-free: :meth:`RolloutBuffer.save` writes ``.npz``
(``allow_pickle=False`` loads it) or ``.safetensors``; metadata travels as
JSON.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from mechanic_rl_ros.control.decision import Decision, flatten_obs, index_obs, unflatten_obs

FORMAT = "mechanic_rl_ros.rl_buffer/1"
_CHAIN_KEY = "__chain__"


# ------------------------------------------------------------------------ batch
_BATCH_FIELDS = ("chain", "chain_logprob", "policy_version", "reward", "terminated", "truncated", "episode",
                 "chunk", "env_steps")


@dataclass
class Batch:
    """N complete decision steps as stacked numpy arrays (the input of ``RLAlgorithm.update``).

    ``obs`` / ``next_obs`` are observation dicts with a leading N axis;
    ``next_obs[i]`` is s' of step i (meaningless where ``terminated[i]``).
    """

    obs: dict[str, Any]
    next_obs: dict[str, Any]
    chain: np.ndarray            #: float32 [N, K+1, T_p, A]
    chain_logprob: np.ndarray    #: float64 [N, K] behaviour log-probs (summed over T_p x A)
    policy_version: np.ndarray   #: int64 [N]
    reward: np.ndarray           #: float64 [N], sum of the chunk's per-step rewards
    terminated: np.ndarray       #: bool [N]
    truncated: np.ndarray        #: bool [N]
    episode: np.ndarray          #: int64 [N]
    chunk: np.ndarray            #: int64 [N]
    env_steps: np.ndarray        #: int64 [N], control steps that were rewarded in the chunk

    def __len__(self) -> int:
        return int(self.chain.shape[0])

    def select(self, idx: Any) -> "Batch":
        """Rows ``idx`` (index array or boolean mask) as a new batch."""
        return Batch(obs=index_obs(self.obs, idx), next_obs=index_obs(self.next_obs, idx),
                     **{f: getattr(self, f)[idx] for f in _BATCH_FIELDS})

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat ``name -> array`` dict (``obs.*``, ``next_obs.*`` and the fields), for npz/safetensors."""
        out = {f"obs.{k}": v for k, v in flatten_obs(self.obs).items()}
        out.update({f"next_obs.{k}": v for k, v in flatten_obs(self.next_obs).items()})
        out.update({f: np.asarray(getattr(self, f)) for f in _BATCH_FIELDS})
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "Batch":
        obs = unflatten_obs({k[4:]: v for k, v in arrays.items() if k.startswith("obs.")})
        nxt = unflatten_obs({k[9:]: v for k, v in arrays.items() if k.startswith("next_obs.")})
        return cls(obs=obs, next_obs=nxt, **{f: np.asarray(arrays[f]) for f in _BATCH_FIELDS})

    @classmethod
    def concatenate(cls, batches: Iterable["Batch"]) -> "Batch":
        batches = list(batches)
        if not batches:
            raise ValueError("Batch.concatenate: no batches")
        arrays = [b.to_arrays() for b in batches]
        return cls.from_arrays({k: np.concatenate([a[k] for a in arrays]) for k in arrays[0]})


# ----------------------------------------------------------------------- buffer
@dataclass
class _HeldStep:
    obs: dict[str, np.ndarray]
    chain: np.ndarray
    chain_logprob: np.ndarray
    policy_version: int
    episode: int
    chunk: int
    reward: float = 0.0
    env_steps: int = 0
    reward_final: bool = False
    terminated: bool = False
    truncated: bool = False
    next_obs: dict[str, np.ndarray] | None = None

    def complete(self) -> bool:
        return self.reward_final and (self.terminated or self.truncated or self.next_obs is not None)


@dataclass
class BufferCounters:
    """Running totals of what the buffer received and dropped (for learner statistics)."""

    decisions_received: int = 0
    decisions_taken: int = 0
    dropped_overflow: int = 0       #: oldest steps dropped because the buffer was full
    dropped_episodes: int = 0       #: steps removed by drop_episode (abandoned episodes)
    dropped_stale: int = 0          #: steps removed by drop_stale
    unmatched_rewards: int = 0      #: rewards for decisions the buffer does not hold
    duplicate_decisions: int = 0    #: add_decision for an (episode, chunk) already held (replaced)
    bootstrap_fallbacks: int = 0    #: truncated steps without a final observation (V(s) used for V(s'))


@dataclass
class RolloutBuffer:
    """Incrementally filled store of decision steps; see the module docstring.

    Args:
        action_horizon: T_a, the number of per-step rewards that finalise a
            chunk's reward in :meth:`add_step_reward`.
        capacity: most decision steps held; adding to a full buffer drops the
            oldest one (counted in ``counters.dropped_overflow``).
        whole_episodes: hand out a step only once its episode has ended (a
            terminated or truncated step was rewarded). The stack's learner
            sets it: an episode the robot aborts (a reflex) is dropped whole
            (:meth:`drop_episode`), so none of its steps may have been learned
            from before the abort is known.
    """

    action_horizon: int = 8
    capacity: int = 4096
    counters: BufferCounters = field(default_factory=BufferCounters)
    whole_episodes: bool = False

    def __post_init__(self) -> None:
        if self.action_horizon < 1 or self.capacity < 1:
            raise ValueError("action_horizon and capacity must be >= 1")
        self._steps: "OrderedDict[tuple[int, int], _HeldStep]" = OrderedDict()
        self._spec: dict[str, tuple[tuple[int, ...], str]] | None = None
        #: episodes whose last step was rewarded (terminated or truncated)
        self._ended: set[int] = set()

    # ---------------------------------------------------------------- filling
    def add_decision(self, decision: Decision) -> None:
        """Store a decision step at sampling time (its reward comes later).

        Its observation also becomes the bootstrap state s' of decision
        ``(episode, chunk - 1)`` if that one is still held. Raises ValueError
        for shapes that differ from the held decisions' or non-finite values.
        """
        flat = {k: np.array(v, copy=True) for k, v in flatten_obs(decision.obs).items()}
        chain = np.array(decision.chain, dtype=np.float32, copy=True)
        logp = np.array(decision.chain_logprob, dtype=np.float64, copy=True).reshape(-1)
        policy_version, episode, chunk = decision.policy_version, decision.episode, decision.chunk
        self._check(flat, chain, logp)
        if not np.all(np.isfinite(chain)) or not np.all(np.isfinite(logp)):
            raise ValueError("add_decision: chain and chain_logprob must be finite")
        key = (int(episode), int(chunk))
        if key in self._steps:
            self.counters.duplicate_decisions += 1
            del self._steps[key]
        while len(self._steps) >= self.capacity:
            self._steps.popitem(last=False)
            self.counters.dropped_overflow += 1
        self._steps[key] = _HeldStep(flat, chain, logp, int(policy_version), key[0], key[1])
        self.counters.decisions_received += 1
        prev = self._steps.get((key[0], key[1] - 1))
        if prev is not None and not prev.terminated:
            prev.next_obs = flat

    def add_step_reward(self, episode: int, chunk: int, reward: float, terminated: bool = False,
                        truncated: bool = False, final_obs: Mapping[str, Any] | None = None) -> bool:
        """Add the reward of one executed control step of decision ``(episode, chunk)``.

        The chunk's reward is final after ``action_horizon`` steps or at the
        step that ends the episode. Returns False (and counts it) when the
        decision is not held.
        """
        step = self._steps.get((int(episode), int(chunk)))
        if step is None or step.reward_final:
            self.counters.unmatched_rewards += 1
            return False
        reward = float(reward)
        if not np.isfinite(reward):
            raise ValueError(f"add_step_reward: reward must be finite, got {reward}")
        step.reward += reward
        step.env_steps += 1
        if terminated or truncated:
            self._finish(step, terminated, truncated, final_obs)
        elif step.env_steps >= self.action_horizon:
            step.reward_final = True
        return True

    def set_outcome(self, episode: int, chunk: int, reward: float, terminated: bool = False,
                    truncated: bool = False, final_obs: Mapping[str, Any] | None = None,
                    env_steps: int | None = None) -> bool:
        """Set the whole chunk's reward (sum of its per-step rewards) and its end flags at once."""
        step = self._steps.get((int(episode), int(chunk)))
        if step is None:
            self.counters.unmatched_rewards += 1
            return False
        reward = float(reward)
        if not np.isfinite(reward):
            raise ValueError(f"set_outcome: reward must be finite, got {reward}")
        step.reward = reward
        step.env_steps = int(self.action_horizon if env_steps is None else env_steps)
        step.reward_final = True
        if terminated or truncated:
            self._finish(step, terminated, truncated, final_obs)
        return True

    def set_next_obs(self, episode: int, chunk: int, obs: Mapping[str, Any]) -> bool:
        """Give decision ``(episode, chunk)`` its bootstrap state s' (the observation the next decision
        of the episode will see), so it is complete before that decision is taken."""
        step = self._steps.get((int(episode), int(chunk)))
        if step is None:
            return False
        flat = {k: np.array(v, copy=True) for k, v in flatten_obs(obs).items()}
        self._check_obs(flat)
        step.next_obs = flat
        return True

    def _finish(self, step: _HeldStep, terminated: bool, truncated: bool,
                final_obs: Mapping[str, Any] | None) -> None:
        step.reward_final = True
        self._ended.add(step.episode)
        step.terminated = bool(terminated)
        step.truncated = bool(truncated) and not step.terminated
        if step.terminated:
            step.next_obs = None
        elif final_obs is not None:
            flat = {k: np.array(v, copy=True) for k, v in flatten_obs(final_obs).items()}
            self._check_obs(flat)
            step.next_obs = flat

    def drop_episode(self, episode: int) -> int:
        """Remove every held step of an abandoned episode; returns how many."""
        keys = [k for k in self._steps if k[0] == int(episode)]
        for k in keys:
            del self._steps[k]
        self._ended.discard(int(episode))
        self.counters.dropped_episodes += len(keys)
        return len(keys)

    def drop_stale(self, min_version: int) -> int:
        """Remove steps sampled by a policy version below ``min_version``; returns how many."""
        keys = [k for k, s in self._steps.items() if s.policy_version < min_version]
        for k in keys:
            del self._steps[k]
        self.counters.dropped_stale += len(keys)
        return len(keys)

    # --------------------------------------------------------------- reading
    def __len__(self) -> int:
        return len(self._steps)

    def _available(self, s: _HeldStep) -> bool:
        return s.complete() and (not self.whole_episodes or s.episode in self._ended)

    def num_complete(self) -> int:
        """Steps :meth:`take_batch` may hand out (complete, and with ``whole_episodes`` of an ended episode)."""
        return sum(1 for s in self._steps.values() if self._available(s))

    def ready(self, n: int) -> bool:
        """True when at least ``n`` complete decision steps are held."""
        return self.num_complete() >= n

    def take_batch(self, n: int | None = None) -> Batch:
        """Remove and return the ``n`` oldest complete steps (all complete ones when ``n`` is None)."""
        keys = [k for k, s in self._steps.items() if self._available(s)]
        if n is not None:
            if len(keys) < n:
                raise ValueError(f"take_batch({n}): only {len(keys)} complete decision steps are held")
            keys = keys[:n]
        if not keys:
            raise ValueError("take_batch: no complete decision steps")
        steps = [self._steps.pop(k) for k in keys]
        held = {k[0] for k in self._steps}
        self._ended &= held
        self.counters.decisions_taken += len(steps)
        for s in steps:
            if s.truncated and s.next_obs is None:
                self.counters.bootstrap_fallbacks += 1
        return self._stack(steps)

    # --------------------------------------------------------------- helpers
    def _check_obs(self, flat: Mapping[str, np.ndarray]) -> None:
        assert self._spec is not None
        obs_spec = {k: v for k, v in self._spec.items() if k != _CHAIN_KEY}
        if set(flat) != set(obs_spec):
            raise ValueError(f"observation keys {sorted(flat)} differ from the buffer's {sorted(obs_spec)}")
        for k, v in flat.items():
            shape, dtype = obs_spec[k]
            if v.shape != shape or str(v.dtype) != dtype:
                raise ValueError(f"observation {k!r}: expected {dtype}{list(shape)}, got {v.dtype}{list(v.shape)}")

    def _check(self, flat: Mapping[str, np.ndarray], chain: np.ndarray, logp: np.ndarray) -> None:
        if chain.ndim != 3:
            raise ValueError(f"chain must be [K+1, T_p, A], got shape {chain.shape}")
        if logp.shape == (0,) and chain.shape[0] > 1:
            raise ValueError("chain_logprob is empty: a deterministic sample (policy_node stochastic:=false) has no "
                             "behaviour log-probabilities to learn from")
        if logp.shape != (chain.shape[0] - 1,):
            raise ValueError(f"chain_logprob must be [K] = [{chain.shape[0] - 1}] for a chain of "
                             f"{chain.shape[0]} samples, got shape {logp.shape}")
        if self._spec is None:
            self._spec = {k: (v.shape, str(v.dtype)) for k, v in flat.items()}
            self._spec[_CHAIN_KEY] = (chain.shape, "float32")
        elif chain.shape != self._spec[_CHAIN_KEY][0]:
            raise ValueError(f"chain: expected shape {self._spec[_CHAIN_KEY][0]}, got {chain.shape}")
        self._check_obs(flat)

    def _stack(self, steps: list[_HeldStep]) -> Batch:
        obs_keys = list(steps[0].obs)
        obs = {k: np.stack([s.obs[k] for s in steps]) for k in obs_keys}
        nxt = {k: np.stack([(s.next_obs or s.obs)[k] for s in steps]) for k in obs_keys}
        return Batch(
            obs=unflatten_obs(obs), next_obs=unflatten_obs(nxt),
            chain=np.stack([s.chain for s in steps]),
            chain_logprob=np.stack([s.chain_logprob for s in steps]),
            policy_version=np.array([s.policy_version for s in steps], dtype=np.int64),
            reward=np.array([s.reward for s in steps], dtype=np.float64),
            terminated=np.array([s.terminated for s in steps], dtype=bool),
            truncated=np.array([s.truncated for s in steps], dtype=bool),
            episode=np.array([s.episode for s in steps], dtype=np.int64),
            chunk=np.array([s.chunk for s in steps], dtype=np.int64),
            env_steps=np.array([s.env_steps for s in steps], dtype=np.int64),
        )

    # --------------------------------------------------------- serialisation
    def state_dict(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """``(arrays, meta)``: every held step as stacked arrays plus JSON-able metadata."""
        steps = list(self._steps.values())
        meta: dict[str, Any] = {
            "format": FORMAT, "action_horizon": self.action_horizon, "capacity": self.capacity,
            "counters": dict(vars(self.counters)), "size": len(steps), "whole_episodes": self.whole_episodes,
            "ended_episodes": sorted(self._ended),
            "spec": None if self._spec is None else {k: [list(s), d] for k, (s, d) in self._spec.items()},
        }
        arrays: dict[str, np.ndarray] = {}
        if steps:
            batch = self._stack(steps)
            arrays = batch.to_arrays()
            arrays["reward_final"] = np.array([s.reward_final for s in steps], dtype=bool)
            arrays["has_next_obs"] = np.array([s.next_obs is not None for s in steps], dtype=bool)
        return arrays, meta

    @classmethod
    def from_state_dict(cls, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> "RolloutBuffer":
        if meta.get("format") != FORMAT:
            raise ValueError(f"not a rollout buffer: format {meta.get('format')!r}, expected {FORMAT!r}")
        buf = cls(action_horizon=int(meta["action_horizon"]), capacity=int(meta["capacity"]),
                  counters=BufferCounters(**meta["counters"]), whole_episodes=bool(meta.get("whole_episodes", False)))
        buf._ended = {int(e) for e in meta.get("ended_episodes", [])}
        if meta["spec"] is not None:
            buf._spec = {k: (tuple(s), d) for k, (s, d) in meta["spec"].items()}
        n = int(meta["size"])
        if n:
            batch = Batch.from_arrays(arrays)
            flat_obs, flat_next = flatten_obs(batch.obs), flatten_obs(batch.next_obs)
            for i in range(n):
                has_next = bool(arrays["has_next_obs"][i])
                step = _HeldStep(
                    obs={k: v[i].copy() for k, v in flat_obs.items()}, chain=batch.chain[i].copy(),
                    chain_logprob=batch.chain_logprob[i].copy(), policy_version=int(batch.policy_version[i]),
                    episode=int(batch.episode[i]), chunk=int(batch.chunk[i]), reward=float(batch.reward[i]),
                    env_steps=int(batch.env_steps[i]), reward_final=bool(arrays["reward_final"][i]),
                    terminated=bool(batch.terminated[i]), truncated=bool(batch.truncated[i]),
                    next_obs={k: v[i].copy() for k, v in flat_next.items()} if has_next else None)
                buf._steps[(step.episode, step.chunk)] = step
        return buf

    def save(self, path: str | Path) -> Path:
        """Write ``.npz`` (metadata as a JSON string array) or ``.safetensors`` (metadata in the header)."""
        path = Path(path)
        arrays, meta = self.state_dict()
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".npz":
            with open(path, "wb") as f:
                np.savez(f, __meta__=np.array(json.dumps(meta)), **arrays)
        elif path.suffix == ".safetensors":
            from safetensors.numpy import save_file

            save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path),
                      metadata={"meta": json.dumps(meta)})
        else:
            raise ValueError(f"buffer file must end in .npz or .safetensors, got {path.name}")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "RolloutBuffer":
        path = Path(path)
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files if k != "__meta__"}
                meta = json.loads(str(z["__meta__"]))
        elif path.suffix == ".safetensors":
            from safetensors import safe_open
            from safetensors.numpy import load_file

            arrays = load_file(str(path))
            with safe_open(str(path), framework="np") as f:
                meta = json.loads(f.metadata()["meta"])
        else:
            raise ValueError(f"buffer file must end in .npz or .safetensors, got {path.name}")
        return cls.from_state_dict(arrays, meta)
