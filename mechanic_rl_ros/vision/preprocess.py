"""Camera image -> the policy's input: rgb8, center-cropped to the output aspect, INTER_AREA resized.

The policy is trained on square (by default 96 x 96) rgb8 frames; a camera
gives 640 x 480 bgr8, mono, or depth. :func:`preprocess` crops first (so the
colour conversion only touches the pixels kept), converts to rgb8 with
cv_bridge's ``imgmsg_to_cv2(msg, "rgb8")`` semantics, and resizes with
``cv2.INTER_AREA`` (pixel-area averaging: no aliasing when shrinking).

Colour conversions are cv_bridge's: bgr8 -> channel swap, rgba8/bgra8 -> alpha
dropped, mono8 -> gray replicated to three channels, 16-bit colour and mono16
scaled by 255/65535 (cv_bridge's ``convertTo`` between 16 and 8 bit), YUV 4:2:2
(``yuv422``/``uyvy``, ``yuv422_yuy2``/``yuyv``) and 8-bit Bayer
(``bayer_rggb8`` ...) with OpenCV's ``cvtColor`` codes that cv_bridge uses
(Bayer: bilinear demosaicing). cv_bridge
refuses depth encodings to rgb8; here depth (REP 118: 16UC1 in millimetres,
32FC1 in metres) maps [0, depth_max] metres linearly to gray [0, 255],
saturating beyond ``depth_max``; invalid readings (0 mm, NaN, -inf) are black,
+inf (no return: too far) is white.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .imgmsg import BAYER, ENCODINGS, YUV422, ImageFormatError

CROP_MODES = ("center", "none")

_COLOR_TO_RGB = {
    "rgb8": None, "rgb16": None,
    "bgr8": cv2.COLOR_BGR2RGB, "bgr16": cv2.COLOR_BGR2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB, "bgra8": cv2.COLOR_BGRA2RGB,
    "mono8": cv2.COLOR_GRAY2RGB, "mono16": cv2.COLOR_GRAY2RGB,
    # cv_bridge's table (vision_opencv cv_bridge.cpp, getConversionCodes): yuv422 is UYVY; OpenCV
    # names a Bayer pattern by its second row's first two pixels, so bayer_rggb8 is BayerBG
    "yuv422": cv2.COLOR_YUV2RGB_UYVY, "uyvy": cv2.COLOR_YUV2RGB_UYVY,
    "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUY2, "yuyv": cv2.COLOR_YUV2RGB_YUY2,
    "bayer_rggb8": cv2.COLOR_BayerBG2RGB, "bayer_bggr8": cv2.COLOR_BayerRG2RGB,
    "bayer_gbrg8": cv2.COLOR_BayerGR2RGB, "bayer_grbg8": cv2.COLOR_BayerGB2RGB,
}
_U16_TO_U8 = 255.0 / 65535.0
_MM_PER_M = 1000.0


@dataclass(frozen=True)
class PreprocessConfig:
    """Output size [px], crop mode and the depth range mapped to gray [m]."""

    width: int = 96
    height: int = 96
    crop: str = "center"
    depth_max: float = 2.0

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"output_{name}: must be > 0 px, got {getattr(self, name)}")
        if self.crop not in CROP_MODES:
            raise ValueError(f"crop_mode: got {self.crop!r}; expected one of {CROP_MODES}")
        if not self.depth_max > 0:
            raise ValueError(f"depth_max: must be > 0 m, got {self.depth_max}")


def center_crop_box(height: int, width: int, out_height: int, out_width: int) -> tuple[slice, slice]:
    """Rows and columns of the largest centered window with the aspect ratio ``out_width / out_height``."""
    if width * out_height > height * out_width:  # input wider than the output: trim left and right
        keep = max(1, (2 * height * out_width + out_height) // (2 * out_height))
        x0 = (width - keep) // 2
        return slice(0, height), slice(x0, x0 + keep)
    keep = max(1, (2 * width * out_height + out_width) // (2 * out_width))
    y0 = (height - keep) // 2
    return slice(y0, y0 + keep), slice(0, width)


def to_rgb8(image: np.ndarray, encoding: str, depth_max: float = PreprocessConfig.depth_max) -> np.ndarray:
    """``image`` in ``encoding`` as an ``(h, w, 3)`` uint8 RGB array (see the module docstring)."""
    if encoding not in ENCODINGS:
        raise ImageFormatError(f"encoding: {encoding!r} is not supported; expected one of {', '.join(ENCODINGS)}")
    if encoding in _COLOR_TO_RGB:
        code = _COLOR_TO_RGB[encoding]
        rgb = image if code is None else cv2.cvtColor(image, code)
        if rgb.dtype == np.uint16:
            rgb = cv2.convertScaleAbs(rgb, alpha=_U16_TO_U8)
        return rgb
    if encoding == "16UC1":
        gray = cv2.convertScaleAbs(image, alpha=255.0 / (depth_max * _MM_PER_M))
    else:  # 32FC1, metres
        metres = np.nan_to_num(image, nan=0.0, posinf=depth_max, neginf=0.0)
        gray = cv2.convertScaleAbs(np.clip(metres, 0.0, depth_max), alpha=255.0 / depth_max)
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)


def preprocess(image: np.ndarray, encoding: str, cfg: PreprocessConfig) -> np.ndarray:
    """Crop (``cfg.crop``), convert to rgb8 and resize to ``(cfg.height, cfg.width, 3)`` uint8.

    YUV 4:2:2 and Bayer images are converted first and cropped after: a crop
    through a macropixel or a 2 x 2 Bayer block would change the colours.
    """
    if encoding in YUV422 + BAYER:
        image, encoding = to_rgb8(image, encoding, cfg.depth_max), "rgb8"
    if cfg.crop == "center":
        rows, cols = center_crop_box(image.shape[0], image.shape[1], cfg.height, cfg.width)
        image = image[rows, cols]
    rgb = to_rgb8(image, encoding, cfg.depth_max)
    if rgb.shape[:2] != (cfg.height, cfg.width):
        rgb = cv2.resize(rgb, (cfg.width, cfg.height), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb)
