"""Scores of a mask against 2D object boxes, for frames that have boxes but no semantic labels.

* **Vehicle box recall**: a car or truck box with at least ``min_area`` pixels inside the image counts as found when
  at least ``coverage`` of those pixels are predicted Car. Boxes hold road and background too (a box is not a mask),
  so the threshold is a fraction, not a majority.
* **Car precision**: the share of predicted Car pixels that fall inside some box (any class: motorbikes, bicycles
  and their riders are CARLA vehicles too) grown by ``grow`` of its size on every side. Only frames of a source
  that boxes its objects count; Car pixels far from every box are cars the model made up, or (rarely) unboxed
  far-away cars, so this is a lower bound of the true precision.
Both are reported overall and per group (source, weather, lighting), so a weak night or fog shows by itself; so is
the **Car share** (predicted Car pixels / all pixels, on every frame), the one number for sources without boxes.
The coverage of every scored box is kept, so the recall at other coverage thresholds and per box size follows.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from carla_seg_ros.unlabelled import VEHICLE_BOX_CLASSES, Box, UnlabelledFrame

DARK_MEAN_GREY = 40      # frames darker than this (mean grey, 0-255) count as night / very dark
CURVE_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 16))    # coverage thresholds 0.05 .. 0.75
# Box size buckets (visible pixels of the frame): (lower edge, name); scored boxes have at least min_area pixels.
SIZE_BUCKETS = ((0, "<2k px"), (2000, "2k-8k px"), (8000, "8k-32k px"), (32000, ">=32k px"))


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
    boxed_frames: int = 0     # frames of a source that boxes its objects: the frames Car precision counts
    pixels: int = 0           # mask pixels of every frame, boxed or not,
    car_pixels_all: int = 0   # and those predicted Car: the Car share shows a night or fog that invents cars

    def add(self, other: "Tally") -> None:
        self.boxes += other.boxes
        self.found += other.found
        self.car_pixels += other.car_pixels
        self.car_in_boxes += other.car_in_boxes
        self.frames += other.frames
        self.boxed_frames += other.boxed_frames
        self.pixels += other.pixels
        self.car_pixels_all += other.car_pixels_all

    @property
    def recall(self) -> float | None:
        return self.found / self.boxes if self.boxes else None

    @property
    def precision(self) -> float | None:
        return self.car_in_boxes / self.car_pixels if self.car_pixels else None

    def as_dict(self) -> dict:
        return {"frames": self.frames, "boxed_frames": self.boxed_frames, "vehicle_boxes": self.boxes,
                "found": self.found, "recall": self.recall, "car_pixels": self.car_pixels,
                "car_pixels_in_boxes": self.car_in_boxes, "car_precision": self.precision,
                "car_share": self.car_pixels_all / self.pixels if self.pixels else None}


def lighting(rgb: np.ndarray) -> str:
    return "dark" if float(rgb.mean()) < DARK_MEAN_GREY else "lit"


def scored_boxes(frame: UnlabelledFrame, rule: BoxRule, image_size: tuple[int, int]) -> list[Box]:
    """The frame's vehicle boxes that recall scores, clipped to the image (width, height): those with at least
    ``rule.min_area`` pixels inside it. A box reaching past the frame's edge is judged by its visible part."""
    out = []
    for box in frame.boxes:
        if box.cls in VEHICLE_BOX_CLASSES:
            visible = box.clipped(*image_size)
            if visible.area >= rule.min_area:
                out.append(visible)
    return out


def size_bucket(area: float, buckets=SIZE_BUCKETS) -> str:
    """The name of the last of ``buckets`` ((lower bound, name), ascending) whose bound ``area`` reaches."""
    label = buckets[0][1]
    for lower, name in buckets:
        if area >= lower:
            label = name
    return label


def score_frame(pred_ids: np.ndarray, frame: UnlabelledFrame, car_id: int, rule: BoxRule = BoxRule(),
                image_size: tuple[int, int] | None = None) -> tuple[Tally, list[float]]:
    """(tally, coverage of each scored vehicle box) of one predicted mask.

    ``image_size`` (width, height) is the size the boxes refer to, when the mask has another size.
    """
    h, w = pred_ids.shape
    iw, ih = image_size or (w, h)
    sx, sy = w / iw, h / ih
    car = pred_ids == car_id
    tally = Tally(frames=1, pixels=int(car.size), car_pixels_all=int(car.sum()))
    coverages = []
    for box in scored_boxes(frame, rule, (iw, ih)):
        rows, cols = box.pixel_slices(sx, sy)
        inside = car[rows, cols]
        cov = float(inside.mean()) if inside.size else 0.0
        coverages.append(cov)
        tally.boxes += 1
        tally.found += cov >= rule.coverage
    if frame.has_boxes:
        tally.boxed_frames = 1
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
    boxes: list = field(default_factory=list)   # (class, visible area px, coverage) of every scored box, unrounded

    def add(self, pred_ids: np.ndarray, frame: UnlabelledFrame, rgb: np.ndarray | None = None,
            image_size: tuple[int, int] | None = None) -> Tally:
        tally, coverages = score_frame(pred_ids, frame, self.car_id, self.rule, image_size)
        scored = scored_boxes(frame, self.rule, image_size or (pred_ids.shape[1], pred_ids.shape[0]))
        self.boxes += [(b.cls, b.area, c) for b, c in zip(scored, coverages)]
        self.total.add(tally)
        keys = [f"source={frame.source}"]
        if frame.weather:
            keys.append(f"weather={frame.weather}")
        if rgb is not None:
            keys.append(f"lighting={lighting(rgb)}")
        for key in keys:
            self.groups.setdefault(key, Tally()).add(tally)
        self.per_frame.append({"name": frame.name, "groups": keys, "coverages": [round(c, 4) for c in coverages],
                               "box_classes": [b.cls for b in scored],
                               "box_areas": [round(b.area, 1) for b in scored],
                               **{k: v for k, v in tally.as_dict().items() if k not in ("frames", "boxed_frames")}})
        return tally

    def recall_curve(self, thresholds=CURVE_THRESHOLDS) -> list[dict]:
        """Vehicle box recall at each coverage threshold (the same boxes, only the threshold moves)."""
        cov = np.array([c for _, _, c in self.boxes], np.float64)
        return [{"coverage": float(t), "found": int((cov >= t).sum()),
                 "recall": float((cov >= t).mean()) if cov.size else None} for t in thresholds]

    def by_size(self) -> dict:
        """Boxes, found and recall per box size bucket (visible pixels), with their coverages."""
        out = {name: {"min_area_px": lower, "vehicle_boxes": 0, "found": 0, "coverages": []}
               for lower, name in SIZE_BUCKETS}
        for _, area, cov in self.boxes:
            b = out[size_bucket(area)]
            b["vehicle_boxes"] += 1
            b["found"] += cov >= self.rule.coverage
            b["coverages"].append(round(cov, 4))
        for b in out.values():
            b["recall"] = b["found"] / b["vehicle_boxes"] if b["vehicle_boxes"] else None
        return out

    def result(self) -> dict:
        return {"rule": {"min_area_px": self.rule.min_area, "coverage": self.rule.coverage,
                         "grow": self.rule.grow, "vehicle_classes": list(VEHICLE_BOX_CLASSES)},
                "overall": self.total.as_dict(),
                "groups": {k: t.as_dict() for k, t in sorted(self.groups.items())},
                "recall_by_coverage": self.recall_curve(),
                "by_box_size": self.by_size(),
                "per_frame": self.per_frame}
