"""policy_node's inputs: the subscriptions that feed its observation assembler (``/joint_states``, with the
measured finger width, the camera images, the task state), and the readers its control tick takes the newest
robot state and teleop device messages from (:class:`~mechanic_rl_ros.nodes.common.LatestMessage`), with
who commands the tick (:class:`~mechanic_rl_ros.control.teleop.Takeover`, fed by the device).

Apart from policy_node so that the node file stays the thin adapter DESIGN.md asks for (≤ 400 lines): the
node keeps its parameters, outputs, callback groups and the tick; this is the ROS glue on the input side.
What an input means is decided by control/ (the assembler, the takeover) and wire/ (the robot state)."""
from __future__ import annotations

import time
from typing import Callable

from rclpy.node import Node
from sensor_msgs.msg import Image, JointState

from mechanic_rl_ros.control import fr3
from mechanic_rl_ros.control.observation import ObservationAssembler
from mechanic_rl_ros.control.teleop import Takeover
from mechanic_rl_ros.msg import TaskState
from mechanic_rl_ros.nodes.common import LatestMessage
from mechanic_rl_ros.nodes.policy_weights import seconds
from mechanic_rl_ros.vision.imgmsg import imgmsg_to_array
from mechanic_rl_ros.wire import topics
from mechanic_rl_ros.wire.robot_state import RobotStatus, read_robot_state


class PolicyInputs:
    """The inputs of ``node`` (parameters ``cfg``) for a policy with ``cameras`` and ``lowdim_keys``.

    The subscriptions (joint states, images, task state) run in ``callback_group`` and go into ``assembler``;
    the robot state and the teleop device (when ``takeover`` is not None) are read by the tick. A refused input
    counts in ``counts["inputs_rejected"]`` and is reported by ``problem(key, text)``; ``now()``: the node's
    clock [s]; ``on_takeover()`` is called when the operator takes over (the policy's plans stop).
    """

    def __init__(self, node: Node, cfg: dict, cameras: tuple, lowdim_keys, assembler: ObservationAssembler,
                 takeover: Takeover | None, callback_group, counts: dict, problem: Callable[[str, str], None],
                 now: Callable[[], float], on_takeover: Callable[[], None]):
        self.node, self.cfg, self.assembler, self.takeover = node, cfg, assembler, takeover
        self.counts, self.problem, self.now, self.on_takeover = counts, problem, now, on_takeover
        self.finger_width: float | None = None  # [m] measured, from the finger joints of joint_states
        #: the robot's last reported mode (None: none received yet)
        self.robot: RobotStatus | None = None
        self.robot_state_received = -float("inf")  # [s, node clock]
        self.wall = 0.0  #: [s] the wall clock (monotonic) when :meth:`who` last ran
        t = topics
        node.create_subscription(t.JOINT_STATES.type, cfg["joint_states_topic"], self._on_joint_states,
                                 t.JOINT_STATES.qos, callback_group=callback_group)
        for cam, topic in zip(cameras, cfg["image_topics"]):
            node.create_subscription(t.POLICY_IMAGE.type, topic, lambda m, c=cam: self._on_image(c, m),
                                     t.POLICY_IMAGE.qos, callback_group=callback_group)
        if "task_state" in lowdim_keys:
            node.create_subscription(t.TASK_STATE.type, cfg["task_state_topic"], self._on_task_state,
                                     t.TASK_STATE.qos, callback_group=callback_group)
        # the 1 kHz robot state is taken, newest only, by the tick that reads it (LatestMessage)
        self.robot_state = (LatestMessage(node, t.ROBOT_STATE.type, cfg["robot_state_topic"], t.ROBOT_STATE.qos,
                                          "robot_state") if cfg["robot_state_topic"] else None)
        # spacenav_node publishes its Joy at ~1 kHz: the device is read newest-only, by the tick, as the robot state
        self.teleop = (LatestMessage(node, t.TELEOP_TWIST.type, cfg["teleop_twist_topic"], t.TELEOP_TWIST.qos,
                                     "teleop_twist"),
                       LatestMessage(node, t.TELEOP_JOY.type, cfg["teleop_joy_topic"], t.TELEOP_JOY.qos, "teleop_joy")
                       ) if takeover is not None else ()

    def _input(self, key: str, what: str, apply, *args) -> None:
        """``apply(*args)``; a ValueError refuses the input, counted and reported naming ``what``."""
        try:
            apply(*args)
        except ValueError as exc:
            self.counts["inputs_rejected"] += 1
            self.problem(key, f"{what} refused: {exc}")

    def _on_joint_states(self, msg: JointState) -> None:
        names = list(msg.name)
        if all(n in names for n in fr3.FINGER_JOINT_NAMES) and len(msg.position) == len(names):
            self.finger_width = float(sum(msg.position[names.index(n)] for n in fr3.FINGER_JOINT_NAMES))
        self._input("joints", self.cfg["joint_states_topic"], self.assembler.set_joint_state, msg.name, msg.position,
                    msg.velocity, seconds(msg.header.stamp))

    def _on_image(self, camera: str, msg: Image) -> None:
        self._input(f"image:{camera}", f"image for camera {camera!r}", self._set_image, camera, msg)

    def _set_image(self, camera: str, msg: Image) -> None:
        if msg.encoding != "rgb8":
            raise ValueError(f"encoding: got {msg.encoding!r}; expected 'rgb8' (camera_node's output)")
        self.assembler.set_image(camera, imgmsg_to_array(msg), seconds(msg.header.stamp))

    def _on_task_state(self, msg: TaskState) -> None:
        self._input("task_state", self.cfg["task_state_topic"], self.assembler.set_task_state, msg.values,
                    seconds(msg.header.stamp))

    def take_robot_state(self) -> None:
        """The newest robot state, if one came since the last tick (its age counts from the tick that took it)."""
        msg = self.robot_state.take()
        if msg is not None:
            self._input("robot_state", self.robot_state.topic, self._set_robot_state, msg)

    def _set_robot_state(self, msg) -> None:
        self.robot, self.robot_state_received = read_robot_state(msg), self.now()

    def who(self, now: float, episode: int | None, step: int) -> str:
        """Who commands this tick (:class:`Takeover`, fed the device's newest Twist and Joy); the plans of the
        policy stop at a takeover. ``now``: the node's clock [s]; the wall clock is read here and kept in
        ``wall`` for the operator's action of the same tick (a device's silence counts on both clocks:
        :mod:`~mechanic_rl_ros.control.teleop`); ``episode`` and ``step``: the node's, for the log."""
        self.wall = wall = time.monotonic()
        twist, joy = self.teleop
        device = self.takeover.input
        if (m := twist.take()) is not None:
            self._input("teleop", twist.topic, device.on_twist, (m.linear.x, m.linear.y, m.linear.z),
                        (m.angular.x, m.angular.y, m.angular.z), now, wall)
        if (m := joy.take()) is not None:
            self._input("teleop", joy.topic, device.on_joy, m.buttons, now, wall)
        who, change = self.takeover.who(now, wall)
        if change == "takeover":
            self.on_takeover()
            self.node.get_logger().info(f"episode {episode} step {step}: the operator takes over")
        elif change == "handback":
            self.node.get_logger().info(f"episode {episode} step {step}: the operator hands back; the policy "
                                        f"plans a fresh chunk")
        elif change == "lost":
            self.node.get_logger().error(f"episode {episode} step {step}: no teleop message for "
                                         f"{self.cfg['teleop_timeout']} s while the operator steered (a device "
                                         f"unplugged?): holding the arm, episode given up; acting again at the "
                                         f"next episode")
        return who

    def destroy(self) -> None:
        """Close the readers (their nodes of their own)."""
        for reader in (self.robot_state, *self.teleop):
            if reader is not None:
                reader.destroy()
