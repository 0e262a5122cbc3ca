"""The input size policy (runtime/input_size.py): fixed-shape models squash as always, keep_aspect models run each
frame at the model's height and the frame's aspect, width rounded to a multiple of 32 within the metadata's bounds;
the Segmenter batches by size; OpenVINO keeps a bounded cache of compiled widths; the TensorRT profile follows."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from carla_seg_ros import classes
from carla_seg_ros.runtime import input_size
from carla_seg_ros.runtime.inference import Segmenter, group_by_size
from carla_seg_ros.runtime.input_size import (KEEP_ASPECT, accepts, input_size_for, keep_aspect_fields,
                                              tensorrt_width_profile, width_for_aspect, width_range)
from carla_seg_ros.runtime.model_info import ModelInfo

FIXED = ModelInfo(input_width=384, input_height=288, classes=classes.class_table(), mean=[0.5] * 3, std=[0.5] * 3)
ASPECT = dataclasses.replace(FIXED, **keep_aspect_fields(384, 288))


def test_export_bounds_are_4_3_to_8_3_in_steps_of_32():
    assert (ASPECT.input_policy, ASPECT.min_width, ASPECT.max_width, ASPECT.width_multiple) == \
        (KEEP_ASPECT, 384, 768, 32)
    small = keep_aspect_fields(96, 64)
    assert (small["min_width"], small["max_width"]) == (96, 160)     # 64 * 8/3 = 170.7 -> 160


@pytest.mark.parametrize("frame, expected", [
    ((800, 600), (384, 288)),       # CARLA's default camera: exactly as before
    ((400, 300), (384, 288)),
    ((1280, 720), (512, 288)),      # 16:9
    ((1920, 1080), (512, 288)),
    ((1280, 800), (448, 288)),      # 16:10: 460.8 -> 448
    ((2048, 1024), (576, 288)),     # 2:1
    ((2560, 1080), (672, 288)),     # 21:9: 682.7 -> 672
    ((1382, 512), (768, 288)),      # the 2.7:1 stereo camera: 777.4 -> 768, its own aspect within 1.2 %
])
def test_width_follows_the_camera_aspect(frame, expected):
    assert input_size_for(frame, ASPECT) == expected


def test_rounding_is_half_up_to_the_multiple():
    # 288 * W / H / 32 = 14.5 exactly at W/H = 14.5 * 32 / 288: half-up gives 15 * 32 (Python's round would give 14).
    assert width_for_aspect(288, 14.5 * 32 / 288) == 480
    assert width_for_aspect(288, 14.49 * 32 / 288) == 448
    assert width_for_aspect(288, 12.5 * 32 / 288) == 416       # round(12.5) would be 12 -> 384
    assert width_for_aspect(288, 0.0) == 32                     # never below one multiple


@pytest.mark.parametrize("frame, expected", [
    ((600, 800), (384, 288)),       # portrait: widened to the minimum (the 4:3 width)
    ((1, 1000), (384, 288)),
    ((100000, 1), (768, 288)),      # wider than 8:3: squashed to the maximum
    ((3000, 500), (768, 288)),
    ((1, 1), (384, 288)),
    ((641, 479), (384, 288)),       # odd sizes: 385.4 -> 384
    ((1281, 721), (512, 288)),
])
def test_bounds_and_odd_sizes(frame, expected):
    assert input_size_for(frame, ASPECT) == expected


@pytest.mark.parametrize("frame", [(800, 600), (1382, 512), (600, 800), (1280, 720)])
def test_a_fixed_shape_model_squashes_every_frame_as_before(frame):
    assert input_size_for(frame, FIXED) == (384, 288)
    assert width_range(FIXED) == (384, 384)


def test_zero_sized_frames_are_an_error():
    with pytest.raises(ValueError, match="positive"):
        input_size_for((0, 600), ASPECT)


def test_accepts():
    assert accepts((384, 288), FIXED) and not accepts((512, 288), FIXED)
    assert all(accepts((w, 288), ASPECT) for w in range(384, 769, 32))
    assert not accepts((352, 288), ASPECT) and not accepts((800, 288), ASPECT)
    assert not accepts((400, 288), ASPECT) and not accepts((512, 300), ASPECT)


def test_metadata_without_a_policy_reads_as_fixed_and_bad_policies_are_rejected():
    old = json.loads(FIXED.to_json())
    for key in ("input_policy", "min_width", "max_width", "width_multiple"):
        old.pop(key)
    info = ModelInfo.from_json(json.dumps(old))          # what the files exported before keep_aspect hold
    assert info.input_policy == "fixed" and input_size_for((1382, 512), info) == (384, 288)
    assert ModelInfo.from_json(ASPECT.to_json()) == ASPECT
    for bad in ({"input_policy": "stretch"}, {**keep_aspect_fields(384, 288), "max_width": 300},
                {**keep_aspect_fields(384, 288), "max_width": 770}):
        with pytest.raises(ValueError):
            ModelInfo.from_json(json.dumps({**old, **bad}))


def test_tensorrt_width_profile():
    assert tensorrt_width_profile(ASPECT) == (384, 384, 768)    # 4:3 .. 8:3 (16:9 = 512, 21:9 = 672 inside)
    assert tensorrt_width_profile(ASPECT, opt_width=512) == (384, 512, 768)
    assert tensorrt_width_profile(FIXED) == (384, 384, 384)
    with pytest.raises(ValueError, match="opt width"):
        tensorrt_width_profile(ASPECT, opt_width=500)
    assert input_size.width_for_aspect(288, 21 / 9) <= tensorrt_width_profile(ASPECT)[2]


class RecordingBackend:
    """Stands in for a Backend: records the shapes it is called with, returns ids = the column index % 13."""

    def __init__(self, info):
        self.info = info
        self.calls = []

    def input_size_for(self, frame_wh):
        return input_size_for(frame_wh, self.info)

    def infer(self, images):
        self.calls.append(images.shape)
        n, h, w, _ = images.shape
        ids = np.broadcast_to((np.arange(w) % 13).astype(np.uint8), (n, h, w)).copy()
        return ids, ids.copy()


def test_segmenter_batches_frames_by_input_size_and_answers_at_each_frame_size():
    backend = RecordingBackend(ASPECT)
    frames = [np.zeros((600, 800, 3), np.uint8), np.zeros((720, 1280, 3), np.uint8),
              np.zeros((300, 400, 3), np.uint8), np.zeros((512, 1382, 3), np.uint8)]
    ids, conf = Segmenter(backend).segment_batch(frames)
    assert backend.calls == [(2, 288, 384, 3), (1, 288, 512, 3), (1, 288, 768, 3)]
    assert [i.shape for i in ids] == [f.shape[:2] for f in frames] == [c.shape for c in conf]
    fixed = RecordingBackend(FIXED)
    Segmenter(fixed).segment_batch(frames)
    assert fixed.calls == [(4, 288, 384, 3)]                       # squashed, one call, as before


def test_group_by_size_keeps_first_appearance_order():
    assert group_by_size(["b", "a", "b", "c", "a"]) == {"b": [0, 2], "a": [1, 4], "c": [3]}


def test_backend_rejects_widths_outside_the_policy(model_path):
    from carla_seg_ros.runtime.backends import create_backend
    backend = create_backend("onnxruntime", model_path)
    lo, hi = width_range(backend.info)
    with pytest.raises(ValueError, match="expected uint8"):
        backend.infer(np.zeros((1, 288, hi + 32, 3), np.uint8))
    with pytest.raises(ValueError, match="expected uint8"):
        backend.infer(np.zeros((1, 300, lo, 3), np.uint8))


def test_openvino_compiles_each_width_once_in_a_bounded_cache(model_path):
    pytest.importorskip("openvino")
    from carla_seg_ros.runtime.backends import create_backend
    from carla_seg_ros.runtime.backends import openvino_backend
    backend = create_backend("openvino", model_path)
    if backend.info.input_policy != KEEP_ASPECT:
        pytest.skip("the committed model has a fixed shape")
    assert backend.compiled_widths == [384] and backend.compilations == 1
    frame = np.zeros((1, 288, 512, 3), np.uint8)
    backend.infer(frame)
    backend.infer(frame)
    assert backend.compiled_widths == [384, 512] and backend.compilations == 2
    widths = [416, 448, 480, 544]
    for w in widths:
        ids, _ = backend.infer(np.zeros((1, 288, w, 3), np.uint8))
        assert ids.shape == (1, 288, w)
    assert len(backend.compiled_widths) == openvino_backend.SHAPE_CACHE
    assert backend.compiled_widths == widths[-openvino_backend.SHAPE_CACHE:]    # least recently used dropped

