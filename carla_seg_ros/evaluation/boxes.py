"""Scores of a mask against 2D object boxes, for frames that have boxes but no semantic labels.

* **Vehicle box recall**: a car or truck box of at least ``min_area`` pixels counts as found when at least
  ``coverage`` of its pixels are predicted Car. Boxes hold road and background too (a box is not a mask), so the
  threshold is a fraction, not a majority.
* **Car precision**: the share of predicted Car pixels that fall inside some box (any class: motorbikes, bicycles
  and their riders are CARLA vehicles too) grown by ``grow`` of its size on every side. Only frames of a source
  that boxes its objects count; Car pixels far from every box are cars the model made up, or (rarely) unboxed
  far-away cars, so this is a lower bound of the true precision.
Both are reported overall and per group (source, weather, lighting), so a weak night or fog shows by itself.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from carla_seg_ros.unlabelled import VEHICLE_BOX_CLASSES, UnlabelledFrame

DARK_MEAN_GREY = 40      # frames darker than this (mean grey, 0-255) count as night / very dark


@dataclass(frozen=True)
class BoxRule:
    min_area: float = 600.0
    coverage: float = 0.25
    grow: float = 0.10


@dataclass
class Tally:
    boxes: int = 0
    found: int = 0
    car_pixels: int = 0
    car_in_boxes: int = 0
    frames: int = 0

    def add(self, other: "Tally") -> None:
        self.boxes += other.boxes
        self.found += other.found
        self.car_pixels += other.car_pixels
        self.car_in_boxes += other.car_in_boxes
        self.frames += other.frames

    @property
    def recall(self) -> float | None:
        return self.found / self.boxes if self.boxes else None

    @property
    def precision(self) -> float | None:
        return self.car_in_boxes / self.car_pixels if self.car_pixels else None

    def as_dict(self) -> dict:
        return {"frames": self.frames, "vehicle_boxes": self.boxes, "found": self.found, "recall": self.recall,
                "car_pixels": self.car_pixels, "car_pixels_in_boxes": self.car_in_boxes,
                "car_precision": self.precision}


def lighting(rgb: np.ndarray) -> str:
    return "dark" if float(rgb.mean()) < DARK_MEAN_GREY else "lit"


def score_frame(pred_ids: np.ndarray, frame: UnlabelledFrame, car_id: int, rule: BoxRule = BoxRule(),
                image_size: tuple[int, int] | None = None) -> tuple[Tally, list[float]]:
    """(tally, coverage of each scored vehicle box) of one predicted mask.

    ``image_size`` (width, height) is the size the boxes refer to, when the mask has another size.
    """
    h, w = pred_ids.shape
    iw, ih = image_size or (w, h)
    sx, sy = w / iw, h / ih
    car = pred_ids == car_id
    tally = Tally(frames=1)
    coverages = []
    for box in frame.boxes:
        if box.cls not in VEHICLE_BOX_CLASSES or box.area < rule.min_area:
            continue
        rows, cols = box.pixel_slices(sx, sy)
        inside = car[rows, cols]
        cov = float(inside.mean()) if inside.size else 0.0
        coverages.append(cov)
        tally.boxes += 1
        tally.found += cov >= rule.coverage
    if frame.has_boxes:
        in_box = np.zeros_like(car)
        for box in frame.boxes:
            rows, cols = box.grown(rule.grow, iw, ih).pixel_slices(sx, sy)
            in_box[rows, cols] = True
        tally.car_pixels = int(car.sum())
        tally.car_in_boxes = int((car & in_box).sum())
    return tally, coverages


@dataclass
class BoxScores:
    """Accumulates frame scores overall and per group; ``result()`` is JSON-ready."""
    car_id: int
    rule: BoxRule = field(default_factory=BoxRule)
    total: Tally = field(default_factory=Tally)
    groups: dict = field(default_factory=dict)
    per_frame: list = field(default_factory=list)

    def add(self, pred_ids: np.ndarray, frame: UnlabelledFrame, rgb: np.ndarray | None = None,
            image_size: tuple[int, int] | None = None) -> Tally:
        tally, coverages = score_frame(pred_ids, frame, self.car_id, self.rule, image_size)
        self.total.add(tally)
        keys = [f"source={frame.source}"]
        if frame.weather:
            keys.append(f"weather={frame.weather}")
        if rgb is not None:
            keys.append(f"lighting={lighting(rgb)}")
        for key in keys:
            self.groups.setdefault(key, Tally()).add(tally)
        self.per_frame.append({"name": frame.name, "coverages": [round(c, 4) for c in coverages],
                               **{k: v for k, v in tally.as_dict().items() if k != "frames"}})
        return tally

    def result(self) -> dict:
        return {"rule": {"min_area_px": self.rule.min_area, "coverage": self.rule.coverage,
                         "grow": self.rule.grow, "vehicle_classes": list(VEHICLE_BOX_CLASSES)},
                "overall": self.total.as_dict(),
                "groups": {k: t.as_dict() for k, t in sorted(self.groups.items())},
                "per_frame": self.per_frame}
