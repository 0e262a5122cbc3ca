"""`carla-seg evaluate-boxes`: real ONNX Runtime inference with the committed model on small folders built from real
unlabelled frames and hand-made boxes."""
from __future__ import annotations

import csv
import json
import shutil

import pytest

from carla_seg_ros import cli
from carla_seg_ros.evaluation.box_eval import main as box_main
from carla_seg_ros.runtime.backends import create_backend
from carla_seg_ros.runtime.inference import Segmenter
from carla_seg_ros.unlabelled import read_frame, read_unlabelled

RELKE = ["relke_000428.jpg", "relke_000465.jpg", "relke_000499.jpg", "relke_000525.jpg", "relke_000552.jpg",
         "relke_000612.jpg", "relke_000692.jpg", "relke_000712.jpg", "relke_000772.jpg", "relke_000792.jpg"]
NIGHT = ["ahvmousavi_night_50.jpg", "ahvmousavi_night_51.jpg"]
FULL = ["0", "0", "800", "600"]          # a hand-made box over the whole frame: every Car pixel lies inside it
JSON_KEYS = {"rule", "overall", "groups", "recall_by_coverage", "by_box_size", "per_frame", "command", "data",
             "part", "split", "frames_selected", "frames_scored", "unreadable", "model", "timing", "files"}


@pytest.fixture
def folder(tmp_path, unlabelled_dir):
    """10 real relke frames (each with a full-frame car box; the first also with a real box and a far bicycle box)
    and 2 night frames of an unboxed source."""
    root = tmp_path / "unl"
    (root / "rgb").mkdir(parents=True)
    for name in RELKE + NIGHT:
        shutil.copy(unlabelled_dir / "rgb" / name, root / "rgb" / name)
    rows = [[n, "car", *FULL, "hand"] for n in RELKE]
    rows += [[RELKE[0], "bicycle", "0", "0", "10", "10", "hand"]]
    with open(unlabelled_dir / "boxes.csv", newline="") as f:
        rows += [[r["name"], r["cls"], r["xmin"], r["ymin"], r["xmax"], r["ymax"], "real"]
                 for r in csv.DictReader(f) if r["name"] == RELKE[0]]
    write_boxes(root, rows)
    with open(root / "manifest.csv", "w", newline="") as f:
        csv.writer(f).writerows([["name", "weather"]] + [[n, ""] for n in RELKE] + [[n, "night"] for n in NIGHT])
    return root


def write_boxes(root, rows):
    with open(root / "boxes.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "cls", "xmin", "ymin", "xmax", "ymax", "source_format"])
        w.writerows(rows)


def run(tmp_path, folder, model_path, *args) -> dict:
    out = tmp_path / "out" / "boxes.json"
    assert box_main(["--data", str(folder), "--model", str(model_path), "--json", str(out), "--samples", "3",
                     *args]) == 0
    return json.loads(out.read_text())


def test_all_frames_against_direct_inference(tmp_path, folder, model_path, capsys):
    r = run(tmp_path, folder, model_path, "--part", "all", "--batch-size", "3")
    assert JSON_KEYS <= r.keys()
    assert r["frames_scored"] == 12 and r["unreadable"]["count"] == 0 and r["model"]["backend"] == "onnxruntime"
    # The same numbers as the Segmenter (the node's resize path) followed by a hand count.
    segmenter = Segmenter(create_backend("onnxruntime", model_path))
    frames = {f.name: f for f in read_unlabelled(folder)}
    per_frame = {f["name"]: f for f in r["per_frame"]}
    car_share = {}
    for name in RELKE[:4] + NIGHT[:1]:
        ids, _ = segmenter.segment(read_frame(frames[name]))
        assert ids.shape == (600, 800)
        car_share[name] = float((ids == 10).mean())
        if name in RELKE:
            # The full-frame box's coverage is the frame's share of Car pixels; all of them are in a box.
            assert per_frame[name]["coverages"][0] == pytest.approx(car_share[name], abs=1e-4)
            assert per_frame[name]["car_pixels"] == per_frame[name]["car_pixels_in_boxes"] == int((ids == 10).sum())
        else:
            assert per_frame[name]["car_pixels"] == 0 and per_frame[name]["coverages"] == []
            assert per_frame[name]["car_share"] == pytest.approx(car_share[name])
    o = r["overall"]
    assert o["boxed_frames"] == 10 and o["car_precision"] in (1.0, None)
    assert o["vehicle_boxes"] == 10 + len(per_frame[RELKE[0]]["coverages"]) - 1
    assert set(r["groups"]) >= {"source=relke", "source=ahvmousavi", "weather=night"}
    assert r["groups"]["source=ahvmousavi"]["car_pixels"] == 0
    assert sum(r["groups"][k]["frames"] for k in r["groups"] if k.startswith("lighting=")) == 12
    # Recall at 0.25 is on the curve, and the curve never rises with the threshold.
    curve = [c["recall"] for c in r["recall_by_coverage"]]
    assert curve == sorted(curve, reverse=True)
    assert dict((c["coverage"], c["recall"]) for c in r["recall_by_coverage"])[0.25] == o["recall"]
    for key in ("recall_curve_png", "coverage_by_size_png", "samples_png", "report_md", "report_html"):
        assert (tmp_path / "out" / r["files"][key].split("/")[-1]).is_file(), key
    html = (tmp_path / "out" / "boxes_report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "src=\"http" not in html
    md = (tmp_path / "out" / "boxes_report.md").read_text()
    assert "## Per source" in md and "## Per weather" in md and "## Per lighting" in md
    out = capsys.readouterr().out
    assert "vehicle box recall" in out and "source=relke" in out and "Car precision" in out


def test_parts_match_and_rule_options(tmp_path, folder, model_path):
    # 10 relke frames: 5 blocks of 2, the last held out, 2 guard frames before it, 6 pool; the 2 night frames: pool.
    held = run(tmp_path, folder, model_path)
    assert held["part"] == "held_out" and [f["name"] for f in held["per_frame"]] == RELKE[8:]
    assert (held["split"]["pool"], held["split"]["held_out"], held["split"]["guard"]) == (8, 2, 2)
    pool = run(tmp_path, folder, model_path, "--part", "pool", "--match", "relke_*", "--limit", "4")
    assert [f["name"] for f in pool["per_frame"]] == RELKE[:4] and pool["match"] == ["relke_*"]
    strict = run(tmp_path, folder, model_path, "--part", "pool", "--match", "relke_*", "--limit", "4",
                 "--coverage", "0.9", "--grow", "0", "--min-area", "100")
    assert strict["rule"]["coverage"] == 0.9 and strict["rule"]["min_area_px"] == 100.0
    assert strict["overall"]["found"] <= pool["overall"]["found"]
    assert [f["coverages"] for f in strict["per_frame"]][1:] == [f["coverages"] for f in pool["per_frame"]][1:]


def test_unreadable_image_is_counted_and_skipped(tmp_path, folder, model_path, capsys):
    (folder / "rgb" / RELKE[1]).write_bytes(b"\xff\xd8 not really a jpeg")
    r = run(tmp_path, folder, model_path, "--part", "all")
    assert r["frames_selected"] == 12 and r["frames_scored"] == 11
    assert r["unreadable"]["count"] == 1 and r["unreadable"]["names"] == [RELKE[1]]
    assert "cannot read image" in r["unreadable"]["errors"][0]
    assert "1 unreadable skipped" in capsys.readouterr().out


def test_bad_input_is_one_clear_error(tmp_path, folder, model_path, capsys):
    def error(*args) -> str:
        assert box_main(["--model", str(model_path), "--json", str(tmp_path / "x.json"), *args]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        errors = [line for line in lines if line.startswith("carla-seg evaluate-boxes: ")]
        assert len(errors) == 1 and lines[-1] == errors[0]    # one error line, last (after a progress bar, if any)
        return errors[0]

    assert "does not exist" in error("--data", str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    assert "no rgb/ folder" in error("--data", str(tmp_path / "empty"))
    assert "matches nothing_*" in error("--data", str(folder), "--part", "all", "--match", "nothing_*")
    assert "has boxes" in error("--data", str(folder), "--part", "all", "--match", "ahvmousavi_*")
    assert "--coverage" in error("--data", str(folder), "--coverage", "0")
    (folder / "boxes.csv").write_text((folder / "boxes.csv").read_text() + "relke_000428.jpg,car,1,2\n")
    assert "bad box row" in error("--data", str(folder))
    (folder / "boxes.csv").unlink()
    assert "has boxes" in error("--data", str(folder), "--part", "all")      # no boxes.csv: nothing to score
    write_boxes(folder, [[n, "car", *FULL, "hand"] for n in RELKE])
    for name in RELKE + NIGHT:
        (folder / "rgb" / name).write_bytes(b"")
    assert "could be read" in error("--data", str(folder), "--part", "all")
    assert not (tmp_path / "x.json").exists()


def test_cli_registers_the_command(capsys):
    assert "evaluate-boxes" in cli.COMMANDS
    with pytest.raises(SystemExit) as exc:
        cli.main(["evaluate-boxes", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for option in ("--data", "--part", "--model", "--backend", "--threads", "--batch-size", "--min-area",
                   "--coverage", "--grow", "--match", "--limit", "--json", "--out-dir", "--samples", "Examples:"):
        assert option in out, option
    assert "--hood" not in out
