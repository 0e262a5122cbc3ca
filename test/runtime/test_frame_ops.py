"""The node's hot-path helpers give exactly what the straightforward numpy versions give."""
import numpy as np
import pytest

from carla_seg_ros import image_codec
from carla_seg_ros.runtime.frame_ops import class_counts, model_input
from carla_seg_ros.runtime.preprocess import resize_image


@pytest.mark.parametrize("encoding", image_codec.ENCODINGS)
@pytest.mark.parametrize("frame_hw", [(600, 800), (150, 200)], ids=["shrink", "grow"])
def test_model_input_equals_resize_then_reorder(encoding, frame_hw):
    """Converting the colours before or after the resize must give the same pixels (area and bilinear alike)."""
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (*frame_hw, 3), np.uint8)
    msg = image_codec.to_image(image_codec.from_rgb(rgb, encoding), encoding)
    native = image_codec.pixels(msg)
    expected = np.ascontiguousarray(image_codec.to_rgb(resize_image(native, (384, 288)), encoding))
    got = model_input(native, encoding, (384, 288))
    assert got.shape == (1, 288, 384, 3) and got.flags.c_contiguous and got.dtype == np.uint8
    np.testing.assert_array_equal(got[0], expected)


def test_model_input_of_a_padded_frame():
    bgra = np.random.default_rng(2).integers(0, 256, (600, 800, 4), np.uint8)
    padded = np.zeros((600, 800 * 4 + 64), np.uint8)
    padded[:, :3200] = bgra.reshape(600, -1)
    view = padded[:, :3200].reshape(600, 800, 4)
    np.testing.assert_array_equal(model_input(view, "bgra8", (384, 288)), model_input(bgra, "bgra8", (384, 288)))


@pytest.mark.parametrize("rows", [0, 1, 495, 600])
def test_class_counts_equal_bincount(rows):
    mask = np.random.default_rng(3).integers(0, 13, (600, 800), np.uint8)
    mask[0, 0] = 200                                   # ids beyond the class table are not counted
    expected = np.bincount(mask[:rows].ravel(), minlength=256)[:13]
    np.testing.assert_array_equal(class_counts(mask, rows, 13), expected)
