"""reward_node's reset on a real arm (``mode`` real): the gripper opened (one franka_gripper move goal) and
the arm driven to the home pose through the controller's command topic, behind the stack's safety filter
(trajectories within the FR3's 1 kHz limits at ``home_velocity_scale``), from the measured ``/joint_states``.

Apart from reward_node so that the node file stays the thin adapter DESIGN.md asks for (≤ 400 lines: episodes,
rewards, the robot watch); the limits and the filter are control/'s."""
from __future__ import annotations

from typing import Callable

import numpy as np
from rclpy.action import ActionClient
from rclpy.node import Node
from sensor_msgs.msg import JointState

from mechanic_rl_ros.control import fr3
from mechanic_rl_ros.control.safety import SafetyFilter
from mechanic_rl_ros.nodes.common import command_message_type, joint_command
from mechanic_rl_ros.nodes.reward_params import home_safety_config
from mechanic_rl_ros.wire import topics


class HomeMotion:
    """The home motion of ``node`` (reward_node's parameters ``cfg``): :meth:`start` opens the gripper and
    drives the arm home at the ``control_dt`` rate; ``on_home()`` is called once it is within
    ``home_tolerance``; :meth:`cancel` stops it (the robot stopped)."""

    def __init__(self, node: Node, cfg: dict, on_home: Callable[[], None]):
        self.node, self.cfg, self.on_home = node, cfg, on_home
        t = topics
        node.create_subscription(t.JOINT_STATES.type, cfg["joint_states_topic"], self._on_joint_states,
                                 t.JOINT_STATES.qos)
        self.cmd_pub = node.create_publisher(command_message_type(cfg["command_type"]), cfg["command_topic"],
                                             t.ARM_COMMAND.qos)
        self.gripper_open = ActionClient(node, t.GRIPPER_MOVE.type, cfg["gripper_namespace"].rstrip("/") + "/move")
        node.create_timer(cfg["control_dt"], self._tick)
        #: the home motion's limits, checked at start-up
        self.config = home_safety_config(cfg)
        self.q: np.ndarray | None = None
        #: the home motion's safety filter while homing, else None
        self.homing: SafetyFilter | None = None

    def start(self) -> None:
        """On reset: open the gripper and start the motion home."""
        self._open_gripper()
        self.homing = SafetyFilter(self.config)

    def cancel(self) -> None:
        self.homing = None

    def _open_gripper(self) -> None:
        """One franka_gripper move goal to the open width (not awaited: the home motion runs meanwhile; a gripper
        that is not up is logged and the episode starts anyway)."""
        if not self.gripper_open.server_is_ready():
            self.node.get_logger().error(f"{self.cfg['gripper_namespace']}/move not available: gripper not opened "
                                         f"(is franka_gripper running? franka_bringup load_gripper:=true)")
            return
        self.gripper_open.send_goal_async(topics.GRIPPER_MOVE.type.Goal(width=fr3.GRIPPER_MAX_WIDTH,
                                                                        speed=fr3.GRIPPER_MAX_SPEED))

    def _on_joint_states(self, msg: JointState) -> None:
        try:
            idx = [list(msg.name).index(n) for n in fr3.JOINT_NAMES]
        except ValueError:
            self.node.get_logger().error(f"{self.cfg['joint_states_topic']}: name must contain "
                                         f"{list(fr3.JOINT_NAMES)}, got {list(msg.name)}", throttle_duration_sec=1.0)
            return
        self.q = np.array([msg.position[i] for i in idx])

    def _tick(self) -> None:
        """Step towards home within the FR3 limits, then start the episode (``on_home``)."""
        if self.homing is None or self.q is None:
            return
        if np.abs(self.q - fr3.Q_HOME).max() < self.cfg["home_tolerance"]:
            self.homing = None
            self.on_home()
            return
        now = self.node.get_clock().now().nanoseconds * 1e-9
        if not self.homing.initialized:
            self.homing.reset(self.q, now)
        res = self.homing.filter(fr3.Q_HOME, None, now)
        if res.trajectory is not None:  # None: settling from the measured position
            self.cmd_pub.publish(joint_command(res, self.cfg["command_type"]))
