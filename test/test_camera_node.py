"""camera_node as its own process over real DDS, fed by sim_node and by the test itself.

sim_node (config/sim.yaml, realtime) publishes 96 x 96 rgb8 frames; camera_node
(config/camera.yaml, output 64 x 48 so that it crops and resizes) must forward
each as the preprocessed rgb8 image with the raw frame's stamp and frame_id.
The test then publishes on the camera topic itself: malformed frames and a
stale one must be dropped with a clear log line while good frames keep flowing.
"""
from __future__ import annotations

import re
import signal
import subprocess
import time

import cv2
import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from mechanic_rl_ros.vision.imgmsg import fill_imgmsg, imgmsg_to_array
from mechanic_rl_ros.vision.preprocess import PreprocessConfig, preprocess

from rosenv import REPO, fresh_domain_id, start_python

pytestmark = pytest.mark.integration

SENSOR = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                    durability=DurabilityPolicy.VOLATILE)
#: how camera drivers publish (usb_cam: reliable keep-last 100; realsense2_camera: reliable keep-last 1)
DRIVER = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.VOLATILE)
RAW, OUT = "/camera/scene/image_raw", "/policy/camera/scene/image"
OUT_W, OUT_H = 64, 48


def test_camera_yaml_sets_every_parameter_to_its_default():
    import yaml

    from mechanic_rl_ros.nodes.camera_node import PARAMETERS

    path = REPO / "config" / "camera.yaml"
    params = yaml.safe_load(path.read_text())["camera_node"]["ros__parameters"]
    assert params == {p.name: p.default for p in PARAMETERS}


def _key(header) -> tuple[int, int, str]:
    return header.stamp.sec, header.stamp.nanosec, header.frame_id


class Probe:
    """The test's own node: raw frames by stamp, preprocessed frames, camera diagnostics."""

    def __init__(self, domain: int, in_type=Image, in_topic: str = RAW, out_topic: str = OUT,
                 name: str = "camera_probe"):
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain)
        self.node = rclpy.create_node(name, context=self.ctx)
        self.ex = rclpy.executors.SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.node)
        self.raw: dict[tuple, Image] = {}
        self.out: list[Image] = []
        self.diag: dict[str, str] = {}
        self.diag_count = 0
        self.sent: set[tuple] = set()
        if in_type is Image:
            self.node.create_subscription(Image, in_topic, lambda m: self.raw.__setitem__(_key(m.header), m), SENSOR)
        self.node.create_subscription(Image, out_topic, self.out.append, SENSOR)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.pub = self.node.create_publisher(in_type, in_topic, DRIVER) if in_type is not None else None
        # camera_node's subscription, plus the probe's own raw one
        self.readers = 2 if in_type is Image else 1

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for s in msg.status:
            if s.name.startswith("camera_node"):
                self.diag = {kv.key: kv.value for kv in s.values} | {"_level": s.level, "_message": s.message}
                self.diag_count += 1

    def spin_until(self, pred, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.ex.spin_once(timeout_sec=0.02)
            if pred():
                return True
        return False

    def outputs(self, frame_id: str) -> list[Image]:
        return [m for m in self.out if m.header.frame_id == frame_id]

    def publish_until_forwarded(self, msg, timeout: float = 10.0) -> Image | None:
        """Publish ``msg`` (stamped now) every 0.2 s until a preprocessed copy of one of these sends comes back.

        Copies of earlier calls' sends that arrive late are skipped, not taken for this one's; every copy must
        carry a stamp the probe sent.
        """
        sent, seen = set(), len(self.outputs(msg.header.frame_id))
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            msg.header.stamp = self.now().to_msg()
            sent.add(_key(msg.header))
            self.sent.add(_key(msg.header))
            self.pub.publish(msg)
            if self.spin_until(lambda: any(_key(o.header) in sent for o in self.outputs(msg.header.frame_id)[seen:]),
                               0.2):
                fresh = self.outputs(msg.header.frame_id)[seen:]
                stray = [o.header for o in fresh if _key(o.header) not in self.sent]
                assert not stray, f"forwarded with a stamp that was never sent: {stray}"
                return [o for o in fresh if _key(o.header) in sent][-1]
        return None

    def publish_for(self, msg, seconds: float, period: float = 0.1, restamp: bool = True) -> None:
        """Publish ``msg`` every ``period`` s for ``seconds``, stamped now unless ``restamp`` is false."""
        assert self.spin_until(lambda: self.pub.get_subscription_count() >= self.readers, 10), "camera_node not matched"
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if restamp:
                msg.header.stamp = self.now().to_msg()
            self.sent.add(_key(msg.header))
            self.pub.publish(msg)
            self.spin_until(lambda: False, period)

    def now(self):
        return self.node.get_clock().now()

    def close(self) -> None:
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)


def _stop(proc) -> None:
    proc.terminate()
    proc.wait(15)


def _stop_peer(proc) -> None:
    """A test peer (not the product) is killed if it does not exit on SIGTERM in time: under load a publisher
    of reliable full-HD frames can take longer to tear down, and that is not what the test checks."""
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(15)


def test_compressed_input(tmp_path):
    domain = fresh_domain_id()
    log = tmp_path / "camera_node_compressed.log"
    # best effort: matches the probe's reliable (driver-like) publisher too
    cam = start_python(["-m", "mechanic_rl_ros.nodes.camera_node", "--ros-args", "--params-file", "config/camera.yaml",
                        "-p", "input_type:=compressed", "-p", "input_topic:=/camera/test/image_raw/compressed",
                        "-p", "output_topic:=/policy/camera/test/image", "-p", "input_reliability:=best_effort"],
                       domain, log)
    probe = Probe(domain, CompressedImage, "/camera/test/image_raw/compressed", "/policy/camera/test/image",
                  name="compressed_probe")
    try:
        bgr = np.random.default_rng(4).integers(0, 256, (120, 160, 3), dtype=np.uint8)
        png = CompressedImage(format="png", data=cv2.imencode(".png", bgr)[1].tobytes())
        png.header.frame_id = "png_probe"
        out = probe.publish_until_forwarded(png, timeout=30)
        assert out is not None, log.read_text()
        assert (out.height, out.width, out.encoding) == (96, 96, "rgb8")
        np.testing.assert_array_equal(np.frombuffer(bytes(out.data), np.uint8).reshape(96, 96, 3),
                                      preprocess(bgr, "bgr8", PreprocessConfig()))
        corrupt = CompressedImage(format="jpeg", data=cv2.imencode(".jpg", bgr)[1].tobytes()[:500])
        corrupt.header.frame_id = "corrupt_probe"
        probe.publish_for(corrupt, 0.6)
        assert probe.publish_until_forwarded(png) is not None, "stopped forwarding after a corrupt frame"
        assert not probe.outputs("corrupt_probe") and cam.poll() is None
        assert "(frame_id 'corrupt_probe'), not forwarded: data: 500 bytes could not be decoded (format 'jpeg')" \
               in log.read_text()
        cam.send_signal(signal.SIGINT)
        assert cam.wait(15) == 0, f"camera_node did not exit cleanly on SIGINT:\n{log.read_text()}"
    finally:
        probe.close()
        if cam.poll() is None:
            _stop(cam)


def test_max_age_is_measured_on_sim_time_under_use_sim_time(tmp_path):
    from builtin_interfaces.msg import Time as TimeMsg
    from rosgraph_msgs.msg import Clock

    domain = fresh_domain_id()
    log = tmp_path / "camera_node_sim_time.log"
    cam = start_python(["-m", "mechanic_rl_ros.nodes.camera_node", "--ros-args", "--params-file", "config/camera.yaml",
                        "-p", "use_sim_time:=true"], domain, log)
    probe = Probe(domain, name="sim_time_probe")
    clock = probe.node.create_publisher(Clock, "/clock", 10)
    sim_now = TimeMsg(sec=1000, nanosec=0)
    try:
        frame = fill_imgmsg(Image(), np.zeros((96, 96, 3), np.uint8), "rgb8")
        # 0.2 s behind sim time (and 1.8e9 s behind the wall clock): forwarded
        frame.header.frame_id, frame.header.stamp = "recent_in_sim_time", TimeMsg(sec=999, nanosec=800_000_000)
        end = time.monotonic() + 30
        while not probe.outputs("recent_in_sim_time") and time.monotonic() < end:
            clock.publish(Clock(clock=sim_now))
            probe.pub.publish(frame)
            probe.spin_until(lambda: False, 0.1)
        assert probe.outputs("recent_in_sim_time"), log.read_text()
        # 10 s behind sim time: stale
        frame.header.frame_id, frame.header.stamp = "old_in_sim_time", TimeMsg(sec=990, nanosec=0)
        end = time.monotonic() + 30
        while int(probe.diag.get("stale", 0)) < 1 and time.monotonic() < end:
            clock.publish(Clock(clock=sim_now))
            probe.pub.publish(frame)
            probe.spin_until(lambda: int(probe.diag.get("stale", 0)) >= 1, 0.1)
        assert int(probe.diag.get("stale", 0)) >= 1, probe.diag
        assert not probe.outputs("old_in_sim_time")
        assert "header.stamp 990.000 s is 10.000 s behind the node clock" in log.read_text()
    finally:
        probe.close()
        _stop(cam)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    domain = fresh_domain_id()
    logs = tmp_path_factory.mktemp("camera_node")
    sim = start_python(["-m", "mechanic_rl_ros.nodes.sim_node", "--ros-args", "--params-file", "config/sim.yaml"],
                       domain, logs / "sim_node.log")
    cam = start_python(["-m", "mechanic_rl_ros.nodes.camera_node", "--ros-args", "--params-file", "config/camera.yaml",
                        "-p", f"output_width:={OUT_W}", "-p", f"output_height:={OUT_H}"],
                       domain, logs / "camera_node.log")
    probe = Probe(domain)
    try:
        ok = probe.spin_until(lambda: probe.out and probe.raw, 60)
        assert ok, f"no preprocessed frame; camera_node log:\n{(logs / 'camera_node.log').read_text()}\n" \
                   f"sim_node log:\n{(logs / 'sim_node.log').read_text()}"
        yield cam, probe, logs / "camera_node.log"
    finally:
        probe.close()
        _stop(cam)
        _stop(sim)


def test_sim_frames_arrive_preprocessed_with_the_raw_stamp(stack):
    cam, probe, log = stack

    def paired() -> list[tuple[Image, Image]]:
        """(raw, preprocessed) pairs with the same stamp; the probe may discover either topic first."""
        return [(probe.raw[_key(o.header)], o) for o in probe.out if _key(o.header) in probe.raw]
    assert probe.spin_until(lambda: len(paired()) >= 5, 10), \
        f"{len(paired())} of {len(probe.out)} outputs had a raw frame with the same stamp"
    cfg = PreprocessConfig(width=OUT_W, height=OUT_H)
    for raw, out in paired():
        assert out.header.frame_id == raw.header.frame_id == "scene_camera"
        assert (out.height, out.width, out.encoding, out.step, out.is_bigendian) == (OUT_H, OUT_W, "rgb8", 3 * OUT_W, 0)
        expected = preprocess(imgmsg_to_array(raw), raw.encoding, cfg)
        np.testing.assert_array_equal(np.frombuffer(bytes(out.data), np.uint8).reshape(OUT_H, OUT_W, 3), expected)
    text = log.read_text()
    assert "converter: numpy" in text and "fails" in text, text


def test_malformed_frames_are_rejected_and_good_frames_keep_flowing(stack):
    cam, probe, log = stack
    unknown = fill_imgmsg(Image(), np.zeros((48, 64, 3), np.uint8), "rgb8")
    unknown.encoding = "yuv444"
    unknown.header.frame_id = "bad_encoding"
    truncated = fill_imgmsg(Image(), np.zeros((48, 64, 3), np.uint8), "rgb8")
    truncated.data = bytes(truncated.data)[:-100]
    truncated.header.frame_id = "bad_length"
    for msg in (unknown, truncated):
        probe.publish_for(msg, 0.6)
    negative = fill_imgmsg(Image(), np.zeros((48, 64, 3), np.uint8), "rgb8")
    negative.header.frame_id = "bad_stamp"
    negative.header.stamp.sec = -1
    probe.publish_for(negative, 0.4, restamp=False)
    n = len(probe.outputs("scene_camera"))
    assert probe.spin_until(lambda: len(probe.outputs("scene_camera")) > n + 3, 5), "camera_node stopped forwarding"
    assert cam.poll() is None, log.read_text()
    assert not any(probe.outputs(f) for f in ("bad_encoding", "bad_length", "bad_stamp"))
    assert probe.spin_until(lambda: int(probe.diag.get("rejected", 0)) >= 3, 5), probe.diag
    text = log.read_text()
    assert re.search(r"rejected frame from /camera/scene/image_raw \(frame_id 'bad_encoding'\), not forwarded: "
                     r"encoding: 'yuv444' is not supported; expected one of rgb8", text), text
    assert "(frame_id 'bad_length'), not forwarded: data: 9116 bytes; expected height * step = 48 * 192 = 9216" in text
    assert "(frame_id 'bad_stamp'), not forwarded: header.stamp: Seconds value must not be negative" in text


def test_stale_frame_is_not_forwarded_but_a_fresh_padded_vga_frame_is(stack):
    cam, probe, log = stack
    bgr = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    fresh = fill_imgmsg(Image(), bgr, "bgr8", row_padding=64)
    fresh.header.frame_id = "fresh_probe"
    out = probe.publish_until_forwarded(fresh)
    assert out is not None, "a fresh 640x480 bgr8 frame was not forwarded"
    expected = preprocess(bgr, "bgr8", PreprocessConfig(width=OUT_W, height=OUT_H))
    np.testing.assert_array_equal(np.frombuffer(bytes(out.data), np.uint8).reshape(OUT_H, OUT_W, 3), expected)

    stale = fill_imgmsg(Image(), np.zeros((96, 96, 3), np.uint8), "rgb8")
    stale.header.frame_id = "stale_probe"
    stale.header.stamp = (probe.now() - rclpy.duration.Duration(seconds=100)).to_msg()
    probe.publish_for(stale, 1.0, restamp=False)
    assert not probe.outputs("stale_probe"), "a frame 100 s old was forwarded"
    assert probe.spin_until(lambda: int(probe.diag.get("stale", 0)) >= 1, 5), probe.diag
    assert cam.poll() is None
    text = log.read_text()
    assert re.search(r"stale frame from /camera/scene/image_raw \(frame_id 'stale_probe'\) not forwarded: "
                     r"header\.stamp [\d.]+ s is 10\d\.\d+ s behind the node clock; expected at most max_age = 0\.5 s",
                     text), text


def test_diagnostics(stack):
    cam, probe, log = stack
    n = probe.diag_count  # the second report from now covers a period with only the sim's 10 Hz frames
    assert probe.spin_until(lambda: probe.diag_count >= n + 2, 5)
    d = probe.diag
    for key in ("frames_in", "frames_out", "stale", "rejected", "input_rate_hz", "latency_ms_mean", "latency_ms_max",
                "last_frame_age_ms", "converter"):
        assert key in d, d
    assert d["converter"] == "numpy"
    assert int(d["frames_out"]) >= 10 and 5.0 < float(d["input_rate_hz"]) < 15.0, d
    assert d["_message"] == "running" or "frames dropped; last:" in d["_message"], d
    assert 0.0 < float(d["latency_ms_mean"]) < 50.0, d
    print(f"\ncamera_node 96x96 rgb8 -> {OUT_W}x{OUT_H}: latency mean {d['latency_ms_mean']} ms, "
          f"max {d['latency_ms_max']} ms, input {d['input_rate_hz']} Hz")


@pytest.mark.parametrize("encoding", ["yuyv", "yuv422", "bayer_rggb8", "bayer_gbrg8"])
def test_usb_cam_yuv_and_bayer_frames_are_converted(stack, encoding):
    cam, probe, log = stack
    rng = np.random.default_rng(5)
    if encoding.startswith("bayer"):
        raw = rng.integers(0, 256, (120, 160), dtype=np.uint8)
    else:
        raw = rng.integers(16, 240, (120, 160, 2), dtype=np.uint8)
    frame = fill_imgmsg(Image(), raw, encoding, row_padding=8)
    frame.header.frame_id = f"{encoding}_probe"
    out = probe.publish_until_forwarded(frame)
    assert out is not None, f"a {encoding} frame was not forwarded:\n{log.read_text()[-2000:]}"
    expected = preprocess(raw, encoding, PreprocessConfig(width=OUT_W, height=OUT_H))
    np.testing.assert_array_equal(np.frombuffer(bytes(out.data), np.uint8).reshape(OUT_H, OUT_W, 3), expected)


#: of the ten full-HD frames, how many must reach camera_node. The transport's failure is half of them
#: (reliable without the profile: 5 of 10, docs/cameras.md); keep last 1 also, rightly, replaces a frame the
#: node has not taken yet when a busy machine delays its conversion past the 0.1 s period, which one of ten
#: did once on the 2-core machine with a whole stack running beside the test.
MIN_HD_FRAMES = 9


def test_full_hd_frames_of_a_driver_get_through_with_the_shipped_profile(tmp_path):
    """Ten 1920 x 1080 rgb8 frames, each published once at 10 Hz by another process as a camera driver
    publishes (reliable), all reach camera_node with the stack's defaults: reliable input and
    config/fastdds_large_frames.xml (docs/cameras.md has the measurements with and without)."""
    domain = fresh_domain_id()
    env = {"FASTRTPS_DEFAULT_PROFILES_FILE": str(REPO / "config" / "fastdds_large_frames.xml")}
    cam = start_python(["-m", "mechanic_rl_ros.nodes.camera_node", "--ros-args", "--params-file", "config/camera.yaml",
                        "-p", "input_topic:=/camera/hd/image_raw", "-p", "output_topic:=/policy/camera/hd/image",
                        "-p", "diagnostics_period:=0.5"],
                       domain, tmp_path / "camera_node.log", **env)
    probe = Probe(domain, in_type=None, in_topic="/camera/hd/unused", out_topic="/policy/camera/hd/image",
                  name="hd_probe")
    driver = None
    try:
        assert probe.spin_until(lambda: probe.diag_count >= 1, 60), (tmp_path / "camera_node.log").read_text()
        driver = start_python([str(REPO / "test" / "peers" / "publish_frames.py"), "/camera/hd/image_raw",
                               "1920x1080", "10", "0.1"], domain, tmp_path / "driver.log", **env)
        done = probe.spin_until(lambda: "published" in (tmp_path / "driver.log").read_text(), 60)
        assert done, (tmp_path / "driver.log").read_text()
        got = lambda: int(probe.diag.get("frames_in", 0))  # noqa: E731
        probe.spin_until(lambda: got() >= 10, 30)
        assert got() >= MIN_HD_FRAMES, f"{got()} of 10 frames reached camera_node: {probe.diag}"
        ids = {m.header.frame_id for m in probe.out}
        assert ids <= {f"frame_{i}" for i in range(10)} and len(ids) >= 1, ids
    finally:
        probe.close()
        if driver is not None and driver.poll() is None:
            _stop_peer(driver)
        if cam.poll() is None:
            _stop(cam)
