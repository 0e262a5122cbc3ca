"""The cross-validation driver of `carla-seg self-train`: option rules, one run per fold into its own folder, folds
already done are skipped, unfinished ones resume, and the fold tables at the end. The per-fold run here is a
stand-in that writes what a real run writes (the real run is covered in test_self_train.py)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from carla_seg_ros.learning import self_train_cv as cv
from carla_seg_ros.unlabelled import Box, UnlabelledFrame

CAR = 3


def parser():
    p = argparse.ArgumentParser()
    p.add_argument("--unlabelled", type=Path)
    p.add_argument("--out", type=Path)
    p.add_argument("--resume", action="store_true")
    cv.add_cv_arguments(p)
    return p


def parse(argv):
    p = parser()
    args = p.parse_args(argv)
    cv.check_cv_args(p, args)
    return args


@pytest.mark.parametrize("argv", [["--fold", "1"], ["--cv"], ["--folds", "0", "--cv"], ["--folds", "4"],
                                  ["--folds", "4", "--cv", "--fold", "1"], ["--folds", "4", "--fold", "1",
                                                                            "--guard", "20"],
                                  ["--folds", "4", "--fold", "1", "--cv-folds", "0"],
                                  ["--all-unlabelled", "--folds", "4", "--fold", "1"]])
def test_bad_cv_options_are_refused(argv):
    with pytest.raises(SystemExit):
        parse(argv)


def row(name, recall, stretch=True):
    return {"fold": name, "stretch": stretch, "frames": 5, "recall": recall, "recall_found": 1, "recall_boxes": 2,
            "car_precision": 0.5, "car_share": 0.01}


def test_driver_runs_each_fold_once_skips_done_ones_and_writes_tables(tmp_path, unlabelled_dir, capsys):
    calls = []

    def run_one(args):
        calls.append((args.fold, args.out.name, args.resume))
        assert not args.cv and args.fold is not None
        fold = cv.plan_for(args).fold(args.fold)
        args.out.mkdir(parents=True, exist_ok=True)
        rows = {m: row(fold.name, 0.5 + 0.1 * fold.index, fold.stretch) for m in cv.MODELS}
        (args.out / "final.json").write_text(json.dumps({"fold_rows": rows}))
        return 0

    argv = ["--unlabelled", str(unlabelled_dir), "--out", str(tmp_path / "cv"), "--folds", "4", "--cv"]
    assert cv.run_cv(parse(argv + ["--cv-folds", "0,stretch3"]), run_one) == 0
    assert calls == [("0", "fold0_stretch1", False), ("2", "fold2_stretch3", False)]
    (tmp_path / "cv" / "fold1_stretch2").mkdir()
    (tmp_path / "cv" / "fold1_stretch2" / "last.pt").write_bytes(b"")   # an unfinished fold resumes
    calls.clear()
    assert cv.run_cv(parse(argv), run_one) == 0
    assert calls == [("1", "fold1_stretch2", True), ("3", "fold3_stretch4", False), ("4", "fold4_ahvmousavi", False)]
    table = json.loads((tmp_path / "cv" / "folds_teacher.json").read_text())
    assert [r["fold"] for r in table["folds"]] == ["stretch1", "stretch2", "stretch3", "stretch4", "ahvmousavi"]
    assert table["summary"]["recall"]["mean"] == pytest.approx(0.65)
    assert "| stretch4 |" in capsys.readouterr().out


def test_a_failing_fold_stops_the_driver(tmp_path, unlabelled_dir):
    argv = ["--unlabelled", str(unlabelled_dir), "--out", str(tmp_path / "cv"), "--folds", "4", "--cv"]
    assert cv.run_cv(parse(argv), lambda args: 2) == 2
    assert not (tmp_path / "cv" / "folds_teacher.json").exists()


def test_score_fold_uses_the_original_size_of_the_boxes():
    frame = UnlabelledFrame("relke_000001.jpg", Path("x"), "relke", 1, "", (Box("truck", 0, 0, 400, 300),), True)
    pred = np.zeros((30, 40), np.uint8)
    pred[:15, :20] = CAR              # the top-left quarter of the mask: the whole box at 800x600
    r = cv.score_fold(pred[None], [(frame, (800, 600))], [np.full((30, 40, 3), 9, np.uint8)], CAR, "stretch2", True)
    assert r["recall_truck"] == 1.0 and r["recall_night"] == 1.0 and r["car_precision"] == 1.0


def test_a_real_fold_run_holds_out_its_fold_and_reports_its_rows(tmp_path, data_dir, unlabelled_dir, capsys):
    """A short real `self-train --folds 4 --fold 4` (the ahvmousavi fold held out, so the capped training pool is
    made of boxed relke frames and the box projection term has boxes), with the fixed teacher of recipe B."""
    from carla_seg_ros.learning import self_train as st
    from carla_seg_ros.paths import models_dir

    out = tmp_path / "fold"
    assert st.main(["--unlabelled", str(unlabelled_dir), "--data", str(data_dir), "--out", str(out),
                    "--limit-images", "4", "--batch", "2", "--steps", "2", "--eval-every", "2", "--threads", "2",
                    "--folds", "4", "--fold", "ahvmousavi", "--teacher", "fixed", "--box-projection-weight", "1.0",
                    "--init", str(models_dir() / "carla_unet.safetensors")]) == 0
    assert "(fold ahvmousavi)" in capsys.readouterr().out
    final = json.loads((out / "final.json").read_text())
    assert final["fold"] == "ahvmousavi" and set(final["fold_rows"]) == set(cv.MODELS)
    for r in final["fold_rows"].values():
        assert r["fold"] == "ahvmousavi" and not r["stretch"] and r["frames"] == 4
        assert r["recall"] is None and r["car_share"] is not None      # no boxes in the weather recordings
        assert "weather=day" in r["car_share_by_group"]


def test_all_unlabelled_trains_on_every_frame_and_leaves_the_box_scores_empty(tmp_path, data_dir, unlabelled_dir):
    """The final model after the folds chose its recipe: every frame in the pool, nothing held out or guarded."""
    from carla_seg_ros.learning import self_train as st
    from carla_seg_ros.paths import models_dir
    from carla_seg_ros.unlabelled import POOL, read_unlabelled

    frames = read_unlabelled(unlabelled_dir)
    split, fold = cv.unlabelled_split(parse(["--all-unlabelled"]), frames)
    assert fold is None and set(split.values()) == {POOL} and len(split) == len(frames)
    out = tmp_path / "all"
    assert st.main(["--unlabelled", str(unlabelled_dir), "--data", str(data_dir), "--out", str(out),
                    "--limit-images", "4", "--batch", "2", "--steps", "1", "--threads", "2", "--all-unlabelled",
                    "--teacher", "fixed", "--car-negative-weight", "1.0",
                    "--init", str(models_dir() / "carla_unet.safetensors")]) == 0
    final = json.loads((out / "final.json").read_text())
    assert final["student"]["held_out_box_recall"] == "" and 0 < final["student"]["val_miou"] <= 1
