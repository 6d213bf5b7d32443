"""Read-only check of this machine against a running robot: what the stack's wall-clock path will have.

Run it on the PC that will run the stack, with the robot (franka_bringup), its camera driver and the
user's usual load running, before launching finetune.launch.py. It **sends nothing**: no trajectory, no
gripper goal, no service or action call. It

1. subscribes to the joint states, franka_robot_state_broadcaster's robot state and the camera topic
   (policy_node's default names; ``--joint-states``, ``--robot-state``, ``--camera`` to change them) for
   ``--seconds`` and prints per topic the rate, stamp -> received here (p50 / p99 / max; on another PC this
   includes the clock offset between the two) and the CPU share this Python process needs to take them in
   (franka_ros2 publishes the robot state at 1 kHz; this bench takes every message, policy_node and
   reward_node only the newest one when they read it);
2. times, on this machine under its present load, the policy's inference as policy_node makes it (the
   8-proposal batch of ``algorithm select``, ``--proposals 0`` for one sample) and prints the replan margin
   policy_node's adaptive margin would settle at (:class:`AdaptiveMargin`; holds for want of a chunk
   begin above the policy's largest lead);
3. times the safety filter's computation of one message (the part of ``delivery_budget`` the filter itself
   uses; the rest is for the node's other threads and DDS delivery).

Against the real-time simulator (``mechanic-rl sim`` in realtime mode, or the stack) it measures the
same (``sim_node.publish_rate: 500``, the simulator's largest, is half the robot's rate;
``bench/bench_robot_state.py`` measures the 1 kHz stream's cost on its own).

Usage: python bench/bench_robot.py [--seconds 30] [--checkpoint checkpoints/lift_demos] [--proposals 8]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def percentiles(ms: list[float]) -> str:
    if not ms:
        return "none received"
    a = np.asarray(ms)
    return f"p50 {np.percentile(a, 50):.1f} / p99 {np.percentile(a, 99):.1f} / max {a.max():.1f} ms"


def listen(seconds: float, topics: dict[str, tuple[str, type, object]]) -> None:
    """Subscribe, take messages in for ``seconds``, print what arrived (read-only)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    rclpy.init()
    node = rclpy.create_node("bench_robot")
    got: dict[str, list[float]] = {k: [] for k in topics}
    delay: dict[str, list[float]] = {k: [] for k in topics}

    def callback(key: str):
        def on(msg) -> None:
            now = time.time()
            got[key].append(now)
            stamp = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec
            if stamp > 0:
                delay[key].append((now - stamp) * 1e3)
        return on

    for key, (name, msg_type, qos) in topics.items():
        node.create_subscription(msg_type, name, callback(key), qos)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    print(f"[bench_robot] listening for {seconds:.0f} s (read-only)", flush=True)
    cpu0, wall0 = time.process_time(), time.monotonic()
    end = wall0 + seconds
    while time.monotonic() < end:
        executor.spin_once(timeout_sec=0.05)
    cpu = (time.process_time() - cpu0) / (time.monotonic() - wall0)
    node.destroy_node()
    rclpy.shutdown()
    print("\n== inputs (stamp -> received in this process)")
    for key, (name, _, _) in topics.items():
        rate = len(got[key]) / seconds
        print(f"{key} ({name}): {rate:.1f} Hz, {percentiles(delay[key])}")
    print(f"CPU to take all of them in (one Python process, rclpy): {cpu:.0%} of one core; policy_node and "
          f"reward_node each pay about this for the ones they subscribe to")


def time_inference(checkpoint: Path, proposals: int, runs: int, control_rate: float, margin: int) -> None:
    import torch

    from mechanic_rl_ros.control.chunk_loop import AdaptiveMargin
    from mechanic_rl_ros.policy import DiffusionPolicy

    torch.set_num_threads(1)  # policy_node's torch_threads
    policy = DiffusionPolicy.from_checkpoint(checkpoint).eval()
    policy.warm_up(proposals)
    seconds = [policy.warm_up(proposals) for _ in range(runs)]
    adapt = AdaptiveMargin(margin, policy.cfg.max_lead, 1.0 / control_rate)
    for s in seconds:
        adapt.record(s)
    ms = [s * 1e3 for s in seconds]
    what = f"{proposals} proposals" if proposals > 0 else "one sample"
    print(f"\n== policy inference on this machine ({checkpoint.name}, {what}, 1 torch thread, {runs} runs)")
    print(f"{percentiles(ms)}; policy_node's adaptive replan margin: {adapt.margin()} actions (configured "
          f"{margin}, the policy allows up to {policy.cfg.max_lead})")
    if np.quantile(seconds, adapt.quantile) > policy.cfg.max_lead / control_rate:
        print(f"  slower than the policy's largest lead ({policy.cfg.max_lead / control_rate:.1f} s): the arm will "
              f"stop and wait for chunks; free the CPU or use fewer proposals")


def time_filter(runs: int, lead: float) -> None:
    from mechanic_rl_ros.control import fr3
    from mechanic_rl_ros.control.safety import SafetyConfig, SafetyFilter

    filt = SafetyFilter(SafetyConfig(switch_lead=lead))
    filt.reset(fr3.Q_HOME, settle=0.0)
    rng = np.random.default_rng(0)
    q = np.array(fr3.Q_HOME, dtype=float)
    ms = []
    for k in range(runs):
        q = q + rng.normal(0.0, 0.02, 7)
        start = time.perf_counter()
        filt.filter(q, 0.04, k * 0.1)
        ms.append((time.perf_counter() - start) * 1e3)
    print(f"\n== safety filter, one message (lead {lead * 1e3:.0f} ms on the wall clock)")
    print(percentiles(ms))


def main() -> int:
    from mechanic_rl_ros.config_files import load_yaml
    from mechanic_rl_ros.wire import topics as t

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0, help="how long to listen (default 30)")
    ap.add_argument("--checkpoint", type=Path, default=REPO / "checkpoints" / "lift_demos")
    ap.add_argument("--proposals", type=int, default=None,
                    help="proposals per decision (default: config/select.yaml's num_candidates; 0: one sample)")
    ap.add_argument("--runs", type=int, default=30, help="timed inference calls (default 30)")
    ap.add_argument("--joint-states", default=t.JOINT_STATES.name)
    ap.add_argument("--robot-state", default=t.ROBOT_STATE.name)
    ap.add_argument("--camera", default=t.CAMERA_IMAGE.name.format(camera="scene"))
    args = ap.parse_args()
    node = load_yaml(REPO / "config" / "policy_node.yaml")["policy_node"]["ros__parameters"]
    proposals = args.proposals
    if proposals is None:
        proposals = int(load_yaml(REPO / "config" / "select.yaml")["num_candidates"])
    listen(args.seconds, {"joint states": (args.joint_states, t.JOINT_STATES.type, t.JOINT_STATES.qos),
                          "robot state": (args.robot_state, t.ROBOT_STATE.type, t.ROBOT_STATE.qos),
                          "camera": (args.camera, t.CAMERA_IMAGE.type, t.CAMERA_IMAGE.qos)})
    time_inference(args.checkpoint, proposals, args.runs, float(node["control_rate"]), int(node["replan_margin"]))
    lead = float(node["delivery_budget"]) + float(node["safety_switch_lead"])
    time_filter(200, lead)
    return 0


if __name__ == "__main__":
    sys.exit(main())
