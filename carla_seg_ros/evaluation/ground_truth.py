"""Ground-truth semantic images -> model class ids, for the online evaluator (seg_eval_node), or -> raw tag ids of
the coding, for the dataset recorders (`carla-seg record`, `bag-to-dataset`).

The decoding itself is `bag_reading.decode_ground_truth` and the remap + hood rule `datasets.labels_from_tag_ids`,
the very functions `carla-seg bag-eval` and `carla-seg evaluate` use, so the same message gives the same label in
all three. This module adds only what a live stream needs on top:

* ``coding="auto"`` for palette ground truth: each CARLA version paints its tags in its own CityScapes palette,
  so the coding whose palette leaves the fewest pixels unexplained is the one in use. The choice is locked as soon
  as one frame decides it unambiguously (a frame showing only colours shared by several palettes does not).
  Raw tag ids carry no such fingerprint (id 7 is Road in 0.9.10-0.9.13 and TrafficLight from 0.9.14), so ``auto``
  with raw ids is refused per frame (counted under ``ids_need_coding``), never guessed.
"""
from __future__ import annotations

import numpy as np

from carla_seg_ros.classes import CODINGS, load_coding
from carla_seg_ros.datasets import HoodRule, labels_from_tag_ids
from carla_seg_ros.evaluation.bag_reading import Counters, decode_ground_truth
from carla_seg_ros.image_codec import ImageRejected, pixels, to_rgb

GT_FORMATS = ("auto", "palette", "ids")
CODING_CHOICES = ("auto",) + CODINGS
# On a tie (a frame showing only shared colours) the newest coding is used until a frame decides; shared colours
# mean the same class in every coding, so the tie cannot change a label.
AUTO_ORDER = ("tags29", "tags23", "tags13")


def check_choice(name: str, value: str, choices: tuple) -> str:
    if value not in choices:
        raise ValueError(f"{name} {value!r} is unknown; use one of {', '.join(choices)}")
    return value


def palette_mismatch(rgb: np.ndarray) -> dict[str, int]:
    """Pixels whose colour is not in each coding's palette (0 = the frame is fully explained by that coding)."""
    return {name: load_coding(name).unmatched_colors(rgb) for name in AUTO_ORDER}


def resolved_format(gt_format: str, encoding: str) -> str:
    """``auto``: mono8 holds ids, a colour image palette colours (as bag-eval decides)."""
    return gt_format if gt_format != "auto" else ("ids" if encoding == "mono8" else "palette")


class GroundTruthDecoder:
    """sensor_msgs/Image -> model class ids (H, W) uint8, hood rule applied; ImageRejected for unusable frames."""

    def __init__(self, gt_format: str, coding: str, hood: HoodRule, counters: Counters, tag_lut=None):
        self.gt_format = check_choice("gt_format", gt_format, GT_FORMATS)
        self.requested_coding = check_choice("coding", coding, CODING_CHOICES)
        self.coding = None if coding == "auto" else load_coding(coding)
        self.locked = self.coding is not None
        self.hood = hood
        self.counters = counters
        # coding name -> (256,) tag id -> class id of the model (ModelInfo.tag_lut); None: the 13 lyft13 classes
        self.tag_lut = tag_lut

    @property
    def coding_name(self) -> str:
        return self.coding.name if self.coding is not None else "auto (undecided)"

    def _auto_coding(self, msg) -> None:
        if resolved_format(self.gt_format, msg.encoding) == "ids":
            raise ImageRejected("ids_need_coding", "raw tag ids cannot tell the CARLA version apart; set the "
                                                   "parameter coding to tags13, tags23 or tags29")
        native = pixels(msg)
        if msg.encoding == "mono8":
            return   # decode_ground_truth rejects palette-in-mono8 with its own reason
        misses = palette_mismatch(np.ascontiguousarray(to_rgb(native, msg.encoding)))
        best = min(misses.values())
        winners = [name for name in AUTO_ORDER if misses[name] == best]
        self.coding = load_coding(winners[0])
        self.locked = len(winners) == 1

    def decode_tags(self, msg) -> np.ndarray:
        """Raw tag ids of ``self.coding`` (decided here for ``auto``): what the dataset recorders store."""
        if not self.locked:
            self._auto_coding(msg)
        return decode_ground_truth(msg, self.gt_format, self.coding, self.counters)

    def decode(self, msg) -> np.ndarray:
        tags = self.decode_tags(msg)
        lut = self.tag_lut(self.coding.name) if self.tag_lut is not None else None
        return labels_from_tag_ids(tags, self.coding.name, self.hood, lut=lut)
