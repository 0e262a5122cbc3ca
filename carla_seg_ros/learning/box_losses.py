"""Loss terms taken from 2D boxes rather than from pseudo-labels.

The vehicles the teacher misses on modern-asset frames (trucks, vans, medium-range boxes) are labelled as something
else with high confidence, so no confidence threshold ever teaches them; the box itself can. The positive-only
projection term (BoxInst's projection loss, without its negative half; trial C in the self-training trials note):
let B be the union of a crop's vehicle boxes and P the student's Car probability masked to B; then every column and
every row that B spans must hold some Car inside B:

    loss = mean over B's columns of (1 - max over rows of P) + mean over B's rows of (1 - max over columns of P)

Nothing is pushed down outside the boxes by that term, so it raises recall and costs Car precision where the
student fills whole box rectangles. The Car hard-negative term is the other half: on a frame whose source boxes its
vehicles, pixels far from every box (outside each box grown by half its size) are not a vehicle, so their Car
probability is pushed down (-log(1 - P)). Pseudo-labels alone only stop *teaching* Car there; the false Car blobs
on wet roads, barriers and kiosks are confident, so they stay unless something pushes them down.
"""
from __future__ import annotations

import torch


def box_projection_loss(car_prob: torch.Tensor, in_box: torch.Tensor) -> torch.Tensor:
    """``car_prob`` (N, H, W) in [0, 1], ``in_box`` (N, H, W) bool: the positive-only projection term, pooled over
    every box column and row of the batch; 0 (with a gradient path) when no crop has a box."""
    if car_prob.shape != in_box.shape or car_prob.dim() != 3:
        raise ValueError(f"car_prob {tuple(car_prob.shape)} and in_box {tuple(in_box.shape)} must both be (N, H, W)")
    masked = car_prob * in_box.to(car_prob.dtype)
    cols, rows = in_box.any(dim=1), in_box.any(dim=2)          # (N, W), (N, H): the spans of the boxes
    if not cols.any():
        return car_prob.sum() * 0.0
    col_max, row_max = masked.amax(dim=1), masked.amax(dim=2)
    return (1 - col_max[cols]).mean() + (1 - row_max[rows]).mean()


def car_hard_negative_loss(car_prob: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """``car_prob`` (N, H, W) in [0, 1], ``negative`` (N, H, W) bool (pixels known not to be a vehicle): the mean
    of -log(1 - P) over them; 0 (with a gradient path) when there are none."""
    if car_prob.shape != negative.shape or car_prob.dim() != 3:
        raise ValueError(f"car_prob {tuple(car_prob.shape)} and negative {tuple(negative.shape)} must both be "
                         "(N, H, W)")
    if not negative.any():
        return car_prob.sum() * 0.0
    return -torch.log1p(-car_prob[negative].clamp(max=1 - 1e-6)).mean()
