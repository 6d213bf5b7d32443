"""What every node of the stack does the same way: the process entry point,
rate-limited error logs, the /diagnostics message, and the joint command
message the arm's controller takes."""
from __future__ import annotations

import math
import sys
import time
from typing import Callable, Mapping

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.duration import Duration
from rclpy.node import Node
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from mechanic_rl_ros import fr3

#: ``command_type`` parameter values: forward_command_controller's array, or joint_trajectory_controller's message
COMMAND_TYPES = ("array", "trajectory")


class RateLimitedLog:
    """Error logging at most once per ``period`` seconds per kind of problem.

    The kind is ``key`` plus the text with its digits removed, so a flood of
    one problem (the same error with changing numbers) does not hide a
    different one.
    """

    def __init__(self, node: Node, period: float):
        self.node, self.period = node, float(period)
        self._last: dict[str, float] = {}

    def error(self, key: str, text: str) -> None:
        kind = key + "|" + "".join(c for c in text if not c.isdigit())
        now = time.monotonic()
        if now - self._last.get(kind, -math.inf) >= self.period:
            self._last[kind] = now
            self.node.get_logger().error(text)


def command_message_type(command_type: str) -> type:
    """The message class for ``command_type``; ValueError naming the parameter otherwise."""
    if command_type not in COMMAND_TYPES:
        raise ValueError(f"parameter command_type: got {command_type!r}; expected one of {COMMAND_TYPES}")
    return Float64MultiArray if command_type == "array" else JointTrajectory


def joint_command(q, command_type: str, reach_in: float):
    """Seven FR3 joint position targets (already clamped by the caller) as the controller's message.

    ``trajectory`` gives one point named with :data:`fr3.JOINT_NAMES`, to be
    reached ``reach_in`` seconds after receipt (the control period)."""
    positions = [float(v) for v in q]
    if command_message_type(command_type) is Float64MultiArray:
        return Float64MultiArray(data=positions)
    return JointTrajectory(joint_names=list(fr3.JOINT_NAMES), points=[
        JointTrajectoryPoint(positions=positions, time_from_start=Duration(seconds=reach_in).to_msg())])


def publish_diagnostics(node: Node, publisher, name: str, hardware_id: str, level: int, message: str,
                        values: Mapping[str, object]) -> None:
    """Publish one DiagnosticStatus (``values`` become key/value strings) on ``publisher``."""
    status = DiagnosticStatus(level=level, name=name, hardware_id=hardware_id, message=message)
    status.values = [KeyValue(key=str(k), value=str(v)) for k, v in values.items()]
    arr = DiagnosticArray(status=[status])
    arr.header.stamp = node.get_clock().now().to_msg()
    publisher.publish(arr)


def run_node(factory: Callable[[], Node], argv: list[str] | None = None, threads: int = 1,
             failed: Callable[[Node], bool] | None = None) -> int:
    """Process entry point of a node: init, spin until SIGINT / shutdown, clean up.

    Returns 0 on a requested shutdown (a callback that runs into the shutdown
    is not a failure) and 1 when ``failed(node)`` turns true; any other
    exception propagates (the process exits non-zero with its traceback).
    """
    rclpy.init(args=argv if argv is not None else sys.argv)
    node = None
    try:
        node = factory()
        executor = MultiThreadedExecutor(num_threads=threads) if threads > 1 else SingleThreadedExecutor()
        executor.add_node(node)
        while rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
            if failed is not None and failed(node):
                return 1
        return 0
    except (KeyboardInterrupt, ExternalShutdownException):
        return 0
    except Exception:
        if not rclpy.ok():
            return 0
        raise
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
