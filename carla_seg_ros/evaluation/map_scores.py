"""Scores of a ground map against ground truth: IoU with a boundary tolerance, and flicker.

* ``tolerant_iou``: objects reach a ground map only along their visible faces, a band of one to a few cells
  whose exact place depends on where a mask row's footprint falls. A predicted cell within ``tolerance`` cells of
  a true one counts as right, a true cell within ``tolerance`` cells of a predicted one counts as found; both
  sets are scored only where the map has evidence (``scored``). With tolerance 0 it is the plain IoU.
* ``flicker_per_second``: how often the state of a cell changes, per cell and second, over a series of grids
  (int8, -1/0..100 thresholded into unknown, free, occupied), counted over the cells known in every grid.
"""
from __future__ import annotations

import numpy as np


def dilate(mask: np.ndarray, cells: int) -> np.ndarray:
    """Boolean dilation by a (2 cells + 1) square."""
    out = mask.copy()
    for _ in range(cells):
        padded = np.pad(out, 1)
        grown = np.zeros_like(out)
        for dy in range(3):
            for dx in range(3):
                grown |= padded[dy:dy + out.shape[0], dx:dx + out.shape[1]]
        out = grown
    return out


def tolerant_iou(predicted: np.ndarray, truth: np.ndarray, scored: np.ndarray, tolerance: int = 1) -> dict:
    """{'iou', 'tp', 'fp', 'fn'} of boolean grids over the ``scored`` cells, with a tolerance in cells."""
    predicted, truth = predicted & scored, truth & scored
    near_truth, near_predicted = dilate(truth, tolerance), dilate(predicted, tolerance)
    tp = int((predicted & near_truth).sum())
    fp = int((predicted & ~near_truth).sum())
    fn = int((truth & ~near_predicted).sum())
    return {"iou": tp / (tp + fp + fn) if tp + fp + fn else float("nan"), "tp": tp, "fp": fp, "fn": fn}


def states(grid: np.ndarray, occupied_above: int = 50) -> np.ndarray:
    """int8 grid -> 0 unknown, 1 free, 2 occupied."""
    return np.where(grid < 0, 0, np.where(grid > occupied_above, 2, 1)).astype(np.int8)


def flicker_per_second(grids: list[np.ndarray], seconds: float) -> float:
    """Mean state changes per cell per second over the cells known in every grid of the series."""
    series = np.stack([states(g) for g in grids])
    known = (series > 0).all(axis=0)
    if not known.any() or seconds <= 0:
        return float("nan")
    changes = (series[1:] != series[:-1]).sum(axis=0)
    return float(changes[known].mean() / seconds)
