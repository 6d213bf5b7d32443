"""Benchmark of the node stack on this machine (figures for the README).

Runs sim (real time) + camera + policy + reward + learner as separate
processes, with the learner training on the same cores, and measures:

1. the control loop: achieved command rate, p50 / p99 of the intervals
   between commands (wall clock, as received by a subscriber), and the ticks
   where no fresh action was ready (policy_node's hold counters);
2. weights: size, and publish -> verified and publish -> swapped-in latency
   of what the learner publishes (``--algorithm select``, the stack's default:
   the selection critic; ``dppo``: the fine-tuned denoiser; ``distill``: the
   policy's distilled layers), and the swap itself, as multiples of
   an in-process memcpy of the same bytes measured in the same run (swapping
   waits for a chunk boundary by design, so it includes up to one chunk of
   waiting);
3. transitions: executed steps (policy_node) vs steps received by the learner;
4. the robot: reflexes (libfranka's errors, which end an episode), trajectories
   the controller switched to after their stamp, and how close to real time
   the simulation ran (sim_node's diagnostics).

Missed ticks are the ticks of a moving episode that sent no fresh action (holds) and, on sim
time, the late or off-grid ticks; here the stack runs on the wall clock. The ticks of an episode
before its first action (its first inputs and chunk on their way, the arm at rest at home) are
reported apart.

With ``--inject N`` it measures the recovery instead (issue 32): N reflexes injected one after another
through ``/sim/inject_reflex`` while the policy acts (test/reflex_rounds.py), each recovered by reward_node's
automatic franka_ros2 recovery sequence; prints per round and in sum the time from the injection to the robot
in move mode again and to the policy acting in the next episode, the reflexes the robot's own checks added,
and what the learner dropped of the aborted episodes.

With ``--load`` a CPU hog (one spinning process per core, normal priority) runs during the measurement,
30 minutes by default: missed ticks, delivery delays, reflexes and recoveries of a busy machine.

Usage: python bench/bench_stack.py [--checkpoint DIR] [--seconds 60] [--algorithm select|dppo|distill]
       [--param NODE.NAME=VALUE ...] [--inject N] [--load]
(default checkpoint: checkpoints/lift_pretrained, else a tiny random policy).
"""
from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from trajectory_msgs.msg import JointTrajectory

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "test"))

from mechanic_rl_ros.msg import PolicyWeights  # noqa: E402
from mechanic_rl_ros.nodes.policy_node import MISSED_TICK_COUNTS  # noqa: E402
from mechanic_rl_ros.policy import DiffusionPolicy  # noqa: E402
from mechanic_rl_ros.rl.distill import distilled_layers, load_distill_config  # noqa: E402
from mechanic_rl_ros.rl.selection import CriticSelector, load_select_config  # noqa: E402
from mechanic_rl_ros.wire.weights import weights_message  # noqa: E402
from mechanic_rl_ros.stack import description  # noqa: E402
from mechanic_rl_ros.stack.runner import node_command  # noqa: E402
from reflex_rounds import ReflexRounds  # noqa: E402
from rosenv import fresh_domain_id, ros_env  # noqa: E402
from stack_checks import StackObserver  # noqa: E402
from stack_fixtures import LATCHED, make_checkpoint  # noqa: E402


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process ``pid`` and its living child processes (policy_node's planner) have used,
    [s] (Linux /proc; NaN elsewhere or once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
                    for c in (task / "children").read_text().split()]
    except OSError:
        return float("nan")
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds(c) for c in children)


def memcpy_seconds(nbytes: int, repeats: int = 20) -> float:
    src = np.frombuffer(np.random.default_rng(0).bytes(nbytes), np.uint8)
    dst = np.empty_like(src)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def inject_reflexes(obs: StackObserver, count: int, recover_within: float) -> int:
    """``--inject``: ``count`` rounds of an injected reflex and its recovery; 0 if every one recovered in time."""
    print(f"[bench] injecting {count} reflexes, one after another while the policy acts", flush=True)
    rounds = ReflexRounds(obs).run(count, timeout=recover_within + 20.0,
                                   log=lambda line: print(line, flush=True))
    moves = np.array([r.to_move for r in rounds if r.to_move is not None])
    acting = np.array([r.to_acting for r in rounds if r.to_acting is not None])
    ok = sum(r.to_move is not None and r.to_move <= recover_within and r.to_acting is not None for r in rounds)
    obs.spin_until(lambda: False, 3.0)  # the last diagnostics
    sim, learner = obs.diagnostics.get("sim_node", {}), obs.diagnostics.get("learner_node", {})
    print(f"\n== recovery from {count} injected reflexes (wall clock)")
    print(f"recovered within {recover_within:.0f} s: {ok}/{count}")
    if moves.size:
        print(f"injection -> robot in move mode again: p50 {np.percentile(moves, 50) * 1e3:.0f} ms, "
              f"max {moves.max() * 1e3:.0f} ms")
    if acting.size:
        print(f"injection -> policy acting in the next episode: p50 {np.percentile(acting, 50) * 1e3:.0f} ms, "
              f"max {acting.max() * 1e3:.0f} ms")
    print(f"robot (sim_node): {sim.get('reflexes')} reflexes ({int(sim.get('reflexes', 0)) - len(rounds)} not "
          f"injected), {sim.get('recoveries')} recoveries")
    print(f"learner: {learner.get('episodes_aborted')} episodes aborted, {learner.get('decisions_dropped_aborted')} "
          f"decisions dropped, {learner.get('transitions_after_abort')} transitions refused after an abort")
    return 0 if ok == count else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=REPO / "checkpoints" / "lift_pretrained")
    ap.add_argument("--seconds", type=float, default=None,
                    help="wall seconds of control to measure (default 60; 1800 with --load)")
    ap.add_argument("--load", action="store_true",
                    help="a CPU hog during the measurement: one process per core spinning at normal priority, as a "
                         "busy user machine (browser, RViz, a second camera) competes with the stack")
    ap.add_argument("--algorithm", choices=("select", "dppo", "distill"), default="select",
                    help="the stack's learner")
    ap.add_argument("--param", action="append", default=[], metavar="NODE.NAME=VALUE",
                    help="override one node parameter (YAML value), e.g. policy_node.safety_switch_lead=0.05")
    ap.add_argument("--learner-nice", type=int, default=0, help="start the learner with this niceness (0: as is)")
    ap.add_argument("--nice", action="append", default=[], metavar="NODE=N",
                    help="start NODE with niceness N (negative needs CAP_SYS_NICE or root), e.g. sim_node=-10")
    ap.add_argument("--realtime", type=int, default=0, metavar="PRIO",
                    help="SCHED_RR for the control path as on a robot PC (launch argument realtime_priority): "
                         "policy_node and reward_node at PRIO, camera_node PRIO - 5, the simulated robot PRIO + 5 "
                         "(needs CAP_SYS_NICE or an rtprio limit); 0 = the normal scheduler")
    ap.add_argument("--inject", type=int, default=0, metavar="N",
                    help="inject N reflexes one after another and time each recovery (instead of the load figures)")
    ap.add_argument("--recover-within", type=float, default=10.0, help="[s] with --inject: a recovery slower than "
                                                                       "this counts as not recovered")
    args = ap.parse_args()
    if args.seconds is None:
        args.seconds = 1800.0 if args.load else 60.0
    tmp = Path(tempfile.mkdtemp(prefix="bench_stack_"))
    hogs: list[subprocess.Popen] = []
    ckpt = args.checkpoint
    if not (ckpt / "model.safetensors").is_file():
        print(f"no checkpoint at {ckpt}; using a tiny random policy")
        ckpt = tmp / "ckpt"
        make_checkpoint(ckpt)
    specs = description.nodes({"checkpoint": str(ckpt), "run_dir": str(tmp / "run"), "algorithm": args.algorithm},
                              REPO / "config")
    for s in specs:  # real time: the control loop runs against the wall clock
        s.overrides["use_sim_time"] = False
        if s.name == "sim_node":
            s.overrides["mode"] = "realtime"
        if s.name == "learner_node":  # learning during the measurement
            s.overrides.update({"batch_size": 4, "min_batch_size": 1, "warmup_decisions": 4})
    description.set_realtime_priorities(specs, args.realtime)
    for item in args.param:
        key, _, value = item.partition("=")
        node, _, name = key.partition(".")
        spec = next((s for s in specs if s.name == node), None)
        if spec is None or not name or not value:
            ap.error(f"--param {item!r}: expected NODE.NAME=VALUE with NODE one of {[s.name for s in specs]}")
        spec.overrides[name] = yaml.safe_load(value)
    domain = fresh_domain_id()
    nice = {"learner_node": ["nice", "-n", str(args.learner_nice)]} if args.learner_nice else {}
    for item in args.nice:
        node, _, n = item.partition("=")
        nice[node] = ["nice", "-n", str(int(n))]
    # one session for the stack, as `ros2 launch` starts its nodes: where the kernel groups the CPU by session
    # (autogroup, the default of desktop kernels) the nodes share one group and their niceness orders them
    procs = [subprocess.Popen(nice.get(s.name, []) + node_command(s), cwd=REPO, env=ros_env(domain),
                              stdout=open(tmp / f"{s.name}.log", "wb"), stderr=subprocess.STDOUT, process_group=0)
             for s in specs]
    obs = StackObserver(domain)
    arrivals: list[float] = []
    command_topic = next(s.overrides["command_topic"] for s in specs if s.name == "policy_node")
    latencies: list[float] = []  # [s] header.stamp -> received here, each stamp's first message
    stamps: set[tuple[int, int]] = set()

    def on_command(m: JointTrajectory) -> None:
        arrivals.append(time.monotonic())
        key = (m.header.stamp.sec, m.header.stamp.nanosec)
        if key != (0, 0) and key not in stamps:  # (a hold re-sends the trajectory being played, old stamp)
            stamps.add(key)
            latencies.append(time.time() - (key[0] + 1e-9 * key[1]))

    obs.node.create_subscription(JointTrajectory, command_topic, on_command, 100)
    try:
        print(f"[bench] warming up (policy {ckpt})", flush=True)
        assert obs.spin_until(lambda: len(obs.transitions) > 20, 300), "the stack never started acting"
        if args.inject:
            return inject_reflexes(obs, args.inject, args.recover_within)
        start_diag = dict(obs.diagnostics.get("policy_node", {}))
        start_sim = dict(obs.diagnostics.get("sim_node", {}))
        arrivals.clear()
        latencies.clear()
        cpu_start, wall_start = [cpu_seconds(p.pid) for p in procs], time.monotonic()
        if args.load:
            # the hog in a session of its own, as a program started from another terminal or the desktop
            spin = " & ".join([f"{shlex.quote(sys.executable)} -c 'while True: pass'"] * (os.cpu_count() or 2))
            hogs = [subprocess.Popen(["sh", "-c", f"{spin} & wait"], start_new_session=True)]
        print(f"[bench] measuring the control loop for {args.seconds:.0f} s with the learner training"
              + (f" and {os.cpu_count() or 2} spinning processes" if hogs else ""), flush=True)
        obs.spin_until(lambda: False, args.seconds)
        window, window_latency = list(arrivals), np.array(latencies) * 1e3
        cpu = {s.name: (cpu_seconds(p.pid) - c0) / (time.monotonic() - wall_start)
               for s, p, c0 in zip(specs, procs, cpu_start)}
        end_diag = dict(obs.diagnostics.get("policy_node", {}))
        end_sim = dict(obs.diagnostics.get("sim_node", {}))
        learner = dict(obs.diagnostics.get("learner_node", {}))

        # weights: publish what the learner trains as a new version and time its adoption
        policy = DiffusionPolicy.from_checkpoint(ckpt)
        if args.algorithm == "select":
            pc = policy.cfg
            sel = CriticSelector(load_select_config("", feat_dim=policy.net.cond_dim,
                                                    act_dim=pc.action_horizon * pc.action_dim), policy.arch_id)
            state, arch, k_ft, what = sel.critic.state_dict(), sel.arch_id, 0, "selection critic"
        elif args.algorithm == "distill":
            shapes, arch = distilled_layers(policy, load_distill_config().train_params)
            params = dict(policy.net.named_parameters())
            state = {n: params[n].detach() for n in shapes}
            k_ft, what = 0, "distilled layers of the policy"
        else:
            k_ft = policy.cfg.sampling.finetune_steps or 5
            state, arch, what = (policy.ft_net or policy.net).state_dict(), policy.arch_id, "fine-tuned network"
        pub = obs.node.create_publisher(PolicyWeights, "/policy/weights", LATCHED)
        verified, swapped, swap = [], [], []
        for k in range(5):
            msg = weights_message(state, version=10_000 + k, architecture_id=arch, finetune_steps=k_ft)
            data = msg.payload
            msg.header.stamp = obs.node.get_clock().now().to_msg()
            before = obs.diagnostics.get("policy_node", {}).get("weights_swapped_ms")
            pub.publish(msg)
            obs.spin_until(lambda: obs.diagnostics.get("policy_node", {}).get("weights_swapped_ms") not in (None, before, "nan"), 30)
            d = obs.diagnostics.get("policy_node", {})
            verified.append(float(d.get("weights_verified_ms", "nan")))
            swapped.append(float(d.get("weights_swapped_ms", "nan")))
            swap.append(float(d.get("weights_swap_ms", "nan")))
        copy_ms = memcpy_seconds(len(data)) * 1e3
    finally:
        for h in hogs:
            os.killpg(h.pid, signal.SIGKILL)
        obs.close()
        for p in procs:
            p.send_signal(2)
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()

    gaps = np.diff(window) * 1e3
    ticks = lambda d, k: int(d.get(k, 0))  # noqa: E731
    holds = {k: ticks(end_diag, k) - ticks(start_diag, k)
             for k in (*MISSED_TICK_COUNTS, "start_wait", "ticks_on_tail")}
    load = f", {os.cpu_count() or 2} CPU hogs in a session of their own" if hogs else ""
    sched = f", control path on SCHED_RR {args.realtime}" if args.realtime else ", normal scheduler"
    print(f"\n== control loop (policy_node, 10 Hz target, learner training on the same cores{load}{sched})")
    print(f"commands received: {len(window)} in {args.seconds:.0f} s -> {len(window) / args.seconds:.2f} Hz")
    print(f"inter-command interval: p50 {np.percentile(gaps, 50):.1f} ms, p99 {np.percentile(gaps, 99):.1f} ms, "
          f"max {gaps.max():.1f} ms")
    if window_latency.size:
        print(f"stamp -> received by this bench's subscriber (normal priority): p50 "
              f"{np.percentile(window_latency, 50):.1f} ms, p99 {np.percentile(window_latency, 99):.1f} ms, max "
              f"{window_latency.max():.1f} ms (new stamps; what counts is the controller's, under 'robot' below)")
    print("CPU per node (share of one core over the window): "
          + ", ".join(f"{name} {share:.0%}" for name, share in cpu.items()))
    missed = holds["hold_no_action"] + holds["hold_stale"] + holds["hold_model"]
    print(f"missed ticks (no fresh action sent): {missed} (no action ready: {holds['hold_no_action']}, stale input: "
          f"{holds['hold_stale']}, model errors: {holds['hold_model']}); late {holds['ticks_late']}, off-grid "
          f"{holds['ticks_off_grid']}")
    print(f"ticks on a chunk's tail (the next chunk late; the arm ran on with the prediction's rest, not "
          f"missed): {holds['ticks_on_tail']}")
    print(f"ticks before an episode's first action (arm at rest, not missed): {holds['start_wait']}")
    print(f"policy inference: p50 {end_diag.get('inference_ms_p50')} ms, p99 {end_diag.get('inference_ms_p99')} ms "
          f"(replan margin now {end_diag.get('replan_margin')} actions); stamp -> ready to publish in policy_node: "
          f"p50 {end_diag.get('ready_ms_p50')} ms, p99 {end_diag.get('ready_ms_p99')} ms; -> published p50 "
          f"{end_diag.get('sent_ms_p50')} ms, p99 {end_diag.get('sent_ms_p99')} ms; garbage-collector pauses there: "
          f"{end_diag.get('gc_pauses')}, p99 {end_diag.get('gc_pause_ms_p99')} ms, max {end_diag.get('gc_pause_ms_max')} ms")
    sim = {k: ticks(end_sim, k) - ticks(start_sim, k)
           for k in ("reflexes", "recoveries", "resets", "late_trajectories", "off_path_switches", "commands_rejected")}
    print(f"robot (sim_node): {sim['reflexes']} reflexes, {sim['recoveries']} recoveries in {sim['resets']} resets "
          f"(episodes), {sim['late_trajectories']} "
          f"trajectories switched to after their stamp (largest delay so far "
          f"{end_sim.get('max_trajectory_delay_ms')} ms), {sim['off_path_switches']} of them past their lead, off "
          f"the path that was playing (largest step so far {end_sim.get('max_switch_step_urad')} microrad), "
          f"{sim['commands_rejected']} commands rejected; "
          f"simulation at {end_sim.get('real_time_factor')}x real time since start")
    print(f"trajectory messages at sim_node (last 1000): stamp -> received by DDS p50 "
          f"{end_sim.get('delivery_ms_p50')} / p99 {end_sim.get('delivery_ms_p99')} / max "
          f"{end_sim.get('delivery_ms_max')} ms; DDS -> callback p50 {end_sim.get('callback_ms_p50')} / p99 "
          f"{end_sim.get('callback_ms_p99')} / max {end_sim.get('callback_ms_max')} ms")
    print(f"\n== weights ({what}, {len(data) / 1e6:.2f} MB)")
    print(f"memcpy of the same bytes: {copy_ms:.3f} ms")
    print(f"publish -> verified: median {np.nanmedian(verified):.1f} ms = {np.nanmedian(verified) / copy_ms:.0f}x memcpy")
    print(f"publish -> swapped in (waits for the chunk boundary): median {np.nanmedian(swapped):.1f} ms "
          f"= {np.nanmedian(swapped) / copy_ms:.0f}x memcpy")
    print(f"the swap itself (into the network, between two chunks): median {np.nanmedian(swap):.2f} ms = "
          f"{np.nanmedian(swap) / copy_ms:.1f}x memcpy")
    print("\n== transitions")
    print(f"executed steps (policy_node): {end_diag.get('transitions')}; received by the learner: "
          f"{learner.get('transitions_received')} (diagnostics sampled a moment apart; the tests check exact equality)")
    print(f"learner ({args.algorithm}): {learner.get('num_updates')} updates, version {learner.get('policy_version')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
