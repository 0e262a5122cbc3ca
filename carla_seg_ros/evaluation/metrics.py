"""Segmentation metrics from a confusion matrix: pixel accuracy, per-class IoU, mIoU and the Lyft challenge score.

Everything is derived from one (C, C) confusion matrix, rows = ground truth, columns = prediction, accumulated
over all pixels of all frames (pixels labelled IGNORE_INDEX are skipped), so every evaluator that feeds the same
pixels gets the same numbers to the last digit.
"""
from __future__ import annotations

import numpy as np

from carla_seg_ros.classes import IGNORE_INDEX

CAR = 10
ROAD_CLASSES = (6, 7)  # RoadLine is merged into Road for the Lyft score


def confusion_matrix(label: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts of (label, pred) over the pixels whose label is not IGNORE_INDEX."""
    if label.shape != pred.shape:
        raise ValueError(f"label shape {label.shape} != prediction shape {pred.shape}")
    valid = label != IGNORE_INDEX
    idx = label[valid].astype(np.int64) * num_classes + pred[valid].astype(np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def pixel_accuracy(cm: np.ndarray) -> float:
    total = cm.sum()
    return float(np.trace(cm) / total) if total else float("nan")


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """IoU of each class; NaN where the class is absent from both labels and predictions."""
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def mean_iou(cm: np.ndarray) -> float:
    iou = iou_per_class(cm)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def f_beta(tp: float, fp: float, fn: float, beta: float) -> float:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    b2 = beta * beta
    denom = b2 * precision + recall
    return float((1 + b2) * precision * recall / denom) if denom else 0.0


def _group_counts(cm: np.ndarray, classes) -> tuple[float, float, float]:
    classes = list(classes)
    tp = cm[np.ix_(classes, classes)].sum()
    return float(tp), float(cm[:, classes].sum() - tp), float(cm[classes, :].sum() - tp)


def lyft_scores(cm: np.ndarray, fps: float | None = None) -> dict:
    """Lyft/Udacity 2018 challenge score: F2 on Car, F0.5 on Road (+RoadLine), their mean, and the final score.

    The hood is handled by the label's HoodRule before the matrix is built (the grader relabelled it to 0).
    Final score = 100 * F_avg - max(0, 10 - fps), the challenge's speed penalty below 10 FPS.
    """
    f_car = f_beta(*_group_counts(cm, [CAR]), beta=2.0)
    f_road = f_beta(*_group_counts(cm, ROAD_CLASSES), beta=0.5)
    f_avg = (f_car + f_road) / 2
    out = {"f2_car": f_car, "f05_road": f_road, "f_avg": f_avg}
    if fps is not None:
        out["fps"] = fps
        out["score"] = 100 * f_avg - max(0.0, 10.0 - fps)
    return out


def summarize(cm: np.ndarray, class_names: list[str], fps: float | None = None) -> dict:
    """All metrics of one confusion matrix as a JSON-ready dict."""
    iou = iou_per_class(cm)
    return {
        "pixel_accuracy": pixel_accuracy(cm),
        "mean_iou": mean_iou(cm),
        "iou": {name: (None if np.isnan(v) else float(v)) for name, v in zip(class_names, iou)},
        "lyft": lyft_scores(cm, fps),
        "pixels": int(cm.sum()),
    }
