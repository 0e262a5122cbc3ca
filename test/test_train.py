"""Training smoke test (two optimiser steps on four images), resume, and the augmentation contract."""
import csv
import json

import numpy as np
import pytest

from carla_seg_ros import train
from carla_seg_ros.classes import IGNORE_INDEX
from carla_seg_ros.data import HoodRule, find_pairs
from carla_seg_ros.weights import load_model, read_metadata


def test_two_step_smoke_and_resume(tmp_path, data_dir):
    out = tmp_path / "run"
    args = ["--data", str(data_dir), "--out", str(out), "--limit-images", "4", "--batch-size", "2",
            "--crop", "128x96", "--input-size", "160x120", "--epochs", "2", "--threads", "2"]
    assert train.main(args + ["--max-steps", "2"]) == 0
    for name in ("best.safetensors", "final.safetensors", "last.pt", "log.csv", "curves.png", "config.json"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert len(rows) == 1 and int(rows[0]["step"]) == 2 and np.isfinite(float(rows[0]["train_loss"]))
    model, meta = load_model(out / "final.safetensors")
    assert meta["model_config"]["arch"] == "fast_unet"
    assert read_metadata(out / "final.safetensors")["run_info"]["input_size"] == [160, 120]
    # resume continues from the saved epoch/step rather than starting over
    assert train.main(args + ["--resume"]) == 0
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and int(rows[1]["step"]) == 4
    assert json.loads((out / "config.json").read_text())["hood_mode"] == "background"


def test_train_on_train_and_val(tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    assert train.main(["--data", str(data_dir), "--out", str(out), "--train-splits", "train,val", "--limit-images", "3",
                       "--batch-size", "3", "--crop", "128x96", "--input-size", "160x120", "--epochs", "1",
                       "--threads", "2"]) == 0
    printed = capsys.readouterr().out
    assert "train+val" in printed and "NOT held out" in printed
    # With val in the training data no "best on val" checkpoint is chosen; the final weights are the result.
    assert (out / "final.safetensors").is_file() and not (out / "best.safetensors").exists()
    images, labels = train.load_splits(data_dir, ["train", "val"], (32, 24), HoodRule("background"))
    assert len(images) == len(labels) == len(find_pairs(data_dir, "train")) + len(find_pairs(data_dir, "val"))


def test_augment_keeps_image_and_label_aligned():
    rng = np.random.default_rng(0)
    img = np.zeros((60, 80, 3), np.uint8)
    label = np.zeros((60, 80), np.uint8)
    img[:, 40:] = 255
    label[:, 40:] = 7
    for _ in range(10):
        a_img, a_label = train.augment(img, label, (64, 48), (0.5, 1.5), rng)
        assert a_img.shape == (48, 64, 3) and a_label.shape == (48, 64)
        assert set(np.unique(a_label)) <= {0, 7, IGNORE_INDEX}


def test_class_weights_favour_rare_classes():
    labels = np.zeros((1, 100, 100), np.uint8)
    labels[0, :5, :5] = 4      # rare pedestrian
    labels[0, 50:, :] = 7      # common road
    w = train.class_weights(labels, 13)
    assert w[4] > w[7] > 0


def test_presets_parse():
    args = train.resolve_args(["--preset", "seed", "--data", "/tmp"])
    assert args.arch == "seed_unet" and args.input_size == (128, 96) and args.loss == "ce"
    assert train.resolve_args(["--data", "/tmp", "--train-splits", "train,val"]).train_splits == ["train", "val"]
    with pytest.raises(SystemExit):            # the reported splits are never trained on
        train.resolve_args(["--data", "/tmp", "--train-splits", "train,test"])
