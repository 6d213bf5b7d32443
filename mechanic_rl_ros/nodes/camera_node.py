"""camera_node: a camera's images -> the policy's preprocessed rgb8 input.

A thin adapter around :mod:`mechanic_rl_ros.vision` (no ROS there):

* subscribes to ``input_topic``: ``sensor_msgs/Image`` (``input_type: raw``;
  rgb8, bgr8, rgba8, bgra8, mono8, mono16, rgb16, bgr16, YUV 4:2:2 as usb_cam
  sends it (yuv422 / uyvy, yuv422_yuy2 / yuyv), 8-bit Bayer (bayer_rggb8,
  bayer_bggr8, bayer_gbrg8, bayer_grbg8), 16UC1 and 32FC1 depth, any row
  padding, either byte order) or ``sensor_msgs/CompressedImage``
  (``input_type: compressed``; jpeg / png);
* publishes on ``output_topic`` an rgb8 ``sensor_msgs/Image`` of
  ``output_width x output_height``, center-cropped to that aspect
  (``crop_mode``) and resized with ``cv2.INTER_AREA``, carrying the input's
  header unchanged (stamp and frame_id), so the policy can pair it with the
  joint state of the same instant;
* publishes ``/diagnostics``: frames in / out / stale / rejected, input rate,
  conversion latency, the age of the last frame and the converter in use.

The input QoS is a parameter (``input_reliability``, ``input_depth``): by
default reliable, keep last 1, as camera drivers publish (usb_cam: reliable,
keep last 100; realsense2_camera: SYSTEM_DEFAULT, which is reliable under Fast
DDS). A reliable subscription is what gets large frames through: a frame of
640 x 480 and up travels as many fragments, and over Fast DDS a best-effort
reader drops the whole frame when one fragment is lost or overwritten (on a
loaded machine, most of them), while a reliable one has the lost fragments
resent. Keep last 1 still means "only the newest frame": an older one not
yet taken is replaced, never queued. ``best_effort`` matches every publisher
too and suits small frames or a network link where resending is worse than
dropping (docs/cameras.md). The output is reliable, keep last 1
(:data:`mechanic_rl_ros.wire.topics.DRIVER`): only the newest frame, but one
lost on a loaded machine is resent rather than leaving the policy the frame of
the period before.

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
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from sensor_msgs.msg import CompressedImage, Image

from mechanic_rl_ros.nodes.common import (REALTIME_PARAM, Param, RateLimitedLog, declare_parameters,
                                         publish_diagnostics, rgb8_image, run_node, set_realtime_priority)
from mechanic_rl_ros.vision.imgmsg import ImageFormatError, select_converter
from mechanic_rl_ros.vision.preprocess import PreprocessConfig, preprocess
from mechanic_rl_ros.wire import topics

INPUT_TYPES = ("raw", "compressed")
INPUT_RELIABILITY = {"reliable": ReliabilityPolicy.RELIABLE, "best_effort": ReliabilityPolicy.BEST_EFFORT}

#: every parameter, with what it means (``ros2 param describe camera_node <name>``); config/camera.yaml sets them
PARAMETERS = [
    Param("input_topic", topics.CAMERA_IMAGE.name.format(camera="scene"),
          "camera images to convert: sensor_msgs/Image, or sensor_msgs/CompressedImage with input_type compressed "
          "(e.g. .../image_raw/compressed)"),
    Param("input_type", "raw", "message type on input_topic: raw = sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, "
          "mono8, mono16, rgb16, bgr16, yuv422/uyvy, yuv422_yuy2/yuyv, bayer_rggb8/bggr8/gbrg8/grbg8, 16UC1 / "
          "32FC1 depth), compressed = sensor_msgs/CompressedImage (jpeg, png)",
          choices=INPUT_TYPES),
    Param("output_topic", topics.POLICY_IMAGE.name,
          "where the policy's input goes: sensor_msgs/Image rgb8, output_width x output_height, with the input's "
          "header (stamp, frame_id) unchanged"),
    Param("output_width", 96, "[px] width of the output image; must be the policy's image width", range=(1, None)),
    Param("output_height", 96, "[px] height of the output image; must be the policy's image height", range=(1, None)),
    Param("crop_mode", "center", "center = crop to the output aspect ratio around the image center, then resize; "
          "none = resize only (distorts the aspect)", choices=("center", "none")),
    Param("depth_max", 2.0, "[m] depth images (16UC1 in mm, 32FC1 in m): depths in [0, depth_max] map to gray "
          "[0, 255], farther ones saturate", range=(0.001, None)),
    Param("max_age", 0.5, "[s] a frame whose header.stamp is older than this on the node's clock (sim time under "
          "use_sim_time) is stale and not forwarded; 0 disables the check", range=(0.0, None)),
    Param("converter", "auto", "image decoding: auto = cv_bridge if importable and it passes the start-up "
          "self-test, else numpy; numpy = the package's own converter; cv_bridge = cv_bridge even if it fails the "
          "self-test", choices=("auto", "numpy", "cv_bridge")),
    Param("input_reliability", "reliable", "QoS reliability of the input_topic subscription: reliable (lost "
          "fragments of a large frame are resent; matches reliable publishers such as usb_cam and "
          "realsense2_camera, and best-effort ones) or best_effort (a frame with a lost fragment is dropped; "
          "matches every publisher)", choices=tuple(INPUT_RELIABILITY)),
    Param("input_depth", 1, "[messages] keep-last history depth of the input_topic subscription: 1 = only the "
          "newest frame waits to be converted", range=(1, None)),
    Param("error_log_period", 1.0, "[s] least time between two logged errors of one kind (stale / malformed "
          "frames; the rest are only counted); 0 logs every one", range=(0.0, None)),
    Param("diagnostics_period", 1.0, "[wall s] period of /diagnostics, also the window of its rate and latency "
          "figures", range=(0.01, None)),
    REALTIME_PARAM,
]


class CameraNode(Node):
    def __init__(self) -> None:
        super().__init__("camera_node")
        self.cfg = cfg = declare_parameters(self, PARAMETERS)
        set_realtime_priority(self, int(cfg["realtime_priority"]))
        self.prep = PreprocessConfig(width=cfg["output_width"], height=cfg["output_height"],
                                     crop=cfg["crop_mode"], depth_max=cfg["depth_max"])
        selection = select_converter(cfg["converter"], Image)
        self.converter = selection.converter
        self.converter_reason = selection.reason
        self.decode = self.converter.compressed if cfg["input_type"] == "compressed" else self.converter.image

        input_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=cfg["input_depth"],
                               reliability=INPUT_RELIABILITY[cfg["input_reliability"]],
                               durability=DurabilityPolicy.VOLATILE)
        self.pub = self.create_publisher(topics.POLICY_IMAGE.type, cfg["output_topic"], topics.POLICY_IMAGE.qos)
        self.diag_pub = self.create_publisher(topics.DIAGNOSTICS.type, topics.DIAGNOSTICS.name, topics.DIAGNOSTICS.qos)
        in_type = CompressedImage if cfg["input_type"] == "compressed" else Image
        self.create_subscription(in_type, cfg["input_topic"], self._on_frame, input_qos)

        self.stats = {"frames_in": 0, "frames_out": 0, "stale": 0, "rejected": 0}
        self._window = self._new_window()
        self.last_error = ""
        self.last_age = math.nan
        self.last_frame_id = ""
        self.log = RateLimitedLog(self, self.cfg["error_log_period"])
        self.create_timer(cfg["diagnostics_period"], self._publish_diagnostics, clock=rclpy.clock.Clock())

        log = self.get_logger()
        # a cv_bridge that fails the self-test is normal (auto falls back to numpy); a forced one is worth a warning
        forced_failing = cfg["converter"] == "cv_bridge" and selection.failures
        (log.warning if forced_failing else log.info)(f"converter: {self.converter.name} ({selection.reason})")
        for failure in selection.failures:
            (log.warning if forced_failing else log.debug)(f"  cv_bridge self-test: {failure}")
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

        self.pub.publish(rgb8_image(rgb, msg.header))
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
