"""Camera + semantic-camera messages -> stamp-paired samples for the dataset writer (no ROS here).

The front half of `carla-seg record` (live topics) and `carla-seg bag-to-dataset` (a rosbag2), so both treat every
message the same way: the camera stream is paired with the ground-truth stream by header stamp with
stamp_pairing.StampPairer (seg_eval_node's pairing: nearest within the tolerance, each frame once, unmatched after
the match window or at the end), the ground truth is decoded to raw tag ids by ground_truth.GroundTruthDecoder
(palette colours or raw ids, ``coding`` auto|tags13|tags23|tags29) and the camera by the node's decoder
(image_codec). Messages are only checked on arrival (a view, no copy); decoding happens on the writer thread.
Works with rclpy messages and rosbags messages alike (same field names); CompressedImage messages are decoded to
an Image-like object first (``from_compressed``). ``add_odometry`` (nav_msgs/Odometry, e.g. the bridge's
``/carla/<role>/odometry``) gives each pair the ego pose of its stamp (nearest within the stamp tolerance), written
into the manifest's ``ego_*`` columns.
"""
from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from carla_seg_ros import image_codec
from carla_seg_ros.datasets import NO_HOOD
from carla_seg_ros.evaluation.bag_reading import Counters, header_stamp_ns
from carla_seg_ros.evaluation.ego_motion import EgoState, ego_from_odometry
from carla_seg_ros.capture.dataset_writer import DatasetWriter, Sample, thumbnail
from carla_seg_ros.evaluation.ground_truth import GroundTruthDecoder
from carla_seg_ros.evaluation.stamp_pairing import FIRST, SECOND, StampPairer

CAMERA_INFOS_KEPT = 200


def bridge_topics(role: str, camera: str, semantic_camera: str) -> dict[str, str]:
    """The CARLA ROS bridge's topics (CARLA 0.9.16's native publisher uses the same names, see
    docs/tutorials/carla_native.md)."""
    return {"rgb": f"/carla/{role}/{camera}/image", "camera_info": f"/carla/{role}/{camera}/camera_info",
            "gt": f"/carla/{role}/{semantic_camera}/image"}


@dataclass
class _Decoded:
    """An Image-like object (the fields image_codec reads) for a decoded CompressedImage."""
    header: object
    height: int
    width: int
    encoding: str
    step: int
    data: np.ndarray
    is_bigendian: int = 0


def from_compressed(msg):
    """sensor_msgs/CompressedImage (png/jpeg, as image_transport's compressed plugin writes it) -> Image-like.

    A one-channel PNG (``mono8; png compressed mono8``) stays mono8 (raw ids); colour becomes bgr8.
    ImageRejected if OpenCV cannot decode it."""
    import cv2
    buf = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, np.ndarray) else msg.data, np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if img is None:
        raise image_codec.ImageRejected("undecodable_compressed", f"CompressedImage (format {msg.format!r}) cannot "
                                                                  "be decoded by OpenCV")
    if img.dtype != np.uint8:
        raise image_codec.ImageRejected("unknown_encoding", f"CompressedImage (format {msg.format!r}) holds "
                                                            f"{img.dtype} pixels; 8-bit images only")
    if img.ndim == 2:
        encoding, img = "mono8", img[..., None]
    elif img.shape[2] == 4:
        encoding = "bgra8"
    else:
        encoding = "bgr8"
    h, w, c = img.shape
    return _Decoded(msg.header, h, w, encoding, w * c, np.ascontiguousarray(img).reshape(-1))


class PairRecorder:
    """Feed ``add_rgb`` / ``add_gt`` / ``add_camera_info`` in arrival order; pairs go to ``writer.offer``."""

    def __init__(self, writer: DatasetWriter, gt_format: str, coding: str, topics: dict[str, str],
                 tolerance_ns: int = 10_000_000, match_window_ns: int = 2_000_000_000,
                 max_pixels: int = image_codec.DEFAULT_MAX_PIXELS, counters: Counters | None = None,
                 source: str = "ros"):
        self.writer = writer
        self.counters = counters or writer.counters
        self.decoder = GroundTruthDecoder(gt_format, coding, NO_HOOD, self.counters)
        self.topics = topics
        self.max_pixels = max_pixels
        self.source = source
        self.counts = {"rgb_messages": 0, "gt_messages": 0, "camera_info_messages": 0, "odometry_messages": 0,
                       "unmatched_rgb": 0, "unmatched_gt": 0, "undecodable_rgb": 0, "undecodable_gt": 0,
                       "pairs_with_pose": 0}
        self.tolerance_ns = tolerance_ns
        self._pose_stamps: list[int] = []          # sorted, with the EgoState of each in _poses
        self._poses: list[EgoState] = []
        self.outcomes: dict[str, int] = {}
        self.camera_infos: OrderedDict[int, dict] = OrderedDict()
        self._newest_info: dict | None = None      # read by the writer thread (one atomic assignment)
        self._decode_lock = threading.Lock()
        self.pairer = StampPairer(tolerance_ns, match_window_ns, self._on_pair, self._on_unmatched)

    # ------------------------------------------------------------------ input
    def add_rgb(self, msg) -> None:
        self.counts["rgb_messages"] += 1
        self.pairer.add(FIRST, header_stamp_ns(msg), self._checked(msg, "rgb"))

    def add_gt(self, msg) -> None:
        self.counts["gt_messages"] += 1
        self.pairer.add(SECOND, header_stamp_ns(msg), self._checked(msg, "gt"))

    def add_camera_info(self, msg) -> None:
        self.counts["camera_info_messages"] += 1
        k = [float(v) for v in msg.k]
        info = {"info_width": int(msg.width), "info_height": int(msg.height),
                "fx": k[0], "fy": k[4], "cx": k[2], "cy": k[5]}
        self.camera_infos[header_stamp_ns(msg)] = info
        self._newest_info = info
        while len(self.camera_infos) > CAMERA_INFOS_KEPT:
            self.camera_infos.popitem(last=False)

    def add_odometry(self, msg) -> None:
        """One nav_msgs/Odometry; any order (a bag can be read for its odometry first)."""
        self.counts["odometry_messages"] += 1
        stamp = header_stamp_ns(msg)
        k = bisect.bisect_left(self._pose_stamps, stamp)
        if k < len(self._pose_stamps) and self._pose_stamps[k] == stamp:
            self._poses[k] = ego_from_odometry(msg)
            return
        self._pose_stamps.insert(k, stamp)
        self._poses.insert(k, ego_from_odometry(msg))

    def pose_at(self, stamp: int) -> EgoState | None:
        """The pose nearest ``stamp`` within the stamp tolerance (the bridge stamps both with the tick's time)."""
        k = bisect.bisect_left(self._pose_stamps, stamp)
        best = min((j for j in (k - 1, k) if 0 <= j < len(self._pose_stamps)),
                   key=lambda j: abs(self._pose_stamps[j] - stamp), default=None)
        if best is None or abs(self._pose_stamps[best] - stamp) > self.tolerance_ns:
            return None
        return self._poses[best]

    def _checked(self, msg, side: str):
        """The message if its pixels can be read, else None (counted by reason, as seg_eval_node does)."""
        stamp = header_stamp_ns(msg)
        try:
            if hasattr(msg, "format") and not hasattr(msg, "encoding"):
                msg = from_compressed(msg)
            image_codec.pixels(msg, self.max_pixels)
            return msg
        except image_codec.ImageRejected as exc:
            self.counts[f"undecodable_{side}"] += 1
            self.counters.skip(f"{side}:{exc.reason}", f"{side} at t={stamp / 1e9:.3f}s "
                                                      f"({getattr(msg, 'encoding', getattr(msg, 'format', '?'))}): "
                                                      f"{exc.message}")
            return None

    def _on_unmatched(self, side: int, _stamp: int) -> None:
        self.counts["unmatched_rgb" if side == FIRST else "unmatched_gt"] += 1

    def _on_pair(self, stamp: int, rgb_msg, _gt_stamp: int, gt_msg) -> None:
        if rgb_msg is None or gt_msg is None:
            return          # the undecodable side is counted already
        meta = {"rgb_topic": self.topics.get("rgb", ""), "gt_topic": self.topics.get("gt", ""),
                "rgb_frame_id": rgb_msg.header.frame_id, "gt_frame_id": gt_msg.header.frame_id,
                "source": self.source}
        # The CameraInfo of the frame's stamp, else the newest one (a camera's intrinsics do not change); one that
        # comes only after the pair (another topic: no order between them) is looked up again on the writer thread.
        info = self.camera_infos.get(stamp) or self._newest_info
        if info is not None:
            meta.update(info)
        native = image_codec.pixels(rgb_msg, self.max_pixels)
        thumb = thumbnail(native) if self.writer.min_change > 0 else None
        decoder = self.decoder

        def rgb():
            return image_codec.to_rgb_array(native, rgb_msg.encoding)

        def tags():
            if info is None and self._newest_info is not None:
                meta.update(self._newest_info)
            with self._decode_lock:       # the decoder decides and locks the coding: one frame at a time
                return decoder.decode_tags(gt_msg), decoder.coding.name

        def ego():
            pose = self.pose_at(stamp)
            if pose is not None:
                with self._decode_lock:       # writer threads count concurrently
                    self.counts["pairs_with_pose"] += 1
            return pose

        outcome = self.writer.offer(Sample(stamp, rgb, tags, meta, ego=ego if self._pose_stamps else None), thumb)
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def finish(self) -> None:
        """End of the streams: frames still waiting for a partner are unmatched."""
        self.pairer.finish()

    def pairing(self) -> dict:
        return dict(self.counts, waiting_rgb=self.pairer.waiting(FIRST), waiting_gt=self.pairer.waiting(SECOND))

    def extra(self) -> dict:
        """The pairing's part of record_summary.json (the writer adds its own counts)."""
        pairing = self.pairing()
        return {"topics": self.topics, "pairing": pairing,
                "unpaired": {"rgb": pairing["unmatched_rgb"], "gt": pairing["unmatched_gt"]},
                "undecodable": {"rgb": pairing["undecodable_rgb"], "gt": pairing["undecodable_gt"]},
                "coding": self.decoder.coding_name}

    def summary(self, **extra) -> dict:
        return self.writer.summary(**self.extra(), **extra)

    def write_summary(self, **extra) -> dict:
        return self.writer.write_summary(**self.extra(), **extra)


# ---------------------------------------------------------------------------------------------------------------
# command-line options shared by `carla-seg record` and `carla-seg bag-to-dataset`
# ---------------------------------------------------------------------------------------------------------------
def add_selection_options(g) -> None:
    """Which pairs the dataset writer keeps and how it compresses them: shared by `record`, `bag-to-dataset` and
    `carla --record`."""
    g.add_argument("--every", type=int, default=1, help="keep every Nth pair (default: %(default)s)")
    g.add_argument("--min-change", type=float, default=0.0,
                   help="skip a pair whose image differs from the last kept one by less than this mean absolute "
                        "grey level (0-255; e.g. 2 skips a car standing still); 0 = off")
    g.add_argument("--max-frames", type=int, default=0, help="stop after writing this many pairs (0 = no limit)")
    g.add_argument("--png-level", type=int, default=1, choices=range(10), metavar="0-9",
                   help="PNG zlib level; the filter and strategy are chosen per kind for speed (default: "
                        "%(default)s)")


def add_options(p) -> None:
    from carla_seg_ros.evaluation.ground_truth import CODING_CHOICES, GT_FORMATS
    p.add_argument("--out", type=Path, required=True, help="dataset folder to write (rgb/, label/, manifest.csv)")
    t = p.add_argument_group("topics (default: the CARLA ROS bridge's, which CARLA 0.9.16's --ros2 uses too)")
    t.add_argument("--role", default="ego_vehicle", help="vehicle role name (default: %(default)s)")
    t.add_argument("--camera", default="rgb_front", help="RGB camera name (default: %(default)s)")
    t.add_argument("--semantic-camera", default="semantic_segmentation_front",
                   help="semantic camera name (default: %(default)s)")
    t.add_argument("--rgb-topic", help="RGB image topic (overrides --role/--camera)")
    t.add_argument("--gt-topic", help="semantic image topic (overrides --role/--semantic-camera)")
    t.add_argument("--camera-info-topic", help="CameraInfo topic for the manifest's K and size (default: the RGB "
                                               "camera's camera_info; '' = none)")
    g = p.add_argument_group("ground truth")
    g.add_argument("--coding", choices=CODING_CHOICES, default="auto",
                   help="CARLA tag coding: tags13 (<= 0.9.9), tags23 (0.9.10-0.9.13), tags29 (>= 0.9.14); auto: told "
                        "apart by the palette (palette only; bag-to-dataset: the bag's make-bag metadata first)")
    g.add_argument("--gt-format", choices=GT_FORMATS, default="auto",
                   help="palette colours (the bridge), raw ids (mono8 or the red channel: CARLA 0.9.16's native "
                        "publisher); auto: mono8 = ids, colour = palette")
    g.add_argument("--native", action="store_true",
                   help="CARLA 0.9.16's native ROS 2 publisher (server --ros2): --gt-format ids --coding tags29")
    g.add_argument("--stamp-tolerance", type=float, default=0.01, help="max |camera - ground truth| stamp, s")
    g.add_argument("--match-window", type=float, default=2.0,
                   help="a frame whose partner has not come once the stream is this many seconds further on is "
                        "unpaired (default: %(default)s)")
    s = p.add_argument_group("selection and writing")
    add_selection_options(s)
    s.add_argument("--writers", type=int, default=1, help="writer threads (PNG encoding runs without the GIL; "
                                                          "default: %(default)s)")
    s.add_argument("--queue-size", type=int, default=32, help="pairs waiting for the writer thread (default: "
                                                             "%(default)s)")


def resolve_options(args) -> dict[str, str]:
    """Apply --native, check the values, return the topics; ValueError with a one-line message."""
    if args.native:
        args.gt_format, args.coding = "ids", "tags29"
    if args.every < 1 or args.min_change < 0 or args.max_frames < 0 or args.queue_size < 1 or args.writers < 1:
        raise ValueError("--every, --writers and --queue-size must be >= 1, --min-change and --max-frames >= 0")
    if args.stamp_tolerance < 0 or args.match_window <= 0:
        raise ValueError("--stamp-tolerance must be >= 0 and --match-window > 0")
    if args.gt_format == "ids" and args.coding == "auto":
        raise ValueError("raw tag ids cannot tell the CARLA version apart: give --coding tags13, tags23 or tags29")
    topics = bridge_topics(args.role, args.camera, args.semantic_camera)
    if args.rgb_topic:
        topics["rgb"] = args.rgb_topic
        topics["camera_info"] = args.rgb_topic.rsplit("/", 1)[0] + "/camera_info"
    if args.gt_topic:
        topics["gt"] = args.gt_topic
    if args.camera_info_topic is not None:
        topics["camera_info"] = args.camera_info_topic
    if not topics["camera_info"]:
        del topics["camera_info"]
    return topics
