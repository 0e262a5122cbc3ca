"""sensor_msgs/Image decoding and encoding (carla_seg_ros.image_codec): every encoding, padding, every rejection."""
from __future__ import annotations

import array

import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg", reason="ROS 2 message wheels (extra `ros`) are not installed")
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from carla_seg_ros import image_codec  # noqa: E402
from carla_seg_ros.image_codec import ImageRejected  # noqa: E402

RNG = np.random.default_rng(7)


def make(native: np.ndarray, encoding: str, pad: int = 0, **overrides) -> Image:
    """An Image holding ``native`` (already in the encoding's channel order) with ``pad`` bytes after every row.

    ``overrides`` set message fields afterwards (e.g. a bogus ``step``); ``encoding_`` overrides the encoding.
    """
    h, w = native.shape[:2]
    rows = native.reshape(h, -1)
    if pad:
        rows = np.concatenate([rows, np.full((h, pad), 0xEE, np.uint8)], axis=1)
    msg = Image(height=h, width=w, encoding=encoding, is_bigendian=0, step=rows.shape[1])
    msg.data = array.array("B", rows.tobytes())
    for key, value in overrides.items():
        setattr(msg, key.rstrip("_"), value)
    return msg


@pytest.fixture
def rgb():
    return RNG.integers(0, 256, (5, 7, 3), np.uint8)


@pytest.mark.parametrize("pad", [0, 3, 64])
@pytest.mark.parametrize("encoding", image_codec.ENCODINGS)
def test_decode_every_encoding_with_padding(rgb, encoding, pad):
    native = image_codec.from_rgb(rgb, encoding)
    out = image_codec.decode_rgb(make(native, encoding, pad))
    assert out.shape == (5, 7, 3) and out.dtype == np.uint8
    if encoding == "mono8":
        expected = np.repeat(native[..., None], 3, axis=2)
    else:
        expected = rgb
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("encoding", image_codec.ENCODINGS)
def test_decoding_is_a_view_of_the_message_buffer(rgb, encoding):
    msg = make(image_codec.from_rgb(rgb, encoding), encoding, pad=5)
    buffer = np.frombuffer(msg.data, np.uint8)
    assert np.shares_memory(image_codec.pixels(msg), buffer)
    assert np.shares_memory(image_codec.decode_rgb(msg), buffer)
    assert not image_codec.decode_rgb(msg).flags.writeable   # a view must not let callers scribble on the message


@pytest.mark.parametrize("encoding", image_codec.ENCODINGS)
def test_to_rgb_array_is_contiguous_and_equals_the_view(rgb, encoding):
    native = image_codec.pixels(make(image_codec.from_rgb(rgb, encoding), encoding, pad=9))
    out = image_codec.to_rgb_array(native, encoding)
    assert out.flags.c_contiguous and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, image_codec.to_rgb(native, encoding))


def test_bgra8_channel_order():
    bgra = np.zeros((2, 2, 4), np.uint8)
    bgra[..., 0], bgra[..., 1], bgra[..., 2], bgra[..., 3] = 10, 20, 30, 99   # B, G, R, A
    out = image_codec.decode_rgb(make(bgra, "bgra8"))
    assert out[0, 0].tolist() == [30, 20, 10]


def _reason(msg, **kwargs) -> ImageRejected:
    with pytest.raises(ImageRejected) as info:
        image_codec.pixels(msg, **kwargs)
    assert str(info.value) == info.value.message
    assert info.value.reason in image_codec.REJECT_REASONS
    return info.value


def test_rejects_unknown_encoding(rgb):
    exc = _reason(make(rgb, "rgb8", encoding_="16UC1"))
    assert exc.reason == "unknown_encoding" and "16UC1" in exc.message


def test_rejects_big_endian_unless_allowed(rgb):
    msg = make(rgb, "rgb8", is_bigendian=1)
    exc = _reason(msg)
    assert exc.reason == "big_endian"
    np.testing.assert_array_equal(image_codec.decode_rgb(msg, allow_big_endian=True), rgb)


@pytest.mark.parametrize("field", ["width", "height"])
def test_rejects_zero_size(rgb, field):
    msg = make(rgb, "rgb8", **{field: 0})
    assert _reason(msg).reason == "zero_size"


def test_rejects_huge_size_before_touching_the_buffer():
    msg = Image(height=100000, width=100000, encoding="bgra8", step=400000)   # empty data: a bogus header
    exc = _reason(msg)
    assert exc.reason == "too_large"
    small = make(RNG.integers(0, 256, (10, 10, 3), np.uint8), "rgb8")
    assert _reason(small, max_pixels=99).reason == "too_large"
    assert image_codec.pixels(small, max_pixels=100).shape == (10, 10, 3)


def test_rejects_step_smaller_than_a_row(rgb):
    exc = _reason(make(rgb, "rgb8", step=7 * 3 - 1))
    assert exc.reason == "step_too_small" and "20" in exc.message and "21" in exc.message


def test_rejects_truncated_and_overlong_buffers(rgb):
    msg = make(rgb, "rgb8")
    msg.data = msg.data[:-1]
    exc = _reason(msg)
    assert exc.reason == "buffer_size" and "truncated" in exc.message
    msg = make(rgb, "rgb8")
    msg.data = msg.data + array.array("B", [0])
    assert _reason(msg).reason == "buffer_size"


def test_rejected_message_for_every_reason_names_the_value():
    messages = {
        "unknown_encoding": make(np.zeros((2, 2, 3), np.uint8), "rgb8", encoding_="yuv422"),
        "big_endian": make(np.zeros((2, 2, 3), np.uint8), "rgb8", is_bigendian=1),
        "zero_size": make(np.zeros((2, 2, 3), np.uint8), "rgb8", width=0),
        "too_large": Image(height=2 ** 20, width=2 ** 20, encoding="mono8", step=2 ** 20),
        "step_too_small": make(np.zeros((2, 2, 3), np.uint8), "rgb8", step=5),
        "buffer_size": make(np.zeros((2, 2, 3), np.uint8), "rgb8", height=3),
    }
    assert set(messages) == set(image_codec.REJECT_REASONS)
    for reason, msg in messages.items():
        assert _reason(msg).reason == reason


def test_encoders_round_trip_and_keep_the_header():
    header = Header(frame_id="camera")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    mask = RNG.integers(0, 13, (6, 9), np.uint8)
    msg = image_codec.mono8(mask, header)
    assert (msg.encoding, msg.width, msg.height, msg.step, msg.is_bigendian) == ("mono8", 9, 6, 9, 0)
    assert msg.header.frame_id == "camera" and msg.header.stamp.nanosec == 345
    np.testing.assert_array_equal(image_codec.pixels(msg)[..., 0], mask)

    color = RNG.integers(0, 256, (6, 9, 3), np.uint8)
    msg = image_codec.rgb8(color[:, ::-1], header)          # non-contiguous input is fine
    np.testing.assert_array_equal(image_codec.decode_rgb(msg), color[:, ::-1])


@pytest.mark.parametrize("bad, encoding", [
    (np.zeros((4, 4, 3), np.uint8), "mono8"),
    (np.zeros((4, 4), np.uint8), "rgb8"),
    (np.zeros((4, 4, 3), np.float32), "rgb8"),
    (np.zeros((0, 4, 3), np.uint8), "rgb8"),
    (np.zeros((4, 4, 3), np.uint8), "yuv422"),
])
def test_encoder_rejects_mismatched_arrays(bad, encoding):
    with pytest.raises(ValueError):
        image_codec.to_image(bad, encoding)


def test_from_rgb_bgra8_has_opaque_alpha(rgb):
    bgra = image_codec.from_rgb(rgb, "bgra8")
    assert bgra.shape == (5, 7, 4) and (bgra[..., 3] == 255).all()
    np.testing.assert_array_equal(bgra[..., 2::-1], rgb)
