"""The committed models (v4, the accurate rung, and the large rung: the same weights at input height 384) on the test
split and on the two reporting-only sets (external and modern CARLA frames, the modern ones also at their original
800x600 and 2048x1024), hood treated as in training: the figures of the model card, and the minimum targets.
Frames run at the camera's aspect (the model's keep_aspect policy, runtime/input_size.py): the 4:3 sets as before,
the external 1382x512 and 1280x800 frames and the modern 2048x1024 ones at their own aspect.

The card floors catch regressions (a model or preprocessing change that loses accuracy fails here); the targets
stay expected failures until a model meets them. Skipped, with the reason printed, only when a dataset is absent.
The external and modern frames are for reporting only: nothing was chosen on them.
"""
import json

import pytest

from carla_seg_ros.evaluation import evaluate
from carla_seg_ros.runtime.model_ladder import RUNG_FILES

# Minimum targets (13 classes): (pixel accuracy, mIoU, Lyft F_avg); None = no target.
TARGETS = {
    "test": (0.96, 0.72, 0.90),
    "external": (0.80, 0.35, 0.75),
    "modern": (0.72, 0.28, None),
}
# On the old held-out block of the unlabelled frames (carla-seg evaluate-boxes): vehicle box recall at 25 % coverage
# and Car precision against boxes grown by 10 %. v4 trained on every unlabelled frame, so for v4 these are fit
# figures: a regression guard, not a measure (the card's fold table is that).
TARGET_BOX_RECALL, TARGET_CAR_PRECISION = 0.85, 0.75
CARD_BOXES = (0.8556, 0.6068)   # v3: 0.8167 / 0.4808, v2: 0.7333 / 0.4190
# On the 6 test frames of other drives: mIoU and Lyft F2 on Car.
TARGET_OTHER_DRIVES_MEAN_IOU = 0.45
TARGET_OTHER_DRIVES_F2_CAR = 0.60
# Kept for test_quantize and older imports: the test-split targets.
MIN_PIXEL_ACCURACY, MIN_MEAN_IOU, MIN_LYFT_F_AVG = TARGETS["test"]

# What the committed models measured (models/README.md, ONNX Runtime fp32, at the camera's aspect): pixel accuracy,
# mIoU, Lyft F_avg. v3: test 0.9521 / 0.6708 / 0.9143, external 0.7207 / 0.2686 / 0.5824, modern 0.6582 / 0.2301 /
# 0.6968, modern full resolution 0.6948 / 0.2706 / 0.7534.
CARD = {
    "test": (0.9518, 0.6651, 0.9051),
    "external": (0.7341, 0.2712, 0.5762),
    "modern": (0.6602, 0.2264, 0.7025),
    "modern_fullres": (0.6971, 0.2629, 0.7444),
}
CARD_LARGE = {
    "test": (0.9561, 0.6647, 0.9080),
    "external": (0.7259, 0.2672, 0.5500),
    "modern": (0.6583, 0.2301, 0.7061),
    "modern_fullres": (0.6964, 0.2689, 0.7613),
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


CARDS = {"accurate": CARD, "large": CARD_LARGE}
SETS = ["test", "external", "modern", "modern_fullres"]


@pytest.fixture(scope="module", params=SETS)
def set_metrics(request, tmp_path_factory, data_dir, model_path):
    """The accurate rung (v4) on one set."""
    return _set_metrics(request, tmp_path_factory, data_dir, model_path, "accurate")


@pytest.fixture(scope="module", params=SETS)
def large_set_metrics(request, tmp_path_factory, data_dir, model_path):
    """The large rung (v4's weights at input height 384) on one set."""
    path = model_path.with_name(RUNG_FILES["large"])
    assert path.is_file(), f"committed large rung {path} is missing"
    return _set_metrics(request, tmp_path_factory, data_dir, path, "large")


def _set_metrics(request, tmp_path_factory, data_dir, model_path, rung):
    name = request.param
    if name == "test":
        args = ["--data", str(data_dir), "--split", "test"]
    elif name == "external":
        args = ["--data", str(_external_dir(data_dir))]
    elif name == "modern":
        args = ["--data", str(request.getfixturevalue("modern_dir"))]
    else:
        args = ["--data", str(request.getfixturevalue("modern_dir")), "--split", "fullres"]
    result = _evaluate(tmp_path_factory.mktemp("eval") / f"{rung}_{name}.json", model_path, args)
    assert result["frames"] == FRAMES[name]
    if name == "test":
        assert result["hood"]["mode"] == "background", "the committed model was trained with the Lyft hood rule"
    m = result["metrics"]
    print(f"{rung} on {name}: pixel accuracy {m['pixel_accuracy']:.4f}, mIoU {m['mean_iou']:.4f}, "
          f"Lyft F_avg {m['lyft']['f_avg']:.4f}")
    return rung, name, m


def _figures(m):
    return m["pixel_accuracy"], m["mean_iou"], m["lyft"]["f_avg"]


def _check_card(rung, name, m):
    for what, measured, card in zip(("pixel accuracy", "mIoU", "F_avg"), _figures(m), CARDS[rung][name]):
        assert measured >= card - MARGIN, f"{rung} on {name}: {what} {measured:.4f} < card {card:.4f} - {MARGIN}"


def test_committed_model_matches_its_card(set_metrics):
    _check_card(*set_metrics)


def test_the_large_rung_matches_its_card(large_set_metrics):
    _check_card(*large_set_metrics)


@pytest.mark.xfail(reason="not every minimum target is met by the committed model yet (models/README.md lists "
                          "which, with the measured figures and the limiting factor)", strict=False)
def test_committed_model_meets_minimum_targets(set_metrics):
    _, name, m = set_metrics
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


@pytest.fixture(scope="module")
def box_scores(tmp_path_factory, unlabelled_dir, model_path):
    from carla_seg_ros.evaluation import box_eval
    out = tmp_path_factory.mktemp("boxes") / "held_out.json"
    assert box_eval.main(["--data", str(unlabelled_dir), "--model", str(model_path), "--json", str(out),
                          "--samples", "0"]) == 0
    overall = json.loads(out.read_text())["overall"]
    print(f"held-out boxes: recall {overall['recall']:.4f}, Car precision {overall['car_precision']:.4f}")
    return overall["recall"], overall["car_precision"]


def test_committed_model_matches_its_card_on_the_held_out_boxes(box_scores):
    for what, measured, card in zip(("vehicle box recall", "Car precision"), box_scores, CARD_BOXES):
        assert measured >= card - MARGIN, f"held-out {what} {measured:.4f} < card {card:.4f} - {MARGIN}"


@pytest.mark.xfail(reason="the held-out box targets are not met yet (models/README.md)", strict=False)
def test_committed_model_meets_the_held_out_box_targets(box_scores):
    recall, precision = box_scores
    assert recall >= TARGET_BOX_RECALL and precision >= TARGET_CAR_PRECISION


CARD_ROWS = {"test": "**test**", "external": "**external**", "modern": "**modern**, 400x300",
             "modern_fullres": "**modern, full resolution**"}


def test_the_card_shows_the_pinned_figures():
    """models/README.md's metrics table (v4 and large columns) and its box guard line show exactly what this file
    pins (rounded to 3 places), so the card and its guard cannot drift apart. Needs no data."""
    import re
    from pathlib import Path
    card = (Path(__file__).resolve().parents[2] / "models" / "README.md").read_text()
    rows = {line.split("|")[1].strip(): [c.strip().strip("*") for c in line.split("|")[1:-1]]
            for line in card.splitlines() if line.startswith("|")}
    for name, label in CARD_ROWS.items():
        row = next((cells for first, cells in rows.items() if first.startswith(label)), None)
        assert row, f"the card's metrics table has no row starting {label!r}"
        for column, pinned in ((2, CARD[name]), (3, CARD_LARGE[name])):
            assert row[column] == " / ".join(f"{v:.3f}" for v in pinned), f"{name}: card {row[column]!r} != {pinned}"
    number = r"([0-9]+\.[0-9]+)"
    guard = re.search(rf"old held-out block[^:]*:\s+recall\s+{number},\s+Car\s+precision\s+{number}", card)
    assert guard and guard.groups() == (f"{CARD_BOXES[0]:.3f}", f"{CARD_BOXES[1]:.3f}"), guard
