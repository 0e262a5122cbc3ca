import numpy as np
import pytest

from carla_seg_ros.evaluation import metrics
from carla_seg_ros.classes import IGNORE_INDEX


def test_confusion_matrix_by_hand():
    label = np.array([[0, 0, 1], [1, 2, IGNORE_INDEX]], np.uint8)
    pred = np.array([[0, 1, 1], [1, 2, 0]], np.uint8)
    cm = metrics.confusion_matrix(label, pred, 3)
    # rows = truth, cols = prediction; the ignored pixel is not counted
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 1]]
    assert metrics.pixel_accuracy(cm) == pytest.approx(4 / 5)
    # IoU: class0 1/(1+0+1)=0.5, class1 2/(2+1+0)=2/3, class2 1/1
    np.testing.assert_allclose(metrics.iou_per_class(cm), [0.5, 2 / 3, 1.0])
    assert metrics.mean_iou(cm) == pytest.approx((0.5 + 2 / 3 + 1) / 3)


def test_absent_classes_do_not_count_in_miou():
    cm = np.zeros((3, 3), np.int64)
    cm[0, 0] = 10
    cm[1, 0] = 10
    iou = metrics.iou_per_class(cm)
    assert iou[0] == pytest.approx(0.5) and iou[1] == 0 and np.isnan(iou[2])
    assert metrics.mean_iou(cm) == pytest.approx(0.25)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        metrics.confusion_matrix(np.zeros((2, 2), np.uint8), np.zeros((2, 3), np.uint8), 3)


def test_f_beta_by_hand():
    # precision 0.5, recall 1.0
    assert metrics.f_beta(10, 10, 0, beta=1) == pytest.approx(2 / 3)
    assert metrics.f_beta(10, 10, 0, beta=2) == pytest.approx(5 * 0.5 / (4 * 0.5 + 1))
    assert metrics.f_beta(10, 10, 0, beta=0.5) == pytest.approx(1.25 * 0.5 / (0.25 * 0.5 + 1))
    assert metrics.f_beta(0, 0, 0, beta=2) == 0.0


def test_lyft_score_by_hand():
    cm = np.zeros((13, 13), np.int64)
    cm[10, 10] = 80   # car TP
    cm[10, 0] = 20    # car FN
    cm[0, 10] = 20    # car FP
    cm[7, 7] = 90     # road TP
    cm[6, 7] = 10     # road line predicted as road: merged, so a TP for the Lyft road class
    cm[7, 8] = 10     # road FN
    cm[8, 6] = 5      # road FP (predicted road line on sidewalk)
    s = metrics.lyft_scores(cm, fps=8.0)
    p_car, r_car = 80 / 100, 80 / 100
    p_road, r_road = 100 / 105, 100 / 110
    f2 = 5 * p_car * r_car / (4 * p_car + r_car)
    f05 = 1.25 * p_road * r_road / (0.25 * p_road + r_road)
    assert s["f2_car"] == pytest.approx(f2)
    assert s["f05_road"] == pytest.approx(f05)
    assert s["f_avg"] == pytest.approx((f2 + f05) / 2)
    assert s["score"] == pytest.approx(100 * (f2 + f05) / 2 - 2.0)


def test_summarize_is_json_ready():
    import json
    cm = np.eye(13, dtype=np.int64)
    out = metrics.summarize(cm, [f"c{i}" for i in range(13)])
    json.dumps(out)
    assert out["pixel_accuracy"] == 1.0 and out["mean_iou"] == 1.0 and out["pixels"] == 13
