"""What the FR3's 1 kHz robot state costs a Python node, taken per message or newest-only (issue 32).

franka_robot_state_broadcaster publishes franka_msgs/FrankaRobotState at the controller rate, 1 kHz on a
real FR3; the simulator publishes it at its joint-state rate (at most its 500 Hz physics). policy_node and
reward_node read the robot's mode from it. This bench starts a publisher process that sends robot states
at ``--rate`` (1 kHz by default, stamped with the wall clock, in move mode) and measures, in this process,
one reader at a time for ``--seconds`` each:

* ``callback``: a subscription with a callback that deserialises every message and reads the mode
  (:func:`read_robot_state`), spun by a two-thread executor as the nodes spin theirs: what a node that
  subscribes the ordinary way pays;
* ``newest @ N Hz``: the stack's :class:`~mechanic_rl_ros.nodes.common.LatestMessage`, taken by a timer at
  N Hz (policy_node's 10 Hz tick, reward_node's 20 Hz watch): DDS keeps the newest message, the timer
  deserialises that one.

For each it prints the share of one core this process used (all its threads), the messages read, and the
age of the state when read (now - the message's stamp; what the reader knows of the robot is that old).
The publisher's own share is printed too (on a robot that work is franka_ros2's C++ broadcaster's).

Usage: python bench/bench_robot_state.py [--rate 1000] [--seconds 20]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TOPIC = "/bench_robot_state/robot_state"


def robot_state(stamp_ns: int):
    from sensor_msgs.msg import JointState

    from mechanic_rl_ros.control import fr3
    from mechanic_rl_ros.wire.robot_state import robot_state_message

    q = np.asarray(fr3.Q_HOME, dtype=float)
    arm = JointState(name=list(fr3.JOINT_NAMES), position=q.tolist(), velocity=[0.0] * 7, effort=[0.0] * 7)
    arm.header.stamp.sec, arm.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    return robot_state_message("move", (), (), arm, (q, np.zeros(7)))


def publish(rate: float, seconds: float) -> int:
    """The publisher process: robot states at ``rate`` Hz for ``seconds``, then its CPU share on stdout."""
    import rclpy

    from mechanic_rl_ros.wire import topics

    rclpy.init()
    node = rclpy.create_node("bench_robot_state_publisher")
    pub = node.create_publisher(topics.ROBOT_STATE.type, TOPIC, topics.ROBOT_STATE.qos)
    period = 1.0 / rate
    start, cpu0, sent = time.monotonic(), time.process_time(), 0
    while time.monotonic() - start < seconds:
        msg = robot_state(time.time_ns())
        pub.publish(msg)
        sent += 1
        time.sleep(max(0.0, start + sent * period - time.monotonic()))
    print(f"{sent / (time.monotonic() - start):.0f} {100 * (time.process_time() - cpu0) / seconds:.1f}", flush=True)
    node.destroy_node()
    rclpy.shutdown()
    return 0


def measure(kind: str, poll_hz: float, seconds: float) -> tuple[float, int, list[float]]:
    """One reader for ``seconds``: (CPU share of one core [%], messages read, ages at reading [ms])."""
    import rclpy

    from mechanic_rl_ros.nodes.common import LatestMessage, QuietMultiThreadedExecutor
    from mechanic_rl_ros.wire import topics
    from mechanic_rl_ros.wire.robot_state import read_robot_state

    node = rclpy.create_node(f"bench_robot_state_{kind}")
    read, ages = 0, []

    def on(msg) -> None:
        nonlocal read
        status = read_robot_state(msg)
        read += 1
        ages.append((time.time() - status.stamp) * 1e3)

    latest = None
    if kind == "callback":
        node.create_subscription(topics.ROBOT_STATE.type, TOPIC, on, topics.ROBOT_STATE.qos)
    else:
        latest = LatestMessage(node, topics.ROBOT_STATE.type, TOPIC, topics.ROBOT_STATE.qos, "reader")

        def tick() -> None:
            msg = latest.take()
            if msg is not None:
                on(msg)

        node.create_timer(1.0 / poll_hz, tick)
    executor = QuietMultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    end = time.monotonic() + 2.0  # discovery and the first messages, not measured
    while time.monotonic() < end:
        executor.spin_once(timeout_sec=0.05)
    read, ages = 0, []
    cpu0, start = time.process_time(), time.monotonic()
    while time.monotonic() - start < seconds:
        executor.spin_once(timeout_sec=0.05)
    share = 100 * (time.process_time() - cpu0) / (time.monotonic() - start)
    executor.shutdown()
    if latest is not None:
        latest.destroy()
    node.destroy_node()
    return share, read, ages


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=1000.0, help="robot states per second (the FR3: 1000)")
    ap.add_argument("--seconds", type=float, default=20.0, help="measured seconds per reader")
    ap.add_argument("--publish", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.publish:
        return publish(args.rate, args.seconds)
    import rclpy

    readers = [("callback", 0.0), ("newest", 10.0), ("newest", 20.0)]
    total = len(readers) * (args.seconds + 2.0) + 3.0
    pub = subprocess.Popen([sys.executable, __file__, "--publish", "--rate", str(args.rate), "--seconds", str(total)],
                           stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    rclpy.init()
    print(f"robot states at {args.rate:.0f} Hz from another process; {args.seconds:.0f} s per reader")
    try:
        for kind, hz in readers:
            share, read, ages = measure(kind, hz, args.seconds)
            name = "callback per message" if kind == "callback" else f"newest @ {hz:.0f} Hz"
            age = (f"age when read p50 {np.percentile(ages, 50):.2f} / p99 {np.percentile(ages, 99):.2f} ms"
                   if ages else "nothing read")
            print(f"{name:>22}: {share:5.1f} % of a core, {read / args.seconds:6.0f} reads/s, {age}", flush=True)
    finally:
        rclpy.shutdown()
    out, _ = pub.communicate(timeout=total + 30)
    rate, share = out.split()
    print(f"{'publisher':>22}: {float(share):5.1f} % of a core, {float(rate):6.0f} messages/s sent")
    return 0


if __name__ == "__main__":
    sys.exit(main())
