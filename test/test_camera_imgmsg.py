"""Image message decoding and preprocessing (mechanic_rl_ros.vision), without ROS processes.

Every fixture is a real sensor_msgs/Image built by hand here (rows serialised
in the stated byte order, then filler bytes), for each supported encoding,
with and without row padding and in both byte orders. The package's converter
must return the original array for every one of them. The cv_bridge installed
in the venv (PyPI ``cv-bridge`` 1.13.0.post0) runs on the same fixtures; where
it works its output must equal ours, and where it fails the tests pin down
exactly how (so a fixed cv_bridge makes them fail and gets noticed).
"""
from __future__ import annotations

import subprocess
import sys

import cv2
import cv_bridge
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from mechanic_rl_ros.vision.imgmsg import (
    BAYER, ENCODINGS, YUV422, CvBridgeConverter, ImageFormatError, NumpyConverter, decode_compressed, fill_imgmsg,
    imgmsg_to_array, probe_bridge, select_converter,
)
from mechanic_rl_ros.vision.preprocess import PreprocessConfig, center_crop_box, preprocess, to_rgb8

H, W = 4, 5
FILLER = 0xEE


def _pattern(encoding: str, seed: int = 0) -> np.ndarray:
    """A test image in ``encoding`` whose channel values all differ (both bytes of 16-bit values)."""
    enc = ENCODINGS[encoding]
    shape = (H, W, enc.channels) if enc.channels > 1 else (H, W)
    rng = np.random.default_rng(seed)
    if enc.dtype == np.uint8:
        return rng.permutation(256)[: np.prod(shape)].astype(np.uint8).reshape(shape)
    if enc.dtype == np.uint16:
        return (rng.permutation(200)[: np.prod(shape)] * 317 + 259).astype(np.uint16).reshape(shape)
    return (rng.standard_normal(shape) * 3).astype(np.float32)


def hand_built(image: np.ndarray, encoding: str, padding: int, bigendian: bool) -> Image:
    """An Image message assembled row by row, independently of the package's own encoder."""
    order = ">" if bigendian else "<"
    rows = [image[r].astype(image.dtype.newbyteorder(order)).tobytes() + bytes([FILLER]) * padding
            for r in range(image.shape[0])]
    msg = Image()
    msg.header.frame_id = "fixture"
    msg.height, msg.width, msg.encoding = image.shape[0], image.shape[1], encoding
    msg.is_bigendian, msg.step, msg.data = int(bigendian), len(rows[0]), b"".join(rows)
    return msg


def _paddings(encoding: str) -> tuple[int, ...]:
    size = ENCODINGS[encoding].dtype.itemsize
    # none, less than a pixel, several pixels' worth (all multiples of the channel size)
    return (0, size, 4 * size) if size > 1 else (0, 1, 4)


#: the encodings whose pixels are independent (YUV 4:2:2 and Bayer have their own tests below)
PLAIN = [e for e in ENCODINGS if e not in YUV422 + BAYER]
FIXTURES = [(e, pad, big) for e in PLAIN for pad in _paddings(e) for big in (False, True)]
FIXTURE_IDS = [f"{e}-pad{pad}-{'be' if big else 'le'}" for e, pad, big in FIXTURES]


# ------------------------------------------------------------------ our converter
@pytest.mark.parametrize("encoding,padding,bigendian", FIXTURES, ids=FIXTURE_IDS)
def test_numpy_converter_recovers_every_fixture(encoding, padding, bigendian):
    image = _pattern(encoding)
    got = imgmsg_to_array(hand_built(image, encoding, padding, bigendian))
    assert got.dtype == ENCODINGS[encoding].dtype and got.dtype.isnative
    assert got.shape == image.shape and got.flags.c_contiguous
    np.testing.assert_array_equal(got, image)


@pytest.mark.parametrize("encoding,padding,bigendian", FIXTURES, ids=FIXTURE_IDS)
def test_fill_imgmsg_writes_the_same_bytes_as_the_hand_built_fixture(encoding, padding, bigendian):
    image = _pattern(encoding)
    ours = fill_imgmsg(Image(), image, encoding, row_padding=padding, bigendian=bigendian)
    ref = hand_built(image, encoding, padding, bigendian)
    assert (ours.height, ours.width, ours.encoding, ours.is_bigendian, ours.step) == \
           (ref.height, ref.width, ref.encoding, ref.is_bigendian, ref.step)
    row = W * ENCODINGS[encoding].pixel_bytes  # the filler bytes of the padding may differ
    np.testing.assert_array_equal(np.frombuffer(ours.data, np.uint8).reshape(H, -1)[:, :row],
                                  np.frombuffer(ref.data, np.uint8).reshape(H, -1)[:, :row])


# ------------------------------------------------------------------ the PyPI cv_bridge on the same fixtures
def pypi_outcome(encoding: str, padding: int, bigendian: bool) -> str:
    """How cv-bridge 1.13.0.post0 with NumPy 2 and OpenCV 5 handles a fixture (see the module docstring).

    * multi-channel: it decodes the channel count as ``((cvtype >> 3) & 63) + 1``,
      OpenCV 4's layout; OpenCV 5's CV_8UC3 is 64, so rgb8 reads as 9 channels and
      ``np.ndarray(..., buffer=data)`` raises ``TypeError: buffer is too small``;
    * ``is_bigendian`` set: ``im.byteswap().newbyteorder()`` -> AttributeError
      (``ndarray.newbyteorder`` was removed in NumPy 2), even for 8-bit data;
    * 16UC1: mapped to ``CV_8UC1``, so it returns uint8 (the low bytes, wrong);
    * padded rows: ``step`` is ignored, rows come out sheared;
    * otherwise (mono8 / mono16 / 32FC1, little-endian, unpadded): correct.
    """
    if ENCODINGS[encoding].channels > 1:
        return "buffer too small"
    if bigendian:
        return "newbyteorder"
    if encoding == "16UC1":
        return "uint8"
    return "sheared" if padding else "correct"


@pytest.mark.parametrize("encoding,padding,bigendian", FIXTURES, ids=FIXTURE_IDS)
def test_pypi_cv_bridge_on_the_same_fixtures(encoding, padding, bigendian):
    image = _pattern(encoding)
    msg = hand_built(image, encoding, padding, bigendian)
    ours = imgmsg_to_array(msg)
    bridge = cv_bridge.CvBridge()
    outcome = pypi_outcome(encoding, padding, bigendian)
    if outcome == "buffer too small":
        with pytest.raises(TypeError, match="buffer is too small"):
            bridge.imgmsg_to_cv2(msg, "passthrough")
    elif outcome == "newbyteorder":
        with pytest.raises(AttributeError, match="newbyteorder"):
            bridge.imgmsg_to_cv2(msg, "passthrough")
    else:
        got = bridge.imgmsg_to_cv2(msg, "passthrough")
        if outcome == "correct":
            assert got.dtype == ours.dtype and got.shape == ours.shape
            np.testing.assert_array_equal(got, ours)  # where cv_bridge works, we agree with it
        elif outcome == "uint8":
            assert got.dtype == np.uint8 and ours.dtype == np.uint16
            np.testing.assert_array_equal(got, np.frombuffer(msg.data, np.uint8)[: H * W].reshape(H, W))
        else:  # sheared: the first height*width elements of data, padding read as pixels
            first = np.frombuffer(msg.data, ENCODINGS[encoding].dtype)[: H * W].reshape(H, W)
            np.testing.assert_array_equal(got, first)
            assert not np.array_equal(got, image)
    np.testing.assert_array_equal(ours, image)  # and ours is always the hand-computed original


def test_pypi_cv_bridge_failing_calls_and_their_causes():
    bridge = cv_bridge.CvBridge()
    assert cv2.CV_8UC3 == 64 and bridge.encoding_to_dtype_with_channels("rgb8") == ("uint8", 9)
    assert bridge.encoding_to_dtype_with_channels("16UC1") == ("uint8", 1)
    with pytest.raises(AttributeError, match="tostring"):
        bridge.cv2_to_imgmsg(np.zeros((H, W, 3), np.uint8), "rgb8")
    with pytest.raises(AttributeError, match="tostring"):
        bridge.cv2_to_compressed_imgmsg(np.zeros((H, W, 3), np.uint8), "png")
    mono16 = hand_built(_pattern("mono16"), "mono16", 0, False)
    with pytest.raises(KeyError, match="mono16"):  # no 16 -> 8 bit conversion in its table
        bridge.imgmsg_to_cv2(mono16, "rgb8")
    bad = hand_built(_pattern("rgb8"), "rgb8", 0, False)
    bad.encoding = "yuv444"
    with pytest.raises(KeyError):  # not a CvBridgeError, and no word on which field
        bridge.imgmsg_to_cv2(bad)
    garbage = CompressedImage(format="jpeg", data=b"not a jpeg at all")
    assert bridge.compressed_imgmsg_to_cv2(garbage) is None  # silently


def test_rgb8_conversion_matches_cv_bridge_where_it_works_and_hand_computed_elsewhere():
    bridge = cv_bridge.CvBridge()
    mono8 = _pattern("mono8")
    np.testing.assert_array_equal(to_rgb8(mono8, "mono8"),
                                  bridge.imgmsg_to_cv2(hand_built(mono8, "mono8", 0, False), "rgb8"))
    rgb = _pattern("rgb8")
    np.testing.assert_array_equal(to_rgb8(rgb[..., ::-1].copy(), "bgr8"), rgb)
    rgba = _pattern("rgba8")
    np.testing.assert_array_equal(to_rgb8(rgba, "rgba8"), rgba[..., :3])
    np.testing.assert_array_equal(to_rgb8(rgba, "bgra8"), rgba[..., 2::-1])
    np.testing.assert_array_equal(to_rgb8(mono8, "mono8"), np.repeat(mono8[..., None], 3, axis=2))
    # 16 -> 8 bit as cv_bridge's convertTo(..., 255/65535): round(v / 257)
    mono16 = np.array([[0, 128, 129, 385, 65535]], np.uint16)
    np.testing.assert_array_equal(to_rgb8(mono16, "mono16")[..., 0], [[0, 0, 1, 1, 255]])
    rgb16 = _pattern("rgb16")
    np.testing.assert_array_equal(to_rgb8(rgb16, "bgr16"), np.rint(rgb16[..., ::-1] / 257.0).astype(np.uint8))


def test_compressed_decoding_matches_cv_bridge():
    bridge = cv_bridge.CvBridge()
    bgr = np.ascontiguousarray(_pattern("rgb8")[..., ::-1])
    for ext in ("png", "jpeg"):
        msg = CompressedImage(format=ext, data=cv2.imencode("." + ext, bgr)[1].tobytes())
        image, encoding = decode_compressed(msg)
        assert encoding == "bgr8"
        np.testing.assert_array_equal(image, bridge.compressed_imgmsg_to_cv2(msg))
        np.testing.assert_array_equal(to_rgb8(image, encoding), bridge.compressed_imgmsg_to_cv2(msg, "rgb8"))
    # a 16-bit png: the PyPI port decodes with IMREAD_ANYCOLOR (8-bit); upstream cv_bridge and we
    # use IMREAD_UNCHANGED and keep all 16 bits
    mono16 = _pattern("mono16")
    msg = CompressedImage(format="png", data=cv2.imencode(".png", mono16)[1].tobytes())
    image, encoding = decode_compressed(msg)
    assert encoding == "mono16"
    np.testing.assert_array_equal(image, mono16)
    assert bridge.compressed_imgmsg_to_cv2(msg).dtype == np.uint8


# ------------------------------------------------------------------ converter selection
class ReferenceBridge:
    """A cv_bridge that behaves correctly (our converter behind cv_bridge's method names)."""

    def imgmsg_to_cv2(self, msg, desired_encoding="passthrough"):
        assert desired_encoding == "passthrough"
        return imgmsg_to_array(msg)

    def compressed_imgmsg_to_cv2(self, msg, desired_encoding="passthrough"):
        return decode_compressed(msg)[0]


def test_auto_rejects_the_pypi_cv_bridge_and_says_why():
    sel = select_converter("auto", Image)
    assert isinstance(sel.converter, NumpyConverter)
    assert "fails" in sel.reason and "numpy" in sel.reason
    text = "\n".join(sel.failures)
    assert "newbyteorder" in text and "buffer is too small" in text and "got uint8" in text
    assert probe_bridge(cv_bridge.CvBridge(), Image) == sel.failures


def test_auto_picks_a_cv_bridge_that_passes_the_self_test():
    assert probe_bridge(ReferenceBridge(), Image) == []
    sel = select_converter("auto", Image, load_bridge=lambda: (ReferenceBridge(), "reference"))
    assert isinstance(sel.converter, CvBridgeConverter) and "passed" in sel.reason
    for encoding, padding, bigendian in FIXTURES:
        msg = hand_built(_pattern(encoding), encoding, padding, bigendian)
        a, _ = sel.converter.image(msg)
        b, _ = NumpyConverter().image(msg)
        np.testing.assert_array_equal(a, b)


def test_selection_fallbacks():
    def missing():
        raise ImportError("No module named 'cv_bridge'")

    sel = select_converter("auto", Image, load_bridge=missing)
    assert isinstance(sel.converter, NumpyConverter) and "not importable" in sel.reason
    with pytest.raises(RuntimeError, match="cv_bridge requested"):
        select_converter("cv_bridge", Image, load_bridge=missing)
    assert isinstance(select_converter("numpy", Image).converter, NumpyConverter)
    forced = select_converter("cv_bridge", Image)
    assert isinstance(forced.converter, CvBridgeConverter) and forced.failures
    with pytest.raises(ValueError, match="converter: got 'opencv'"):
        select_converter("opencv", Image)


def test_cv_bridge_converter_checks_fields_before_calling_the_bridge():
    conv = CvBridgeConverter(cv_bridge.CvBridge())
    good = hand_built(_pattern("mono8"), "mono8", 0, False)
    np.testing.assert_array_equal(conv.image(good)[0], imgmsg_to_array(good))
    truncated = hand_built(_pattern("mono8"), "mono8", 0, False)
    truncated.data = bytes(truncated.data)[:-3]
    with pytest.raises(ImageFormatError, match=r"data: 17 bytes; expected height \* step = 4 \* 5 = 20"):
        conv.image(truncated)
    with pytest.raises(ImageFormatError, match="data: 3 bytes could not be decoded"):
        conv.compressed(CompressedImage(format="jpeg", data=b"abc"))


# ------------------------------------------------------------------ errors name the field
def _rgb8() -> Image:
    return hand_built(_pattern("rgb8"), "rgb8", 0, False)


def test_malformed_images_name_the_field_and_the_expected_value():
    msg = _rgb8()
    msg.encoding = "yuv444"
    with pytest.raises(ImageFormatError, match=r"^encoding: 'yuv444' is not supported; expected one of rgb8, bgr8"):
        imgmsg_to_array(msg)
    msg = _rgb8()
    msg.data = bytes(msg.data)[:-7]
    with pytest.raises(ImageFormatError, match=r"^data: 53 bytes; expected height \* step = 4 \* 15 = 60 bytes"):
        imgmsg_to_array(msg)
    msg = _rgb8()
    msg.data = bytes(msg.data) + b"\0"
    with pytest.raises(ImageFormatError, match=r"^data: 61 bytes; expected height \* step = 4 \* 15 = 60"):
        imgmsg_to_array(msg)
    msg = _rgb8()
    msg.step = 12
    with pytest.raises(ImageFormatError, match=r"^step: 12 bytes is less than width \* bytes per pixel = "
                                               r"5 \* 3 = 15 \(rgb8\); expected step >= 15"):
        imgmsg_to_array(msg)
    msg = hand_built(_pattern("mono16"), "mono16", 0, False)
    msg.step, msg.data = 11, bytes(44)
    with pytest.raises(ImageFormatError, match=r"^step: 11 bytes is not a multiple of the 2-byte channel size"):
        imgmsg_to_array(msg)
    msg = _rgb8()
    msg.height, msg.data = 0, b""
    with pytest.raises(ImageFormatError, match=r"^height, width: got 0 x 5; expected a non-empty image"):
        imgmsg_to_array(msg)


def test_malformed_compressed_images_name_the_field():
    jpeg = cv2.imencode(".jpg", _pattern("rgb8"))[1].tobytes()
    cases = [
        (CompressedImage(format="jpeg", data=b""), r"^data: 0 bytes; expected a jpeg or png byte stream"),
        (CompressedImage(format="jpeg", data=jpeg[: len(jpeg) // 2]),
         rf"^data: {len(jpeg) // 2} bytes could not be decoded \(format 'jpeg'\); expected a complete jpeg or png"),
        (CompressedImage(format="jpeg", data=bytes(range(200))), r"^data: 200 bytes could not be decoded"),
        (CompressedImage(format="16UC1; compressedDepth png", data=jpeg), r"^format: '16UC1; compressedDepth png'"),
    ]
    for msg, pattern in cases:
        with pytest.raises(ImageFormatError, match=pattern):
            decode_compressed(msg)


# ------------------------------------------------------------------ crop / resize
def test_center_crop_box():
    assert center_crop_box(480, 640, 96, 96) == (slice(0, 480), slice(80, 560))
    assert center_crop_box(200, 100, 96, 96) == (slice(50, 150), slice(0, 100))
    assert center_crop_box(96, 96, 48, 64) == (slice(12, 84), slice(0, 96))
    assert center_crop_box(480, 640, 48, 64) == (slice(0, 480), slice(0, 640))  # same aspect: everything
    assert center_crop_box(3, 1000, 10, 10) == (slice(0, 3), slice(498, 501))


def test_center_crop_then_inter_area_resize_of_a_vga_bgr8_frame():
    rng = np.random.default_rng(1)
    bgr = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    bgr[:, :80] = bgr[:, 560:] = (0, 0, 255)  # pure red bands, outside the center square
    msg = hand_built(bgr, "bgr8", 4, False)
    out = preprocess(*NumpyConverter().image(msg), PreprocessConfig())
    assert out.shape == (96, 96, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    expected = cv2.resize(np.ascontiguousarray(bgr[:, 80:560, ::-1]), (96, 96), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(out, expected)
    # 5 x 5 source pixels per output pixel: INTER_AREA is their exact mean
    np.testing.assert_allclose(out[0, 0], bgr[:5, 80:85, ::-1].reshape(-1, 3).mean(0), atol=0.5)
    assert not np.any(np.all(out == (255, 0, 0), axis=-1))


def test_crop_modes_and_output_sizes():
    rgb = np.random.default_rng(2).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    np.testing.assert_array_equal(preprocess(rgb, "rgb8", PreprocessConfig()), rgb)  # already the policy's size
    out = preprocess(rgb, "rgb8", PreprocessConfig(width=64, height=48))
    np.testing.assert_array_equal(out, cv2.resize(rgb[12:84], (64, 48), interpolation=cv2.INTER_AREA))
    out = preprocess(rgb, "rgb8", PreprocessConfig(width=64, height=48, crop="none"))
    np.testing.assert_array_equal(out, cv2.resize(rgb, (64, 48), interpolation=cv2.INTER_AREA))
    tall = np.random.default_rng(3).integers(0, 256, (200, 100), dtype=np.uint8)
    out = preprocess(tall, "mono8", PreprocessConfig(width=50, height=50))
    np.testing.assert_array_equal(out[..., 1], cv2.resize(tall[50:150], (50, 50), interpolation=cv2.INTER_AREA))
    for bad, pattern in [(dict(width=0), "output_width"), (dict(crop="letterbox"), "crop_mode"),
                         (dict(depth_max=0.0), "depth_max")]:
        with pytest.raises(ValueError, match=pattern):
            PreprocessConfig(**bad)


def test_depth_maps_zero_to_depth_max_onto_gray():
    cfg = PreprocessConfig(width=6, height=1, crop="none", depth_max=2.0)
    mm = np.array([[0, 400, 1200, 2000, 5000, 65535]], np.uint16)
    gray = preprocess(mm, "16UC1", cfg)[0]
    np.testing.assert_array_equal(gray, np.repeat([[0], [51], [153], [255], [255], [255]], 3, 1))
    m = np.array([[np.nan, -np.inf, 0.4, 1.2, np.inf, 3.0]], np.float32)
    gray = preprocess(m, "32FC1", cfg)[0]
    np.testing.assert_array_equal(gray, np.repeat([[0], [0], [51], [153], [255], [255]], 3, 1))
    big = hand_built(mm, "16UC1", 2, True)  # a big-endian, padded depth frame through the whole path
    np.testing.assert_array_equal(preprocess(*NumpyConverter().image(big), cfg), preprocess(mm, "16UC1", cfg))


def test_vision_modules_do_not_import_rclpy():
    code = ("import sys, mechanic_rl_ros.vision.imgmsg, mechanic_rl_ros.vision.preprocess; "
            "assert 'rclpy' not in sys.modules, 'rclpy imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ------------------------------------------------------------------ YUV 4:2:2 and Bayer (usb_cam, machine-vision cameras)
def _yuv_bt601(rgb: np.ndarray) -> np.ndarray:
    """Studio-swing BT.601 Y, U, V of each pixel (what OpenCV's YUV 4:2:2 decoders invert), rounded."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    return np.clip(np.rint(np.stack([y, u, v], -1)), 0, 255).astype(np.uint8)


def _pack_422(rgb: np.ndarray, order: str) -> np.ndarray:
    """Pack an image whose horizontal pixel pairs share one colour into 4:2:2 macropixels, by hand.

    ``order`` is "uyvy" (U Y0 V Y1) or "yuyv" (Y0 U Y1 V); the result is (h, w, 2) uint8.
    """
    yuv = _yuv_bt601(rgb)
    y, u, v = yuv[..., 0], yuv[:, 0::2, 1], yuv[:, 0::2, 2]
    h, w = y.shape
    out = np.empty((h, w // 2, 4), np.uint8)
    if order == "uyvy":
        out[..., 0], out[..., 1], out[..., 2], out[..., 3] = u, y[:, 0::2], v, y[:, 1::2]
    else:
        out[..., 0], out[..., 1], out[..., 2], out[..., 3] = y[:, 0::2], u, y[:, 1::2], v
    return out.reshape(h, w, 2)


@pytest.mark.parametrize("encoding", YUV422)
def test_yuv422_decodes_to_the_rgb_it_was_made_from(encoding):
    rng = np.random.default_rng(7)
    pairs = rng.integers(20, 236, (6, 4, 3), dtype=np.uint8)
    rgb = np.repeat(pairs, 2, axis=1)  # each macropixel holds one colour: 4:2:2 loses nothing
    order = "uyvy" if encoding in ("yuv422", "uyvy") else "yuyv"
    packed = _pack_422(rgb, order)
    msg = hand_built(packed, encoding, 4, False)
    image, enc = NumpyConverter().image(msg)
    assert image.shape == (6, 8, 2) and image.dtype == np.uint8  # cv_bridge's CV_8UC2 passthrough
    np.testing.assert_array_equal(image, packed)
    got = to_rgb8(image, enc)
    assert np.abs(got.astype(int) - rgb.astype(int)).max() <= 3  # rounding of Y, U, V to 8 bit


def test_yuv422_names_their_byte_order():
    # U=V=128 (no colour), Y0 = 235 (white), Y1 = 16 (black) in each byte order
    uyvy = np.array([[[128, 235], [128, 16]]], np.uint8)
    yuyv = np.array([[[235, 128], [16, 128]]], np.uint8)
    for encoding, image in (("yuv422", uyvy), ("uyvy", uyvy), ("yuv422_yuy2", yuyv), ("yuyv", yuyv)):
        np.testing.assert_array_equal(to_rgb8(image, encoding), [[[255, 255, 255], [0, 0, 0]]], err_msg=encoding)


def test_odd_width_yuv422_names_the_width():
    msg = hand_built(np.zeros((2, 4, 2), np.uint8), "yuyv", 0, False)
    msg.width, msg.step, msg.data = 3, 6, bytes(12)
    with pytest.raises(ImageFormatError, match=r"^width: 3 px is odd; expected an even width for yuyv"):
        imgmsg_to_array(msg)


def _mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """The Bayer mosaic a sensor with the colour filter ``pattern`` ("rggb", ...) records of ``rgb``."""
    channel = {"r": 0, "g": 1, "b": 2}
    out = np.empty(rgb.shape[:2], np.uint8)
    for k, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        out[dy::2, dx::2] = rgb[dy::2, dx::2, channel[pattern[k]]]
    return out


@pytest.mark.parametrize("encoding", BAYER)
def test_bayer_patterns_give_the_colour_that_was_filmed(encoding):
    colour = np.array([200, 100, 30], np.uint8)  # every channel different: a swapped pattern shows
    rgb = np.broadcast_to(colour, (8, 10, 3)).copy()
    msg = hand_built(_mosaic(rgb, encoding[6:10]), encoding, 2, False)
    image, enc = NumpyConverter().image(msg)
    assert image.shape == (8, 10) and image.dtype == np.uint8
    got = to_rgb8(image, enc)
    np.testing.assert_array_equal(got[2:-2, 2:-2], rgb[2:-2, 2:-2])  # away from the border: exact


@pytest.mark.parametrize("encoding", ("yuyv", "bayer_grbg8"))
def test_yuv_and_bayer_are_converted_before_the_crop(encoding):
    rng = np.random.default_rng(11)
    rgb = np.repeat(rng.integers(0, 256, (30, 20, 3), dtype=np.uint8), 2, axis=1)  # 30 x 40
    raw = _pack_422(rgb, "yuyv") if encoding == "yuyv" else _mosaic(rgb, "grbg")
    cfg = PreprocessConfig(width=12, height=12)  # center crop 30 x 30 from column 5: odd, inside a macropixel
    out = preprocess(raw, encoding, cfg)
    full = to_rgb8(raw, encoding)
    np.testing.assert_array_equal(out, cv2.resize(full[:, 5:35], (12, 12), interpolation=cv2.INTER_AREA))
