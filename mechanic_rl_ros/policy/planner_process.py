"""A :class:`PolicyPlanner` in a process of its own, so that inference never holds the control tick's interpreter.

In one Python process the planning thread and the control tick share the interpreter lock: the denoiser's
forward pass is hundreds of small torch calls, each taking the lock back, and on a loaded machine the tick
waited behind it (stamp -> ready p99 62-102 ms under a CPU hog, against a 95 ms lead). ros2_control's
practice is that work which can stall runs in another process with its own priority; this class does that
for the policy node on the wall clock.

:class:`PlannerProcess` is a drop-in for the planner callable of
:class:`~mechanic_rl_ros.control.chunk_loop.BackgroundPlanning`: the parent pickles the whole planner (the
policy, the selector, the seed, so the child plans the same chunks the parent would have) into a child
started with ``spawn``, sends each :class:`~mechanic_rl_ros.control.chunk_loop.PlanRequest` down one pipe and
waits (without the lock) for the chunk; weights go down a second pipe, which a thread of the child reads
while it plans, so a large weights message never delays a plan request. That thread stages them as in the
parent (a distillation learner's layers are checked and copied into the policy's standby network there, while
the planning thread runs inference on the active one); they are swapped in at the start of the next plan, and
the swap reports (``on_weights``) come back with that plan's chunk.
Both ends are this package's own processes on one machine: nothing from the network is unpickled here.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import threading
from collections import deque
from typing import Any, Callable, Mapping

import numpy as np

from mechanic_rl_ros.control.chunk_loop import Chunk, PlanRequest


class PlannerProcessError(RuntimeError):
    """The planner process failed a plan or is gone."""


def _serve(plans, weights, planner, niceness: int, threads: int, realtime_priority: int) -> None:
    """The child: stage weights from ``weights`` on a thread (with ``partial``, the copy into the standby
    network happens there), answer each request on ``plans`` (a swap at its start exchanges two references)."""
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the node, which closes this process
    if hasattr(os, "sched_setscheduler"):  # its own policy, not the one of the thread that started it
        policy = os.SCHED_RR if realtime_priority > 0 else os.SCHED_OTHER
        os.sched_setscheduler(0, policy, os.sched_param(max(0, int(realtime_priority))))
    if niceness and hasattr(os, "nice"):
        os.nice(int(niceness))
    torch.set_num_threads(int(threads))
    swaps: list[tuple[int, str | None]] = []
    planner.on_weights = lambda version, err: swaps.append((version, None if err is None else str(err)))

    staged = threading.Condition()
    received = 0

    def stage() -> None:
        nonlocal received
        while True:
            try:
                item = weights.recv()
            except (EOFError, OSError):
                return
            tensors, version, finetune_steps = item
            planner.stage_weights({k: torch.from_numpy(v) for k, v in tensors.items()}, version, finetune_steps)
            with staged:
                received += 1
                staged.notify_all()

    threading.Thread(target=stage, name="weights", daemon=True).start()
    plans.send(("ready", planner.policy.warm_up(planner.selector.cfg.num_candidates if planner.selector else 0)))
    while True:
        try:
            item = plans.recv()
        except (EOFError, OSError):
            return
        if item is None:
            return
        req, sent = item
        with staged:  # weights staged before the request are swapped in before its plan, as in one process
            staged.wait_for(lambda: received >= sent, timeout=10.0)
        try:
            reply: tuple = ("chunk", planner(req))
        except Exception as exc:  # noqa: BLE001 - the parent reports it and holds the arm
            reply = ("error", f"{type(exc).__name__}: {exc}")
        done = [swaps.pop(0) for _ in range(len(swaps))]  # the weights thread may append meanwhile
        reply += (done, planner.version, planner.latencies[-1] if planner.latencies else float("nan"),
                  planner.swap_seconds)
        plans.send(reply)


class PlannerProcess:
    """``planner`` (a :class:`PolicyPlanner`) run in a child process (see the module docstring).

    Args:
        planner: the planner to move; its ``on_weights`` callback stays in this process and is called with
            the child's swap reports (on the thread that called the plan).
        niceness: the child's niceness (Linux), relative to this process.
        realtime_priority: > 0: the child on SCHED_RR at this priority (below the node's real-time tick, above
            every normal process); 0: the normal scheduler, whatever the starting thread's.
        threads: torch's CPU threads in the child.
        start_timeout: seconds to wait for the child's start-up and warm-up.

    Attributes as :class:`PolicyPlanner`'s: ``version``, ``latencies`` (the child's inference times),
    ``swap_seconds``; ``warm_seconds``: the child's warm-up call.
    """

    def __init__(self, planner: Any, niceness: int = 0, threads: int = 1, realtime_priority: int = 0,
                 start_timeout: float = 120.0):
        self.on_weights: Callable[[int, Exception | None], None] | None = planner.on_weights
        self.version = planner.version
        self.latencies: deque[float] = deque(maxlen=200)
        self.swap_seconds = float("nan")
        ctx = mp.get_context("spawn")
        self._plans, child_plans = ctx.Pipe()
        weights_in, self._weights = ctx.Pipe(duplex=False)
        planner.on_weights = None  # a callback of this process does not cross
        try:
            self._proc = ctx.Process(target=_serve, name="policy-planner", daemon=True,
                                     args=(child_plans, weights_in, planner, niceness, threads, realtime_priority))
            self._proc.start()
        finally:
            planner.on_weights = self.on_weights
        child_plans.close()
        weights_in.close()
        self._weights_lock = threading.Lock()
        self._weights_sent = 0
        if not self._plans.poll(start_timeout):
            self.close()
            raise PlannerProcessError(f"the planner process did not start within {start_timeout:.0f} s")
        kind, self.warm_seconds = self._plans.recv()
        assert kind == "ready"

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def stage_weights(self, tensors: Mapping[str, Any], version: int, finetune_steps: int | None) -> bool:
        """Weights to swap in before the next plan (sent to the child at once, whose weights thread checks and
        stages them and reports a refusal with the next plan; the newest staged wins). They cross as numpy
        arrays, i.e. as bytes in the pipe: torch's own pickling of a tensor would hand the child shared memory,
        whose pages fault in one by one when they are first touched (~2 ms for 3.6 MB)."""
        arrays = {k: v.detach().numpy() if hasattr(v, "detach") else np.asarray(v) for k, v in tensors.items()}
        with self._weights_lock:
            self._weights.send((arrays, int(version), finetune_steps))
            self._weights_sent += 1
        return True

    def __call__(self, req: PlanRequest) -> Chunk:
        try:
            self._plans.send((req, self._weights_sent))
            kind, result, swaps, version, latency, swap_seconds = self._plans.recv()
        except (EOFError, OSError, BrokenPipeError) as exc:
            raise PlannerProcessError(f"the planner process is gone (exit code {self._proc.exitcode}): "
                                      f"{exc!r}") from exc
        self.version, self.swap_seconds = int(version), float(swap_seconds)
        if latency == latency:
            self.latencies.append(float(latency))
        for swapped, err in swaps:
            if self.on_weights is not None:
                self.on_weights(swapped, None if err is None else ValueError(err))
        if kind == "error":
            raise PlannerProcessError(result)
        return result

    def close(self, timeout: float = 10.0) -> None:
        """Stop the child (it finishes a plan in progress first)."""
        try:
            self._plans.send(None)
        except (OSError, BrokenPipeError):
            pass
        self._weights.close()
        self._proc.join(timeout)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(timeout)
        self._plans.close()

