"""camera_node: a camera's images -> the policy's preprocessed rgb8 input.

A thin adapter around :mod:`mechanic_rl_ros.vision` (no ROS there):

* subscribes to ``input_topic``: ``sensor_msgs/Image`` (``input_type: raw``;
  rgb8, bgr8, rgba8, bgra8, mono8, mono16, rgb16, bgr16, 16UC1 and 32FC1 depth,
  any row padding, either byte order) or ``sensor_msgs/CompressedImage``
  (``input_type: compressed``; jpeg / png);
* publishes on ``output_topic`` an rgb8 ``sensor_msgs/Image`` of
  ``output_width x output_height``, center-cropped to that aspect
  (``crop_mode``) and resized with ``cv2.INTER_AREA``, carrying the input's
  header unchanged (stamp and frame_id), so the policy can pair it with the
  joint state of the same instant;
* publishes ``/diagnostics``: frames in / out / stale / rejected, input rate,
  conversion latency, the age of the last frame and the converter in use.

Both topics use sensor-data QoS (best effort, keep last ``qos_depth``): a late
frame is worth less than the next one.

A frame whose ``header.stamp`` is more than ``max_age`` seconds behind the
node's clock (sim time under ``use_sim_time``) is stale: it is counted, logged
(rate-limited) and not forwarded. A malformed frame (unknown encoding,
``step`` too small, ``data`` not ``height * step`` bytes, undecodable
compressed bytes, ...) is counted and dropped with a rate-limited error naming
the field and the expected value; the node keeps running.

Decoding uses an importable cv_bridge only if it reproduces the package's own
converter on a set of probe images at start-up (``converter: auto``); the log
and the diagnostics say which converter runs and why.
"""
from __future__ import annotations

import math
import sys
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from sensor_msgs.msg import CompressedImage, Image

from mechanic_rl_ros.nodes.common import RateLimitedLog, publish_diagnostics, run_node
from mechanic_rl_ros.vision.imgmsg import ImageFormatError, select_converter
from mechanic_rl_ros.vision.preprocess import PreprocessConfig, preprocess

INPUT_TYPES = ("raw", "compressed")

#: (name, default) of every parameter; config/camera.yaml documents each with its unit.
PARAMETERS = [
    ("input_topic", "/camera/scene/image_raw"),
    ("input_type", "raw"),
    ("output_topic", "/policy/camera/scene/image"),
    ("output_width", 96),
    ("output_height", 96),
    ("crop_mode", "center"),
    ("depth_max", 2.0),
    ("max_age", 0.5),
    ("converter", "auto"),
    ("qos_depth", 1),
    ("error_log_period", 1.0),
    ("diagnostics_period", 1.0),
]


class CameraNode(Node):
    def __init__(self) -> None:
        super().__init__("camera_node")
        p = self.declare_parameters("", PARAMETERS)
        cfg = {param.name: param.value for param in p}
        if cfg["input_type"] not in INPUT_TYPES:
            raise ValueError(f"parameter input_type: got {cfg['input_type']!r}; expected one of {INPUT_TYPES}")
        if not cfg["max_age"] >= 0:
            raise ValueError(f"parameter max_age: must be >= 0 s (0 disables the check), got {cfg['max_age']}")
        for name in ("qos_depth", "error_log_period", "diagnostics_period"):
            if not cfg[name] > 0:
                raise ValueError(f"parameter {name}: must be > 0, got {cfg[name]}")
        self.cfg = cfg
        self.prep = PreprocessConfig(width=cfg["output_width"], height=cfg["output_height"],
                                     crop=cfg["crop_mode"], depth_max=cfg["depth_max"])
        selection = select_converter(cfg["converter"], Image)
        self.converter = selection.converter
        self.converter_reason = selection.reason
        self.decode = self.converter.compressed if cfg["input_type"] == "compressed" else self.converter.image

        sensor_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=cfg["qos_depth"],
                                reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE)
        self.pub = self.create_publisher(Image, cfg["output_topic"], sensor_qos)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        in_type = CompressedImage if cfg["input_type"] == "compressed" else Image
        self.create_subscription(in_type, cfg["input_topic"], self._on_frame, sensor_qos)

        self.stats = {"frames_in": 0, "frames_out": 0, "stale": 0, "rejected": 0}
        self._window = self._new_window()
        self.last_error = ""
        self.last_age = math.nan
        self.last_frame_id = ""
        self.log = RateLimitedLog(self, self.cfg["error_log_period"])
        self.create_timer(cfg["diagnostics_period"], self._publish_diagnostics, clock=rclpy.clock.Clock())

        log = self.get_logger()
        (log.warning if selection.failures else log.info)(f"converter: {self.converter.name} ({selection.reason})")
        for failure in selection.failures:
            log.info(f"  cv_bridge self-test: {failure}")
        log.info(
            f"camera ready: {cfg['input_type']} {cfg['input_topic']} -> {cfg['output_topic']} "
            f"rgb8 {self.prep.width}x{self.prep.height} crop={self.prep.crop} max_age={cfg['max_age']} s"
        )

    @staticmethod
    def _new_window() -> dict[str, float]:
        """Counters of one diagnostics period (rates and latencies are per period, totals in ``stats``)."""
        return {"frames_in": 0, "converted": 0, "dropped": 0, "latency_sum": 0.0, "latency_max": 0.0,
                "start": time.monotonic()}

    # ------------------------------------------------------------ callbacks
    def _log_limited(self, kind: str, text: str) -> None:
        """Log ``text`` as an error at most once per ``error_log_period`` per kind of problem."""
        self.log.error(kind, text)

    def _on_frame(self, msg) -> None:
        self.stats["frames_in"] += 1
        self._window["frames_in"] += 1
        self.last_frame_id = msg.header.frame_id
        try:
            age = (self.get_clock().now() - Time.from_msg(msg.header.stamp)).nanoseconds * 1e-9
        except ValueError as exc:  # rclpy refuses negative stamps
            self._reject(msg, f"header.stamp: {exc}; expected sec >= 0")
            return
        self.last_age = age
        if self.cfg["max_age"] > 0 and age > self.cfg["max_age"]:
            self.stats["stale"] += 1
            self._window["dropped"] += 1
            stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            self.last_error = f"stale frame: header.stamp {stamp:.3f} s is {age:.3f} s old"
            self._log_limited("stale", (
                f"stale frame from {self.cfg['input_topic']} (frame_id {msg.header.frame_id!r}) not forwarded: "
                f"header.stamp {stamp:.3f} s is {age:.3f} s behind the node clock; expected at most "
                f"max_age = {self.cfg['max_age']} s (check the camera's clock and use_sim_time)"))
            return
        start = time.perf_counter()
        try:
            image, encoding = self.decode(msg)
            rgb = preprocess(image, encoding, self.prep)
        except ImageFormatError as exc:
            self._reject(msg, str(exc))
            return
        except Exception as exc:  # a converter bug must drop the frame, not kill the camera
            self._reject(msg, f"conversion failed: {exc!r}")
            return
        latency = time.perf_counter() - start
        self._window["converted"] += 1
        self._window["latency_sum"] += latency
        self._window["latency_max"] = max(self._window["latency_max"], latency)

        out = Image()
        out.header = msg.header
        out.height, out.width = rgb.shape[:2]
        out.encoding, out.is_bigendian, out.step = "rgb8", 0, 3 * rgb.shape[1]
        out.data = rgb.tobytes()
        self.pub.publish(out)
        self.stats["frames_out"] += 1

    def _reject(self, msg, why: str) -> None:
        self.stats["rejected"] += 1
        self._window["dropped"] += 1
        self.last_error = why
        self._log_limited("rejected", (
            f"rejected frame from {self.cfg['input_topic']} (frame_id {msg.header.frame_id!r}), "
            f"not forwarded: {why}"))

    def _publish_diagnostics(self) -> None:
        w = self._window
        elapsed = max(time.monotonic() - w["start"], 1e-9)
        converted = max(w["converted"], 1)
        level, message = DiagnosticStatus.OK, "running"
        if w["frames_in"] == 0:
            level, message = DiagnosticStatus.WARN, f"no frames on {self.cfg['input_topic']}"
        elif w["dropped"]:
            level = DiagnosticStatus.WARN
            message = f"{w['dropped']} of {w['frames_in']} frames dropped; last: {self.last_error}"
        values = {
            **self.stats,
            "input_rate_hz": f"{w['frames_in'] / elapsed:.2f}",
            "latency_ms_mean": f"{1e3 * w['latency_sum'] / converted:.3f}",
            "latency_ms_max": f"{1e3 * w['latency_max']:.3f}",
            "last_frame_age_ms": f"{1e3 * self.last_age:.1f}",
            "converter": self.converter.name,
            "converter_reason": self.converter_reason,
            "output": f"{self.cfg['output_topic']} rgb8 {self.prep.width}x{self.prep.height}",
        }
        publish_diagnostics(self, self.diag_pub, f"camera_node: {self.cfg['input_topic']}", self.last_frame_id,
                            level, message, values)
        self._window = self._new_window()


def main(argv: list[str] | None = None) -> int:
    return run_node(CameraNode, argv)

if __name__ == "__main__":
    sys.exit(main())
