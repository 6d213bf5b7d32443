"""policy_node's planner side, built once at start-up: which ``PolicyWeights`` the node accepts and their
intake (:mod:`~mechanic_rl_ros.nodes.policy_weights`), the :class:`PolicyPlanner` -- in a process of its own
on a real-time robot, else on the planning thread --, warmed up before the first tick, and the
:class:`BackgroundPlanning` that plans the next chunk beside the control tick.

Apart from policy_node so that the node file stays the thin adapter DESIGN.md asks for (≤ 400 lines: parameters,
topics, the tick); what the planner does is policy/'s and control/'s. No rclpy: it takes the node's clock,
logger and problem report as callables."""
from __future__ import annotations

from typing import Callable

from mechanic_rl_ros.control.chunk_loop import AdaptiveMargin, BackgroundPlanning, ChunkLoop
from mechanic_rl_ros.nodes.policy_weights import WeightsIntake, weights_contract
from mechanic_rl_ros.policy import DiffusionPolicy, PolicyPlanner
from mechanic_rl_ros.policy.planner_process import PlannerProcess


def start_planning(policy: DiffusionPolicy, cfg: dict, dt: float, *, sim_time: bool, realtime: bool,
                   now: Callable[[], float], logger, problem: Callable[[str, str], None]) -> tuple:
    """(critic selector or None, :class:`WeightsIntake`, planner, :class:`BackgroundPlanning`) of a policy node
    with parameters ``cfg`` and control period ``dt`` [s].

    The planner is a :class:`PlannerProcess` when ``inference_process`` is set and the node is not on sim time
    (``realtime``: the node got its SCHED_RR priority; the process then gets priority 1, below the tick), else
    the :class:`PolicyPlanner` itself. ``now()``: the node's clock [s]; ``logger``: rclpy's; ``problem(key,
    text)`` reports refused weights.
    """
    selector, ft_shapes, weights_arch_id = weights_contract(policy, cfg["algorithm"], cfg["select_config"],
                                                            cfg["distill_config"])
    partial = cfg["algorithm"] == "distill"
    weights = WeightsIntake(policy, selector, weights_arch_id, ft_shapes, now, logger, problem, partial=partial)
    # only DPPO samples the chain stochastically; selection and distillation run deterministic DDIM
    planner = PolicyPlanner(policy, stochastic=bool(cfg["stochastic"]) and cfg["algorithm"] == "dppo",
                            noise_clip=float(cfg["noise_clip"]), seed=int(cfg["seed"]),
                            on_weights=weights.on_swap, selector=selector, partial=partial)
    # torch's lazy set-up before the first tick: on sim time a first chunk late by seconds lets the lockstep
    # simulator run ahead of the trajectory sent for it
    thread_niceness = int(cfg["inference_niceness"])
    if cfg["inference_process"] and not sim_time:
        # real-time, the planner runs below the tick and above every normal process
        planner = PlannerProcess(planner, niceness=thread_niceness, threads=int(cfg["torch_threads"]),
                                 realtime_priority=1 if realtime else 0)
        warm_s, thread_niceness = planner.warm_seconds, 0  # the thread only waits for the process
        where = f"in process {planner.pid}"
    else:
        warm_s = policy.warm_up(selector.cfg.num_candidates if selector else 0)
        where = "on a thread"
    logger.info(f"model warmed up {where}: first sample {warm_s * 1e3:.0f} ms")
    weights.planner = planner
    adapt = (AdaptiveMargin(int(cfg["replan_margin"]), policy.cfg.max_lead, dt)
             if cfg["adaptive_replan_margin"] and not sim_time else None)
    planning = BackgroundPlanning(ChunkLoop.for_policy(policy, int(cfg["replan_margin"])), planner,
                                  niceness=thread_niceness, adapt=adapt, extend=cfg["chunk_tail"] and not sim_time)
    return selector, weights, planner, planning
