"""Test peer: a node run by ``run_node`` whose cleanup (``destroy_node``) lasts
until the test creates a file, so that the test can signal it as often as it
likes while it cleans up -- the situation of the learner writing its final
checkpoint when a second Ctrl-C, or a supervisor's SIGTERM, arrives.

usage: slow_cleanup_node.py RELEASE_FILE DONE_FILE
"""
import sys
import time
from pathlib import Path

from rclpy.node import Node

from mechanic_rl_ros.nodes.common import run_node


class SlowCleanupNode(Node):
    def __init__(self, release: Path, done: Path) -> None:
        super().__init__("slow_cleanup_node")
        self.release, self.done = release, done
        self.get_logger().info("ready")

    def destroy_node(self) -> None:
        self.get_logger().info("cleanup started")
        while not self.release.exists():
            time.sleep(0.05)
        self.done.write_text("cleanup finished\n")
        self.get_logger().info("cleanup finished")
        super().destroy_node()


if __name__ == "__main__":
    release, done = Path(sys.argv[1]), Path(sys.argv[2])
    sys.exit(run_node(lambda: SlowCleanupNode(release, done), argv=sys.argv[:1] + sys.argv[3:]))
