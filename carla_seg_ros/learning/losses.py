"""The segmentation loss of every training command: class-weighted cross-entropy plus an optional soft Dice term,
and the class weights it uses."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from carla_seg_ros import classes


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """(median frequency / frequency) ** 0.25, clipped to [0.5, 3]: rare classes (pedestrian, pole, sign, wall) weigh
    more. The square root used first made rare classes over-predicted (train precision 0.29 vs recall 0.66 on
    Fence), which costs IoU; the fourth root keeps the push towards recall milder.
    """
    counts = np.bincount(labels[labels != classes.IGNORE_INDEX].ravel(), minlength=num_classes).astype(np.float64)
    freq = counts / counts.sum()
    w = (np.median(freq[freq > 0]) / np.maximum(freq, 1e-6)) ** 0.25
    return torch.tensor(np.clip(w, 0.5, 3.0), dtype=torch.float32)


def segmentation_loss(logits, target, num_classes, class_weight=None, dice_weight=0.0):
    """Cross-entropy (optionally class-weighted) + dice_weight x soft Dice over the classes present in the batch.

    Both terms share one log-softmax, and the Dice sums are taken per class with a gather and index_add rather
    than a one-hot tensor: the one-hot version (an int64 N x H x W x C tensor, its product with the probabilities
    and their backward) cost 0.53 s of a ~1.2 s training step at batch 8, 384x288; this takes ~0.15 s and gives
    the same gradients (tested against the one-hot formula in test/test_train.py).
    """
    log_prob = F.log_softmax(logits.float(), dim=1)
    loss = F.nll_loss(log_prob, target, weight=class_weight, ignore_index=classes.IGNORE_INDEX)
    if dice_weight == 0:
        return loss
    valid = target != classes.IGNORE_INDEX
    prob = log_prob.exp()
    target_valid = target[valid]
    # probability each valid pixel gives its true class (the clamp only keeps ignore pixels in range for gather)
    p_true = prob.gather(1, target.clamp(max=num_classes - 1).unsqueeze(1))[:, 0][valid]
    intersection = torch.zeros(num_classes, dtype=prob.dtype, device=prob.device).index_add_(0, target_valid, p_true)
    prob_sum = (prob * valid.unsqueeze(1)).sum((0, 2, 3))
    label_count = torch.bincount(target_valid, minlength=num_classes).to(prob.dtype)
    dice = 1 - (2 * intersection + 1) / (prob_sum + label_count + 1)
    return loss + dice_weight * dice[label_count > 0].mean()
