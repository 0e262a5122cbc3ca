"""`carla-seg evaluate` and the shared Evaluation accumulator, on real frames with the committed ONNX model."""
from __future__ import annotations

import json

import numpy as np
import pytest

from carla_seg_ros.evaluation import metrics
from carla_seg_ros.classes import IGNORE_INDEX, class_names, load_coding
from carla_seg_ros.datasets import HoodRule, find_pairs, read_label, read_tag_ids
from carla_seg_ros.datasets import labels_from_tag_ids
from carla_seg_ros.evaluation.evaluate import Evaluation, main as evaluate_main

NAMES = class_names()
JSON_KEYS = {"frames", "class_names", "metrics", "confusion_matrix", "timing", "latency_ms", "per_frame", "command",
             "data", "split", "codings", "hood", "model", "files"}


def run_evaluate(tmp_path, *args) -> dict:
    out = tmp_path / "eval.json"
    assert evaluate_main(["--json", str(out), "--samples", "2", *args]) == 0
    return json.loads(out.read_text())


def check_consistent(result: dict, expected_pixels: int | None = None):
    """Every reported number must follow from the reported confusion matrix."""
    cm = np.asarray(result["confusion_matrix"], np.int64)
    assert cm.shape == (13, 13)
    m = result["metrics"]
    assert m == json.loads(json.dumps(metrics.summarize(cm, NAMES, result["timing"]["fps"])))
    assert m["pixels"] == cm.sum() == sum(f["pixels"] for f in result["per_frame"])
    assert m["pixel_accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    if expected_pixels is not None:
        assert cm.sum() == expected_pixels
    assert len(result["per_frame"]) == result["frames"] == len(result["latency_ms"])
    assert result["timing"]["fps"] > 0 and m["lyft"]["fps"] == result["timing"]["fps"]


def test_accumulator_hand_computed():
    ev = Evaluation(NAMES, num_samples=1)
    label = np.array([[0, 0, 10, 10], [7, 7, 6, IGNORE_INDEX]], np.uint8)
    pred = np.array([[0, 1, 10, 7], [7, 7, 7, 3]], np.uint8)
    cm = ev.add(pred, label, "a", rgb=np.zeros((2, 4, 3), np.uint8))
    assert cm.sum() == 7 and cm[0, 0] == 1 and cm[0, 1] == 1 and cm[10, 10] == 1 and cm[10, 7] == 1
    assert cm[7, 7] == 2 and cm[6, 7] == 1 and cm[:, 3].sum() == 0   # the ignored pixel counts nowhere
    # A prediction of another size is resized to the label's size with nearest neighbour before counting.
    ev.add(np.kron(pred, np.ones((2, 2), np.uint8)), label, "b")
    ev.add_timing(0.5, 2)
    r = ev.result()
    assert np.array_equal(r["confusion_matrix"], 2 * cm)
    assert r["metrics"]["pixel_accuracy"] == pytest.approx(4 / 7)
    assert r["metrics"]["lyft"]["fps"] == pytest.approx(4.0)
    assert [s["name"] for s in ev.samples] == ["a"]


def test_label_from_tag_ids_matches_read_label(data_dir, modern_dir):
    hood = HoodRule("ignore")
    for pair in find_pairs(data_dir, "test")[:1] + find_pairs(modern_dir, "test")[::7]:
        expected = read_label(pair, hood)
        assert np.array_equal(labels_from_tag_ids(read_tag_ids(pair.label), pair.coding, hood), expected)
    assert (read_label(find_pairs(data_dir, "test")[0], hood) == IGNORE_INDEX).any()


def test_evaluate_test_split(tmp_path, data_dir, model_path):
    r = run_evaluate(tmp_path, "--data", str(data_dir), "--split", "test", "--limit", "6", "--batch-size", "4",
                     "--model", str(model_path))
    assert JSON_KEYS <= r.keys()
    assert r["frames"] == 6 and r["codings"] == {"tags13": 6}
    assert r["hood"]["mode"] == "background"          # the model's stored rule: nothing ignored
    check_consistent(r, expected_pixels=6 * 400 * 300)
    assert set(r["metrics"]["lyft"]) == {"f2_car", "f05_road", "f_avg", "fps", "score"}
    for key in ("confusion_png", "iou_png", "latency_png", "samples_png", "report_md", "report_html"):
        assert (tmp_path / r["files"][key].split("/")[-1]).is_file(), key
    html = (tmp_path / "eval_report.html").read_text()
    assert html.count("data:image/png;base64,") == 4 and "src=\"http" not in html


def test_evaluate_hood_ignore_drops_pixels(tmp_path, data_dir, model_path):
    r = run_evaluate(tmp_path, "--data", str(data_dir), "--limit", "2", "--hood", "ignore",
                     "--model", str(model_path))
    check_consistent(r)
    assert 0 < r["metrics"]["pixels"] < 2 * 400 * 300


def test_evaluate_fullres(tmp_path, data_dir, model_path):
    r = run_evaluate(tmp_path, "--data", str(data_dir), "--split", "fullres", "--limit", "2",
                     "--model", str(model_path))
    # Predictions come back at 800x600 (upsampled from the model's 384x288): every label pixel is counted.
    check_consistent(r, expected_pixels=2 * 800 * 600)


def test_evaluate_match_selects_frames_by_name(tmp_path, data_dir, model_path):
    r = run_evaluate(tmp_path, "--data", str(data_dir), "--split", "test", "--model", str(model_path),
                     "--match", "lyft*", "--match", "bearpelican*")
    names = [f["name"] for f in r["per_frame"]]
    assert len(names) == 6 and not any(n.startswith("pohsu") for n in names)   # the other-drive test frames
    assert r["match"] == ["lyft*", "bearpelican*"]
    check_consistent(r, expected_pixels=6 * 400 * 300)


def test_evaluate_modern_set_remap(tmp_path, modern_dir, model_path):
    r = run_evaluate(tmp_path, "--data", str(modern_dir), "--model", str(model_path))
    assert r["codings"] == {"tags23": 10, "tags29": 4}
    check_consistent(r, expected_pixels=14 * 400 * 300)   # every modern tag has a model class: nothing ignored
    # The ground-truth row sums are the remapped labels' class histogram.
    hist = np.zeros(13, np.int64)
    for pair in find_pairs(modern_dir, "test"):
        ids = load_coding(pair.coding).ids_to_model(read_tag_ids(pair.label))
        hist += np.bincount(ids.ravel(), minlength=256)[:13]
    assert np.array_equal(np.asarray(r["confusion_matrix"]).sum(1), hist)


def test_evaluate_clear_errors(tmp_path, capsys, data_dir, model_path):
    assert evaluate_main(["--data", str(tmp_path / "nope"), "--json", str(tmp_path / "x.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert evaluate_main(["--data", str(data_dir), "--match", "no_such_frame*",
                          "--json", str(tmp_path / "x.json")]) == 2
    assert "matches no_such_frame*" in capsys.readouterr().err


def test_evaluate_runs_a_wide_frame_at_its_aspect(tmp_path, data_dir, model_path):
    """A 16:9 and a 1382x512-like frame in a flat folder: evaluate runs each at the camera's aspect (the Segmenter's
    keep_aspect sizes), so labels made from those predictions score exactly 1.0, and the squashed 384x288
    prediction would not."""
    import cv2

    from carla_seg_ros.datasets import read_rgb
    from carla_seg_ros.runtime.backends import create_backend
    from carla_seg_ros.runtime.inference import Segmenter
    from carla_seg_ros.runtime.preprocess import resize_image, resize_mask

    backend = create_backend("onnxruntime", model_path)
    segmenter = Segmenter(backend)
    rgb = read_rgb(find_pairs(data_dir, "fullres")[3].rgb)
    folder = tmp_path / "wide"
    (folder / "rgb").mkdir(parents=True)
    (folder / "label").mkdir()
    squashed_agreement = []
    for name, (w, h) in {"wide_16x9": (1280, 720), "wide_stereo": (1382, 512)}.items():
        crop_h = round(800 * h / w)
        top = (600 - crop_h) // 2
        frame = cv2.resize(np.ascontiguousarray(rgb[top:top + crop_h]), (w, h), interpolation=cv2.INTER_AREA)
        ids, _ = segmenter.segment(frame)
        cv2.imwrite(str(folder / "rgb" / f"{name}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(folder / "label" / f"{name}.png"), ids)
        squashed, _ = backend.infer(resize_image(frame, backend.input_size)[None])
        squashed_agreement.append((resize_mask(squashed[0], (w, h)) == ids).mean())
    r = run_evaluate(tmp_path, "--data", str(folder), "--model", str(model_path), "--hood", "none")
    assert r["model"]["input_policy"] == "keep_aspect" and r["model"]["input_widths"] == [384, 768]
    check_consistent(r, expected_pixels=1280 * 720 + 1382 * 512)
    assert r["metrics"]["pixel_accuracy"] == 1.0
    assert max(squashed_agreement) < 0.99, squashed_agreement
