"""Test peer: publish PolicyWeights versions 1..N of SIZE_MB each, then stay up.

Usage: publish_weights.py SIZE_MB N
Each version's payload is a safetensors buffer of one float32 tensor filled
with the version number, so the receiver can tell versions apart.
"""
import sys

import numpy as np
import rclpy

from mechanic_rl_ros.wire import topics
from mechanic_rl_ros.wire.weights import weights_message


def main() -> None:
    size_mb, versions = float(sys.argv[1]), int(sys.argv[2])
    rclpy.init()
    node = rclpy.create_node("weights_publisher")
    pub = node.create_publisher(topics.WEIGHTS.type, "/policy_weights", topics.WEIGHTS.qos)
    n = int(size_mb * 1e6 / 4)
    for v in range(1, versions + 1):
        pub.publish(weights_message({"w": np.full(n, float(v), dtype=np.float32)}, version=v,
                                    architecture_id="arch-test", finetune_steps=1))
    print(f"published {versions} versions", flush=True)
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
