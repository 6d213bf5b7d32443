"""Test peer: publish PolicyWeights versions 1..N of SIZE_MB each, then stay up.

Usage: publish_weights.py SIZE_MB N
Each version's payload is a safetensors buffer of one float32 tensor filled
with the version number, so the receiver can tell versions apart.
"""
import sys

import numpy as np
import rclpy
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from mechanic_rl_ros import wire
from mechanic_rl_ros.msg import PolicyWeights


def main() -> None:
    size_mb, versions = float(sys.argv[1]), int(sys.argv[2])
    rclpy.init()
    node = rclpy.create_node("weights_publisher")
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    pub = node.create_publisher(PolicyWeights, "/policy_weights", qos)
    n = int(size_mb * 1e6 / 4)
    for v in range(1, versions + 1):
        payload = wire.encode_weights({"w": np.full(n, float(v), dtype=np.float32)})
        pub.publish(wire.weights_to_msg(payload, version=v, architecture_id="arch-test"))
    print(f"published {versions} versions", flush=True)
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
