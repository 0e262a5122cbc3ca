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

from carla_seg_ros.classes import IGNORE_INDEX, load_coding

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
        raise FileNotFoundError(f"data directory {data_dir} does not exist (see README: Data)")
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


def labels_from_tag_ids(tag_ids: np.ndarray, coding: str, hood: HoodRule) -> np.ndarray:
    """Raw CARLA tag ids of ``coding`` -> model class ids (H, W) uint8 with the hood rule applied.

    The one place labels are made, for files (read_label) and for ground truth decoded from rosbags alike.
    """
    return hood_for(coding, hood).apply(load_coding(coding).ids_to_model(tag_ids))


def read_label(pair: Pair, hood: HoodRule) -> np.ndarray:
    """Model class ids (H, W) uint8 for a pair: remapped from its coding, hood rule applied."""
    return labels_from_tag_ids(read_tag_ids(pair.label), pair.coding, hood)


def hood_for(coding: str, hood: HoodRule) -> HoodRule:
    """Modern CARLA frames (23/29 tags) show no hood: the rule applies to the 13-tag data only."""
    return hood if coding == "tags13" else NO_HOOD
