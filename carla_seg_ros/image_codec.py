"""sensor_msgs/Image <-> numpy without cv_bridge: validated zero-copy decoding and encoders for the node's outputs.

Kept free of any node logic so the node, the demo and the bag tools share one decoder. ``import rclpy`` is not
needed here except for the encoders (which build ``sensor_msgs.msg.Image``).

Decoding never copies pixels: ``pixels(msg)`` is a strided numpy view of ``msg.data`` (the ``step`` padding is
skipped by the row stride) in the message's own channel order, and ``to_rgb`` reorders channels by slicing
(``bgr8`` -> ``[..., ::-1]``), so a resize to the model's input size is the first and only full-size pass.

Rejections raise ``ImageRejected`` with a ``reason`` key from ``REJECT_REASONS`` (counted per key in the node's
diagnostics) and a message that names the problem.

``is_bigendian``: for the 8-bit-per-channel encodings accepted here byte order cannot change a pixel, so a set flag
is harmless to the bytes. It is rejected anyway (reason ``big_endian``) because no well-behaved 8-bit publisher sets
it; a set flag means the header was filled in wrongly (often a 16-bit image mislabelled as 8-bit), and guessing would
hand the model garbage silently. ``allow_big_endian=True`` accepts such messages for callers that know better.
"""
from __future__ import annotations

import array

import numpy as np

# encoding -> channels. Every accepted encoding has 8 bits per channel.
CHANNELS = {"bgra8": 4, "bgr8": 3, "rgba8": 4, "rgb8": 3, "mono8": 1}
ENCODINGS = tuple(CHANNELS)

# 16384 x 16384: far above any camera CARLA renders, low enough that a bogus header cannot make us allocate GBs.
DEFAULT_MAX_PIXELS = 16384 * 16384

REJECT_REASONS = ("unknown_encoding", "big_endian", "zero_size", "too_large", "step_too_small", "buffer_size")


class ImageRejected(ValueError):
    """A sensor_msgs/Image that cannot be decoded; ``reason`` is one of REJECT_REASONS."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def pixels(msg, max_pixels: int = DEFAULT_MAX_PIXELS, allow_big_endian: bool = False) -> np.ndarray:
    """A read-only (H, W, C) uint8 view of ``msg.data`` in the message's channel order, ``step`` padding skipped.

    Raises ImageRejected for anything that is not a well-formed image of one of ENCODINGS.
    """
    encoding = msg.encoding
    if encoding not in CHANNELS:
        raise ImageRejected("unknown_encoding",
                            f"unsupported encoding {encoding!r}; supported: {', '.join(ENCODINGS)}")
    if msg.is_bigendian and not allow_big_endian:
        raise ImageRejected("big_endian", f"is_bigendian is set on an 8-bit {encoding} image (header inconsistent)")
    width, height, step = int(msg.width), int(msg.height), int(msg.step)
    if width == 0 or height == 0:
        raise ImageRejected("zero_size", f"image has zero size ({width}x{height})")
    if width * height > max_pixels:
        raise ImageRejected("too_large", f"image {width}x{height} has more than {max_pixels} pixels (max_image_pixels)")
    channels = CHANNELS[encoding]
    row_bytes = width * channels
    if step < row_bytes:
        raise ImageRejected("step_too_small",
                            f"step {step} < width {width} x {channels} channels = {row_bytes} bytes for {encoding}")
    expected = step * height
    size = len(msg.data)
    if size != expected:
        raise ImageRejected("buffer_size",
                            f"data has {size} bytes, step {step} x height {height} needs {expected}"
                            + (" (truncated)" if size < expected else " (too long: wrong header?)"))
    flat = np.frombuffer(msg.data, np.uint8)
    # Both reshapes are views: the padding is skipped by the row stride (step), nothing is copied.
    view = flat.reshape(height, step)[:, :row_bytes].reshape(height, width, channels)
    view.flags.writeable = False
    return view


def to_rgb(native: np.ndarray, encoding: str) -> np.ndarray:
    """(H, W, C) pixels in ``encoding``'s channel order -> (H, W, 3) RGB, a view wherever slicing can do it.

    Also accepts (H, W) for mono8 (what cv2.resize returns for a one-channel image).
    """
    if encoding == "rgb8":
        return native
    if encoding == "rgba8":
        return native[..., :3]
    if encoding == "bgr8":
        return native[..., ::-1]
    if encoding == "bgra8":
        return native[..., 2::-1]
    if encoding == "mono8":
        grey = native if native.ndim == 2 else native[..., 0]
        return np.broadcast_to(grey[..., None], grey.shape + (3,))
    raise ImageRejected("unknown_encoding", f"unsupported encoding {encoding!r}; supported: {', '.join(ENCODINGS)}")


_CV2_TO_RGB = {"bgra8": "COLOR_BGRA2RGB", "bgr8": "COLOR_BGR2RGB", "rgba8": "COLOR_RGBA2RGB", "mono8": "COLOR_GRAY2RGB"}


def to_rgb_array(native: np.ndarray, encoding: str) -> np.ndarray:
    """Like ``to_rgb`` but a new C-contiguous array, in one OpenCV pass (10x faster than copying the strided view).

    For consumers that need contiguous RGB at full size (the overlay, PNG writers).
    """
    if encoding == "rgb8":
        return np.ascontiguousarray(native)
    if encoding not in _CV2_TO_RGB:
        raise ImageRejected("unknown_encoding", f"unsupported encoding {encoding!r}; supported: {', '.join(ENCODINGS)}")
    import cv2
    return cv2.cvtColor(native, getattr(cv2, _CV2_TO_RGB[encoding]))


def decode_rgb(msg, max_pixels: int = DEFAULT_MAX_PIXELS, allow_big_endian: bool = False) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, 3) RGB uint8, read-only, usually a view (``np.ascontiguousarray`` if needed)."""
    return to_rgb(pixels(msg, max_pixels, allow_big_endian), msg.encoding)


def from_rgb(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """(H, W, 3) RGB -> a C-contiguous array in ``encoding``'s channel order (bgra8 alpha = 255)."""
    if encoding not in CHANNELS:
        raise ValueError(f"unsupported encoding {encoding!r}; supported: {', '.join(ENCODINGS)}")
    rgb = np.asarray(rgb, np.uint8)
    if encoding == "rgb8":
        return np.ascontiguousarray(rgb)
    if encoding == "bgr8":
        return np.ascontiguousarray(rgb[..., ::-1])
    if encoding == "mono8":
        import cv2
        return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    out = np.empty(rgb.shape[:2] + (4,), np.uint8)
    out[..., :3] = rgb if encoding == "rgba8" else rgb[..., ::-1]
    out[..., 3] = 255
    return out


def to_image(array_: np.ndarray, encoding: str, header=None):
    """A uint8 array already in ``encoding``'s channel order -> sensor_msgs/Image with ``header`` (shared, not copied).

    (H, W) or (H, W, 1) for mono8, (H, W, 3|4) otherwise; the result is unpadded (step = width x channels).
    """
    from sensor_msgs.msg import Image

    if encoding not in CHANNELS:
        raise ValueError(f"unsupported encoding {encoding!r}; supported: {', '.join(ENCODINGS)}")
    a = np.asarray(array_)
    if a.dtype != np.uint8:
        raise ValueError(f"{encoding} needs uint8 pixels, got {a.dtype}")
    channels = CHANNELS[encoding]
    shape_ok = a.ndim == 2 and channels == 1 or a.ndim == 3 and a.shape[2] == channels
    if not shape_ok or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{encoding} needs a non-empty (H, W{'' if channels == 1 else f', {channels}'}) array, "
                         f"got shape {a.shape}")
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(a.shape[0]), int(a.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = msg.width * channels
    data = array.array("B")
    data.frombytes(np.ascontiguousarray(a).data)   # one copy, straight into the message's buffer type
    msg.data = data
    return msg


def mono8(mask: np.ndarray, header=None):
    """(H, W) uint8 -> mono8 Image."""
    return to_image(mask, "mono8", header)


def rgb8(rgb: np.ndarray, header=None):
    """(H, W, 3) uint8 RGB -> rgb8 Image."""
    return to_image(rgb, "rgb8", header)
