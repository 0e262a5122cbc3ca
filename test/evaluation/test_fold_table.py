"""Fold table rows, summary, the win rule (mean up and no fold losing badly) and `carla-seg compare-folds`;
false-positive sources of Car pixels outside every box. Synthetic masks with known answers."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from carla_seg_ros.evaluation.boxes import BoxRule, BoxScores
from carla_seg_ros.evaluation.false_positives import false_positive_counts
from carla_seg_ros.evaluation.fold_compare import main as compare_main
from carla_seg_ros.evaluation.fold_table import (compare_tables, fold_row, format_comparison, format_table,
                                                 make_table, summarise)
from carla_seg_ros.unlabelled import Box, UnlabelledFrame

CAR = 3
H, W = 60, 80


def frame(name, boxes, has_boxes=True):
    return UnlabelledFrame(name, Path(name), "relke", 1, "", tuple(boxes), has_boxes)


def mask(*filled):
    m = np.zeros((H, W), np.uint8)
    for r0, r1, c0, c1 in filled:
        m[r0:r1, c0:c1] = CAR
    return m


def test_fold_row_counts_class_size_and_lighting():
    rule = BoxRule(min_area=100)
    scores = BoxScores(CAR, rule)
    small_car = Box("car", 0, 0, 20, 20)          # 400 px: small
    truck = Box("truck", 20, 0, 80, 60)           # 3600 px: medium, missed
    scores.add(mask((0, 20, 0, 20)), frame("a", [small_car, truck]), np.full((H, W, 3), 200, np.uint8))
    big = Box("car", 0, 0, 80, 60)                # 4800 px but the frame is dark
    scores.add(mask((0, 60, 0, 80)), frame("b", [big]), np.full((H, W, 3), 10, np.uint8))
    row = fold_row("stretch1", scores)
    assert (row["recall_found"], row["recall_boxes"]) == (2, 3)
    assert row["recall_car"] == 1.0 and row["recall_truck"] == 0.0
    assert row["recall_small"] == 1.0 and row["recall_medium_boxes"] == 2 and row["recall_medium"] == 0.5
    assert row["recall_large"] is None
    assert row["recall_night"] == 1.0 and row["recall_day"] == 0.5
    assert row["car_precision"] == 1.0


def table(values: dict[str, float], score="recall") -> dict:
    rows = [{"fold": f, "stretch": True, "frames": 10, score: v, f"{score}_found": 0, f"{score}_boxes": 0}
            for f, v in values.items()]
    rows.append({"fold": "ahvmousavi", "stretch": False, "frames": 10, score: None})
    for r in rows:
        for k in ("car_precision", "car_share"):
            r.setdefault(k, None)
    return {"kind": "carla-seg fold table", "folds": rows, "summary": summarise(rows)}


def test_summary_is_over_stretch_folds_only():
    s = summarise(table({"s1": 0.6, "s2": 0.8, "s3": 0.7, "s4": 0.9})["folds"])["recall"]
    assert s["mean"] == pytest.approx(0.75) and s["min"] == 0.6 and s["worst_fold"] == "s1" and s["folds"] == 4
    assert s["std"] == pytest.approx(np.std([0.6, 0.8, 0.7, 0.9], ddof=1))


@pytest.mark.parametrize("new, wins", [
    ({"s1": 0.65, "s2": 0.82, "s3": 0.71, "s4": 0.90}, True),     # up on the mean, no fold down
    ({"s1": 0.58, "s2": 0.85, "s3": 0.75, "s4": 0.92}, True),     # one fold 2 points down: tolerated
    ({"s1": 0.50, "s2": 0.95, "s3": 0.85, "s4": 0.99}, False),    # mean up a lot, but s1 loses 10 points
    ({"s1": 0.60, "s2": 0.80, "s3": 0.70, "s4": 0.90}, False),    # equal: no gain
    ({"s1": 0.59, "s2": 0.79, "s3": 0.69, "s4": 0.89}, False),    # down everywhere
])
def test_win_rule(new, wins):
    base = table({"s1": 0.6, "s2": 0.8, "s3": 0.7, "s4": 0.9})
    verdict = compare_tables(base, table(new), max_fold_loss=0.03)
    assert verdict["wins"] is wins
    assert ("WINS" in format_comparison(verdict)) is wins


def test_win_rule_names_the_losing_fold_and_ignores_folds_missing_in_one_table():
    base = table({"s1": 0.6, "s2": 0.8, "s3": 0.7, "s4": 0.9})
    verdict = compare_tables(base, table({"s1": 0.5, "s2": 0.95, "s3": 0.85}))
    assert verdict["worst_fold"] == "s1" and verdict["folds_not_compared"] == ["s4"]
    assert any("s1" in r for r in verdict["reasons"])
    with pytest.raises(ValueError, match="not a fold table"):
        compare_tables({"folds": []}, base)
    with pytest.raises(ValueError, match="no stretch fold"):
        compare_tables(base, table({"x": 0.9}))


def test_compare_folds_command(tmp_path, capsys):
    base, better, worse = tmp_path / "base.json", tmp_path / "better.json", tmp_path / "worse.json"
    base.write_text(json.dumps(make_table(table({"s1": 0.6, "s2": 0.8})["folds"], {"rule": "test"})))
    better.write_text(json.dumps(make_table(table({"s1": 0.7, "s2": 0.8})["folds"], {"rule": "test"})))
    worse.write_text(json.dumps(make_table(table({"s1": 0.4, "s2": 0.99})["folds"], {"rule": "test"})))
    out = tmp_path / "verdict.json"
    assert compare_main([str(base), str(better), "--json", str(out), "--show"]) == 0
    assert json.loads(out.read_text())["wins"] is True
    assert compare_main([str(base), str(worse)]) == 1
    assert "loses" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text("{")
    assert compare_main([str(base), str(tmp_path / "bad.json")]) == 2
    assert "is not JSON" in capsys.readouterr().err
    assert compare_main([str(base), str(tmp_path / "missing.json")]) == 2


def test_format_table_has_every_fold_mean_and_worst():
    text = format_table(make_table(table({"s1": 0.6, "s2": 0.8})["folds"], {"rule": "test"}))
    assert "| s1 |" in text and "| ahvmousavi |" in text and "| pooled |" in text
    assert "0.700 ± 0.141" in text and "0.600 (s1)" in text


def test_false_positive_sources():
    box = Box("car", 0, 0, 20, 20)
    pred = mask((0, 20, 0, 20),          # inside the box (grown by 10 %: up to 22 px)
                (50, 60, 40, 80),        # 400 px outside, bottom third: one blob of 400/4800 = 8 % of the frame
                (25, 26, 70, 71))        # 1 px speckle in the middle band
    c = false_positive_counts(pred, frame("a", [box]), CAR, BoxRule())
    assert c["fp_pixels"] == 401 and c["fp_bottom"] == 400 and c["fp_middle"] == 1 and c["fp_top"] == 0
    assert c["fp_car_sized_large"] == 400 and c["fp_speckle"] == 1
    # a source without boxes: no Car pixel can be judged false
    assert false_positive_counts(pred, frame("b", [], has_boxes=False), CAR)["fp_pixels"] == 0
    # the boxes' own size: a mask at half the frame's size
    half = pred[::2, ::2]
    assert false_positive_counts(half, frame("a", [box]), CAR, BoxRule(), (W, H))["fp_bottom"] == 100
