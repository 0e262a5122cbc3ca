"""Where the Car pixels outside every box lie: the false-positive sources that boxes without semantic labels allow.

Car precision (``boxes.py``) counts predicted Car pixels inside some box grown by ``rule.grow``; the rest are cars the
model made up (or, rarely, far cars nobody boxed). Without labels we cannot name what they really are, but where
and how they lie separates the known kinds: wet-road reflections and road markings sit in the **bottom** third and
come as thin scattered blobs; barriers and kiosks are **middle**-band blobs of a car's size; sky or building
speckle lies in the **top** third. So per frame of a boxed source: the outside-box Car pixels by image band (thirds of
the height) and by blob size (connected components, as a share of the frame so every input size compares).
"""
from __future__ import annotations

import cv2
import numpy as np

from carla_seg_ros.evaluation.boxes import BoxRule
from carla_seg_ros.unlabelled import UnlabelledFrame

BANDS = ("top", "middle", "bottom")
# Blob size as a share of the frame's pixels: < 0.05 % (speckle, < 240 px at 800x600), up to 0.5 % (a small or
# medium car's size), above (a near car's size).
BLOB_EDGES = ((0.0, "speckle"), (0.0005, "car-sized small"), (0.005, "car-sized large"))
FP_KEYS = ("fp_pixels",) + tuple(f"fp_{b}" for b in BANDS) + tuple(f"fp_{name.replace(' ', '_').replace('-', '_')}"
                                                                    for _, name in BLOB_EDGES)


def blob_key(share: float) -> str:
    label = BLOB_EDGES[0][1]
    for lower, name in BLOB_EDGES:
        if share >= lower:
            label = name
    return f"fp_{label.replace(' ', '_').replace('-', '_')}"


def outside_boxes(car: np.ndarray, frame: UnlabelledFrame, rule: BoxRule, image_size: tuple[int, int]) -> np.ndarray:
    """Car pixels (bool mask) outside every box of the frame grown by ``rule.grow``."""
    h, w = car.shape
    iw, ih = image_size
    sx, sy = w / iw, h / ih
    in_box = np.zeros_like(car)
    for box in frame.boxes:
        rows, cols = box.grown(rule.grow, iw, ih).pixel_slices(sx, sy)
        in_box[rows, cols] = True
    return car & ~in_box


def false_positive_counts(pred_ids: np.ndarray, frame: UnlabelledFrame, car_id: int, rule: BoxRule = BoxRule(),
                          image_size: tuple[int, int] | None = None) -> dict[str, int]:
    """Pixel counts under FP_KEYS for one predicted mask; all zero on a frame of a source without boxes (there
    every Car pixel is unjudged, not false)."""
    counts = dict.fromkeys(FP_KEYS, 0)
    if not frame.has_boxes:
        return counts
    h, w = pred_ids.shape
    fp = outside_boxes(pred_ids == car_id, frame, rule, image_size or (w, h))
    counts["fp_pixels"] = int(fp.sum())
    if not counts["fp_pixels"]:
        return counts
    for i, band in enumerate(BANDS):
        counts[f"fp_{band}"] = int(fp[i * h // 3:(i + 1) * h // 3].sum())
    n, _, stats, _ = cv2.connectedComponentsWithStats(fp.astype(np.uint8), connectivity=8)
    for area in stats[1:n, cv2.CC_STAT_AREA]:
        counts[blob_key(area / fp.size)] += int(area)
    return counts
