"""How many large camera frames reach camera_node, per QoS and Fast DDS transport (figures for the README).

Three processes on one host, as on the robot's workstation: this script
publishes ``--frames`` rgb8 frames of each size once each, ``--period``
seconds apart, as a camera driver does (reliable, keep last 1); camera_node
(its own process, ``config/camera.yaml`` with the QoS under test) converts
them; ``--load`` busy-loop processes keep the cores loaded. The figure is
camera_node's own ``frames_in`` counter (from /diagnostics) after the last
frame: frames that reached its callback, whatever their age.

Usage::

    python bench/bench_camera_transport.py [--reliability reliable|best_effort]
        [--profile config/fastdds_camera.xml | --builtin LARGE_DATA]
        [--sizes 640x480,1920x1080,4096x4096] [--frames 10] [--load 2]

``--profile`` sets FASTRTPS_DEFAULT_PROFILES_FILE, ``--builtin``
FASTDDS_BUILTIN_TRANSPORTS, for the publisher and camera_node (``--apply-to``
one of them only). Prints one line per size.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "test"))

from rosenv import fresh_domain_id, ros_env  # noqa: E402


def _burn() -> None:
    while True:
        pass


def parse_size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def run(args: argparse.Namespace) -> list[tuple[str, int, int]]:
    import numpy as np
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    domain = fresh_domain_id()
    env_extra = {}
    if args.profile:
        env_extra["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(Path(args.profile).resolve())
    if args.builtin:
        env_extra["FASTDDS_BUILTIN_TRANSPORTS"] = args.builtin
    if args.apply_to in ("both", "publisher"):
        os.environ.update(env_extra)  # this process is the publisher (the camera driver)
    cam_env = env_extra if args.apply_to in ("both", "camera_node") else {}
    log = Path(args.log_dir) / "camera_node_bench.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cam = subprocess.Popen(
        [sys.executable, "-m", "mechanic_rl_ros.nodes.camera_node", "--ros-args", "--params-file",
         "config/camera.yaml", "-p", f"input_reliability:={args.reliability}", "-p", "max_age:=0.0",
         "-p", "diagnostics_period:=0.5"],
        cwd=REPO, env=ros_env(domain, **cam_env), stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    burners = [multiprocessing.Process(target=_burn, daemon=True) for _ in range(args.load)]
    for b in burners:
        b.start()
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    node = rclpy.create_node("camera_transport_bench", context=ctx)
    ex = rclpy.executors.SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    driver = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.VOLATILE)
    pub = node.create_publisher(Image, "/camera/scene/image_raw", driver)
    diag: dict[str, str] = {}
    count = [0]

    def on_diag(msg: DiagnosticArray) -> None:
        for s in msg.status:
            if s.name.startswith("camera_node"):
                diag.update({kv.key: kv.value for kv in s.values})
                count[0] += 1

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 50)

    def spin_for(seconds: float, until=lambda: False) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ex.spin_once(timeout_sec=0.01)
            if until():
                return True
        return False

    results = []
    try:
        if not spin_for(60, lambda: pub.get_subscription_count() >= 1 and count[0] >= 1):
            raise RuntimeError(f"camera_node did not come up:\n{log.read_text()}")
        for size in args.sizes.split(","):
            w, h = parse_size(size)
            frame = Image(height=h, width=w, encoding="rgb8", step=3 * w)
            frame.header.frame_id = f"bench_{w}x{h}"
            frame.data = np.random.default_rng(0).integers(0, 256, h * w * 3, dtype=np.uint8).tobytes()
            spin_for(1.0)
            before = int(diag.get("frames_in", 0))
            for _ in range(args.frames):
                frame.header.stamp = node.get_clock().now().to_msg()
                pub.publish(frame)
                spin_for(args.period)
            # give the last frame time to arrive, then two fresh diagnostics reports
            spin_for(args.settle)
            n = count[0]
            spin_for(10, lambda: count[0] >= n + 2)
            got = int(diag.get("frames_in", 0)) - before
            results.append((size, got, args.frames))
            print(f"{size:>10}: {got:2d} of {args.frames} frames reached camera_node "
                  f"(input {args.reliability}, {args.profile or args.builtin or 'default Fast DDS'}"
                  f"{'' if args.apply_to == 'both' or not (args.profile or args.builtin) else ' on ' + args.apply_to}, "
                  f"load {args.load})", flush=True)
    finally:
        node.destroy_node()
        rclpy.shutdown(context=ctx)
        cam.terminate()
        cam.wait(15)
        for b in burners:
            b.terminate()
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reliability", choices=("reliable", "best_effort"), default="reliable")
    ap.add_argument("--profile", default="", help="Fast DDS XML profile (FASTRTPS_DEFAULT_PROFILES_FILE)")
    ap.add_argument("--builtin", default="", help="FASTDDS_BUILTIN_TRANSPORTS value, e.g. LARGE_DATA")
    ap.add_argument("--apply-to", choices=("both", "publisher", "camera_node"), default="both",
                    help="which process gets --profile / --builtin")
    ap.add_argument("--sizes", default="640x480,1280x720,1920x1080,4096x4096")
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--period", type=float, default=0.1, help="[s] between frames (10 Hz)")
    ap.add_argument("--settle", type=float, default=3.0, help="[s] waited after the last frame")
    ap.add_argument("--load", type=int, default=0, help="busy-loop processes beside the test")
    ap.add_argument("--log-dir", default="/tmp/bench_camera_transport")
    run(ap.parse_args())
    return 0


if __name__ == "__main__":
    sys.exit(main())
