"""Scoring and logging during `carla-seg self-train`: val (the labelled guard) and box scores on the held-out
unlabelled frames, the log rows and their plot."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from carla_seg_ros.evaluation import metrics
from carla_seg_ros.evaluation.boxes import BoxScores
from carla_seg_ros.learning.self_train_cv import score_fold
from carla_seg_ros.learning.validation import evaluate_arrays
from carla_seg_ros.networks.models import input_normalisation, normalize_uint8


@torch.no_grad()
def predict(model, images: np.ndarray, device, batch: int = 8) -> np.ndarray:
    model.eval()
    out = []
    for i in range(0, len(images), batch):
        x = normalize_uint8(torch.from_numpy(np.ascontiguousarray(images[i:i + batch])).to(device),
                            *input_normalisation(model))
        out.append(model(x).argmax(1).to(torch.uint8).cpu().numpy())
    model.train()
    return np.concatenate(out)


def evaluate(model, val, held, held_images, device, car_id, fold=None) -> tuple[dict, dict | None]:
    """(the log row's scores, the held-out fold's row of the fold table when ``fold`` is given, else None)."""
    cm = evaluate_arrays(model, val[0], val[1], device)
    val_scores = {"val_pixel_acc": metrics.pixel_accuracy(cm), "val_miou": metrics.mean_iou(cm)}
    if not held:                                    # --all-unlabelled: nothing held out to score
        return val_scores | {"held_out_box_recall": "", "held_out_car_precision": ""}, None
    scores = BoxScores(car_id)
    preds = predict(model, np.stack(held_images), device)
    for (fr, size), pred in zip(held, preds):
        scores.add(pred, fr, image_size=size)
    box = scores.result()["overall"]
    fold_row = None if fold is None else score_fold(preds, held, held_images, car_id, fold.name, fold.stretch)
    return val_scores | {"held_out_box_recall": box["recall"], "held_out_car_precision": box["car_precision"]}, fold_row


LOG_FIELDS = ["step", "lr", "source_loss", "target_loss", "distil_loss", "hint_loss", "kept_fraction",
    "val_pixel_acc", "val_miou", "held_out_box_recall", "held_out_car_precision", "seconds"]


def plot_log(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    tr = [r for r in rows if r["source_loss"] != ""]
    steps = [r["step"] for r in tr]
    ax[0].plot(steps, [r["source_loss"] for r in tr], label="labelled loss")
    ax[0].plot(steps, [r["target_loss"] for r in tr], label="pseudo-label loss")
    if any(r.get("distil_loss") not in ("", None, 0.0) for r in tr):
        ax[0].plot(steps, [r["distil_loss"] for r in tr], label="distillation loss (KL)")
        ax[0].plot(steps, [r.get("hint_loss") or np.nan for r in tr], label="hint loss (decoder levels)")
    ax[0].plot(steps, [r["kept_fraction"] for r in tr], label="pseudo-labelled fraction")
    ax[0].set_xlabel("step"); ax[0].legend(); ax[0].grid(alpha=.3)
    ev = [r for r in rows if r["val_miou"] != ""]
    for key, label in (("val_miou", "val mIoU (fit)"), ("held_out_box_recall", "held-out box recall"),
                       ("held_out_car_precision", "held-out Car precision")):
        ax[1].plot([r["step"] for r in ev], [np.nan if r[key] in ("", None) else float(r[key]) for r in ev], "o-",
                   label=label)
    ax[1].set_xlabel("step"); ax[1].set_ylim(0, 1); ax[1].legend(); ax[1].grid(alpha=.3)
    fig.suptitle(path.parent.name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_row(row: dict) -> str:
    return "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
                     if k != "step" and v != "")
