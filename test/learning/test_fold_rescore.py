"""`carla-seg rescore-folds` on a real (tiny) `self-train --cv` run: at the run's own height and alpha 1 it gives the
row the run wrote for its student; mixed all the way back (alpha 0) it gives the run's step-0 row; another height
and bad inputs are handled."""
from __future__ import annotations

import json

import pytest

from carla_seg_ros.learning import fold_rescore
from carla_seg_ros.learning import self_train as st
from carla_seg_ros.paths import models_dir

SCORES = ("recall", "recall_found", "recall_boxes", "car_precision", "car_share")


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory, data_dir, unlabelled_dir):
    out = tmp_path_factory.mktemp("cv") / "run"
    assert st.main(["--unlabelled", str(unlabelled_dir), "--data", str(data_dir), "--out", str(out),
                    "--limit-images", "4", "--batch", "2", "--steps", "1", "--threads", "2", "--teacher", "fixed",
                    "--folds", "4", "--cv", "--cv-folds", "0", "--car-negative-weight", "1.0",
                    "--init", str(models_dir() / "carla_unet.safetensors")]) == 0
    return out


def rows(path):
    return json.loads(path.read_text())["folds"]


def test_alpha_one_reproduces_the_runs_student_and_alpha_zero_its_start(cv_run, tmp_path):
    final = json.loads((cv_run / "fold0_stretch1" / "final.json").read_text())["fold_rows"]
    assert fold_rescore.main([str(cv_run), "--json", str(tmp_path / "student.json")]) == 0
    (row,) = rows(tmp_path / "student.json")
    assert row["fold"] == "stretch1" and row["frames"] == 4
    assert {k: row[k] for k in SCORES} == pytest.approx({k: final["student"][k] for k in SCORES})
    assert fold_rescore.main([str(cv_run), "--mix-with", str(models_dir() / "carla_unet.safetensors"),
                              "--alpha", "0", "--json", str(tmp_path / "start.json")]) == 0
    (start,) = rows(tmp_path / "start.json")
    assert {k: start[k] for k in SCORES} == pytest.approx({k: final["initial"][k] for k in SCORES})


def test_another_height_scores_the_same_frames(cv_run, tmp_path):
    assert fold_rescore.main([str(cv_run), "--height", "256", "--json", str(tmp_path / "h256.json")]) == 0
    (row,) = rows(tmp_path / "h256.json")
    assert row["frames"] == 4 and row["recall_boxes"] == json.loads(
        (cv_run / "fold0_stretch1" / "final.json").read_text())["fold_rows"]["student"]["recall_boxes"]


def test_bad_inputs_are_one_clear_error(cv_run, tmp_path, capsys):
    assert fold_rescore.main([str(tmp_path), "--json", str(tmp_path / "x.json")]) == 2
    assert fold_rescore.main([str(cv_run), "--mix-with", str(tmp_path / "missing.safetensors"),
                              "--json", str(tmp_path / "x.json")]) == 2
    assert capsys.readouterr().err.count("carla-seg rescore-folds:") == 2 and not (tmp_path / "x.json").exists()
    for bad in (["--alpha", "2"], ["--height", "100"]):
        with pytest.raises(SystemExit):
            fold_rescore.main([str(cv_run), "--json", str(tmp_path / "x.json")] + bad)
