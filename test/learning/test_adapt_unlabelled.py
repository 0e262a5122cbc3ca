"""`carla-seg adapt --unlabelled BAG`: RGB-only frames from a bag self-train the shipped model (the recipe of
`carla-seg self-train`), box recall is reported before and after on the held-out block, and the model installs.

The bag holds 60 consecutive carla_unlabelled frames of one boxed recording (relke_), its boxes given with
--boxes under the names adapt gives the frames; a few self-training steps only (CI sized: no claim on the gain).
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("rosbags", reason="rosbags (extra `ros`) is not installed")
from carla_seg_ros.learning import adapt  # noqa: E402
from carla_seg_ros.runtime import user_models  # noqa: E402
from carla_seg_ros.unlabelled import read_unlabelled  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adapt_frames import make_rgb_bag  # noqa: E402

FRAMES = 60


def test_adapt_unlabelled_bag_reports_box_recall_and_installs(tmp_path, unlabelled_dir, data_dir):
    frames = [f for f in read_unlabelled(unlabelled_dir) if f.sequence == "relke"][:FRAMES]
    assert len(frames) == FRAMES and sum(len(f.boxes) for f in frames) > 20
    bag = make_rgb_bag([f.path for f in frames], tmp_path / "drive")
    boxes = tmp_path / "boxes.csv"
    with open(boxes, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "cls", "xmin", "ymin", "xmax", "ymax"])
        for k, frame in enumerate(frames):
            for b in frame.boxes:
                w.writerow([f"bag_{k:06d}.png", b.cls, b.x0, b.y0, b.x1, b.y1])
    keep = tmp_path / "keep"               # the labelled frames self-training keeps learning from: a small sample
    for split in ("train", "val"):
        for kind in ("rgb", "label"):
            (keep / split / kind).mkdir(parents=True)
    for split, names in (("train", sorted((data_dir / "train" / "rgb").glob("*.png"))[::40]),
                         ("val", sorted((data_dir / "val" / "rgb").glob("*.png"))[::10])):
        for rgb in names:
            (keep / split / "rgb" / rgb.name).symlink_to(rgb)
            (keep / split / "label" / rgb.name).symlink_to(rgb.parent.parent / "label" / rgb.name)
    models = tmp_path / "models"
    assert adapt.main(["--unlabelled", str(bag), "--boxes", str(boxes), "--keep-data", str(keep), "--out",
                       str(tmp_path / "run"), "--steps", "2", "--batch-size", "2", "--threads", "2",
                       "--name", "unl", "--models-dir", str(models)]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]["held_out"]
    for which in ("before", "after"):
        assert 0.0 <= metrics[which]["vehicle_box_recall"] <= 1.0 and metrics[which]["frames"] >= 8
    [model] = user_models.installed(models)
    assert model.name == "unl" and model.record["metrics"]["held_out"]["before"]["vehicle_box_recall"] is not None
    html = (tmp_path / "run" / "report.html").read_text()
    assert "vehicle box recall" in html and "keep-data (old domain)" in html       # the labelled guard scored too
    keep = json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]["keep"]
    assert keep["before"]["frames"] == keep["after"]["frames"] > 0
