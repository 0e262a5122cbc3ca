"""The committed model on the test split (hood treated as in training): the figures of its model card, and the
issue's minimum targets.

Skipped, with the reason printed, only when the dataset is absent.
"""
import json

import pytest

from carla_seg_ros.evaluation import evaluate

# Issue #2's minimum targets (test split, 13 classes).
MIN_PIXEL_ACCURACY = 0.96
MIN_MEAN_IOU = 0.72
MIN_LYFT_F_AVG = 0.90

# What the committed model measured (models/README.md), less a margin for runtime/library differences: a model or
# preprocessing change that loses accuracy fails here.
CARD_PIXEL_ACCURACY = 0.9493
CARD_MEAN_IOU = 0.6475
CARD_LYFT_F_AVG = 0.8532
MARGIN = 0.005


@pytest.fixture(scope="module")
def test_metrics(tmp_path_factory, data_dir, model_path):
    out = tmp_path_factory.mktemp("eval") / "test.json"
    assert evaluate.main(["--data", str(data_dir), "--split", "test", "--model", str(model_path),
                          "--json", str(out), "--samples", "0"]) == 0
    result = json.loads(out.read_text())
    assert result["frames"] == 52
    assert result["hood"]["mode"] == "background", "the committed model was trained with the Lyft hood rule"
    m = result["metrics"]
    print(f"test split: pixel accuracy {m['pixel_accuracy']:.4f}, mIoU {m['mean_iou']:.4f}, "
          f"Lyft F_avg {m['lyft']['f_avg']:.4f}")
    return m


def test_committed_model_matches_its_card(test_metrics):
    assert test_metrics["pixel_accuracy"] >= CARD_PIXEL_ACCURACY - MARGIN
    assert test_metrics["mean_iou"] >= CARD_MEAN_IOU - MARGIN
    assert test_metrics["lyft"]["f_avg"] >= CARD_LYFT_F_AVG - MARGIN


@pytest.mark.xfail(reason="issue #2's minimum targets are not met yet by the committed model (see models/README.md "
                          "for the measured figures and why)", strict=False)
def test_committed_model_meets_issue_minimum_targets(test_metrics):
    assert test_metrics["pixel_accuracy"] >= MIN_PIXEL_ACCURACY
    assert test_metrics["mean_iou"] >= MIN_MEAN_IOU
    assert test_metrics["lyft"]["f_avg"] >= MIN_LYFT_F_AVG
