"""INT8 calibration data: frame selection, fixed-size batches, last-batch policy, order, cache file, real frames."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from carla_seg_ros.runtime.tensorrt.calibration import (CalibrationBatches, CalibrationCache, CalibrationFeeder,
                                                        calibration_id, select_frames)
from carla_seg_ros.datasets import find_pairs, read_rgb
from carla_seg_ros.runtime.model_info import read_onnx_info
from carla_seg_ros.runtime.preprocess import resize_image

SIZE = (8, 6)  # (W, H): tiny frames keep the batching tests instant


def numbered(n):
    """Paths named 000..n-1 and a reader that returns a frame filled with that number."""
    return [Path(f"{i:03d}.png") for i in range(n)]


def read_number(path):
    return np.full((12, 16, 3), int(path.stem), dtype=np.uint8)


def batch_ids(batches):
    return [[int(frame[0, 0, 0]) for frame in batch] for batch in batches]


def test_select_frames_spreads_evenly_and_is_deterministic():
    paths = [Path(f"d/{i:03d}.png") for i in range(100)][::-1]  # order of discovery must not matter
    picked = select_frames(paths, 5)
    assert [p.stem for p in picked] == ["000", "025", "050", "074", "099"]
    assert select_frames(list(reversed(paths)), 5) == picked
    assert select_frames(paths, None) == sorted(paths) == select_frames(paths, 1000)
    with pytest.raises(ValueError):
        select_frames(paths, 0)


@pytest.mark.parametrize("n, batch, last, expected", [
    (8, 4, "pad", [[0, 1, 2, 3], [4, 5, 6, 7]]),
    (10, 4, "pad", [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1]]),
    (10, 4, "drop", [[0, 1, 2, 3], [4, 5, 6, 7]]),
    (3, 4, "pad", [[0, 1, 2, 0]]),
    (1, 1, "pad", [[0]]),
])
def test_fixed_size_batches_and_last_batch_policy(n, batch, last, expected):
    batches = CalibrationBatches(numbered(n), SIZE, batch, last, reader=read_number)
    assert len(batches) == len(expected)
    got = list(batches)
    assert all(b.shape == (batch, 6, 8, 3) and b.dtype == np.uint8 for b in got)
    assert batch_ids(got) == expected
    assert batch_ids(batches) == expected, "a second pass yields the same order"


def test_batches_are_independent_arrays():
    batches = list(CalibrationBatches(numbered(4), SIZE, 2, reader=read_number))
    assert batch_ids(batches) == [[0, 1], [2, 3]], "a yielded batch must not be overwritten by the next"


@pytest.mark.parametrize("kwargs, message", [
    (dict(paths=[], batch_size=2), "no calibration frames"),
    (dict(paths=numbered(3), batch_size=0), "batch size"),
    (dict(paths=numbered(3), batch_size=2, last="repeat"), "last-batch policy"),
    (dict(paths=numbered(3), batch_size=4, last="drop"), "cannot fill one batch"),
])
def test_bad_settings_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CalibrationBatches(input_size=SIZE, reader=read_number, **kwargs)


def test_non_rgb_frame_is_rejected():
    batches = CalibrationBatches(numbered(2), SIZE, 2, reader=lambda p: np.zeros((6, 8), np.uint8))
    with pytest.raises(ValueError, match="not uint8 RGB"):
        next(iter(batches))


def test_calibration_id_tracks_frames_batch_and_policy():
    a = calibration_id(numbered(10), 8, "pad")
    assert a == calibration_id(numbered(10), 8, "pad") and a.startswith("10f-b8-pad-")
    assert len({a, calibration_id(numbered(11), 8, "pad"), calibration_id(numbered(10), 4, "pad"),
                calibration_id(numbered(10), 8, "drop")}) == 4


def test_feeder_serves_every_batch_then_none_and_round_trips_the_cache(tmp_path):
    cache = CalibrationCache(tmp_path / "sub" / "model.calib")
    feeder = CalibrationFeeder(CalibrationBatches(numbered(5), SIZE, 2, reader=read_number), cache)
    assert feeder.batch_size == 2 and cache.read() is None
    served = []
    while (batch := feeder.next_batch()) is not None:
        served.append(batch)
    assert batch_ids(served) == [[0, 1], [2, 3], [4, 0]] and feeder.served == 3
    assert feeder.next_batch() is None
    cache.write(memoryview(b"TRT-8601-EntropyCalibration2\nimage: 3c010a14\n"))
    assert cache.read() == b"TRT-8601-EntropyCalibration2\nimage: 3c010a14\n"
    assert [p.name for p in cache.path.parent.iterdir()] == ["model.calib"], "atomic write leaves no temp file"


def test_empty_or_absent_cache_reads_as_none(tmp_path):
    assert CalibrationCache(None).read() is None
    CalibrationCache(None).write(b"ignored")
    empty = tmp_path / "empty.calib"
    empty.write_bytes(b"")
    assert CalibrationCache(empty).read() is None
    assert CalibrationCache(tmp_path).read() is None, "a directory is not a cache file"


def test_real_training_frames_go_through_the_node_preprocessing(model_path, data_dir):
    info = read_onnx_info(model_path)
    paths = select_frames([p.rgb for p in find_pairs(data_dir, "train")], 3)
    batch = next(iter(CalibrationBatches(paths, info.input_size, batch_size=3)))
    assert batch.shape == (3, info.input_height, info.input_width, 3) and batch.dtype == np.uint8
    for frame, path in zip(batch, paths):
        np.testing.assert_array_equal(frame, resize_image(read_rgb(path), info.input_size))
