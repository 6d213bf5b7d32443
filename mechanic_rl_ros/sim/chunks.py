"""Execute action chunks on many simulated FR3s, in this process or in worker processes.

RL collection and evaluation make one decision per action chunk: every
environment executes its T_a actions, stopping early when the episode ends,
then the policy replans on all of them at once. :class:`ChunkRunner` does the
executing part. With ``workers=0`` the environments are a :class:`BatchedEnv`
in this process (one GL context, one compiled model). With ``workers=W`` they
are split into W contiguous blocks, each a :class:`BatchedEnv` in its own
spawned process, so that the simulator and the renderer use W cores while the
policy runs in the parent (on the CPU or a GPU). Environment ``i`` is seeded
with ``seed + i`` either way and every block steps the same code, so the
observations, rewards and resets are the same for any number of workers
(tested bit for bit).

Only numpy arrays and plain Python values cross the pipes, and only between
this process and the children it started itself; nothing here listens on a
network.
"""
from __future__ import annotations

import multiprocessing as mp
import signal
import traceback
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from mechanic_rl_ros.sim.world import load_world


@dataclass
class ChunkResult:
    """What one environment did with one action chunk.

    ``observations`` holds the observation after each executed step (as many
    as ``steps``), ``reward`` the sum of their rewards. When the episode ended
    (``terminated`` or ``truncated``) and the runner resets on end,
    ``reset_obs`` is the first observation of the next episode.
    """

    observations: list[dict]
    reward: float
    steps: int
    terminated: bool
    truncated: bool
    success: bool
    reset_obs: dict | None = None


def run_chunk(env: Any, actions: np.ndarray, reset_on_end: bool) -> ChunkResult:
    """Step ``env`` (an :class:`FR3Env`) through ``actions`` float[T_a, 8] until the episode ends."""
    total, term, trunc, info = 0.0, False, False, {}
    observations = []
    for a in actions:
        o, r, term, trunc, info = env.step(a)
        total += r
        observations.append(o)
        if term or trunc:
            break
    ended = bool(term or trunc)
    reset_obs = env.reset()[0] if ended and reset_on_end else None
    return ChunkResult(observations, float(total), len(observations), bool(term), bool(trunc),
                       bool(info.get("success", False)) if ended else False, reset_obs)


class _Block:
    """The environments ``start .. start + n - 1`` in this process."""

    def __init__(self, env_kwargs: dict, start: int, n: int, seed: int):
        from mechanic_rl_ros.sim.batched import BatchedEnv

        self.start = start
        self.benv = BatchedEnv(num_envs=n, seed=seed + start, autoreset=False, **env_kwargs)

    def reset_envs(self, items: Sequence[tuple[int, int | None]]) -> list[dict]:
        return [self.benv.envs[i - self.start].reset(seed=s)[0] for i, s in items]

    def run(self, items: Sequence[tuple[int, np.ndarray]], reset_on_end: bool) -> list[ChunkResult]:
        return [run_chunk(self.benv.envs[i - self.start], a, reset_on_end) for i, a in items]

    def close(self) -> None:
        self.benv.close()


def _worker_main(conn: Any, env_kwargs: dict, start: int, n: int, seed: int) -> None:
    """Serve one block of environments over ``conn`` until told to close (or the parent is gone).

    Ctrl-C in a terminal reaches the whole process group; the parent decides when to stop, so the
    worker ignores SIGINT and ends on "close" or when its pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        block = _Block(env_kwargs, start, n, seed)
        conn.send(("ok", None))
    except Exception:  # noqa: BLE001 - the parent re-raises it with the worker's traceback
        conn.send(("error", traceback.format_exc()))
        return
    try:
        while True:
            cmd, args = conn.recv()
            if cmd == "close":
                break
            try:
                conn.send(("ok", getattr(block, cmd)(*args)))
            except Exception:  # noqa: BLE001
                conn.send(("error", traceback.format_exc()))
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        block.close()


class ChunkRunner:
    """``num_envs`` FR3 environments of one task that execute action chunks; see the module docstring.

    Args:
        task, render, cameras, image_size, reward: as :class:`BatchedEnv`.
        num_envs: environments; environment ``i`` is seeded with ``seed + i``.
        workers: 0 = step every environment in this process; W > 0 = W worker
            processes (at most ``num_envs``), each stepping a contiguous block.
        world: scene variation (:func:`mechanic_rl_ros.sim.world.load_world`; None = the training scene).
    """

    def __init__(self, task: str = "lift", num_envs: int = 8, render: bool = False,
                 cameras: Sequence[str] = ("scene",), image_size: int = 96, seed: int = 0,
                 reward: str = "sparse", workers: int = 0, world: Any = None):
        if not isinstance(workers, (int, np.integer)) or workers < 0:
            raise ValueError(f"workers must be an integer >= 0 (0 = in this process), got {workers!r}")
        if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        self.num_envs = int(num_envs)
        kwargs = {"task": task, "render": render, "cameras": tuple(cameras), "image_size": image_size,
                  "reward": reward, "world": load_world(world)}
        w = min(int(workers), self.num_envs)
        self._local: _Block | None = None
        self._procs: list[Any] = []
        self._conns: list[Any] = []
        self._blocks: list[tuple[int, int]] = []
        if w == 0:
            self._local = _Block(kwargs, 0, self.num_envs, seed)
            self._blocks = [(0, self.num_envs)]
            return
        sizes = [self.num_envs // w + (1 if j < self.num_envs % w else 0) for j in range(w)]
        ctx = mp.get_context("spawn")
        start = 0
        try:
            for n in sizes:
                parent, child = ctx.Pipe()
                p = ctx.Process(target=_worker_main, args=(child, kwargs, start, n, seed), daemon=True,
                                name=f"chunk-worker-{start}")
                p.start()
                child.close()
                self._procs.append(p)
                self._conns.append(parent)
                self._blocks.append((start, n))
                start += n
            for j in range(w):
                self._receive(j)
        except BaseException:
            self.close()
            raise

    @property
    def workers(self) -> int:
        return len(self._procs)

    # ----------------------------------------------------------------- API
    def reset(self, seed: int | None = None) -> list[dict]:
        """Reset every environment (``i`` with ``seed + i`` when given); the first observations."""
        return self.reset_envs(range(self.num_envs), [None if seed is None else seed + i for i in range(self.num_envs)])

    def reset_envs(self, indices: Sequence[int], seeds: Sequence[int | None] | None = None) -> list[dict]:
        """Reset the given environments (with the given seeds); their first observations, in order."""
        seeds = [None] * len(indices) if seeds is None else list(seeds)
        return self._scatter("reset_envs", list(zip(self._check(indices), seeds)), pack=lambda items: (items,))

    def run(self, indices: Sequence[int], actions: np.ndarray, reset_on_end: bool = True) -> list[ChunkResult]:
        """Execute ``actions[r]`` float[T_a, 8] on environment ``indices[r]``; results in the same order."""
        actions = np.asarray(actions, dtype=np.float64)
        if actions.ndim != 3 or actions.shape[0] != len(indices):
            raise ValueError(f"actions must have shape ({len(indices)}, T_a, 8), got {actions.shape}")
        items = list(zip(self._check(indices), actions))
        return self._scatter("run", items, pack=lambda it: (it, bool(reset_on_end)))

    def close(self) -> None:
        if self._local is not None:
            self._local.close()
            self._local = None
        for conn in self._conns:
            try:
                conn.send(("close", None))
            except (OSError, BrokenPipeError):
                pass
        for p in self._procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
        for conn in self._conns:
            conn.close()
        self._procs, self._conns = [], []

    def __enter__(self) -> "ChunkRunner":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------ internal
    def _check(self, indices: Sequence[int]) -> list[int]:
        out = [int(i) for i in indices]
        bad = [i for i in out if not 0 <= i < self.num_envs]
        if bad:
            raise ValueError(f"environment indices {bad} outside 0..{self.num_envs - 1}")
        return out

    def _scatter(self, cmd: str, items: list[tuple[int, Any]], pack: Any) -> list[Any]:
        """Send each block its items (in order), gather the answers back into the items' order."""
        if self._local is not None:
            return getattr(self._local, cmd)(*pack(items))
        per_block: list[list[int]] = [[] for _ in self._blocks]
        for r, (i, _) in enumerate(items):
            per_block[self._block_of(i)].append(r)
        out: list[Any] = [None] * len(items)
        asked = [j for j, rows in enumerate(per_block) if rows]
        for j in asked:
            self._conns[j].send((cmd, pack([items[r] for r in per_block[j]])))
        error: RuntimeError | None = None
        for j in asked:  # every asked worker is read, so that no answer is left in a pipe
            try:
                for r, value in zip(per_block[j], self._receive(j)):
                    out[r] = value
            except RuntimeError as e:
                error = error or e
        if error is not None:
            raise error
        return out

    def _block_of(self, i: int) -> int:
        for j, (start, n) in enumerate(self._blocks):
            if start <= i < start + n:
                return j
        raise ValueError(f"environment index {i} outside 0..{self.num_envs - 1}")

    def _receive(self, j: int) -> Any:
        try:
            status, value = self._conns[j].recv()
        except (EOFError, OSError):
            code = self._procs[j].exitcode
            raise RuntimeError(f"chunk worker {j} (environments {self._blocks[j][0]}..."
                               f"{sum(self._blocks[j]) - 1}) died (exit code {code})") from None
        if status != "ok":
            raise RuntimeError(f"chunk worker {j} (environments {self._blocks[j][0]}..."
                               f"{sum(self._blocks[j]) - 1}) failed:\n{value}")
        return value
