"""Benchmark of the node stack on this machine (figures for the README).

Runs sim (real time) + camera + policy + reward + learner as separate
processes, with the learner training on the same cores, and measures:

1. the control loop: achieved command rate, p50 / p99 of the intervals
   between commands (wall clock, as received by a subscriber), and the ticks
   where no fresh action was ready (policy_node's hold counters);
2. weights: publish -> verified and publish -> swapped-in latency of the
   policy's fine-tuned network, as multiples of an in-process memcpy of the
   same bytes measured in the same run (swapping waits for a chunk boundary
   by design, so it includes up to one chunk of waiting);
3. transitions: executed steps (policy_node) vs steps received by the learner.

Usage: python bench/bench_stack.py [--checkpoint DIR] [--seconds 60]
(default checkpoint: checkpoints/lift_pretrained, else a tiny random policy).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from std_msgs.msg import Float64MultiArray

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "test"))

from mechanic_rl_ros.msg import PolicyWeights  # noqa: E402
from mechanic_rl_ros.policy import DiffusionPolicy  # noqa: E402
from mechanic_rl_ros.wire.weights import weights_message  # noqa: E402
from mechanic_rl_ros.stack import description  # noqa: E402
from mechanic_rl_ros.stack.runner import node_command  # noqa: E402
from rosenv import fresh_domain_id, ros_env  # noqa: E402
from stack_checks import StackObserver  # noqa: E402
from stack_fixtures import LATCHED, make_checkpoint  # noqa: E402


def memcpy_seconds(nbytes: int, repeats: int = 20) -> float:
    src = np.frombuffer(np.random.default_rng(0).bytes(nbytes), np.uint8)
    dst = np.empty_like(src)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=REPO / "checkpoints" / "lift_pretrained")
    ap.add_argument("--seconds", type=float, default=60.0, help="wall seconds of control to measure")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_stack_"))
    ckpt = args.checkpoint
    if not (ckpt / "model.safetensors").is_file():
        print(f"no checkpoint at {ckpt}; using a tiny random policy")
        ckpt = tmp / "ckpt"
        make_checkpoint(ckpt)
    specs = description.nodes({"checkpoint": str(ckpt), "run_dir": str(tmp / "run")}, REPO / "config")
    for s in specs:  # real time: the control loop runs against the wall clock
        s.overrides["use_sim_time"] = False
        if s.name == "sim_node":
            s.overrides["mode"] = "realtime"
        if s.name == "learner_node":
            s.overrides["batch_size"] = 4
            s.overrides["min_batch_size"] = 1
    domain = fresh_domain_id()
    procs = [subprocess.Popen(node_command(s), cwd=REPO, env=ros_env(domain), stdout=open(tmp / f"{s.name}.log", "wb"),
                              stderr=subprocess.STDOUT, start_new_session=True) for s in specs]
    obs = StackObserver(domain)
    arrivals: list[float] = []
    obs.node.create_subscription(Float64MultiArray, "/fr3_position_controller/commands",
                                 lambda m: arrivals.append(time.monotonic()), 100)
    try:
        print(f"[bench] warming up (policy {ckpt})", flush=True)
        assert obs.spin_until(lambda: len(obs.transitions) > 20, 300), "the stack never started acting"
        start_diag = dict(obs.diagnostics.get("policy_node", {}))
        arrivals.clear()
        print(f"[bench] measuring the control loop for {args.seconds:.0f} s with the learner training", flush=True)
        obs.spin_until(lambda: False, args.seconds)
        window = list(arrivals)
        end_diag = dict(obs.diagnostics.get("policy_node", {}))
        learner = dict(obs.diagnostics.get("learner_node", {}))

        # weights: publish the policy's own net as a new version and time its adoption
        policy = DiffusionPolicy.from_checkpoint(ckpt)
        k_ft = policy.cfg.sampling.finetune_steps or 5
        state = (policy.ft_net or policy.net).state_dict()
        pub = obs.node.create_publisher(PolicyWeights, "/policy/weights", LATCHED)
        verified, swapped = [], []
        for k in range(5):
            msg = weights_message(state, version=10_000 + k, architecture_id=policy.arch_id, finetune_steps=k_ft)
            data = msg.payload
            msg.header.stamp = obs.node.get_clock().now().to_msg()
            before = obs.diagnostics.get("policy_node", {}).get("weights_swapped_ms")
            pub.publish(msg)
            obs.spin_until(lambda: obs.diagnostics.get("policy_node", {}).get("weights_swapped_ms") not in (None, before, "nan"), 30)
            d = obs.diagnostics.get("policy_node", {})
            verified.append(float(d.get("weights_verified_ms", "nan")))
            swapped.append(float(d.get("weights_swapped_ms", "nan")))
        copy_ms = memcpy_seconds(len(data)) * 1e3
    finally:
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
    holds = {k: ticks(end_diag, k) - ticks(start_diag, k) for k in ("hold_no_action", "hold_stale", "hold_model")}
    print("\n== control loop (policy_node, 10 Hz target, learner training on the same 2 cores)")
    print(f"commands received: {len(window)} in {args.seconds:.0f} s -> {len(window) / args.seconds:.2f} Hz")
    print(f"inter-command interval: p50 {np.percentile(gaps, 50):.1f} ms, p99 {np.percentile(gaps, 99):.1f} ms, "
          f"max {gaps.max():.1f} ms")
    print(f"ticks without a fresh action: {holds['hold_no_action']} (stale input: {holds['hold_stale']}, "
          f"model errors: {holds['hold_model']})")
    print(f"policy inference: p50 {end_diag.get('inference_ms_p50')} ms, p99 {end_diag.get('inference_ms_p99')} ms")
    print("\n== weights (fine-tuned network, %.1f MB)" % (len(data) / 1e6))
    print(f"memcpy of the same bytes: {copy_ms:.3f} ms")
    print(f"publish -> verified: median {np.nanmedian(verified):.1f} ms = {np.nanmedian(verified) / copy_ms:.0f}x memcpy")
    print(f"publish -> swapped in (waits for the chunk boundary): median {np.nanmedian(swapped):.1f} ms "
          f"= {np.nanmedian(swapped) / copy_ms:.0f}x memcpy")
    print("\n== transitions")
    print(f"executed steps (policy_node): {end_diag.get('transitions')}; received by the learner: "
          f"{learner.get('transitions_received')} (diagnostics sampled a moment apart; the tests check exact equality)")
    print(f"learner: {learner.get('num_updates')} updates, policy version {learner.get('policy_version')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
