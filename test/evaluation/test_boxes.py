"""Box scores (vehicle box recall, Car precision) on hand-made masks whose answers are known."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from carla_seg_ros.evaluation.boxes import (CURVE_THRESHOLDS, BoxRule, BoxScores, lighting, score_frame,
                                            scored_boxes, size_bucket)
from carla_seg_ros.unlabelled import Box, UnlabelledFrame

CAR = 10


def frame(*boxes, name="relke_000001.jpg", has_boxes=True, weather="") -> UnlabelledFrame:
    seq = name.rsplit("_", 1)[0]
    return UnlabelledFrame(name, Path(name), seq, 1, weather, tuple(boxes), has_boxes)


def mask(h=100, w=200) -> np.ndarray:
    return np.zeros((h, w), np.uint8)


def test_half_covered_box_found_at_025_missed_at_06():
    m = mask()
    m[20:60, 40:60] = CAR                               # the left half of a 40x40 box
    fr = frame(Box("car", 40, 20, 80, 60))
    tally, cov = score_frame(m, fr, CAR, BoxRule(min_area=600, coverage=0.25))
    assert cov == [0.5] and (tally.boxes, tally.found) == (1, 1)
    tally, cov = score_frame(m, fr, CAR, BoxRule(min_area=600, coverage=0.6))
    assert cov == [0.5] and (tally.boxes, tally.found) == (1, 0)
    # Every Car pixel lies inside the box: precision 1.
    assert (tally.car_pixels, tally.car_in_boxes) == (800, 800)


def test_only_large_vehicle_boxes_are_scored():
    m = mask()
    fr = frame(Box("car", 0, 0, 20, 20),                # 400 px < 600: not scored
               Box("truck", 100, 0, 140, 40),           # 1600 px: scored
               Box("bicycle", 0, 50, 100, 100),         # not a vehicle box: never scored for recall
               Box("car", 180, 50, 240, 100))           # 60x50 but only 20x50 = 1000 px inside the 200-wide mask
    tally, cov = score_frame(m, fr, CAR, BoxRule(min_area=600))
    assert tally.boxes == 2 and cov == [0.0, 0.0]
    fr2 = frame(Box("car", 190, 50, 240, 100))          # 50x50 box, only 10x50 = 500 px visible: not scored
    assert score_frame(m, fr2, CAR)[0].boxes == 0


def test_car_outside_grown_boxes_lowers_precision():
    m = mask()
    m[20:60, 40:80] = CAR                               # 1600 px: the boxed car
    m[20:60, 80:84] = CAR                               # 160 px just right of the box: inside it grown by 10 % (4 px)
    m[20:60, 84:86] = CAR                               # 80 px just outside the grown box
    m[80:90, 150:190] = CAR                             # 400 px far from every box: a made-up car
    fr = frame(Box("car", 40, 20, 80, 60))
    tally, cov = score_frame(m, fr, CAR, BoxRule(grow=0.1))
    assert cov == [1.0] and tally.found == 1
    assert (tally.car_pixels, tally.car_in_boxes) == (2240, 1760)
    assert tally.precision == pytest.approx(1760 / 2240)
    tally, _ = score_frame(m, fr, CAR, BoxRule(grow=0.0))
    assert tally.car_in_boxes == 1600
    # A box of any class counts for precision: a motorbike box around the far pixels makes them right.
    tally, _ = score_frame(m, frame(Box("car", 40, 20, 80, 60), Box("motorbike", 150, 80, 190, 90)), CAR,
                           BoxRule(grow=0.1))
    assert tally.car_in_boxes == 2160 and tally.car_pixels == 2240


def test_frames_of_an_unboxed_source_do_not_count_in_precision():
    m = mask()
    m[:10, :10] = CAR
    scores = BoxScores(CAR)
    scores.add(m, frame(name="ahvmousavi_night_3.jpg", has_boxes=False, weather="night"))
    assert scores.total.car_pixels == 0 and scores.total.precision is None and scores.total.boxed_frames == 0
    # A boxed source's frame with no box: all its Car pixels are outside every box.
    scores.add(m, frame())
    assert (scores.total.car_pixels, scores.total.car_in_boxes, scores.total.boxed_frames) == (100, 0, 1)
    r = scores.result()
    assert r["overall"]["frames"] == 2 and r["overall"]["car_precision"] == 0.0
    assert r["groups"]["weather=night"]["car_precision"] is None
    assert r["groups"]["source=ahvmousavi"]["car_pixels"] == 0
    # The Car share counts every frame, boxed or not: 100 Car pixels of 20000 in each frame.
    assert r["groups"]["weather=night"]["car_share"] == pytest.approx(100 / 20000)
    assert r["overall"]["car_share"] == pytest.approx(200 / 40000)


def test_mask_of_another_size_is_scaled():
    # Boxes refer to an 800x600 image; the mask is 400x300 (model size): the box's pixels are found at half scale.
    m = np.zeros((300, 400), np.uint8)
    m[100:150, 200:225] = CAR                           # the left half of box 400..500 x 200..300 at half scale
    fr = frame(Box("car", 400, 200, 500, 300))
    tally, cov = score_frame(m, fr, CAR, image_size=(800, 600))
    assert cov == [0.5] and tally.found == 1 and tally.car_in_boxes == tally.car_pixels == 1250
    # Read at full scale by mistake (no image_size), the box would lie outside the 400x300 mask: nothing found.
    assert score_frame(m, fr, CAR)[0].found == 0
    # min_area is in pixels of the boxes' image, not of the mask: 100x100 = 10000 px.
    assert score_frame(m, fr, CAR, BoxRule(min_area=10000), image_size=(800, 600))[0].boxes == 1
    assert score_frame(m, fr, CAR, BoxRule(min_area=10001), image_size=(800, 600))[0].boxes == 0
    # The same numbers as on the full-size mask.
    big = np.kron(m, np.ones((2, 2), np.uint8))
    assert score_frame(big, fr, CAR)[1] == cov


def test_groups_curve_and_size_buckets():
    scores = BoxScores(CAR, BoxRule(min_area=600, coverage=0.25))
    dark, lit = np.full((100, 200, 3), 20, np.uint8), np.full((100, 200, 3), 120, np.uint8)
    assert lighting(dark) == "dark" and lighting(lit) == "lit"
    m = mask()
    m[0:40, 0:10] = CAR                                 # box A (40x40): coverage 0.25
    m[50:100, 100:200] = CAR                            # box B (100x50 = 5000 px): coverage 1
    fr = frame(Box("car", 0, 0, 40, 40), Box("truck", 100, 50, 200, 100))
    scores.add(m, fr, dark)
    scores.add(mask(), frame(Box("car", 0, 0, 40, 40), name="relke_000002.jpg"), lit)   # coverage 0
    r = json.loads(json.dumps(scores.result()))          # JSON-ready
    assert r["overall"]["vehicle_boxes"] == 3 and r["overall"]["found"] == 2
    assert r["groups"]["lighting=dark"]["found"] == 2 and r["groups"]["lighting=lit"]["recall"] == 0.0
    assert r["per_frame"][0]["groups"] == ["source=relke", "lighting=dark"]
    assert r["per_frame"][0]["box_areas"] == [1600.0, 5000.0] and r["per_frame"][0]["box_classes"] == ["car", "truck"]
    curve = {c["coverage"]: c["found"] for c in r["recall_by_coverage"]}
    assert list(curve) == list(CURVE_THRESHOLDS) and CURVE_THRESHOLDS[0] == 0.05 and CURVE_THRESHOLDS[-1] == 0.75
    assert curve[0.25] == 2 and curve[0.3] == 1 and curve[0.75] == 1
    assert [c["recall"] for c in r["recall_by_coverage"] if c["coverage"] == 0.25] == [r["overall"]["recall"]]
    sizes = r["by_box_size"]
    assert sizes["<2k px"]["vehicle_boxes"] == 2 and sizes["<2k px"]["found"] == 1
    assert sizes["2k-8k px"]["coverages"] == [1.0] and sizes[">=32k px"]["recall"] is None
    assert size_bucket(1999) == "<2k px" and size_bucket(2000) == "2k-8k px" and size_bucket(10 ** 6) == ">=32k px"


def test_scored_boxes_are_clipped():
    fr = frame(Box("car", -20, 10, 30, 50), Box("person", 0, 0, 50, 50))
    assert scored_boxes(fr, BoxRule(min_area=600), (100, 100)) == [Box("car", 0, 10, 30, 50)]   # 1200 visible px
