"""Unlabelled CARLA frames (a target domain without semantic labels), their 2D boxes, and the held-out split.

Layout (``../shared/data/carla_unlabelled``): ``rgb/NAME.jpg``, ``manifest.csv`` (one row per frame, with a
``weather`` column where the source names it) and ``boxes.csv`` (``name, cls, xmin, ymin, xmax, ymax`` in pixels of
the stored image). A folder of images without the CSV files works too: no boxes, no weather.

Frames are grouped into *sequences* (the name without its trailing frame number: ``relke``, ``ahvmousavi_night``);
each sequence is one recording. The split cuts every sequence into contiguous blocks of frame numbers and holds out
every fifth block, with a guard band of frames on each side of a held-out block that neither side uses: neighbouring
frames of a drive look alike, so a held-out frame must not have its near twin in the training pool. Spreading
the held-out blocks over the whole recording (rather than taking its last fifth) keeps night, tunnel and highway
parts on both sides.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

BOX_CLASSES = ("car", "truck", "motorbike", "bicycle", "person")
VEHICLE_BOX_CLASSES = ("car", "truck")     # scored for recall: whole vehicles, which the model's Car class covers
HELD_OUT, POOL, GUARD = "held_out", "pool", "guard"
_NUMBERED = re.compile(r"^(?P<sequence>.*?)_?(?P<number>\d+)$")


@dataclass(frozen=True)
class Box:
    cls: str
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def area(self) -> float:
        return max(0.0, self.x1 - self.x0) * max(0.0, self.y1 - self.y0)

    def clipped(self, width: int, height: int) -> "Box":
        """The part of the box inside the image (boxes of near vehicles often reach past the frame's edge)."""
        return Box(self.cls, min(max(0.0, self.x0), float(width)), min(max(0.0, self.y0), float(height)),
                   max(0.0, min(float(width), self.x1)), max(0.0, min(float(height), self.y1)))

    def grown(self, fraction: float, width: int, height: int) -> "Box":
        """The box grown by ``fraction`` of its size on every side, clipped to the image."""
        dx, dy = fraction * (self.x1 - self.x0), fraction * (self.y1 - self.y0)
        return Box(self.cls, max(0.0, self.x0 - dx), max(0.0, self.y0 - dy), min(float(width), self.x1 + dx),
                   min(float(height), self.y1 + dy))

    def pixel_slices(self, scale_x: float = 1.0, scale_y: float = 1.0) -> tuple[slice, slice]:
        """Rows and columns of the pixels whose centres lie inside the box (after scaling the box)."""
        r0, r1 = int(np.ceil(self.y0 * scale_y - 0.5)), int(np.ceil(self.y1 * scale_y - 0.5))
        c0, c1 = int(np.ceil(self.x0 * scale_x - 0.5)), int(np.ceil(self.x1 * scale_x - 0.5))
        return slice(max(0, r0), max(0, r1)), slice(max(0, c0), max(0, c1))


@dataclass(frozen=True)
class UnlabelledFrame:
    name: str
    path: Path
    sequence: str
    number: int
    weather: str = ""
    boxes: tuple[Box, ...] = field(default_factory=tuple)
    has_boxes: bool = False   # the source boxes its objects (an empty tuple then means: no object in view)

    @property
    def source(self) -> str:
        return self.sequence.split("_")[0]


def sequence_and_number(name: str) -> tuple[str, int]:
    """``relke_000325`` -> ("relke", 325); ``ahvmousavi_night_57`` -> ("ahvmousavi_night", 57)."""
    m = _NUMBERED.match(Path(name).stem)
    if not m:
        return Path(name).stem, 0
    return m["sequence"].rstrip("_"), int(m["number"])


def _parse_box(row: dict, where: str) -> Box:
    """One boxes.csv row -> Box; a missing, empty or non-numeric field, a short row or a non-finite or inverted
    box is a ValueError naming the line (a short row leaves None in DictReader's dict: float(None) is a TypeError)."""
    try:
        if not row.get("name") or not row.get("cls"):
            raise ValueError("empty name or cls")
        coords = [float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax")]
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"{where}: bad box row {row} ({type(exc).__name__}: {exc})") from None
    x0, y0, x1, y1 = coords
    if not all(np.isfinite(coords)) or x1 < x0 or y1 < y0:
        raise ValueError(f"{where}: bad box row {row} (coordinates must be finite with xmin <= xmax, ymin <= ymax)")
    return Box(row["cls"], x0, y0, x1, y1)


def read_unlabelled(data_dir: str | Path) -> list[UnlabelledFrame]:
    """Every frame of the folder in (sequence, frame number) order, with its weather and boxes."""
    data_dir = Path(data_dir)
    rgb_dir = data_dir / "rgb"
    if not rgb_dir.is_dir():
        raise FileNotFoundError(f"{data_dir} has no rgb/ folder of unlabelled frames")
    weather, boxed = {}, set()
    if (data_dir / "manifest.csv").is_file():
        with open(data_dir / "manifest.csv", newline="") as f:
            reader = csv.DictReader(f)
            if "name" not in (reader.fieldnames or ()):
                raise ValueError(f"{data_dir / 'manifest.csv'}: no 'name' column (header {reader.fieldnames})")
            weather = {r["name"]: r.get("weather", "") or "" for r in reader}
    boxes: dict[str, list[Box]] = {}
    if (data_dir / "boxes.csv").is_file():
        with open(data_dir / "boxes.csv", newline="") as f:
            reader = csv.DictReader(f)
            for r in reader:
                box = _parse_box(r, f"{data_dir / 'boxes.csv'} line {reader.line_num}")
                boxes.setdefault(r["name"], []).append(box)
        # A source either boxes all its frames or none: a frame of a boxed source without a row has no object.
        boxed = {sequence_and_number(n)[0].split("_")[0] for n in boxes}
    frames = []
    for path in sorted(p for p in rgb_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")):
        seq, num = sequence_and_number(path.name)
        frames.append(UnlabelledFrame(path.name, path, seq, num, weather.get(path.name, ""),
                                      tuple(boxes.get(path.name, ())), seq.split("_")[0] in boxed))
    if not frames:
        raise FileNotFoundError(f"no images in {rgb_dir}")
    return sorted(frames, key=lambda fr: (fr.sequence, fr.number))


def split_unlabelled(frames: list[UnlabelledFrame], every: int = 5, block_frames: int = 60,
                     guard: int = 2) -> dict[str, str]:
    """name -> POOL, HELD_OUT or GUARD (see the module docstring): about 1/every of each sequence held out."""
    by_seq: dict[str, list[UnlabelledFrame]] = {}
    for fr in frames:
        by_seq.setdefault(fr.sequence, []).append(fr)
    split = {}
    for seq_frames in by_seq.values():
        seq_frames = sorted(seq_frames, key=lambda fr: fr.number)
        n = len(seq_frames)
        blocks = every * max(1, round(n / (every * block_frames)))   # a multiple of `every`, so each cycle holds one
        block_of = [min(blocks - 1, i * blocks // n) for i in range(n)]
        held = [b % every == every - 1 for b in block_of]
        for i, fr in enumerate(seq_frames):
            near_held = any(held[j] for j in range(max(0, i - guard), min(n, i + guard + 1)))
            split[fr.name] = HELD_OUT if held[i] else GUARD if near_held else POOL
    return split


def frames_of(frames: list[UnlabelledFrame], split: dict[str, str], part: str) -> list[UnlabelledFrame]:
    return [fr for fr in frames if split[fr.name] == part]


def read_frame(frame: UnlabelledFrame) -> np.ndarray:
    bgr = cv2.imread(str(frame.path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read image {frame.path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
