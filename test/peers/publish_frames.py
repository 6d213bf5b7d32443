"""Test peer: publish COUNT rgb8 frames of WIDTHxHEIGHT once each, as a camera driver does, then stay up.

Usage: publish_frames.py TOPIC WIDTHxHEIGHT COUNT PERIOD_S
QoS: reliable, volatile, keep last 1 (realsense2_camera's SYSTEM_DEFAULT under
Fast DDS). Frame i has frame_id ``frame_<i>`` and a fresh stamp. Publishing
starts once a subscriber is matched; each frame is published exactly once.
"""
import sys
import time

import numpy as np
import rclpy
from sensor_msgs.msg import Image

from mechanic_rl_ros.wire import topics


def main() -> None:
    topic, size, count, period = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    width, height = (int(v) for v in size.split("x"))
    rclpy.init()
    node = rclpy.create_node("frame_publisher")
    pub = node.create_publisher(Image, topic, topics.DRIVER)
    while pub.get_subscription_count() < 1:
        rclpy.spin_once(node, timeout_sec=0.1)
    rclpy.spin_once(node, timeout_sec=1.0)  # let the reader's discovery settle
    data = np.random.default_rng(0).integers(0, 256, height * width * 3, dtype=np.uint8).tobytes()
    for i in range(count):
        msg = Image(height=height, width=width, encoding="rgb8", step=3 * width, data=data)
        msg.header.frame_id = f"frame_{i}"
        msg.header.stamp = node.get_clock().now().to_msg()
        pub.publish(msg)
        time.sleep(period)
    print(f"published {count} frames of {size}", flush=True)
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
