"""franka_msgs/FrankaRobotState as the stack reads it: mode names, raised errors, q_d in joint order."""
import numpy as np
import pytest
from franka_msgs.msg import FrankaRobotState
from sensor_msgs.msg import JointState

from mechanic_rl_ros.control import fr3
from mechanic_rl_ros.wire.robot_state import ERROR_FIELDS, read_robot_state, robot_state_message


def test_round_trip_of_mode_errors_and_desired_joints():
    js = JointState(name=list(fr3.JOINT_NAMES), position=list(fr3.Q_HOME))
    js.header.stamp.sec, js.header.stamp.nanosec = 12, 500_000_000
    q_d, dq_d = fr3.Q_HOME + 0.01, np.zeros(7)
    msg = robot_state_message("reflex", ["joint_motion_generator_velocity_discontinuity"], ["joint_reflex"], js,
                              (q_d, dq_d))
    status = read_robot_state(msg)
    assert status.mode == "reflex" and not status.executing and status.stamp == 12.5
    assert status.errors == ("joint_motion_generator_velocity_discontinuity",)
    assert msg.last_motion_errors.joint_reflex and len(ERROR_FIELDS) == 36
    np.testing.assert_array_equal(status.desired_q, q_d)
    assert status.describe() == "reflex (joint_motion_generator_velocity_discontinuity)"
    assert read_robot_state(robot_state_message("move", (), (), js)).executing


def test_desired_joints_are_matched_by_name_and_bad_values_refused():
    msg = FrankaRobotState(robot_mode=FrankaRobotState.ROBOT_MODE_MOVE)
    names = list(reversed(fr3.JOINT_NAMES))
    msg.desired_joint_state = JointState(name=names, position=[float(i) for i in range(7)], velocity=[0.0] * 7)
    np.testing.assert_array_equal(read_robot_state(msg).desired_q, np.arange(7)[::-1])
    msg.desired_joint_state.position[2] = float("nan")
    with pytest.raises(ValueError, match="desired_joint_state"):
        read_robot_state(msg)
    msg.desired_joint_state = JointState()            # a broadcaster that fills no desired state: none is used
    assert read_robot_state(msg).desired_q is None
    msg.robot_mode = 9
    with pytest.raises(ValueError, match="robot_mode: 9"):
        read_robot_state(msg)
    with pytest.raises(ValueError, match="not a franka_msgs/Errors field"):
        robot_state_message("move", ["no_such_error"], (), JointState())


def test_latest_message_takes_the_newest_robot_state_only_when_asked():
    """policy_node and reward_node read the 1 kHz robot state newest-only (nodes.common.LatestMessage): what
    came since the last take is one message, the last one published, then nothing until another comes."""
    import time

    import rclpy
    from rosenv import fresh_domain_id

    from mechanic_rl_ros.nodes.common import LatestMessage
    from mechanic_rl_ros.wire import topics

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=fresh_domain_id())
    try:
        node = rclpy.create_node("policy_node", context=ctx)
        writer = rclpy.create_node("broadcaster", context=ctx)
        latest = LatestMessage(node, FrankaRobotState, "robot_state", topics.ROBOT_STATE.qos, "robot_state")
        assert latest.topic == "/robot_state" and latest.take() is None
        pub = writer.create_publisher(FrankaRobotState, "/robot_state", topics.ROBOT_STATE.qos)
        deadline = time.monotonic() + 10.0
        while pub.get_subscription_count() < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        for i in range(50):
            js = JointState(name=list(fr3.JOINT_NAMES), position=list(fr3.Q_HOME))
            js.header.stamp.sec = i
            pub.publish(robot_state_message("move" if i < 49 else "reflex", (), (), js))
        got = None
        while got is None and time.monotonic() < deadline:
            got = latest.take()
            time.sleep(0.01)
        status = read_robot_state(got)
        if status.stamp != 49.0:  # the last ones may still be on their way: the newest wins once they are in
            time.sleep(0.5)
            status = read_robot_state(latest.take())
        assert status.stamp == 49.0 and status.mode == "reflex"
        assert latest.take() is None
        assert "policy_node_robot_state" in node.get_node_names()
        latest.destroy()
    finally:
        rclpy.shutdown(context=ctx)
