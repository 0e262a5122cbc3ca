"""The committed model on the test split and on the two reporting-only sets (external and modern CARLA frames, the
modern ones also at their original 800x600 and 2048x1024), hood treated as in training: the figures of its model
card, and the minimum targets. Frames run at the camera's aspect (the model's keep_aspect policy,
runtime/input_size.py): the 4:3 sets as before, the external 1382x512 and 1280x800 frames and the modern 2048x1024
ones at their own aspect.

The card floors catch regressions (a model or preprocessing change that loses accuracy fails here); the targets
stay expected failures until a model meets them. Skipped, with the reason printed, only when a dataset is absent.
The external and modern frames are for reporting only: nothing was chosen on them.
"""
import json

import pytest

from carla_seg_ros.evaluation import evaluate

# Minimum targets (13 classes): (pixel accuracy, mIoU, Lyft F_avg); None = no target.
TARGETS = {
    "test": (0.96, 0.72, 0.90),
    "external": (0.80, 0.35, 0.75),
    "modern": (0.72, 0.28, None),
}
# On the 6 test frames of other drives: mIoU and Lyft F2 on Car.
TARGET_OTHER_DRIVES_MEAN_IOU = 0.45
TARGET_OTHER_DRIVES_F2_CAR = 0.60
# Kept for test_quantize and older imports: the test-split targets.
MIN_PIXEL_ACCURACY, MIN_MEAN_IOU, MIN_LYFT_F_AVG = TARGETS["test"]

# What the committed model measured (models/README.md, ONNX Runtime fp32, at the camera's aspect): pixel accuracy,
# mIoU, Lyft F_avg. Squashed to 384x288 as before keep_aspect, external was 0.6449 / 0.2440 / 0.5961 and modern at
# full resolution 0.6715 / 0.2607 / 0.7347; test and modern (400x300, 4:3) are unchanged.
CARD = {
    "test": (0.9528, 0.6733, 0.9122),
    "external": (0.6779, 0.2506, 0.5667),
    "modern": (0.6504, 0.2264, 0.6923),
    "modern_fullres": (0.6795, 0.2621, 0.7448),
}
CARD_PIXEL_ACCURACY, CARD_MEAN_IOU, CARD_LYFT_F_AVG = CARD["test"]
MARGIN = 0.005          # runtime and library differences
FRAMES = {"test": 52, "external": 26, "modern": 14, "modern_fullres": 14}


def _external_dir(data_dir):
    path = data_dir.parent / "carla_seg_external"
    if not path.is_dir():
        pytest.skip(f"external set not found at {path} (carla_seg_external beside the dataset)")
    return path


def _evaluate(out, model_path, args):
    assert evaluate.main(args + ["--model", str(model_path), "--json", str(out), "--samples", "0"]) == 0
    return json.loads(out.read_text())


@pytest.fixture(scope="module", params=["test", "external", "modern", "modern_fullres"])
def set_metrics(request, tmp_path_factory, data_dir, model_path):
    name = request.param
    if name == "test":
        args = ["--data", str(data_dir), "--split", "test"]
    elif name == "external":
        args = ["--data", str(_external_dir(data_dir))]
    elif name == "modern":
        args = ["--data", str(request.getfixturevalue("modern_dir"))]
    else:
        args = ["--data", str(request.getfixturevalue("modern_dir")), "--split", "fullres"]
    result = _evaluate(tmp_path_factory.mktemp("eval") / f"{name}.json", model_path, args)
    assert result["frames"] == FRAMES[name]
    if name == "test":
        assert result["hood"]["mode"] == "background", "the committed model was trained with the Lyft hood rule"
    m = result["metrics"]
    print(f"{name}: pixel accuracy {m['pixel_accuracy']:.4f}, mIoU {m['mean_iou']:.4f}, "
          f"Lyft F_avg {m['lyft']['f_avg']:.4f}")
    return name, m


def _figures(m):
    return m["pixel_accuracy"], m["mean_iou"], m["lyft"]["f_avg"]


def test_committed_model_matches_its_card(set_metrics):
    name, m = set_metrics
    for what, measured, card in zip(("pixel accuracy", "mIoU", "F_avg"), _figures(m), CARD[name]):
        assert measured >= card - MARGIN, f"{name} {what} {measured:.4f} < card {card:.4f} - {MARGIN}"


@pytest.mark.xfail(reason="not every minimum target is met by the committed model yet (models/README.md lists "
                          "which, with the measured figures and the limiting factor)", strict=False)
def test_committed_model_meets_minimum_targets(set_metrics):
    name, m = set_metrics
    if name not in TARGETS:
        pytest.skip(f"no minimum target for {name}")
    for what, measured, target in zip(("pixel accuracy", "mIoU", "F_avg"), _figures(m), TARGETS[name]):
        if target is not None:
            assert measured >= target, f"{name} {what} {measured:.4f} < target {target}"


@pytest.mark.xfail(reason="the other-drive test targets are not met yet (models/README.md)", strict=False)
def test_committed_model_meets_other_drive_targets(tmp_path, data_dir, model_path):
    m = _evaluate(tmp_path / "other.json", model_path, ["--data", str(data_dir), "--split", "test",
                                                         "--match", "lyft*", "--match", "bearpelican*"])["metrics"]
    assert m["mean_iou"] >= TARGET_OTHER_DRIVES_MEAN_IOU
    assert m["lyft"]["f2_car"] >= TARGET_OTHER_DRIVES_F2_CAR
