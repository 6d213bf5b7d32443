"""sensor_msgs/Image and CompressedImage -> numpy, with cv_bridge's semantics.

``imgmsg_to_array(msg)`` returns what ``CvBridge().imgmsg_to_cv2(msg,
"passthrough")`` returns on a correct cv_bridge: an ``(height, width)`` array
for one channel, ``(height, width, channels)`` otherwise, in the channel type
of ``msg.encoding`` and in the machine's byte order, whatever ``step`` (row
padding) and ``is_bigendian`` the message carries. ``decode_compressed(msg)``
is ``compressed_imgmsg_to_cv2(msg, "passthrough")`` (``cv2.imdecode`` with
``IMREAD_UNCHANGED``: BGR, BGRA or gray, 8 or 16 bit).

Why our own converter: the cv_bridge on PyPI (1.13.0.post0) calls
``ndarray.newbyteorder`` and ``ndarray.tostring``, both removed in NumPy 2, so
big-endian images and every ``cv2_to_*`` call raise; it also ignores ``step``
(padded rows come out sheared) and maps ``16UC1`` to 8-bit. Upstream cv_bridge
(ros-perception/vision_opencv, rolling) honours ``step`` only when it is a
whole number of pixels and has the same ``newbyteorder`` call. So the node uses
this module by default, and uses an importable cv_bridge only when it
reproduces this module on every probe of :func:`probe_bridge`
(:func:`select_converter`).

Every malformed message raises :class:`ImageFormatError` naming the field and
the expected value; nothing here reads past the end of ``data`` (cv_bridge's
C++ side trusts ``step`` and ``height``, so the fields are checked before any
converter runs).

No ROS imports: functions take the message object or anything with the same
attribute names (``height``, ``width``, ``encoding``, ``is_bigendian``,
``step``, ``data``; ``format`` and ``data`` for compressed images).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import cv2
import numpy as np


class ImageFormatError(ValueError):
    """A message does not describe a decodable image; the text names the field and the expected value."""


@dataclass(frozen=True)
class Encoding:
    """Layout of one ``sensor_msgs/Image`` encoding: channel type (native byte order) and channel count."""

    dtype: np.dtype
    channels: int

    @property
    def pixel_bytes(self) -> int:
        return self.dtype.itemsize * self.channels


_U8, _U16, _F32 = np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32)

#: The encodings this package decodes (names from sensor_msgs/image_encodings.hpp).
#: 16UC1 is depth in millimetres and 32FC1 depth in metres (REP 118).
ENCODINGS: dict[str, Encoding] = {
    "rgb8": Encoding(_U8, 3),
    "bgr8": Encoding(_U8, 3),
    "rgba8": Encoding(_U8, 4),
    "bgra8": Encoding(_U8, 4),
    "mono8": Encoding(_U8, 1),
    "rgb16": Encoding(_U16, 3),
    "bgr16": Encoding(_U16, 3),
    "mono16": Encoding(_U16, 1),
    "16UC1": Encoding(_U16, 1),
    "32FC1": Encoding(_F32, 1),
    # YUV 4:2:2, two bytes per pixel, one 4-byte macropixel per two pixels (usb_cam's yuyv / uyvy
    # pixel formats): "yuv422" / "uyvy" is U Y0 V Y1, "yuv422_yuy2" / "yuyv" is Y0 U Y1 V.
    # cv_bridge reads them as CV_8UC2.
    "yuv422": Encoding(_U8, 2),
    "uyvy": Encoding(_U8, 2),
    "yuv422_yuy2": Encoding(_U8, 2),
    "yuyv": Encoding(_U8, 2),
    # raw Bayer mosaics, one 8-bit sample per pixel; the name is the colour order of the top-left 2 x 2 block
    "bayer_rggb8": Encoding(_U8, 1),
    "bayer_bggr8": Encoding(_U8, 1),
    "bayer_gbrg8": Encoding(_U8, 1),
    "bayer_grbg8": Encoding(_U8, 1),
}

#: encodings whose pixels are not independent: a YUV 4:2:2 macropixel spans two columns, a Bayer
#: colour needs its 2 x 2 block; they are converted to RGB before any crop (:mod:`.preprocess`)
YUV422 = ("yuv422", "uyvy", "yuv422_yuy2", "yuyv")
BAYER = ("bayer_rggb8", "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8")

# What cv2.imdecode(IMREAD_UNCHANGED) returns, by (dtype, channels), as an encoding.
_DECODED_ENCODING = {
    (_U8, 1): "mono8", (_U8, 3): "bgr8", (_U8, 4): "bgra8",
    (_U16, 1): "mono16", (_U16, 3): "bgr16",
}


def check_image_layout(msg) -> Encoding:
    """Check ``encoding``, ``height``/``width``, ``step`` and ``len(data)`` against each other.

    Returns the encoding's layout; raises :class:`ImageFormatError` naming the
    first inconsistent field and what it should have been.
    """
    enc = ENCODINGS.get(msg.encoding)
    if enc is None:
        raise ImageFormatError(
            f"encoding: {msg.encoding!r} is not supported; expected one of {', '.join(ENCODINGS)}")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ImageFormatError(f"height, width: got {h} x {w}; expected a non-empty image (both > 0)")
    if msg.encoding in YUV422 and w % 2:
        raise ImageFormatError(
            f"width: {w} px is odd; expected an even width for {msg.encoding} (one 4-byte macropixel holds "
            f"two pixels)")
    row = w * enc.pixel_bytes
    if step < row:
        raise ImageFormatError(
            f"step: {step} bytes is less than width * bytes per pixel = {w} * {enc.pixel_bytes} = {row} "
            f"({msg.encoding}); expected step >= {row}")
    if step % enc.dtype.itemsize:
        raise ImageFormatError(
            f"step: {step} bytes is not a multiple of the {enc.dtype.itemsize}-byte channel size of "
            f"{msg.encoding}; expected a multiple of {enc.dtype.itemsize}")
    n = len(msg.data)
    if n != h * step:
        raise ImageFormatError(f"data: {n} bytes; expected height * step = {h} * {step} = {h * step} bytes")
    return enc


def imgmsg_to_array(msg) -> np.ndarray:
    """The image of a ``sensor_msgs/Image``, as cv_bridge's ``imgmsg_to_cv2(msg, "passthrough")``.

    Row padding (``step`` beyond ``width * bytes per pixel``) is skipped and
    big-endian data is swapped to the machine's byte order. The result may
    share memory with ``msg.data`` when no copy is needed; treat it as read-only.
    """
    enc = check_image_layout(msg)
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    wire = enc.dtype.newbyteorder(">" if msg.is_bigendian else "<")
    shape: tuple[int, ...] = (h, w, enc.channels)
    strides: tuple[int, ...] = (step, enc.pixel_bytes, enc.dtype.itemsize)
    if enc.channels == 1:
        shape, strides = shape[:2], strides[:2]
    wire_view = np.ndarray(shape, dtype=wire, buffer=msg.data, strides=strides)
    return np.ascontiguousarray(wire_view.astype(enc.dtype, copy=False))


def encoding_of_decoded(image: np.ndarray) -> str:
    """The encoding name of an array from ``cv2.imdecode(..., IMREAD_UNCHANGED)`` (gray, BGR or BGRA)."""
    channels = 1 if image.ndim == 2 else image.shape[2]
    name = _DECODED_ENCODING.get((image.dtype, channels))
    if name is None:
        raise ImageFormatError(
            f"data: decodes to a {channels}-channel {image.dtype} image; expected 8-bit gray/BGR/BGRA "
            f"or 16-bit gray/BGR")
    return name


def _check_compressed(msg) -> np.ndarray:
    fmt = str(msg.format)
    if "compresseddepth" in fmt.lower():
        raise ImageFormatError(
            f"format: {fmt!r} (compressed_depth_image_transport) is not supported; "
            f"expected a jpeg or png CompressedImage (image_transport 'compressed')")
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    if buf.size == 0:
        raise ImageFormatError(f"data: 0 bytes; expected a jpeg or png byte stream (format {fmt!r})")
    return buf


def _decoded_or_error(image, msg) -> np.ndarray:
    if image is None:
        raise ImageFormatError(
            f"data: {len(msg.data)} bytes could not be decoded (format {str(msg.format)!r}); "
            f"expected a complete jpeg or png byte stream")
    return np.asarray(image)


def decode_compressed(msg) -> tuple[np.ndarray, str]:
    """A ``sensor_msgs/CompressedImage`` as ``(image, encoding)``; cv_bridge's ``compressed_imgmsg_to_cv2``.

    ``image`` is what ``cv2.imdecode(data, IMREAD_UNCHANGED)`` returns (BGR /
    BGRA / gray, 8 or 16 bit), ``encoding`` its name (``bgr8``, ``mono16``, ...).
    Empty, truncated or corrupt bytes raise :class:`ImageFormatError`.
    """
    buf = _check_compressed(msg)
    try:
        image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        image = None
    image = _decoded_or_error(image, msg)
    return image, encoding_of_decoded(image)


def fill_imgmsg(msg, image: np.ndarray, encoding: str, *, row_padding: int = 0, bigendian: bool = False):
    """Write ``image`` into ``msg``'s image fields (``cv2_to_imgmsg`` plus padding and byte order).

    ``row_padding`` bytes (0xAA) end every row, so ``step = width * bytes per
    pixel + row_padding``; ``bigendian`` stores multi-byte channels big-endian.
    ``msg`` is a ``sensor_msgs/Image`` or anything with its field names; it is
    returned. Used by the converter self-test and by tools that publish images.
    """
    enc = ENCODINGS.get(encoding)
    if enc is None:
        raise ImageFormatError(f"encoding: {encoding!r} is not supported; expected one of {', '.join(ENCODINGS)}")
    expected_shape = image.shape[:2] + ((enc.channels,) if enc.channels > 1 else ())
    if image.shape != expected_shape or image.dtype.newbyteorder("=") != enc.dtype:
        raise ImageFormatError(
            f"image: {image.dtype} {image.shape} does not match {encoding}; expected {enc.dtype} "
            f"(height, width{', ' + str(enc.channels) if enc.channels > 1 else ''})")
    h, w = image.shape[:2]
    rows = np.ascontiguousarray(image.astype(enc.dtype.newbyteorder(">" if bigendian else "<"))).reshape(h, -1)
    rows = rows.view(np.uint8).reshape(h, w * enc.pixel_bytes)
    padded = np.full((h, w * enc.pixel_bytes + row_padding), 0xAA, dtype=np.uint8)
    padded[:, : w * enc.pixel_bytes] = rows
    msg.height, msg.width, msg.encoding = h, w, encoding
    msg.is_bigendian = 1 if bigendian else 0
    msg.step = w * enc.pixel_bytes + row_padding
    msg.data = padded.tobytes()
    return msg


# --------------------------------------------------------------------------- converters
class Converter(Protocol):
    """Turns image messages into ``(array, encoding)``; ``name`` says which implementation."""

    name: str

    def image(self, msg) -> tuple[np.ndarray, str]: ...

    def compressed(self, msg) -> tuple[np.ndarray, str]: ...


class NumpyConverter:
    """This module's own decoding (numpy + cv2.imdecode)."""

    name = "numpy"

    def image(self, msg) -> tuple[np.ndarray, str]:
        return imgmsg_to_array(msg), str(msg.encoding)

    def compressed(self, msg) -> tuple[np.ndarray, str]:
        return decode_compressed(msg)


class CvBridgeConverter:
    """A ``cv_bridge.CvBridge`` behind the same interface; fields are checked here first."""

    name = "cv_bridge"

    def __init__(self, bridge) -> None:
        self.bridge = bridge

    def image(self, msg) -> tuple[np.ndarray, str]:
        check_image_layout(msg)
        return np.asarray(self.bridge.imgmsg_to_cv2(msg, "passthrough")), str(msg.encoding)

    def compressed(self, msg) -> tuple[np.ndarray, str]:
        _check_compressed(msg)
        image = _decoded_or_error(self.bridge.compressed_imgmsg_to_cv2(msg, "passthrough"), msg)
        return image, encoding_of_decoded(image)


def _probe_image(encoding: str, h: int = 3, w: int = 5) -> np.ndarray:
    """A small image whose every channel value differs, so sheared rows or swapped bytes show."""
    enc = ENCODINGS[encoding]
    n = h * w * enc.channels
    if enc.dtype == _U8:
        values = (np.arange(n) * 7 + 3) % 256
    elif enc.dtype == _U16:
        values = np.arange(n) * 4099 + 258  # both bytes of every value differ
    else:
        values = np.arange(n) * 0.37 - 1.25
    return values.astype(enc.dtype).reshape((h, w, enc.channels) if enc.channels > 1 else (h, w))


#: (encoding, row padding [bytes], big-endian) of every self-test probe; the
#: paddings include one that is not a whole number of pixels (rgb8: 16 = 5*3 + 1).
PROBES: tuple[tuple[str, int, bool], ...] = (
    ("rgb8", 0, False),
    ("rgb8", 1, False),
    ("bgra8", 8, False),
    ("mono8", 3, False),
    ("mono16", 0, False),
    ("mono16", 6, True),
    ("16UC1", 0, False),
    ("16UC1", 2, True),
    ("32FC1", 4, True),
)


def probe_bridge(bridge, make_image: Callable[[], object]) -> list[str]:
    """Run ``bridge.imgmsg_to_cv2(msg, "passthrough")`` on every probe in :data:`PROBES`.

    ``make_image`` builds an empty ``sensor_msgs/Image`` (or a stand-in with its
    fields). Returns one line per probe the bridge gets wrong (an exception, a
    different shape or dtype, or different values); an empty list means it
    agrees with :func:`imgmsg_to_array` everywhere.
    """
    failures = []
    for encoding, padding, bigendian in PROBES:
        expected = _probe_image(encoding)
        msg = fill_imgmsg(make_image(), expected, encoding, row_padding=padding, bigendian=bigendian)
        label = f"{encoding} step={msg.step} {'big' if bigendian else 'little'}-endian"
        try:
            got = np.asarray(bridge.imgmsg_to_cv2(msg, "passthrough"))
        except Exception as exc:  # any failure of the candidate disqualifies it, whatever its type
            failures.append(f"{label}: {type(exc).__name__}: {exc}")
            continue
        if got.dtype != expected.dtype or got.shape != expected.shape:
            failures.append(f"{label}: got {got.dtype} {got.shape}, expected {expected.dtype} {expected.shape}")
        elif not np.array_equal(got, expected):
            failures.append(f"{label}: wrong pixel values (rows sheared or bytes swapped)")
    return failures


def _load_cv_bridge():
    import cv_bridge

    return cv_bridge.CvBridge(), getattr(cv_bridge, "__file__", "?")


CONVERTER_MODES = ("auto", "numpy", "cv_bridge")


@dataclass
class Selection:
    """The converter chosen at start-up and why (for the node's log and diagnostics)."""

    converter: Converter
    reason: str
    failures: list[str] = field(default_factory=list)


def select_converter(mode: str, make_image: Callable[[], object],
                     load_bridge: Callable[[], tuple[object, str]] = _load_cv_bridge) -> Selection:
    """Pick the image converter.

    ``auto``: an importable cv_bridge that passes :func:`probe_bridge`, else this
    module. ``numpy``: this module. ``cv_bridge``: cv_bridge even if it fails
    probes (they are listed in ``failures``); raises if it cannot be imported.
    ``load_bridge`` returns ``(CvBridge instance, where it came from)``.
    """
    if mode not in CONVERTER_MODES:
        raise ValueError(f"converter: got {mode!r}; expected one of {CONVERTER_MODES}")
    if mode == "numpy":
        return Selection(NumpyConverter(), "numpy converter requested")
    try:
        bridge, origin = load_bridge()
    except Exception as exc:  # an import error can be anything from ImportError to a broken extension
        if mode == "cv_bridge":
            raise RuntimeError(f"converter: cv_bridge requested but it cannot be loaded: {exc!r}") from exc
        return Selection(NumpyConverter(), f"cv_bridge not importable ({exc!r}); using the numpy converter")
    failures = probe_bridge(bridge, make_image)
    if not failures:
        return Selection(CvBridgeConverter(bridge),
                         f"cv_bridge from {origin} passed all {len(PROBES)} self-test probes")
    summary = f"cv_bridge from {origin} fails {len(failures)}/{len(PROBES)} self-test probes"
    if mode == "cv_bridge":
        return Selection(CvBridgeConverter(bridge), f"{summary}; using it anyway (converter: cv_bridge)", failures)
    return Selection(NumpyConverter(), f"{summary}; using the numpy converter", failures)
