"""What ros2_control's controller_manager does around an FR3 error, for the simulator. ROS-free.

franka_ros2 from v3.3.0 (franka_hardware/doc, "Error Recovery"): when libfranka
reports an error (a reflex), franka_hardware's ``read`` returns ERROR; the
controller_manager then moves the hardware component to *unconfigured* and
deactivates every controller that uses it -- the arm controller and the
broadcasters (``franka_robot_state_broadcaster`` stops publishing the robot
state). Recovery is three steps, in this order:

1. franka_hardware's ``/action_server/error_recovery`` clears the robot's error;
2. ``set_hardware_component_state`` brings the component back to *active*
   (refused while the error is not cleared);
3. ``switch_controller`` activates the controllers again (the arm controller
   then holds the measured position).

:class:`ControllerManager` keeps that state; sim_node serves the two services
and applies it (commands reach the arm only through an active arm controller,
the robot state is published only while its broadcaster is active).
"""
from __future__ import annotations

from dataclasses import dataclass, field

#: lifecycle_msgs/State ids of the hardware component states used here
UNCONFIGURED, INACTIVE, ACTIVE = 1, 2, 3
STATE_LABELS = {UNCONFIGURED: "unconfigured", INACTIVE: "inactive", ACTIVE: "active"}
#: controller_manager_msgs/SwitchController strictness values
BEST_EFFORT, STRICT = 1, 2

#: franka_ros2's hardware component and broadcasters (franka_bringup), the arm controllers of config/franka_controllers.yaml
HARDWARE_COMPONENT = "FrankaHardwareInterface"
ROBOT_STATE_BROADCASTER = "franka_robot_state_broadcaster"
JOINT_STATE_BROADCASTER = "joint_state_broadcaster"
ARM_CONTROLLERS = {"trajectory": "fr3_position_trajectory_controller", "forward": "fr3_position_controller"}


@dataclass
class ControllerManager:
    """Hardware component state and the active controllers, started as franka_bringup starts them."""

    arm_controller: str = ARM_CONTROLLERS["trajectory"]
    hardware: str = HARDWARE_COMPONENT
    hardware_state: int = ACTIVE
    loaded: tuple[str, ...] = ()
    active: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if not self.loaded:
            self.loaded = (self.arm_controller, JOINT_STATE_BROADCASTER, ROBOT_STATE_BROADCASTER)
        self.active = set(self.loaded)

    def is_active(self, controller: str) -> bool:
        return self.hardware_state == ACTIVE and controller in self.active

    def on_hardware_error(self) -> None:
        """franka_hardware's read() returned ERROR: component unconfigured, its controllers deactivated."""
        self.hardware_state = UNCONFIGURED
        self.active.clear()

    def set_hardware_state(self, name: str, target: int, robot_error: bool) -> tuple[bool, int]:
        """``set_hardware_component_state``: (ok, the component's state after the call)."""
        if name != self.hardware:
            return False, self.hardware_state
        if target not in STATE_LABELS:
            return False, self.hardware_state
        if target == ACTIVE and robot_error:
            return False, self.hardware_state  # libfranka refuses to start a control loop before recovery
        self.hardware_state = target
        if target != ACTIVE:
            self.active.clear()
        return True, self.hardware_state

    def switch(self, activate: list[str], deactivate: list[str], strictness: int) -> tuple[bool, str, list[str]]:
        """``switch_controller``: (ok, message, the controllers that became active)."""
        unknown = [c for c in [*activate, *deactivate] if c not in self.loaded]
        if unknown and strictness == STRICT:
            return False, f"controllers not loaded: {unknown}", []
        if activate and self.hardware_state != ACTIVE:
            return False, (f"hardware component {self.hardware} is {STATE_LABELS[self.hardware_state]}: "
                           f"activate it first (set_hardware_component_state)"), []
        if strictness == STRICT and any(c in self.active for c in activate):
            return False, f"already active: {[c for c in activate if c in self.active]}", []
        for c in deactivate:
            self.active.discard(c)
        started = [c for c in activate if c in self.loaded and c not in self.active]
        self.active.update(started)
        return True, "switched" + (f"; not loaded, skipped: {unknown}" if unknown else ""), started
