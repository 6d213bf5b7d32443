"""Clients of franka_ros2's interfaces that the stack's nodes share: franka_gripper's goals as
:class:`~mechanic_rl_ros.control.gripper.GripperCommander` decides them (policy_node), and franka_ros2's
error-recovery sequence (reward_node). ROS glue only: what to send and when is decided by the callers."""
from __future__ import annotations

import threading
from typing import Callable, Sequence

from action_msgs.msg import GoalStatus
from lifecycle_msgs.msg import State as LifecycleState
from rclpy.action import ActionClient
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node

from mechanic_rl_ros.control.gripper import GripperCommander
from mechanic_rl_ros.wire import topics
from mechanic_rl_ros.wire.gripper import ACTIONS as GRIPPER_ACTIONS, goal_message as gripper_goal_message


class GripperGoals:
    """franka_gripper's move and grasp actions under ``namespace``, one goal at a time as ``commander`` says.

    ``problem(key, text)`` reports a goal that could not be sent or was refused. The commander is shared
    between the control tick and the action callbacks (two threads): use :attr:`lock` around it.
    """

    def __init__(self, node: Node, namespace: str, commander: GripperCommander,
                 problem: Callable[[str, str], None]):
        self.node, self.commander, self.problem = node, commander, problem
        self.lock = threading.Lock()
        ns = namespace.rstrip("/")
        self.names = {kind: ns + "/" + action.name.rsplit("/", 1)[1] for kind, action in GRIPPER_ACTIONS.items()}
        self.clients = {kind: ActionClient(node, GRIPPER_ACTIONS[kind].type, name,
                                           callback_group=MutuallyExclusiveCallbackGroup())
                        for kind, name in self.names.items()}
        #: goals whose acceptance did not come within the wait (sim time)
        self.late = 0

    def reset(self) -> None:
        with self.lock:
            self.commander.reset()

    def command(self, width: float, now: float, finger_width: float | None, accept_wait: float = 0.0,
                ahead: Sequence[float] = ()) -> None:
        """Send a goal for ``width`` [m] if the commander says one is due (one at a time); ``ahead``: the
        widths predicted for the next periods (:meth:`GripperCommander.request`).

        ``accept_wait`` > 0 (lock-step sim time): wait up to that many wall seconds for the server to accept
        it -- the hand starts when the simulator accepts the goal, and the tick's trajectory, which lets the
        simulator step the period, goes out only after that (waiting costs no sim time).
        """
        with self.lock:
            previous = self.commander.last_goal
            goal = self.commander.request(width, now, finger_width, ahead)
            if goal is None:
                return
            client = self.clients[goal.kind]
            if not client.server_is_ready():
                self.commander.unsent(previous)
                self.problem("gripper", f"gripper action {self.names[goal.kind]} not available; {goal.kind} to "
                                        f"{goal.width:.4f} m not sent (is franka_gripper running?)")
                return
        future = client.send_goal_async(gripper_goal_message(goal))
        future.add_done_callback(lambda f, g=goal: self._on_accepted(g, f))
        if accept_wait > 0:
            answered = threading.Event()
            future.add_done_callback(lambda _f: answered.set())
            if not answered.wait(accept_wait):
                self.late += 1

    def _on_accepted(self, goal, future) -> None:
        handle = future.result()
        if handle is None or not handle.accepted:
            with self.lock:
                self.commander.done(False)
            self.problem("gripper", f"gripper {goal.kind} to {goal.width:.4f} m refused by the server")
            return
        handle.get_result_async().add_done_callback(lambda f, g=goal: self._on_result(g, f))

    def _on_result(self, goal, future) -> None:
        answer = future.result()
        success = answer is not None and answer.status == GoalStatus.STATUS_SUCCEEDED and answer.result.success
        with self.lock:
            self.commander.done(success)
        if not success:
            error = getattr(getattr(answer, "result", None), "error", "") or "no result"
            # a grasp that closes on nothing fails by design; worth a line, not an alarm
            self.node.get_logger().info(f"gripper {goal.kind} to {goal.width:.4f} m did not succeed: {error}",
                                        throttle_duration_sec=5.0)


class FrankaRecovery:
    """franka_ros2's recovery after a reflex (from 3.3), in order: franka_hardware's error-recovery action,
    controller_manager's set_hardware_component_state (``hardware_component`` active), then its
    switch_controller (``controllers`` active). ``on_done(success, why)`` is called once per :meth:`start`."""

    def __init__(self, node: Node, action: str, controller_manager: str, hardware_component: str,
                 controllers: list[str], on_done: Callable[[bool, str], None]):
        self.node, self.action, self.on_done = node, action, on_done
        self.hardware_component, self.controllers = hardware_component, list(controllers)
        t = topics
        self.recovery_client = ActionClient(node, t.ERROR_RECOVERY.type, action)
        cm = controller_manager.rstrip("/")
        self.hardware_client = node.create_client(t.SET_HARDWARE_STATE.type, cm + "/set_hardware_component_state")
        self.switch_client = node.create_client(t.SWITCH_CONTROLLER.type, cm + "/switch_controller")
        self.running = False

    def missing(self) -> list[str]:
        """The interfaces of the sequence that are not available now."""
        return [name for name, ready in (
            (self.action, self.recovery_client.server_is_ready()),
            ("set_hardware_component_state", self.hardware_client.service_is_ready()),
            ("switch_controller", self.switch_client.service_is_ready())) if not ready]

    def start(self) -> None:
        self.running = True
        self.node.get_logger().info(f"recovery 1/3: {self.action}")
        self.recovery_client.send_goal_async(topics.ERROR_RECOVERY.type.Goal()).add_done_callback(self._on_accepted)

    def _end(self, success: bool, why: str = "") -> None:
        self.running = False
        self.on_done(success, why)

    def _on_accepted(self, future) -> None:
        handle = future.result()
        if handle is None or not handle.accepted:
            self._end(False, "the error recovery goal was rejected")
            return
        handle.get_result_async().add_done_callback(self._on_error_cleared)

    def _on_error_cleared(self, future) -> None:
        res = future.result()
        if res is None or res.status != GoalStatus.STATUS_SUCCEEDED:
            self._end(False, f"error recovery ended with status {getattr(res, 'status', None)}")
            return
        self.node.get_logger().info(f"recovery 2/3: {self.hardware_component} active")
        req = topics.SET_HARDWARE_STATE.type.Request(name=self.hardware_component)
        req.target_state.id, req.target_state.label = LifecycleState.PRIMARY_STATE_ACTIVE, "active"
        self.hardware_client.call_async(req).add_done_callback(self._on_hardware_active)

    def _on_hardware_active(self, future) -> None:
        res = future.result()
        if res is None or not res.ok:
            self._end(False, f"set_hardware_component_state {self.hardware_component} active refused "
                             f"(state {getattr(getattr(res, 'state', None), 'label', None)})")
            return
        self.node.get_logger().info(f"recovery 3/3: activate {self.controllers}")
        req = topics.SWITCH_CONTROLLER.type.Request(activate_controllers=self.controllers,
                                                   strictness=topics.SWITCH_CONTROLLER.type.Request.BEST_EFFORT,
                                                   activate_asap=True)
        self.switch_client.call_async(req).add_done_callback(self._on_controllers_active)

    def _on_controllers_active(self, future) -> None:
        res = future.result()
        if res is None or not res.ok:
            self._end(False, f"switch_controller refused: {getattr(res, 'message', 'no answer')}")
            return
        self._end(True)
