"""Image/label pairs on disk, label decoding and the ego-hood rule (no torch here: the node and tools use it too).

Supported layouts (picked automatically):
* prepared: ``DIR/<split>/rgb/NAME.png`` + ``DIR/<split>/label/NAME.png`` (single-channel class ids), with
  ``fullres`` as a split; this is ``../shared/data/carla_seg``.
* flat: ``DIR/rgb`` + ``DIR/label`` (``../shared/data/carla_seg_modern``; ``t23_``/``t29_`` name prefixes name the
  CARLA coding of each label).
* Kaggle "lyft-udacity-challenge": any ``CameraRGB/`` folder with a ``CameraSeg/`` sibling below DIR (the class
  id is the red channel of the label PNG). ``--split`` then names a sub-folder (``dataA``...), or ``all``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from carla_seg_ros.classes import CODINGS, DEFAULT_CLASS_SET, IGNORE_INDEX, tag_lut

HOOD_CLASS = 10
# The ego-car hood covers the bottom rows of every Lyft/CARLA-0.8 frame: fully from row ~520 of 600, partly from
# ~495 (dataset README). 495/600 is the row the Lyft challenge grader used.
DEFAULT_HOOD_ROW_FRACTION = 495 / 600
HOOD_MODES = ("background", "ignore", "none")


@dataclass(frozen=True)
class HoodRule:
    """What happens to Car-labelled pixels at or below ``row_fraction`` of the image height.

    * ``background`` (default, the Lyft grader's rule): they become class 0, so the model learns that the hood is
      not an obstacle and metrics score it as the challenge did.
    * ``ignore``: they become IGNORE_INDEX and count neither in the loss nor in any metric.
    * ``none``: labels are used as they are (e.g. modern CARLA frames, which show no hood).
    """
    mode: str = "background"
    row_fraction: float = DEFAULT_HOOD_ROW_FRACTION

    def __post_init__(self):
        if self.mode not in HOOD_MODES:
            raise ValueError(f"hood mode must be one of {HOOD_MODES}, got {self.mode!r}")
        if not 0.0 <= self.row_fraction <= 1.0:
            raise ValueError(f"hood row fraction must be in [0, 1], got {self.row_fraction}")

    def first_row(self, height: int) -> int:
        return int(round(self.row_fraction * height))

    def apply(self, label: np.ndarray) -> np.ndarray:
        if self.mode == "none":
            return label
        label = label.copy()
        row = self.first_row(label.shape[0])
        bottom = label[row:]
        bottom[bottom == HOOD_CLASS] = 0 if self.mode == "background" else IGNORE_INDEX
        return label


NO_HOOD = HoodRule("none")


@dataclass(frozen=True)
class Pair:
    name: str
    rgb: Path
    label: Path
    coding: str = "tags13"   # CARLA coding of the label ids


def _coding_from_name(name: str) -> str:
    if name.startswith("t23_"):
        return "tags23"
    if name.startswith("t29_"):
        return "tags29"
    return "tags13"


def _pairs_in(rgb_dir: Path, label_dir: Path) -> list[Pair]:
    pairs = []
    for rgb in sorted(rgb_dir.glob("*.png")):
        label = label_dir / rgb.name
        if label.is_file():
            pairs.append(Pair(rgb.stem, rgb, label, _coding_from_name(rgb.stem)))
    return pairs


def find_pairs(data_dir: str | Path, split: str = "test") -> list[Pair]:
    """All image/label pairs of ``split`` below ``data_dir`` (see the module docstring for layouts)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data directory {data_dir} does not exist (see docs/reference/cli.md, Data folders)")
    if (data_dir / split / "rgb").is_dir():
        pairs = _pairs_in(data_dir / split / "rgb", data_dir / split / "label")
    elif (data_dir / "rgb").is_dir() and split in ("all", "test"):
        pairs = _pairs_in(data_dir / "rgb", data_dir / "label")
    else:
        root = data_dir if split == "all" else data_dir / split
        pairs = []
        for rgb_dir in sorted(root.rglob("CameraRGB")):
            for p in _pairs_in(rgb_dir, rgb_dir.parent / "CameraSeg"):
                # Kaggle names repeat across dataA..dataE: prefix the folder to keep them unique.
                pairs.append(Pair(f"{rgb_dir.parent.name}_{p.name}", p.rgb, p.label, p.coding))
    pairs = _with_manifest_codings(data_dir / split if (data_dir / split / "rgb").is_dir() else data_dir, pairs)
    if not pairs:
        raise FileNotFoundError(
            f"no image/label pairs for split {split!r} under {data_dir}: expected {split}/rgb + {split}/label, "
            "rgb + label, or Kaggle CameraRGB + CameraSeg folders")
    return pairs


def read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_tag_ids(path: Path) -> np.ndarray:
    """Raw CARLA tag ids: a single-channel PNG, or the red channel of an RGB label (Kaggle/CARLA raw format)."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"cannot read label {path}")
    if img.ndim == 3:
        img = img[..., 2]  # OpenCV loads BGR(A): index 2 is red
    return img.astype(np.uint8)


def labels_from_tag_ids(tag_ids: np.ndarray, coding: str, hood: HoodRule, class_set: str = DEFAULT_CLASS_SET,
                        lut: np.ndarray | None = None) -> np.ndarray:
    """Raw CARLA tag ids of ``coding`` -> model class ids (H, W) uint8 with the hood rule applied.

    The one place labels are made, for files (read_label) and for ground truth decoded from rosbags alike. The
    class ids are those of ``class_set`` (classes.yaml), or of ``lut`` (tag id -> class id, e.g. built from a
    model's metadata) when given. The hood rule works on the 13-tag ids (hood = tag 10 Car, background = tag 0),
    before the remap; those ids are the lyft13 class ids, so for lyft13 this is the rule on class ids it always was.
    """
    if lut is None:
        lut = tag_lut(coding, class_set)
    return lut[hood_for(coding, hood).apply(tag_ids)]


def read_label(pair: Pair, hood: HoodRule, class_set: str = DEFAULT_CLASS_SET) -> np.ndarray:
    """Model class ids (H, W) uint8 for a pair: remapped from its coding to ``class_set``, hood rule applied."""
    return labels_from_tag_ids(read_tag_ids(pair.label), pair.coding, hood, class_set)


def hood_for(coding: str, hood: HoodRule) -> HoodRule:
    """Modern CARLA frames (23/29 tags) show no hood: the rule applies to the 13-tag data only."""
    return hood if coding == "tags13" else NO_HOOD


# ---------------------------------------------------------------------------------------------------------------
# recorded (flat) folders: manifest, time order and the contiguous-block train / val split
# ---------------------------------------------------------------------------------------------------------------
def read_manifest(folder: Path) -> dict[str, dict]:
    """Rows of ``folder/manifest.csv`` by name ({} without one)."""
    import csv
    path = Path(folder) / "manifest.csv"
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        return {row["name"]: row for row in csv.DictReader(f) if row.get("name")}


def _with_manifest_codings(folder: Path, pairs: list[Pair]) -> list[Pair]:
    """A manifest's ``coding`` column (carla-seg record writes one) names a pair's coding where it has one."""
    manifest = read_manifest(folder)
    out = []
    for p in pairs:
        coding = (manifest.get(p.name) or {}).get("coding") or p.coding
        if coding not in CODINGS:
            raise ValueError(f"{folder}/manifest.csv: unknown coding {coding!r} for {p.name}")
        out.append(p if coding == p.coding else Pair(p.name, p.rgb, p.label, coding))
    return out


def is_flat(data_dir: Path) -> bool:
    """A recorded folder (rgb/ + label/, no split folders)."""
    data_dir = Path(data_dir)
    return (data_dir / "rgb").is_dir() and not (data_dir / "train" / "rgb").is_dir()


def time_order(data_dir: Path, pairs: list[Pair]) -> tuple[list[Pair], str]:
    """Pairs in recording order and how it was found: by the manifest's ``stamp_ns`` grouped by the name's tag
    (the part before the stamp: coding prefix, town and weather of ``carla --record``, whose simulation clock
    restarts with each town), else by name (which starts with the stamp for ``carla-seg record``)."""
    manifest = read_manifest(data_dir)
    stamps = {n: r.get("stamp_ns", "") for n, r in manifest.items()}
    if pairs and all(str(stamps.get(p.name, "")).isdigit() for p in pairs):
        def key(p):
            parts = p.name.rsplit("_", 2)
            return (parts[0] if len(parts) == 3 else "", int(stamps[p.name]), p.name)
        return sorted(pairs, key=key), "manifest stamp_ns (grouped by the name before the stamp)"
    return sorted(pairs, key=lambda p: p.name), "name order"


@dataclass(frozen=True)
class BlockSplit:
    train: list
    val: list
    guard: list
    blocks: list          # [(first, last)] positions of the val blocks in time order (inclusive)
    order: str


def time_block_split(ordered: list, val_fraction: float = 0.1, guard: int = 10, blocks: int = 1) -> BlockSplit:
    """Split frames in time order into train and ``blocks`` contiguous val blocks (together ``val_fraction`` of the
    frames, evenly spaced, the last one ending the recording) with ``guard`` frames dropped on each side of every
    val block, so that no val frame has a near-identical neighbour in train (as ../shared/data/carla_seg was split).
    Neighbouring frames of a drive are near copies: a random per-frame split would score memorisation, not
    generalisation. The guard shrinks on short recordings so that train keeps at least half of the frames."""
    n = len(ordered)
    if n < 2:
        raise ValueError(f"a train / val split needs at least 2 frames, got {n}")
    n_val = min(n - 1, max(blocks, round(n * val_fraction)))
    blocks = max(1, min(blocks, n_val))
    length = n_val // blocks
    guard = max(0, min(guard, (n - n_val - n // 2) // (2 * blocks)))
    role = ["train"] * n
    spans = []
    for k in range(blocks):
        end = round((k + 1) * n / blocks)            # exclusive; the last block ends the recording
        start = end - length
        for i in range(max(0, start - guard), min(n, end + guard)):
            role[i] = "guard"
        for i in range(start, end):
            role[i] = "val"
        spans.append((start, end - 1))
    pick = lambda r: [p for p, q in zip(ordered, role) if q == r]  # noqa: E731
    return BlockSplit(pick("train"), pick("val"), pick("guard"), spans, "")
