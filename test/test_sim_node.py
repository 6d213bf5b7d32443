"""sim_node as its own process over real DDS: reset, motion through the trajectory controller, reflexes and
error recovery, images, bad commands."""
from __future__ import annotations

import signal
import time

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.duration import Duration
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from action_msgs.msg import GoalStatus
from control_msgs.action import GripperCommand
from control_msgs.msg import GripperCommand as GripperCommandMsg
from controller_manager_msgs.srv import SetHardwareComponentState, SwitchController
from franka_msgs.action import ErrorRecovery, Grasp, Homing, Move
from franka_msgs.msg import FrankaRobotState, GraspEpsilon
from lifecycle_msgs.msg import State as LifecycleState
from rclpy.action import ActionClient

from mechanic_rl_ros.control import fr3
from mechanic_rl_ros.msg import TaskState
from mechanic_rl_ros.nodes.policy_weights import seconds
from mechanic_rl_ros.srv import ResetEpisode
from mechanic_rl_ros.wire.robot_state import read_robot_state

from rosenv import fresh_domain_id, start_python

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


class Probe:
    """The test's own node: latest message per topic, and helpers to wait."""

    def __init__(self, domain: int):
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain)
        self.node = rclpy.create_node("sim_probe", context=self.ctx)
        self.ex = rclpy.executors.SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.node)
        self.latest: dict[str, object] = {}
        self.count: dict[str, int] = {}
        for topic, typ, qos in [
            ("/joint_states", JointState, qos_profile_sensor_data),
            ("/camera/scene/image_raw", Image, qos_profile_sensor_data),
            ("/camera/scene/camera_info", CameraInfo, qos_profile_sensor_data),
            ("/sim/task_state", TaskState, RELIABLE),
            ("/diagnostics", DiagnosticArray, 10),
        ]:
            self.node.create_subscription(typ, topic, lambda m, t=topic: self._store(t, m), qos)
        # ROS's default QoS (reliable, keep last 10), as `ros2 topic echo` or a C++ node with a plain depth reads:
        # it only matches a reliable publisher, as joint_state_broadcaster's and camera drivers' are
        for topic, typ in (("/joint_states", JointState), ("/camera/scene/image_raw", Image)):
            self.node.create_subscription(typ, topic, lambda m, t=topic: self._store(t + " (default QoS)", m), 10)
        self.arm = self.node.create_publisher(Float64MultiArray, "/fr3_position_controller/commands", RELIABLE)
        self.traj = self.node.create_publisher(JointTrajectory, "/fr3_position_trajectory_controller/joint_trajectory",
                                               RELIABLE)
        self.reset = self.node.create_client(ResetEpisode, "/sim/reset")
        self.actions = {name: ActionClient(self.node, typ, f"/franka_gripper/{name}") for name, typ in
                        (("move", Move), ("grasp", Grasp), ("homing", Homing), ("gripper_action", GripperCommand))}
        self.node.create_subscription(JointState, "/franka_gripper/joint_states",
                                      lambda m: self._store("/franka_gripper/joint_states", m), qos_profile_sensor_data)
        self.inject = self.node.create_client(Trigger, "/sim/inject_reflex")
        self.recover = ActionClient(self.node, ErrorRecovery, "/action_server/error_recovery")
        self.hardware = self.node.create_client(SetHardwareComponentState,
                                                "/controller_manager/set_hardware_component_state")
        self.switch = self.node.create_client(SwitchController, "/controller_manager/switch_controller")
        # franka_robot_state_broadcaster publishes with SystemDefaultsQoS; a default subscriber reads it
        self.node.create_subscription(FrankaRobotState, "/franka_robot_state_broadcaster/robot_state",
                                      lambda m: self._store("robot_state", m), 10)

    def run_goal(self, action: str, goal, timeout: float = 60.0):
        """Send one goal and wait for its result: (status, result)."""
        client = self.actions[action]
        assert client.wait_for_server(timeout_sec=10), f"/franka_gripper/{action} not served"
        sent = client.send_goal_async(goal)
        assert self.spin_until(sent.done, 10) and sent.result().accepted
        res = sent.result().get_result_async()
        assert self.spin_until(res.done, timeout), f"/franka_gripper/{action} goal not answered"
        return res.result().status, res.result().result

    def finger_width(self) -> float:
        return float(sum(self.latest["/franka_gripper/joint_states"].position))


    def _store(self, topic, msg):
        self.latest[topic] = msg
        self.count[topic] = self.count.get(topic, 0) + 1

    def spin_until(self, pred, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.ex.spin_once(timeout_sec=0.05)
            if pred():
                return True
        return False

    def q(self) -> np.ndarray:
        return np.array(self.latest["/joint_states"].position[:7])

    def close(self):
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)


def start_sim(log, domain: int, *params: str):
    """sim_node as its own process with config/sim.yaml and ``params`` ("name:=value") on top."""
    return start_python(["-m", "mechanic_rl_ros.nodes.sim_node", "--ros-args", "--params-file", "config/sim.yaml",
                         *(f for p in params for f in ("-p", p))], domain, log)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    domain = fresh_domain_id()
    log = tmp_path_factory.mktemp("sim_node") / "sim_node.log"
    proc = start_sim(log, domain, "real_time_factor:=2.0")
    probe = Probe(domain)
    ok = probe.spin_until(lambda: "/joint_states" in probe.latest and "/camera/scene/image_raw" in probe.latest, 60)
    assert ok, f"sim_node published nothing; log:\n{log.read_text()}"
    yield proc, probe, log
    probe.close()
    proc.terminate()
    proc.wait(15)


def _send(probe: Probe, q):
    msg = Float64MultiArray()
    msg.data = [float(v) for v in q]
    probe.arm.publish(msg)


def _glide(q, seconds: float, names=fr3.JOINT_NAMES) -> JointTrajectory:
    """One quintic point (velocities and accelerations zero) reached ``seconds`` after receipt (stamp 0)."""
    order = [list(fr3.JOINT_NAMES).index(n) for n in names]
    msg = JointTrajectory()
    msg.joint_names = list(names)
    msg.points = [JointTrajectoryPoint(positions=[float(q[i]) for i in order], velocities=[0.0] * 7,
                                       accelerations=[0.0] * 7,
                                       time_from_start=Duration(seconds=seconds).to_msg())]
    return msg


def _mode(probe: Probe) -> str:
    """``mode`` or ``mode: error, ...`` from the last franka_msgs/FrankaRobotState."""
    m = probe.latest.get("robot_state")
    if m is None:
        return ""
    status = read_robot_state(m)
    return status.mode + (": " + ", ".join(status.errors) if status.errors else "")


def test_joint_states_and_images(sim):
    _, probe, _ = sim
    js = probe.latest["/joint_states"]
    assert list(js.name) == list(fr3.ALL_JOINT_NAMES)
    assert len(js.position) == len(js.velocity) == len(js.effort) == 9
    img = probe.latest["/camera/scene/image_raw"]
    assert (img.height, img.width, img.encoding, img.step) == (96, 96, "rgb8", 288)
    pixels = np.frombuffer(bytes(img.data), np.uint8).reshape(96, 96, 3)
    assert pixels.std() > 5, "camera image is blank"
    info = probe.spin_until(lambda: "/camera/scene/camera_info" in probe.latest, 5) and probe.latest["/camera/scene/camera_info"]
    assert (info.height, info.width) == (96, 96) and info.k[0] > 0
    assert probe.spin_until(lambda: "/sim/task_state" in probe.latest, 5)
    assert probe.latest["/sim/task_state"].task == "lift"


def test_joint_states_and_images_reach_a_default_qos_subscriber(sim):
    _, probe, _ = sim
    keys = ("/joint_states (default QoS)", "/camera/scene/image_raw (default QoS)")
    assert probe.spin_until(lambda: all(probe.count.get(k, 0) >= 3 for k in keys), 10), probe.count
    assert list(probe.latest[keys[0]].name) == list(fr3.ALL_JOINT_NAMES)


def test_reset_service_with_seed_is_reproducible(sim):
    _, probe, _ = sim
    assert probe.reset.wait_for_service(timeout_sec=10)
    cubes, starts = [], []
    for _ in range(2):
        fut = probe.reset.call_async(ResetEpisode.Request(seed=1234))
        assert probe.spin_until(fut.done, 30), "reset service did not answer"
        res = fut.result()
        assert res.success and res.seed == 1234, res.message
        starts.append(seconds(res.stamp))  # the new episode's first instant
        # up to 10 states from before the reset may still be queued at the writer and 10 at the reader
        n = probe.count.get("/sim/task_state", 0) + 2 * RELIABLE.depth
        assert probe.spin_until(lambda: probe.count.get("/sim/task_state", 0) > n, 30), "no task state after the reset"
        cubes.append(np.array(probe.latest["/sim/task_state"].values[:3]))
        assert seconds(probe.latest["/sim/task_state"].header.stamp) >= starts[-1]
    np.testing.assert_allclose(cubes[0], cubes[1], atol=2e-3)
    assert starts[1] > starts[0] > 0.0, starts
    assert np.allclose(probe.q(), fr3.Q_HOME, atol=0.05)


def test_moves_to_commanded_joint_position(sim):
    """The JointTrajectoryController interpolates a quintic to the point: no reflex on the way."""
    _, probe, _ = sim
    target = fr3.Q_HOME + np.array([0.3, 0.2, -0.2, 0.3, 0.2, -0.2, 0.3])
    probe.traj.publish(_glide(target, 2.0))
    assert probe.spin_until(lambda: np.abs(probe.q() - target).max() < 0.01, 10), \
        f"arm at {probe.q()}, commanded {target}"
    # (replacing a moving trajectory by one stamped 0 makes the jazzy JTC start one period off the path:
    #  a velocity step the FR3 refuses -- the simulator reflexes there too; so wait for the glide to end)
    probe.spin_until(lambda: False, 1.5)
    # joints in a different order land on the same pose
    back = fr3.Q_HOME.copy()
    probe.traj.publish(_glide(back, 2.0, names=tuple(reversed(fr3.JOINT_NAMES))))
    assert probe.spin_until(lambda: np.abs(probe.q() - back).max() < 0.01, 10), (_mode(probe), probe.q())
    assert _mode(probe) == "move"
    probe.spin_until(lambda: False, 1.5)


def _call(probe: Probe, client, request):
    assert client.wait_for_service(timeout_sec=10)
    fut = client.call_async(request)
    assert probe.spin_until(fut.done, 10)
    return fut.result()


def _recover(probe: Probe) -> list:
    """franka_ros2's recovery sequence: error recovery, hardware component active, controllers active."""
    sent = probe.recover.send_goal_async(ErrorRecovery.Goal())
    assert probe.spin_until(sent.done, 10) and sent.result().accepted
    res = sent.result().get_result_async()
    assert probe.spin_until(res.done, 10) and res.result().status == GoalStatus.STATUS_SUCCEEDED
    hw = SetHardwareComponentState.Request(name="FrankaHardwareInterface")
    hw.target_state.id = LifecycleState.PRIMARY_STATE_ACTIVE
    states = probe.count.get("robot_state", 0)
    out = [_call(probe, probe.hardware, hw),
           _call(probe, probe.switch, SwitchController.Request(
               activate_controllers=["fr3_position_trajectory_controller", "fr3_position_controller",
                                     "joint_state_broadcaster", "franka_robot_state_broadcaster"],
               strictness=SwitchController.Request.BEST_EFFORT))]
    # (the last robot state before the reflex said "move" too: wait for a new one)
    assert probe.spin_until(lambda: probe.count.get("robot_state", 0) > states + 1, 10), "no robot state after recovery"
    return out


def _silent(probe: Probe, seconds: float) -> bool:
    """No robot state for ``seconds`` (its broadcaster is inactive) while /joint_states goes on. A state
    published before the reflex may still be in flight when the service answers (a loaded machine delays
    delivery): a short settle comes before the count."""
    probe.spin_until(lambda: False, 0.3)
    states, joints = probe.count.get("robot_state", 0), probe.count.get("/joint_states", 0)
    probe.spin_until(lambda: False, seconds)
    return probe.count.get("robot_state", 0) == states and probe.count.get("/joint_states", 0) > joints


def test_reflex_stops_the_arm_until_the_recovery_sequence(sim):
    """An injected reflex (a collision would do the same), as franka_ros2 >= 3.3 handles it: the hardware
    component and every controller go inactive, so the robot state stops while /joint_states goes on;
    commands and resets are refused; franka_ros2's three recovery steps, out of order, are refused; in
    order they bring the robot state back in move mode with the error in last_motion_errors, and the
    controller then holds the measured position and moves on command."""
    _, probe, log = sim
    assert probe.inject.wait_for_service(timeout_sec=10)
    assert probe.spin_until(lambda: _mode(probe) == "move", 10)
    fut = probe.inject.call_async(Trigger.Request())
    assert probe.spin_until(fut.done, 10) and fut.result().success
    assert _silent(probe, 1.5), "the robot state went on after a reflex"
    held = probe.q()
    probe.traj.publish(_glide(fr3.Q_HOME + 0.2, 1.0))
    probe.spin_until(lambda: False, 1.5)
    assert np.abs(probe.q() - held).max() < 0.01, "a command moved the arm during a reflex"
    res = _call(probe, probe.reset, ResetEpisode.Request(seed=3))
    assert not res.success and "/action_server/error_recovery" in res.message
    # the hardware cannot come back before the robot's error is cleared
    hw = SetHardwareComponentState.Request(name="FrankaHardwareInterface")
    hw.target_state.id = LifecycleState.PRIMARY_STATE_ACTIVE
    assert not _call(probe, probe.hardware, hw).ok
    hardware, switch = _recover(probe)
    assert hardware.ok and hardware.state.label == "active" and switch.ok, (hardware, switch)
    assert probe.spin_until(lambda: _mode(probe) == "move", 5)
    assert probe.latest["robot_state"].last_motion_errors.joint_reflex
    assert len(probe.latest["robot_state"].measured_joint_state.position) == 7
    target = fr3.Q_HOME + 0.1
    probe.traj.publish(_glide(target, 1.0))
    assert probe.spin_until(lambda: np.abs(probe.q() - target).max() < 0.01, 10)
    assert _mode(probe) == "move"
    assert "robot reflex: joint_reflex" in log.read_text()


def test_an_unsmoothed_step_on_the_forward_controller_is_a_reflex(tmp_path):
    """A 10 Hz target step written every 1 ms, as fr3_position_controller would: the FR3's
    check fires and the arm stops."""
    domain = fresh_domain_id()
    log = tmp_path / "sim_forward.log"
    proc = start_sim(log, domain, "arm_controller:=forward")
    probe = Probe(domain)
    try:
        assert probe.spin_until(lambda: "/joint_states" in probe.latest and _mode(probe) == "move", 60), \
            log.read_text()
        _send(probe, fr3.Q_HOME + 0.052)  # reward_node's old first home-motion step
        assert probe.spin_until(lambda: "robot reflex" in log.read_text(), 5)
        # 0.052 rad in 1 ms is 52 rad/s: the velocity limit is the first check it breaks
        assert "robot reflex: joint_motion_generator_velocity_limits_violation" in log.read_text()
        assert _silent(probe, 1.0)
        _recover(probe)
        assert probe.spin_until(lambda: _mode(probe) == "move", 5)
        assert probe.latest["robot_state"].last_motion_errors.joint_motion_generator_velocity_limits_violation
    finally:
        probe.close()
        proc.terminate()
        proc.wait(15)


def test_malformed_commands_are_rejected_and_node_stays_up(sim):
    proc, probe, log = sim
    hold = probe.q()
    bad = [
        [0.0] * 6,                                            # wrong length
        list(fr3.Q_HOME[:6]) + [float("nan")],                # NaN
        list(fr3.Q_HOME[:3]) + [0.5] + list(fr3.Q_HOME[4:]),  # joint 4 above its upper limit (-0.1518)
    ]
    for q in bad:
        for _ in range(3):
            _send(probe, q)
            probe.spin_until(lambda: False, 0.1)
    wrong_names = JointTrajectory()
    wrong_names.joint_names = [f"panda_joint{i}" for i in range(1, 8)]
    wrong_names.points = [JointTrajectoryPoint(positions=list(fr3.Q_HOME))]
    probe.traj.publish(wrong_names)
    n = probe.count["/joint_states"]
    assert probe.spin_until(lambda: probe.count["/joint_states"] > n + 20, 10), "joint states stopped"
    assert proc.poll() is None, log.read_text()
    assert np.abs(probe.q() - hold).max() < 0.02, "a rejected command moved the arm"

    def rejected():
        d = probe.latest.get("/diagnostics")
        values = {kv.key: kv.value for s in d.status for kv in s.values} if d else {}
        return int(values.get("commands_rejected", 0)) >= 10
    assert probe.spin_until(rejected, 5)
    text = log.read_text()
    assert "expected 7 joint positions" in text
    assert "must be finite" in text
    assert "fr3_joint4 = 0.5000 rad is outside the FR3 limits" in text
    assert "joint_names: missing" in text


def test_lockstep_advances_one_control_period_per_command(tmp_path):
    from rosgraph_msgs.msg import Clock

    domain = fresh_domain_id()
    log = tmp_path / "sim_lockstep.log"
    proc = start_sim(log, domain, "mode:=lockstep", "lockstep_idle_timeout:=5.0")
    probe = Probe(domain)
    clock: list[float] = []
    probe.node.create_subscription(Clock, "/clock", lambda m: clock.append(m.clock.sec + m.clock.nanosec * 1e-9), 10)
    try:
        assert probe.spin_until(lambda: clock and "/joint_states" in probe.latest, 60), log.read_text()
        probe.spin_until(lambda: False, 0.5)
        t0 = clock[-1]
        for k in range(1, 6):
            probe.traj.publish(_glide(fr3.Q_HOME, 0.1))
            assert probe.spin_until(lambda: clock[-1] >= t0 + 0.1 * k - 1e-6, 5), f"clock stuck at {clock[-1]}"
        probe.spin_until(lambda: False, 1.0)
        assert abs(clock[-1] - (t0 + 0.5)) < 1e-6, "sim time moved without a command"
        assert all(b >= a for a, b in zip(clock, clock[1:])), "sim time went backwards"
    finally:
        probe.close()
        proc.terminate()
        proc.wait(15)


def test_a_gripper_goal_in_flight_does_not_hold_up_the_shutdown(tmp_path):
    """In lock-step, sim time stands still once the stack stops sending commands, so a gripper goal that waits
    for its fingers would wait out its sim-time limit (minutes of wall time at one idle period per
    ``lockstep_idle_timeout``), and the executor's shutdown waited for it: sim_node outlived a test's 20 s
    teardown. The goal is given up when the node is asked to stop."""
    domain = fresh_domain_id()
    log = tmp_path / "sim_lockstep.log"
    proc = start_sim(log, domain, "mode:=lockstep", "lockstep_idle_timeout:=5.0")
    probe = Probe(domain)
    try:
        assert probe.spin_until(lambda: "/franka_gripper/joint_states" in probe.latest, 60), log.read_text()
        client = probe.actions["move"]
        assert client.wait_for_server(timeout_sec=10)
        sent = client.send_goal_async(Move.Goal(width=0.0, speed=0.1))  # 0.8 s of sim time: minutes here
        assert probe.spin_until(sent.done, 10) and sent.result().accepted
        probe.spin_until(lambda: False, 1.0)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        proc.wait(60)
        assert proc.returncode == 0, log.read_text()[-3000:]
        assert time.monotonic() - stopped < 15, f"sim_node took {time.monotonic() - stopped:.0f} s to stop"
    finally:
        probe.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_franka_gripper_actions(sim):
    """move / grasp / homing / gripper_action as franka_gripper answers them, and its joint states."""
    _, probe, log = sim
    status, result = probe.run_goal("move", Move.Goal(width=0.04, speed=0.1))
    assert status == GoalStatus.STATUS_SUCCEEDED and result.success and result.error == "", result
    assert probe.spin_until(lambda: abs(probe.finger_width() - 0.04) < 0.005, 5), probe.finger_width()
    assert list(probe.latest["/franka_gripper/joint_states"].name) == list(fr3.FINGER_JOINT_NAMES)

    # closing on nothing: the fingers stop at 0, inside [width - inner, width + outer]
    status, result = probe.run_goal("grasp", Grasp.Goal(width=0.0, speed=0.1, force=20.0,
                                                        epsilon=GraspEpsilon(inner=0.005, outer=0.08)))
    assert status == GoalStatus.STATUS_SUCCEEDED and result.success, result
    # a window that excludes where the fingers stop: libfranka's grasp fails
    status, result = probe.run_goal("grasp", Grasp.Goal(width=0.06, speed=0.1, force=20.0,
                                                        epsilon=GraspEpsilon(inner=0.005, outer=0.005)))
    assert status == GoalStatus.STATUS_SUCCEEDED and result.success, result  # opening to 0.06 reaches it
    status, result = probe.run_goal("homing", Homing.Goal())
    assert status == GoalStatus.STATUS_SUCCEEDED and result.success, result
    assert probe.spin_until(lambda: probe.finger_width() > 0.075, 5)

    # control_msgs/GripperCommand: position is one finger, half the width
    status, result = probe.run_goal("gripper_action", GripperCommand.Goal(
        command=GripperCommandMsg(position=0.015, max_effort=20.0)))
    assert status == GoalStatus.STATUS_SUCCEEDED and result.reached_goal, result
    assert abs(result.position - 0.015) < 0.003, result

    # bad goals are aborted with the field named; the node keeps serving
    status, result = probe.run_goal("move", Move.Goal(width=float("nan"), speed=0.1))
    assert status == GoalStatus.STATUS_ABORTED and not result.success
    assert result.error == "width: got nan; expected a width in [0.0, 0.08] m", result
    status, result = probe.run_goal("grasp", Grasp.Goal(width=0.02, speed=0.1, force=-1.0))
    assert status == GoalStatus.STATUS_ABORTED and result.error == "force: got -1.0; expected a finite value > 0 N"
    status, result = probe.run_goal("gripper_action", GripperCommand.Goal(
        command=GripperCommandMsg(position=0.05, max_effort=20.0)))
    assert status == GoalStatus.STATUS_ABORTED and not result.reached_goal
    status, _ = probe.run_goal("move", Move.Goal(width=0.08, speed=0.1))
    assert status == GoalStatus.STATUS_SUCCEEDED
    assert "gripper goal aborted: width: got nan" in log.read_text()


def test_a_world_parameter_builds_that_world(tmp_path):
    """world:= a preset plus an override: the cube starts on the raised table, at its own size."""
    domain = fresh_domain_id()
    log = tmp_path / "sim_world.log"
    proc = start_sim(log, domain, "world:=table_up_3cm cube_size=0.04", "cameras:=[scene]")
    probe = Probe(domain)
    try:
        assert probe.spin_until(lambda: "/sim/task_state" in probe.latest and "/camera/scene/image_raw" in
                                probe.latest, 60), log.read_text()
        fut = probe.reset.call_async(ResetEpisode.Request(seed=7))
        assert probe.spin_until(fut.done, 30) and fut.result().success
        n = probe.count["/sim/task_state"]
        assert probe.spin_until(lambda: probe.count["/sim/task_state"] > n + 2, 5)
        state = probe.latest["/sim/task_state"]
        cube_z = dict(zip(state.names, state.values))["cube_z"]
        assert cube_z == pytest.approx(0.03 + 0.02, abs=2e-3), log.read_text()
        assert "world 'table_up_3cm cube_size=0.04'" in log.read_text()
    finally:
        probe.close()
        proc.terminate()
        proc.wait(15)


def test_a_bad_world_stops_the_node_at_start_naming_the_field(tmp_path):
    log = tmp_path / "sim_bad_world.log"
    proc = start_sim(log, fresh_domain_id(), "world:=dim_light cube_mass=5")
    assert proc.wait(60) != 0
    text = log.read_text()
    assert "parameter world: world file" in text and "world field cube_mass: got 5; expected a number in " \
        "[0.01, 2] kg" in text, text
