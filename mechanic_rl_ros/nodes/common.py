"""What every node of the stack does the same way: parameters declared with
their descriptors, the process entry point and its signal handling,
rate-limited error logs, the /diagnostics message, the joint command message
the arm's controller takes, and directories replaced without ever being
half-written (:mod:`mechanic_rl_ros.rl.persist`)."""
from __future__ import annotations

import gc
import math
import os
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rclpy.signals import SignalHandlerOptions
from geometry_msgs.msg import Point as PointMsg
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
from visualization_msgs.msg import Marker, MarkerArray

from mechanic_rl_ros.control import fr3
from mechanic_rl_ros.control.fr3 import CommandError, check_arm_command
from mechanic_rl_ros.control.trajectory import Point, Trajectory

#: ``command_type`` parameter values: forward_command_controller's array, or joint_trajectory_controller's message
COMMAND_TYPES = ("array", "trajectory")

_INT64 = (-(2 ** 63), 2 ** 63 - 1)


@dataclass(frozen=True)
class Param:
    """One node parameter, as ``ros2 param describe`` shows it.

    ``description`` says what it is, its unit and what it is for: the code is
    the place a user reads it (config/*.yaml only sets values). ``range`` is
    inclusive ``(low, high)``, ``None`` for an open end; it becomes an
    ``IntegerRange`` for integer and a ``FloatingPointRange`` for float
    defaults, and rclpy refuses values outside it at start-up and on ``ros2
    param set``. ``choices`` are the only valid string values (shown as the
    descriptor's ``additional_constraints``). ``read_only``: the node reads the
    value once at start-up, so changing it later would do nothing -- ``ros2
    param set`` says so instead of pretending.
    """

    name: str
    default: object
    description: str
    range: tuple[float | None, float | None] | None = None
    choices: tuple[str, ...] | None = None
    read_only: bool = True

    def expected(self) -> str:
        """The valid values in words, for error messages."""
        if self.choices:
            return f"one of {list(self.choices)}"
        kind = _kind(self.default)
        text = f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}" + (" (with a decimal point)" if kind == "double" else "")
        if self.range is None:
            return text
        low, high = self.range
        return f"{text} in [{'-inf' if low is None else low}, {'inf' if high is None else high}]"

    def descriptor(self) -> ParameterDescriptor:
        d = ParameterDescriptor(name=self.name, description=self.description, read_only=self.read_only)
        if self.choices:
            d.additional_constraints = "one of: " + ", ".join(self.choices)
        if self.range is not None:
            low, high = self.range
            if _kind(self.default) == "integer":
                d.integer_range = [IntegerRange(from_value=_INT64[0] if low is None else int(low),
                                                to_value=_INT64[1] if high is None else int(high), step=0)]
            elif _kind(self.default) == "double":
                d.floating_point_range = [FloatingPointRange(from_value=-math.inf if low is None else float(low),
                                                             to_value=math.inf if high is None else float(high),
                                                             step=0.0)]
            else:
                raise TypeError(f"parameter {self.name}: a range needs an integer or float default, "
                                f"got {self.default!r}")
        return d


def _kind(value: object) -> str:
    """The ROS parameter type name of a Python default."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    return "array"


def declare_parameters(node: Node, params: Sequence[Param]) -> dict[str, object]:
    """Declare every parameter of ``params`` with its descriptor; return ``{name: value}``.

    The value is the override (params file, ``-p``, launch) if one is given,
    else the default. A value of the wrong type, outside ``range`` or not in
    ``choices`` raises ``ValueError`` naming the parameter, the value and what
    was expected.
    """
    cfg: dict[str, object] = {}
    for p in params:
        try:
            value = node.declare_parameter(p.name, p.default, p.descriptor()).value
        except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
            given = getattr(node, "_parameter_overrides", {}).get(p.name)  # rclpy keeps overrides only there
            got = f"got {given.value!r}" if given is not None else str(exc)
            raise ValueError(f"parameter {p.name}: {got}; expected {p.expected()}") from None
        if p.choices and value not in p.choices:
            raise ValueError(f"parameter {p.name}: got {value!r}; expected {p.expected()}")
        cfg[p.name] = value
    return cfg


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
        if self._due(kind, self.period):
            self.node.get_logger().error(text)

    def info(self, key: str, text: str, period: float) -> None:
        """An expected event worth a line: at most one per ``period`` s per ``key`` (whatever the text)."""
        if self._due("info|" + key, period):
            self.node.get_logger().info(text)

    def _due(self, kind: str, period: float) -> bool:
        now = time.monotonic()
        if now - self._last.get(kind, -math.inf) >= period:
            self._last[kind] = now
            return True
        return False


def command_message_type(command_type: str) -> type:
    """The message class for ``command_type``; ValueError naming the parameter otherwise."""
    if command_type not in COMMAND_TYPES:
        raise ValueError(f"parameter command_type: got {command_type!r}; expected one of {COMMAND_TYPES}")
    return Float64MultiArray if command_type == "array" else JointTrajectory


def joint_command(result, command_type: str):
    """A safety-filter result (:class:`~mechanic_rl_ros.control.safety.FilterResult`) as the arm controller's message.

    ``trajectory``: the filter's whole trajectory (positions, velocities,
    accelerations: the JTC interpolates it with quintics), stamped with the
    instant of its first point on the node's clock (0 for a settling message).
    ``array``: only the target one control period ahead, for a forward command
    controller (the FR3 reflexes on such steps unless something interpolates them at 1 kHz).
    """
    if command_message_type(command_type) is Float64MultiArray:
        return Float64MultiArray(data=[float(v) for v in result.q])
    return trajectory_message(result.trajectory)


def trajectory_message(traj) -> JointTrajectory:
    """A :class:`~mechanic_rl_ros.control.trajectory.Trajectory` as trajectory_msgs/JointTrajectory (stamp None -> 0)."""
    msg = JointTrajectory(joint_names=list(fr3.JOINT_NAMES))
    ns = 0 if traj.stamp is None else int(round(traj.stamp * 1e9))
    msg.header.stamp.sec, msg.header.stamp.nanosec = ns // 1_000_000_000, ns % 1_000_000_000
    for p in traj.points:
        pt = JointTrajectoryPoint(positions=[float(v) for v in p.positions],
                                  time_from_start=Duration(nanoseconds=int(round(p.time_from_start * 1e9))).to_msg())
        if p.velocities is not None:
            pt.velocities = [float(v) for v in p.velocities]
        if p.accelerations is not None:
            pt.accelerations = [float(v) for v in p.accelerations]
        msg.points.append(pt)
    return msg


def trajectory_from_message(msg: JointTrajectory) -> Trajectory:
    """The inverse of :func:`trajectory_message`: a JointTrajectory reordered by joint name into fr3_joint1..7 order, stamp in ROS seconds (None for 0).

    Positions are checked against the FR3 position limits; the JTC's own
    checks (increasing times, zero end velocity) follow when it is received.
    """
    names = list(msg.joint_names)
    missing = [n for n in fr3.JOINT_NAMES if n not in names]
    if missing:
        raise CommandError(f"joint_names: missing {missing}; expected {list(fr3.JOINT_NAMES)}, got {names}")
    if not msg.points:
        raise CommandError("points: trajectory has no points")
    order = [names.index(n) for n in fr3.JOINT_NAMES]
    points = []
    for i, p in enumerate(msg.points):
        fields = {}
        for name in ("positions", "velocities", "accelerations"):
            values = list(getattr(p, name))
            if not values and name != "positions":
                fields[name] = None
                continue
            if len(values) != len(names):
                raise CommandError(f"points[{i}].{name}: {len(values)} values for {len(names)} joint_names")
            fields[name] = np.array([values[j] for j in order], dtype=np.float64)
        check_arm_command(fields["positions"], f"points[{i}].positions")
        points.append(Point(p.time_from_start.sec + p.time_from_start.nanosec * 1e-9, **fields))
    stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
    return Trajectory(stamp if stamp != 0.0 else None, points)


def rgb8_image(rgb: np.ndarray, header) -> Image:
    """An (h, w, 3) uint8 array as sensor_msgs/Image, rgb8, with ``header`` (the buffer assigned, not a list)."""
    out = Image()
    out.header = header
    out.height, out.width = rgb.shape[:2]
    out.encoding, out.is_bigendian, out.step = "rgb8", 0, 3 * rgb.shape[1]
    out.data = rgb.tobytes()
    return out


def pinhole_camera_info(header, height: int, width: int, fovy: float) -> CameraInfo:
    """sensor_msgs/CameraInfo of an undistorted pinhole camera with vertical field of view ``fovy`` [rad]."""
    f = 0.5 * height / math.tan(0.5 * fovy)
    cx, cy = (width - 1) / 2, (height - 1) / 2
    info = CameraInfo(header=header, height=height, width=width, distortion_model="plumb_bob", d=[0.0] * 5)
    info.k = [f, 0.0, cx, 0.0, f, cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [f, 0.0, cx, 0.0, 0.0, f, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def path_marker(points: np.ndarray, frame_id: str, stamp, ns: str, width: float = 0.005,
                rgba: tuple[float, float, float, float] = (0.1, 0.8, 0.2, 1.0)) -> MarkerArray:
    """A path of ``points`` [N, 3] (m, in ``frame_id``) as one LINE_STRIP marker ``width`` m wide, for RViz."""
    m = Marker(ns=ns, id=0, type=Marker.LINE_STRIP, action=Marker.ADD)
    m.header.frame_id, m.header.stamp = frame_id, stamp
    m.scale.x = width
    m.color.r, m.color.g, m.color.b, m.color.a = rgba
    m.pose.orientation.w = 1.0
    m.points = [PointMsg(x=float(x), y=float(y), z=float(z)) for x, y, z in points]
    return MarkerArray(markers=[m])


def publish_diagnostics(node: Node, publisher, name: str, hardware_id: str, level: int, message: str,
                        values: Mapping[str, object]) -> None:
    """Publish one DiagnosticStatus (``values`` become key/value strings) on ``publisher``."""
    status = DiagnosticStatus(level=level, name=name, hardware_id=hardware_id, message=message)
    status.values = [KeyValue(key=str(k), value=str(v)) for k, v in values.items()]
    arr = DiagnosticArray(status=[status])
    arr.header.stamp = node.get_clock().now().to_msg()
    publisher.publish(arr)


class StopSignals:
    """SIGINT / SIGTERM handling of a node process: the first signal asks for a
    clean shutdown, every later one is logged and ignored.

    rclpy's own handlers (``SignalHandlerOptions.ALL``) shut the context down
    and chain to Python's, which raises ``KeyboardInterrupt`` wherever the main
    thread is -- on a second Ctrl-C, or a supervisor signalling the whole
    process group after ``ros2 launch`` already did, inside ``destroy_node``,
    killing the learner half-way through its checkpoint. So nodes start with
    ``SignalHandlerOptions.NO`` and this handler instead; SIGKILL still stops a
    node that hangs in its cleanup.
    """

    def __init__(self) -> None:
        self.received: str | None = None
        self.logger = None

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():  # Python only delivers signals there
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self._on_signal)

    def ignore(self) -> None:
        """Ignore both signals from now on: cleanup is over, and Python's finalisation would otherwise put the
        default handlers back, so that one more signal during interpreter exit kills the node (exit -2)."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_IGN)

    def _on_signal(self, signum: int, _frame) -> None:
        name = signal.Signals(signum).name
        if self.received is None:
            self.received = name
            self._log(f"{name}: shutting down")
        else:
            self._log(f"{name} while already shutting down (on {self.received}): ignored, finishing the cleanup "
                      "first (SIGKILL stops the node at once)")

    def _log(self, text: str) -> None:
        try:
            (self.logger or rclpy.logging.get_logger("run_node")).info(text)
        except Exception:  # logging already shut down (interpreter exit)
            print(text, file=sys.stderr, flush=True)


class QuietMultiThreadedExecutor(MultiThreadedExecutor):
    """rclpy's MultiThreadedExecutor without its busy loop on mutually exclusive groups (rclpy 7, Jazzy).

    rclpy dispatches a ready entity whenever its group has no *running*
    callback; when a handler of that group has been dispatched but not yet
    begun, the second handler fails to begin, marks its entity ready again and
    wakes the executor, which dispatches it again: measured in policy_node,
    tens of times the real message rate (10 000 dispatches of /joint_states in
    5 s, 250 messages), with the main thread at 80 % CPU holding the GIL and
    the inference thread starved (p50 470 ms for a 107 ms sample). Here a
    mutually exclusive group counts as busy from the moment one of its
    entities is dispatched.
    """

    def shutdown(self, timeout_sec: float | None = None) -> bool:
        """Callbacks in flight finish before the executor's guard condition goes and before the caller destroys
        the node: rclpy 7's ``shutdown`` tests the flag it has just set and so never waits for them, and a callback
        still running then met a destroyed handle ("The following exception was never retrieved: cannot use
        Destroyable because destruction was requested" at every stop). Handlers already dispatched, running or
        queued for a thread, run to their end (a queued one dropped would leave its coroutine never awaited)."""
        deadline = None if timeout_sec is None or timeout_sec < 0 else time.monotonic() + timeout_sec
        while not (finished := all(task.done() for task in list(self._futures))):
            if deadline is not None and time.monotonic() > deadline:
                break
            time.sleep(0.005)
        return super().shutdown(timeout_sec) and finished

    def can_execute(self, entity) -> bool:
        if not super().can_execute(entity):
            return False
        group = entity.callback_group
        if not isinstance(group, MutuallyExclusiveCallbackGroup):
            return True
        for ref in list(group.entities):
            other = ref()
            if other is not None and other is not entity and getattr(other, "_executor_event", False):
                return False  # a handler of this group is on its way to a thread
        return True


#: the parameter that puts a node's threads on the real-time scheduler (policy_node, reward_node, camera_node,
#: sim_node)
REALTIME_PARAM = Param("realtime_priority", 0, "Linux SCHED_RR priority of every thread of this node (1-98; 0 = "
                       "the normal scheduler): above any normal process, such as a busy desktop, a compile or "
                       "the learner; needs an rtprio limit or CAP_SYS_NICE (the realtime group of libfranka's set-up)",
                       range=(0, 98))


def set_realtime_priority(node: Node, priority: int) -> bool:
    """Put every thread of this process, and the threads it starts later, on SCHED_RR at ``priority``.

    A desktop kernel shares the CPU among sessions first (autogroup) and only then by niceness, so a normal
    process started elsewhere takes its share from the control nodes whatever their niceness; real-time
    threads run before every normal one (Linux keeps 5 % for the others, sched_rt_runtime_us). Returns False,
    with a warning naming what is missing, when the system refuses it (the node then runs as it is).
    """
    if priority <= 0:
        return False
    try:
        for tid in os.listdir("/proc/self/task"):  # the DDS threads already exist; those started later inherit it
            os.sched_setscheduler(int(tid), os.SCHED_RR, os.sched_param(int(priority)))
    except (PermissionError, OSError, AttributeError) as exc:
        node.get_logger().warning(f"parameter realtime_priority: {priority} refused ({exc}); running on the normal "
                                  "scheduler. Allow it with an rtprio limit for this user (e.g. '@realtime - rtprio "
                                  "99' in /etc/security/limits.conf, as libfranka's set-up does) or CAP_SYS_NICE")
        return False
    node.get_logger().info(f"every thread on SCHED_RR priority {priority}")
    return True


class LatestMessage:
    """The newest message of a high-rate topic, taken when the node needs it instead of delivered one by one.

    franka_robot_state_broadcaster publishes the robot state at the 1 kHz controller rate. A subscription with
    a callback makes the node's executor wake, take and deserialise every one of those messages in Python, under
    the interpreter lock the control tick needs; the stack reads the robot's mode at its own rate (policy_node's
    control tick, reward_node's episode watch). This reader keeps a subscription with a history of one on a node
    of its own that no executor spins: DDS takes every message in on its own threads and keeps the newest, and
    :meth:`take` deserialises that one, in the caller's thread, when the caller asks.

    The topic name is resolved (remappings included) by ``node``; the reader node takes no command-line
    arguments, so a launch file's ``__node:=`` rename of ``node`` does not rename it.
    """

    def __init__(self, node: Node, msg_type: type, topic: str, qos: QoSProfile, suffix: str):
        self.topic = node.resolve_topic_name(topic)
        self._reader = Node(f"{node.get_name()}_{suffix}", namespace=node.get_namespace(), context=node.context,
                            use_global_arguments=False, start_parameter_services=False)
        keep_newest = QoSProfile(depth=1, reliability=qos.reliability, durability=qos.durability)
        self._sub = self._reader.create_subscription(msg_type, self.topic, lambda _msg: None, keep_newest)

    def take(self):
        """The newest message received since the last call, or None if none came."""
        newest = None
        with self._sub.handle:
            while (got := self._sub.handle.take_message(self._sub.msg_type, False)) is not None:
                newest = got[0]
        return newest

    def destroy(self) -> None:
        self._reader.destroy_node()


class GcPauses:
    """How long Python's cyclic garbage collector stops this process's threads (it holds the interpreter lock
    for a whole pass, so a control tick waits for it whichever thread started it)."""

    def __init__(self) -> None:
        self.seconds: deque[float] = deque(maxlen=1000)
        self._start = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.seconds.append(time.perf_counter() - self._start)

    def take_over(self) -> None:
        """No automatic passes from now on (they start in whichever thread allocates, at any moment): the
        caller collects the young generations where a pause costs nothing (:meth:`young`, right after a control
        tick has sent its command) and everything between episodes (:meth:`full`, the arm at rest)."""
        gc.disable()

    @staticmethod
    def young() -> None:
        gc.collect(1)

    @staticmethod
    def full() -> None:
        gc.collect()

    def report(self) -> dict[str, str]:
        if not self.seconds:
            return {}
        ms = np.asarray(self.seconds) * 1e3
        return {"gc_pauses": str(len(ms)), "gc_pause_ms_p99": f"{np.percentile(ms, 99):.1f}",
                "gc_pause_ms_max": f"{ms.max():.1f}"}


#: the collector's pauses in this process (a node's diagnostics report them)
GC_PAUSES = GcPauses()


def run_node(factory: Callable[[], Node], argv: list[str] | None = None, threads: int = 1,
             failed: Callable[[Node], bool] | None = None) -> int:
    """Process entry point of a node: init, spin until SIGINT / SIGTERM / shutdown, clean up.

    The first SIGINT or SIGTERM ends the spin; ``destroy_node`` (e.g. the
    learner's final checkpoint) then runs to its end whatever other signals
    arrive (:class:`StopSignals`). Returns 0 on a requested shutdown (a
    callback that runs into the shutdown is not a failure) and 1 when
    ``failed(node)`` turns true; any other exception propagates (the process
    exits non-zero with its traceback). A node whose callbacks can wait on
    something that stops with the stack (sim time in lock-step) defines
    ``stop_waiting()``: it is called when the spin ends, before the executor
    waits for the callbacks still running.
    """
    stop = StopSignals()
    stop.install()  # before init: no signal may cut start-up or cleanup short
    rclpy.init(args=argv if argv is not None else sys.argv, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    executor = None
    try:
        node = factory()
        # what start-up made (the model, the simulator, the imported modules) lives as long as the process: kept
        # out of the collector's passes, which then take a fraction of the time while the control path runs
        gc.collect()
        gc.freeze()
        stop.logger = node.get_logger()
        executor = QuietMultiThreadedExecutor(num_threads=threads) if threads > 1 else SingleThreadedExecutor()
        executor.add_node(node)
        while rclpy.ok() and stop.received is None:
            executor.spin_once(timeout_sec=0.1)
            if failed is not None and failed(node):
                return 1
        return 0
    except ExternalShutdownException:
        return 0
    except Exception:
        if not rclpy.ok():
            return 0
        raise
    finally:
        if executor is not None:
            if node is not None and hasattr(node, "stop_waiting"):
                node.stop_waiting()
            # callbacks still running on executor threads finish before the node they use is destroyed
            executor.shutdown(timeout_sec=30.0)
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
        stop.ignore()
