"""The simulator's model of controller_manager around an FR3 error (franka_ros2 >= 3.3)."""
from mechanic_rl_ros.sim.controller_manager import (ACTIVE, BEST_EFFORT, INACTIVE, ROBOT_STATE_BROADCASTER, STRICT,
                                                    UNCONFIGURED, ControllerManager)


def test_an_error_deactivates_everything_and_only_the_ordered_sequence_recovers():
    cm = ControllerManager()
    arm = cm.arm_controller
    assert cm.is_active(arm) and cm.is_active(ROBOT_STATE_BROADCASTER)
    cm.on_hardware_error()
    assert cm.hardware_state == UNCONFIGURED and not cm.is_active(arm) and not cm.is_active(ROBOT_STATE_BROADCASTER)
    ok, msg, _ = cm.switch([arm], [], BEST_EFFORT)
    assert not ok and "set_hardware_component_state" in msg          # step 3 before step 2
    assert cm.set_hardware_state(cm.hardware, ACTIVE, robot_error=True) == (False, UNCONFIGURED)  # before step 1
    assert cm.set_hardware_state("FR3", ACTIVE, robot_error=False)[0] is False                    # wrong name
    assert cm.set_hardware_state(cm.hardware, ACTIVE, robot_error=False) == (True, ACTIVE)
    assert not cm.is_active(arm)                                       # controllers stay off until switched
    ok, _, started = cm.switch([arm, ROBOT_STATE_BROADCASTER, "no_such_controller"], [], BEST_EFFORT)
    assert ok and started == [arm, ROBOT_STATE_BROADCASTER] and cm.is_active(arm)
    assert not cm.switch([arm], [], STRICT)[0]                          # strict: already active
    assert not cm.switch(["no_such_controller"], [], STRICT)[0]
    assert cm.set_hardware_state(cm.hardware, INACTIVE, robot_error=False) == (True, INACTIVE)
    assert not cm.is_active(arm)
