"""The node's hot-path helpers give exactly what the straightforward numpy versions give."""
import numpy as np
import pytest

from carla_seg_ros import image_codec
from carla_seg_ros.runtime.frame_ops import class_counts, model_input
from carla_seg_ros.runtime.preprocess import resize_image, resize_mask


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


@pytest.mark.parametrize("full_wh", [(800, 600), (384, 288), (200, 150), (13, 29), (1920, 1080)],
                         ids=["carla", "same", "shrink", "odd", "hd"])
@pytest.mark.parametrize("rows_fraction", [0.0, 0.001, 0.5, 0.825, 1.0, 1.2])
def test_class_counts_equal_counting_the_full_size_mask(full_wh, rows_fraction):
    """Counted on the model-size ids, the counts are those of the mask the node publishes, pixel for pixel."""
    ids = np.random.default_rng(3).integers(0, 13, (288, 384), np.uint8)
    ids[0, 0] = 200                                    # ids beyond the class table are not counted
    ids[100:200, 50:300] = 7                           # and long runs of one id, as real masks have
    rows = int(round(rows_fraction * full_wh[1]))
    expected = np.bincount(resize_mask(ids, full_wh)[:rows].ravel(), minlength=256)[:13]
    got = class_counts(ids, full_wh, rows, 13)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)


def test_class_counts_of_a_tiny_mask():
    ids = np.array([[1, 2], [3, 1]], np.uint8)
    np.testing.assert_array_equal(class_counts(ids, (4, 4), 4, 4), [0, 8, 4, 4])
    np.testing.assert_array_equal(class_counts(ids, (4, 4), 2, 4), [0, 4, 4, 0])
