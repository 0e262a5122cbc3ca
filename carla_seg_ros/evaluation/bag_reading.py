"""Reading rosbag2 recordings for evaluation: topics, header stamps, camera/ground-truth pairing, decoding.

Shared by `carla-seg bag-eval` and the online evaluator, so both pair and decode frames the same way. Every message
that cannot be used is counted by reason (``Counters``), never dropped silently.
"""
from __future__ import annotations

import sys
from bisect import bisect_left
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from carla_seg_ros.evaluation.bag_make import typestore
from carla_seg_ros.image_codec import ImageRejected, pixels, to_rgb

IMAGE_TYPE = "sensor_msgs/msg/Image"


class BagError(RuntimeError):
    """The bag cannot be used as asked (missing, unreadable, truncated, wrong topics)."""


def _print_skip(message: str) -> None:
    print(f"bag-eval: skipping frame: {message} (further frames with this problem are only counted)",
          file=sys.stderr)


@dataclass
class Counters:
    """What happened to every message, so nothing is dropped silently."""
    skipped: dict = field(default_factory=dict)       # reason -> frames
    first_error: dict = field(default_factory=dict)   # reason -> first message text
    unknown_color_pixels: int = 0
    unknown_id_pixels: int = 0
    log: Callable[[str], None] = _print_skip          # told once per reason (the node passes its logger)

    def skip(self, reason: str, message: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if reason not in self.first_error:
            self.first_error[reason] = message
            self.log(message)


# ---------------------------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------------------------
def open_bag(path: Path):
    """An opened rosbags AnyReader, or BagError with a message a user can act on."""
    from rosbags.highlevel import AnyReader, AnyReaderError
    path = Path(path)
    if not path.exists():
        raise BagError(f"bag {path} does not exist")
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        raise BagError(f"{path} is not a rosbag2 folder (no metadata.yaml); pass the folder `ros2 bag record` "
                       "wrote, or its .mcap/.db3 file")
    try:
        reader = AnyReader([path], default_typestore=typestore())
        reader.open()
    except (AnyReaderError, OSError, ValueError, KeyError) as exc:
        raise BagError(f"cannot open bag {path}: {exc} (is it a complete rosbag2 folder, .mcap or .db3 file? "
                       "a recording that was killed may be truncated)") from exc
    return reader


def bag_custom_data(path: Path) -> dict:
    """The rosbag2 metadata's custom_data (make-bag stores the ground truth's coding there); {} if none."""
    path = Path(path)
    meta = (path if path.is_dir() else path.parent) / "metadata.yaml"   # a .mcap/.db3 file: its folder's
    if not meta.is_file():
        return {}
    try:
        info = yaml.safe_load(meta.read_text())["rosbag2_bagfile_information"]
    except (yaml.YAMLError, KeyError, TypeError):
        return {}
    return info.get("custom_data") or {}


def topic_connections(reader, topic: str, role: str) -> list:
    conns = [c for c in reader.connections if c.topic == topic]
    if not conns:
        listing = "\n".join(f"  {t} ({info.msgtype}, {info.msgcount} messages)"
                            for t, info in sorted(reader.topics.items()))
        raise BagError(f"{role} topic {topic!r} is not in the bag; it has:\n{listing or '  (no topics)'}")
    bad = {c.msgtype for c in conns} - {IMAGE_TYPE}
    if bad:
        raise BagError(f"{role} topic {topic!r} has type {', '.join(sorted(bad))}; bag-eval reads {IMAGE_TYPE} "
                       "(decompress CompressedImage topics first)")
    return conns


def iter_messages(reader, conns, bag: Path):
    """reader.messages with storage errors (truncated mcap/sqlite files) turned into BagError."""
    count = 0
    try:
        for item in reader.messages(connections=conns):
            count += 1
            yield item
    except BagError:
        raise
    except Exception as exc:  # noqa: BLE001 - mcap/sqlite3/struct raise many types on damaged files
        raise BagError(f"bag {bag} is truncated or corrupt: reading failed after {count} messages "
                       f"({type(exc).__name__}: {exc})") from exc


def header_stamp_ns(msg) -> int:
    return int(msg.header.stamp.sec) * 10**9 + int(msg.header.stamp.nanosec)


def pair_stamps(image_stamps: list[int], gt_stamps: list[int], tolerance_ns: int) -> list[tuple[int, int]]:
    """Pair messages by header stamp: closest pairs first, each message used at most once, |dt| <= tolerance.

    Returns (image index, gt index) sorted by image stamp.
    """
    order = sorted(range(len(gt_stamps)), key=gt_stamps.__getitem__)
    sorted_gt = [gt_stamps[k] for k in order]
    candidates = []
    for i, stamp in enumerate(image_stamps):
        k = bisect_left(sorted_gt, stamp)
        for kk in (k - 1, k):
            if 0 <= kk < len(sorted_gt) and abs(sorted_gt[kk] - stamp) <= tolerance_ns:
                candidates.append((abs(sorted_gt[kk] - stamp), i, order[kk]))
    candidates.sort()
    used_image, used_gt, pairs = set(), set(), []
    for _, i, j in candidates:
        if i not in used_image and j not in used_gt:
            used_image.add(i)
            used_gt.add(j)
            pairs.append((i, j))
    return sorted(pairs, key=lambda p: (image_stamps[p[0]], p[0]))


def read_stamps(reader, conns, bag: Path, counters: Counters, side: str) -> list[int | None]:
    """Header stamps of every message on ``conns`` in bag order (None where a message cannot be deserialised)."""
    stamps = []
    for conn, _, raw in iter_messages(reader, conns, bag):
        try:
            stamps.append(header_stamp_ns(reader.deserialize(raw, conn.msgtype)))
        except Exception as exc:  # noqa: BLE001 - a corrupt CDR payload raises struct/index errors
            counters.skip(f"{side}:undeserialisable", f"{side} message {len(stamps)} cannot be deserialised ({exc})")
            stamps.append(None)
    return stamps


# ---------------------------------------------------------------------------------------------------------------
# decoding
# ---------------------------------------------------------------------------------------------------------------
def decode_camera(msg) -> np.ndarray:
    """sensor_msgs/Image -> contiguous RGB uint8 (the node's decoder, image_codec)."""
    return np.ascontiguousarray(to_rgb(pixels(msg), msg.encoding))


def decode_ground_truth(msg, gt_format: str, coding, counters: Counters) -> np.ndarray:
    """sensor_msgs/Image ground truth -> raw tag ids of ``coding`` (unknown colours become IGNORE_INDEX, counted)."""
    native = pixels(msg)
    encoding = msg.encoding
    fmt = gt_format if gt_format != "auto" else ("ids" if encoding == "mono8" else "palette")
    if fmt == "ids":
        # mono8 holds the id; a colour image holds it in the red channel (CARLA's raw semantic image).
        tags = np.ascontiguousarray(native[..., 0] if encoding == "mono8" else to_rgb(native, encoding)[..., 0])
        known = np.zeros(256, bool)
        known[list(coding.ids)] = True
        counters.unknown_id_pixels += int((~known[tags]).sum())
        return tags
    if encoding == "mono8":
        raise ImageRejected("palette_in_mono8", "ground truth is mono8, which cannot hold palette colours "
                                                "(use --gt-format ids for raw tag ids)")
    tags, unknown = coding.colors_to_ids(np.ascontiguousarray(to_rgb(native, encoding)))
    counters.unknown_color_pixels += unknown
    return tags
