"""`carla-seg evaluate-boxes --folds`: real ONNX Runtime inference with the committed model on a small folder of real
frames and their real boxes; the fold table must add up to what `evaluate-boxes --part all` finds on the same
frames."""
from __future__ import annotations

import csv
import json
import shutil

import pytest

from carla_seg_ros.evaluation.box_eval import main as box_main
from carla_seg_ros.unlabelled import read_unlabelled

NIGHT = ["ahvmousavi_night_50.jpg", "ahvmousavi_fog_150.jpg"]


@pytest.fixture
def folder(tmp_path, unlabelled_dir):
    """12 real relke frames with a vehicle box each, spread over the recording, and 2 ahvmousavi frames."""
    frames = read_unlabelled(unlabelled_dir)
    boxed = [fr.name for fr in frames if any(b.cls in ("car", "truck") for b in fr.boxes)]
    relke = [boxed[i * len(boxed) // 12] for i in range(12)]
    root = tmp_path / "unl"
    (root / "rgb").mkdir(parents=True)
    for name in relke + NIGHT:
        shutil.copy(unlabelled_dir / "rgb" / name, root / "rgb" / name)
    with open(unlabelled_dir / "boxes.csv", newline="") as f, open(root / "boxes.csv", "w", newline="") as g:
        reader = csv.DictReader(f)
        w = csv.DictWriter(g, reader.fieldnames)
        w.writeheader()
        w.writerows(r for r in reader if r["name"] in relke)
    with open(root / "manifest.csv", "w", newline="") as f:
        csv.writer(f).writerows([["name", "weather"]] + [[n, ""] for n in relke] + [[n, n.split("_")[1]]
                                                                                     for n in NIGHT])
    return root


def test_fold_table_adds_up_to_the_whole_folder(tmp_path, folder, model_path, capsys):
    out = tmp_path / "folds" / "v3.json"
    assert box_main(["--data", str(folder), "--model", str(model_path), "--folds", "4", "--json", str(out)]) == 0
    table = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert table["kind"] == "carla-seg fold table"
    assert [r["fold"] for r in table["folds"]] == ["stretch1", "stretch2", "stretch3", "stretch4", "ahvmousavi"]
    assert [r["frames"] for r in table["folds"]] == [3, 3, 3, 3, 2]
    assert table["plan"]["guard_frame_numbers"] >= 100
    assert "| stretch1 |" in printed and "mean ± std" in printed
    assert "outside every box" in (out.parent / "v3.md").read_text()

    whole = tmp_path / "all.json"
    assert box_main(["--data", str(folder), "--model", str(model_path), "--part", "all", "--json", str(whole),
                     "--samples", "0"]) == 0
    overall = json.loads(whole.read_text())["overall"]
    pooled = table["pooled"]
    assert (pooled["recall_found"], pooled["recall_boxes"]) == (overall["found"], overall["vehicle_boxes"])
    assert pooled["car_pixels"] == overall["car_pixels"]
    assert pooled["car_precision"] == pytest.approx(overall["car_precision"])
    # class and size buckets partition the boxes
    for row in table["folds"] + [pooled]:
        assert row["recall_car_boxes"] + row["recall_truck_boxes"] == row["recall_boxes"]
        assert sum(row[f"recall_{s}_boxes"] for s in ("small", "medium", "large")) == row["recall_boxes"]
        assert row["fp_pixels"] == row["car_pixels"] - row["car_pixels_in_boxes"]
    assert table["folds"][-1]["recall"] is None and table["folds"][-1]["car_share"] is not None


@pytest.mark.parametrize("args, message", [(["--folds", "0"], "--folds must be >= 1"),
                                           (["--folds", "4", "--guard", "50"], "--guard must be >= 100")])
def test_bad_fold_arguments(folder, model_path, args, message, capsys):
    assert box_main(["--data", str(folder), "--model", str(model_path), *args]) == 2
    assert message in capsys.readouterr().err
