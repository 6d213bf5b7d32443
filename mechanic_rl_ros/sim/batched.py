"""Several FR3 environments stepped in one process, with stacked observations.

All sub-environments share one compiled ``MjModel`` and one set of offscreen
renderers (one GL context), each has its own ``MjData`` and random stream
(environment ``i`` is seeded with ``seed + i``).

Auto-reset (default, ``autoreset=True``), "same-step" convention: when
environment ``i`` terminates or is truncated in :meth:`BatchedEnv.step`, its
rewards/flags for that step are returned as usual, its last observation is put
in ``info["final_obs"][i]`` (``None`` for environments that did not end) and
``info["final_success"][i]``, the environment is reset right away, and row ``i``
of the returned observation is the first observation of its new episode.
With ``autoreset=False`` finished environments keep their state until
:meth:`BatchedEnv.reset` or :meth:`BatchedEnv.reset_envs` is called.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from mechanic_rl_ros.sim.env import ACTION_DIM, EnvConfig, FR3Env, check_action, validate_config
from mechanic_rl_ros.sim.expert import ExpertConfig
from mechanic_rl_ros.sim.fr3_sim import SimConfig
from mechanic_rl_ros.sim.world import load_world


def stack_obs(observations: Sequence[dict]) -> dict:
    """Stack per-environment observation dicts into one dict of arrays with a leading N axis."""
    out = {k: np.stack([o[k] for o in observations]) for k in observations[0] if k != "images"}
    if "images" in observations[0]:
        out["images"] = {c: np.stack([o["images"][c] for o in observations]) for c in observations[0]["images"]}
    return out


def unstack_obs(obs: dict, i: int) -> dict:
    """Row ``i`` of a stacked observation as a single-environment observation."""
    out = {k: v[i] for k, v in obs.items() if k != "images"}
    if "images" in obs:
        out["images"] = {c: v[i] for c, v in obs["images"].items()}
    return out


class BatchedEnv:
    """``num_envs`` environments of one task; see the module docstring for auto-reset."""

    def __init__(
        self,
        task: str = "lift",
        num_envs: int = 8,
        render: bool = False,
        cameras: Sequence[str] = ("scene",),
        image_size: int | tuple[int, int] = 96,
        seed: int | None = None,
        reward: str = "sparse",
        autoreset: bool = True,
        task_config: Any = None,
        sim_config: SimConfig | None = None,
        world: Any = None,
    ):
        if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        config = validate_config(
            EnvConfig(
                task=task,
                render=render,
                cameras=cameras,
                image_size=image_size,
                reward=reward,
                sim=load_world(world).sim_config(sim_config or SimConfig()),
                task_config=task_config,
            )
        )
        self.config = config
        self.num_envs = int(num_envs)
        self.autoreset = bool(autoreset)
        first = FR3Env(config, seed=None if seed is None else seed)
        self.envs = [first] + [
            FR3Env(config, seed=None if seed is None else seed + i, model=first.sim.model)
            for i in range(1, self.num_envs)
        ]
        shared = first.sim._renderers
        for env in self.envs[1:]:
            env.sim._renderers = shared
        self._obs: list[dict] = []

    # ------------------------------------------------------------ properties
    @property
    def control_dt(self) -> float:
        return self.envs[0].control_dt

    @property
    def physics_dt(self) -> float:
        return self.envs[0].physics_dt

    @property
    def max_steps(self) -> int:
        return self.envs[0].max_steps

    # ------------------------------------------------------------------- API
    def reset(self, seed: int | None = None) -> tuple[dict, dict]:
        """Reset every environment (env ``i`` re-seeded with ``seed + i`` when given)."""
        results = [env.reset(seed=None if seed is None else seed + i) for i, env in enumerate(self.envs)]
        self._obs = [r[0] for r in results]
        return stack_obs(self._obs), self._stack_info([r[1] for r in results])

    def reset_envs(self, indices: Sequence[int], seeds: Sequence[int] | None = None) -> dict:
        """Reset only the given environments; returns the full stacked observation."""
        if not self._obs:
            raise RuntimeError("call reset() before reset_envs()")
        for k, i in enumerate(indices):
            self._obs[i], _ = self.envs[i].reset(seed=None if seeds is None else seeds[k])
        return stack_obs(self._obs)

    def step(self, actions) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Step every environment with ``actions`` float[num_envs, 8]."""
        if not self._obs:
            raise RuntimeError("call reset() before step()")
        try:
            actions = np.asarray(actions, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"actions must be a numeric array of shape ({self.num_envs}, 8)") from exc
        if actions.shape != (self.num_envs, ACTION_DIM):
            raise ValueError(f"actions must have shape ({self.num_envs}, 8), got {actions.shape}")
        for i in range(self.num_envs):
            try:
                check_action(actions[i])
            except ValueError as exc:
                raise ValueError(f"actions[{i}]: {exc}") from None
        rewards = np.zeros(self.num_envs, dtype=np.float32)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        infos, final_obs, final_success = [], [None] * self.num_envs, np.zeros(self.num_envs, dtype=bool)
        for i, env in enumerate(self.envs):
            obs, rewards[i], terminated[i], truncated[i], info = env.step(actions[i])
            if self.autoreset and (terminated[i] or truncated[i]):
                final_obs[i], final_success[i] = obs, info["success"]
                obs, _ = env.reset()
            self._obs[i] = obs
            infos.append(info)
        info = self._stack_info(infos)
        info["final_obs"] = final_obs
        info["final_success"] = final_success
        return stack_obs(self._obs), rewards, terminated, truncated, info

    def expert(self, noise: float = 0.0, seed: int | None = None, config: ExpertConfig | None = None) -> "BatchedExpert":
        """One scripted expert per environment (expert ``i`` seeded with ``seed + i``)."""
        return BatchedExpert(
            [env.expert(noise=noise, seed=None if seed is None else seed + i, config=config) for i, env in enumerate(self.envs)]
        )

    def close(self) -> None:
        self.envs[0].close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @staticmethod
    def _stack_info(infos: list[dict]) -> dict:
        return {
            "success": np.array([i["success"] for i in infos], dtype=bool),
            "sparse_reward": np.array([i["sparse_reward"] for i in infos], dtype=np.float32),
            "shaped_reward": np.array([i["shaped_reward"] for i in infos], dtype=np.float32),
            "episode_step": np.array([i["episode_step"] for i in infos], dtype=np.int64),
        }


class BatchedExpert:
    """Scripted experts of a :class:`BatchedEnv`: ``act(stacked_obs) -> float[N, 8]``."""

    def __init__(self, experts: list):
        self.experts = experts

    def act(self, obs: dict) -> np.ndarray:
        return np.stack([ex.act(unstack_obs(obs, i)) for i, ex in enumerate(self.experts)])
