"""Test peer: publish every sample message on /samples/<Type> until killed.

QoS is reliable + transient-local so the test's subscriber, started in
another process, receives them whenever it joins.
"""
import sys
from pathlib import Path

import rclpy
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from msg_samples import samples  # noqa: E402


def main() -> None:
    rclpy.init()
    node = rclpy.create_node("sample_publisher")
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    pubs = []
    for name, msg in samples().items():
        pub = node.create_publisher(type(msg), f"/samples/{name}", qos)
        pub.publish(msg)
        pubs.append(pub)
    print("published", flush=True)
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
