"""The online evaluator's pure parts: palette auto-detection, stamp pairing and expiry, the sliding window and
the timely score (no ROS, real classes.yaml tables, real metrics.py)."""
from __future__ import annotations

import numpy as np
import pytest

from carla_seg_ros.classes import IGNORE_INDEX, class_names, load_coding
from carla_seg_ros.datasets import NO_HOOD
from carla_seg_ros.evaluation import metrics
from carla_seg_ros.evaluation.bag_reading import Counters
from carla_seg_ros.evaluation.ground_truth import GroundTruthDecoder
from carla_seg_ros.evaluation.online import OnlineEvaluation
from carla_seg_ros.evaluation.timely import TimelyScore, summarize_with_misses
from carla_seg_ros.image_codec import ImageRejected, from_rgb

sensor_msgs = pytest.importorskip("sensor_msgs.msg", reason="ROS 2 wheels (extra `ros`) are not installed")
NAMES = class_names()
MS = 1_000_000


def palette_msg(coding: str, tags: np.ndarray):
    from carla_seg_ros.image_codec import to_image
    return to_image(from_rgb(load_coding(coding).palette_lut()[tags], "bgra8"), "bgra8")


def test_auto_coding_from_the_palette_locks_once_decided():
    counters = Counters(log=lambda m: None)
    dec = GroundTruthDecoder("auto", "auto", NO_HOOD, counters)
    road = np.full((4, 6), 7, np.uint8)                        # tags23 Road: a colour every palette shares
    assert np.array_equal(dec.decode(palette_msg("tags23", road)), np.full((4, 6), 7)) and not dec.locked
    fence = road.copy()
    fence[0, 0] = 2                                            # tags23 Fence (100, 40, 40): only 0.9.10-0.9.13
    label = dec.decode(palette_msg("tags23", fence))
    assert dec.locked and dec.coding_name == "tags23" and label[0, 0] == 2
    other = np.full((4, 6), 3, np.uint8)                       # tags13 Other (250, 170, 160)
    dec13 = GroundTruthDecoder("palette", "auto", NO_HOOD, counters)
    assert dec13.decode(palette_msg("tags13", other))[0, 0] == 3 and dec13.coding_name == "tags13"


def test_unknown_colours_are_counted_never_guessed_and_ids_need_a_coding():
    from carla_seg_ros.image_codec import to_image
    counters = Counters(log=lambda m: None)
    rgb = load_coding("tags29").palette_lut()[np.ones((3, 3), np.uint8)]
    rgb[0, 0] = (1, 2, 3)
    label = GroundTruthDecoder("palette", "tags29", NO_HOOD, counters).decode(to_image(from_rgb(rgb, "bgra8"),
                                                                                         "bgra8"))
    assert label[0, 0] == IGNORE_INDEX and (label.ravel()[1:] == 7).all() and counters.unknown_color_pixels == 1
    ids = to_image(np.zeros((3, 3), np.uint8), "mono8")
    with pytest.raises(ImageRejected) as exc:
        GroundTruthDecoder("auto", "auto", NO_HOOD, counters).decode(ids)
    assert exc.value.reason == "ids_need_coding"
    with pytest.raises(ValueError, match="tags31"):
        GroundTruthDecoder("auto", "tags31", NO_HOOD, counters)


def frames(n, seed=0, shape=(6, 8)):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, len(NAMES), shape).astype(np.uint8) for _ in range(n)]


def test_pairing_counts_unmatched_duplicates_and_failed_frames_once():
    counters = Counters(log=lambda m: None)
    online = OnlineEvaluation(NAMES, counters, tolerance_ns=2 * MS, match_window_ns=200 * MS, window_frames=2)
    labels = frames(6)
    online.add_ground_truth(0, labels[0])
    online.add_mask(1 * MS, 5 * MS, labels[0])                # 1 ms off: paired
    online.add_mask(50 * MS, 55 * MS, labels[1])              # its ground truth never comes
    online.add_ground_truth(100 * MS, None)                   # undecodable: counted by the caller, not here
    online.add_mask(100 * MS, 105 * MS, labels[2])
    online.add_ground_truth(150 * MS, labels[3])              # its mask never comes
    online.add_ground_truth(150 * MS, labels[3])              # a duplicate stamp: unmatched
    assert online.pairing()["paired"] == 1 and online.pairing()["waiting_mask"] == 1
    online.add_mask(400 * MS, 405 * MS, labels[4])            # the stream moved 200 ms on: the old ones expire
    assert online.pairing()["unmatched_mask"] == 1 and online.pairing()["unmatched_gt"] == 2
    online.add_ground_truth(400 * MS, labels[4])
    online.add_mask(450 * MS, 455 * MS, labels[5])
    online.add_ground_truth(450 * MS, labels[5])
    online.finish()
    r = online.result()
    assert r["frames"] == 3 and online.pairing()["paired"] == 3
    assert online.pairing()["unmatched_mask"] == 1 and online.pairing()["unmatched_gt"] == 2
    assert r["window"]["frames"] == 2 and r["metrics"]["pixel_accuracy"] == 1.0
    assert [f["name"] for f in r["per_frame"]] == ["t=0.001s", "t=0.400s", "t=0.450s"]


def test_timely_score_penalises_missing_and_stale_masks_and_equals_plain_in_time():
    labels = frames(3, seed=1)
    in_time = TimelyScore(NAMES, budget_ns=50 * MS, tolerance_ns=0)
    late = TimelyScore(NAMES, budget_ns=50 * MS, tolerance_ns=0)
    plain = np.zeros((len(NAMES),) * 2, np.int64)
    for i, label in enumerate(labels):
        t = i * 50 * MS
        in_time.add_ground_truth(t, label)
        in_time.add_mask(t, t + 10 * MS, label)
        late.add_ground_truth(t, label)
        late.add_mask(t, t + 80 * MS, label)                  # 80 ms > the 50 ms budget
        plain += metrics.confusion_matrix(label, label, len(NAMES))
        in_time.advance(t + 60 * MS)
        late.advance(t + 60 * MS)
    in_time.finish()
    late.finish()
    a, b = in_time.result(), late.result()
    assert a["no_mask_frames"] == a["stale_frames"] == 0
    assert a["metrics"] == summarize_with_misses(plain, np.zeros(len(NAMES), np.int64), NAMES)
    assert a["metrics"]["pixel_accuracy"] == metrics.summarize(plain, NAMES)["pixel_accuracy"] == 1.0
    # Frame 0 had no mask by its deadline; frames 1 and 2 got the previous frame's (arrived at t-50+80 <= t+50).
    assert (b["no_mask_frames"], b["stale_frames"], b["frames"]) == (1, 2, 3)
    assert b["metrics"]["pixel_accuracy"] < 0.5 and b["metrics"]["pixels_without_mask"] == labels[0].size


def test_summarize_with_misses_counts_misses_as_wrong():
    cm = np.diag([10, 0, 0] + [0] * (len(NAMES) - 3)).astype(np.int64)
    missing = np.zeros(len(NAMES), np.int64)
    missing[0] = 10
    m = summarize_with_misses(cm, missing, NAMES)
    assert m["pixel_accuracy"] == 0.5 and m["iou"][NAMES[0]] == 0.5 and m["pixels"] == 20


def test_a_stopped_clock_cannot_hold_ground_truth_forever():
    timely = TimelyScore(NAMES, budget_ns=50 * MS, tolerance_ns=0, history=2)
    for label_index, label in enumerate(frames(12)):
        timely.add_ground_truth(label_index * 50 * MS, label)      # advance() is never called
    assert len(timely.waiting) == 8 and timely.result()["scored_before_deadline"] == 4
