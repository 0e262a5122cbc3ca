"""`carla-seg bag-eval`: evaluate the model on a rosbag2 recording with ground truth (no ROS install needed).

Example:
    carla-seg bag-eval runs/bags/test_mcap --out runs/bag_eval/test \\
        --image-topic /carla/ego_vehicle/rgb_front/image \\
        --gt-topic /carla/ego_vehicle/semantic_segmentation_front/image --write-bag runs/bag_eval/test_pred

How frames are used:
* Camera and ground-truth messages are paired by header stamp (nearest within ``--stamp-tolerance``, each message
  used once); unmatched messages on either topic are counted in ``metrics.json`` and the report.
* The ground truth is CARLA palette colours (what the bridge publishes, bgra8) or raw tag ids (mono8, or the red
  channel of a colour image: CARLA's raw format); ``--gt-format auto`` decides by encoding. Tag ids of the chosen
  CARLA coding are remapped to the model's classes (its metadata's class set); colours not in the palette are
  ignored and counted.
* Frames that cannot be decoded (unknown encoding, truncated data...) are skipped and counted by reason.
* Everything after decoding is `carla-seg evaluate`'s code (``evaluate.run_batch``, ``evaluate.Evaluation``), so a
  bag made by `carla-seg make-bag` from a split gives the same metrics to the last digit (timings aside).

Outputs in ``--out``: ``metrics.json``, ``report.md``, ``report.html`` (self-contained) and the PNGs.
``--write-bag OUT`` writes the predictions (``<pred-ns>/mask`` mono8 class ids, ``<pred-ns>/mask_color`` rgb8,
``<pred-ns>/confidence`` mono8, with the camera message's header, as seg_node publishes them) together with the
input camera, camera_info, ground truth and /clock topics, for replay in RViz or Foxglove.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from carla_seg_ros.runtime.backends import create_backend
from carla_seg_ros.evaluation.bag_reading import (IMAGE_TYPE, BagError, Counters, bag_custom_data, decode_camera,
                                                   decode_ground_truth, header_stamp_ns, iter_messages, open_bag,
                                                   pair_stamps, read_stamps, topic_connections)
from carla_seg_ros.evaluation.bag_make import CODING_METADATA_KEY, MessageFactory, open_writer, topics, typestore
from carla_seg_ros.classes import CODINGS, IGNORE_INDEX, load_coding
from carla_seg_ros.datasets import labels_from_tag_ids
from carla_seg_ros.evaluation.evaluate import (Evaluation, add_inference_arguments, format_summary, hood_rule,
                                               model_summary, run_batch)
from carla_seg_ros.runtime.inference import Segmenter
from carla_seg_ros.image_codec import ImageRejected

DEFAULT_TOPICS = topics("ego_vehicle")
# Types copied into --write-bag by re-using their bytes: their CDR layout is the same in every ROS 2 release.
COPYABLE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo", "rosgraph_msgs/msg/Clock")


# ---------------------------------------------------------------------------------------------------------------
# prediction bag
# ---------------------------------------------------------------------------------------------------------------
class PredictionBag:
    """--write-bag: the predictions as seg_node publishes them, plus the input topics for replay."""

    def __init__(self, out: Path, storage: str, pred_ns: str, copy_conns: list, class_names: list | None = None):
        self.class_names = class_names            # the model's classes: mask_color in their colours
        self.writer = open_writer(out, storage)
        self.writer.open()
        self.store = typestore()
        self.make = MessageFactory(self.store)
        ns = pred_ns.rstrip("/")
        self.topics = {"mask": f"{ns}/mask", "mask_color": f"{ns}/mask_color", "confidence": f"{ns}/confidence"}
        self.pred = {k: self.writer.add_connection(t, IMAGE_TYPE, typestore=self.store) for k, t in self.topics.items()}
        self.copies = {}
        for conn in copy_conns:
            if conn.topic not in self.copies:
                self.copies[conn.topic] = self.writer.add_connection(conn.topic, conn.msgtype, typestore=self.store)
        self.count = 0

    def copy(self, conn, log_ns: int, raw: bytes) -> None:
        if conn.topic in self.copies:
            self.writer.write(self.copies[conn.topic], log_ns, raw)

    def add(self, image_msg, log_ns: int, ids: np.ndarray, conf: np.ndarray) -> None:
        from carla_seg_ros.evaluation.report import colorize_ids
        header = self.make.Header(stamp=self.make.time(header_stamp_ns(image_msg)),
                                  frame_id=image_msg.header.frame_id)
        for key, arr, enc in (("mask", ids, "mono8"), ("mask_color", colorize_ids(ids, self.class_names), "rgb8"),
                              ("confidence", conf, "mono8")):
            self.writer.write(self.pred[key], log_ns, self.make.serialize(self.make.image(arr, enc, header)))
        self.count += 1

    def close(self) -> None:
        self.writer.close()


# ---------------------------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="carla-seg bag-eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bag", type=Path, help="rosbag2 folder (mcap or sqlite3), or a single .mcap/.db3 file")
    p.add_argument("--image-topic", default=DEFAULT_TOPICS["image"], help="camera topic (default: %(default)s)")
    p.add_argument("--gt-topic", default=DEFAULT_TOPICS["semantic"],
                   help="ground-truth semantic camera topic (default: %(default)s)")
    p.add_argument("--out", type=Path, required=True, help="folder for metrics.json, the report and PNGs")
    p.add_argument("--stamp-tolerance", type=float, default=0.01,
                   help="max |camera stamp - ground-truth stamp| in seconds for a pair (default: %(default)s)")
    p.add_argument("--gt-format", choices=("auto", "palette", "ids"), default="auto",
                   help="ground truth as palette colours or raw tag ids; auto: mono8 = ids, colour = palette")
    p.add_argument("--coding", choices=("auto",) + CODINGS, default="auto",
                   help="CARLA coding of the ground truth; auto = the bag's metadata (make-bag), else tags13")
    add_inference_arguments(p)
    p.add_argument("--max-frames", type=int, help="evaluate only the first N paired frames")
    p.add_argument("--write-bag", type=Path, help="write predictions (+ input topics) to this new bag folder")
    p.add_argument("--write-storage", choices=("mcap", "sqlite3"), default="mcap", help="storage of --write-bag")
    p.add_argument("--pred-ns", default="/seg_node", help="namespace of the predicted topics in --write-bag")
    p.add_argument("--map", action="store_true", help="also score the local map fused from the model's masks "
                   "against the one fused from the ground truth (needs the bag's odometry and camera_info)")
    p.add_argument("--odometry-topic", help="nav_msgs/Odometry for --map (default: /carla/<role>/odometry of the "
                   "image topic's role)")
    p.add_argument("--mount", default="2,0,2,0,0,0", help="camera mount for --map: x,y,z,roll,pitch,yaw in the "
                   "vehicle frame, metres and degrees (default: the bridge's rgb_front)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except BagError as exc:
        print(f"carla-seg bag-eval: {exc}", file=sys.stderr)
        return 2


def run(args) -> int:
    if args.batch_size < 1 or args.stamp_tolerance < 0:
        raise BagError("--batch-size must be >= 1 and --stamp-tolerance >= 0")
    if args.write_bag is not None and args.write_bag.exists():
        raise BagError(f"--write-bag {args.write_bag} exists already; choose another folder or delete it first")
    try:
        backend = create_backend(args.backend, args.model, threads=args.threads)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        raise BagError(str(exc)) from exc
    custom = bag_custom_data(args.bag)
    coding = load_coding(args.coding if args.coding != "auto" else custom.get(CODING_METADATA_KEY, "tags13"))
    hood = hood_rule(args.hood, backend.info, args.hood_row)
    counters = Counters()

    reader = open_bag(args.bag)
    out_bag = None
    try:
        frames = pair_frames(reader, args, counters)
        copy_conns = [c for c in reader.connections if c.msgtype in COPYABLE_TYPES and (
            c.topic in (args.image_topic, args.gt_topic, "/clock")
            or c.topic == args.image_topic.rsplit("/", 1)[0] + "/camera_info")] if reader.is2 else []
        out_bag = (PredictionBag(args.write_bag, args.write_storage, args.pred_ns, copy_conns,
                                 [c["name"] for c in backend.info.classes])
                   if args.write_bag is not None else None)
        evaluation = Evaluation([c["name"] for c in backend.info.classes], args.samples,
                                expected_frames=len(frames.pairs))
        map_score = map_scorer(reader, args, [str(c["name"]) for c in sorted(backend.info.classes,
                                                                             key=lambda c: int(c["id"]))])
        stream_pairs(reader, frames, copy_conns, args, coding, hood, counters, Segmenter(backend), evaluation,
                     out_bag, map_score)
    finally:
        reader.close()
        if out_bag is not None:
            out_bag.close()

    if evaluation.frames == 0:
        raise BagError(f"none of the {len(frames.pairs)} paired frames could be decoded: {counters.first_error}")
    result = evaluation.result()
    result.update({
        "command": "bag-eval", "bag": str(args.bag), "image_topic": args.image_topic, "gt_topic": args.gt_topic,
        "gt_format": args.gt_format, "coding": coding.name, "pairing": frames.pairing, "skipped": counters.skipped,
        "skip_messages": counters.first_error, "unknown_color_pixels": counters.unknown_color_pixels,
        "unknown_id_pixels": counters.unknown_id_pixels,
        "hood": {"mode": hood.mode, "row_fraction": hood.row_fraction, "applies_to": "tags13 ground truth"},
        "ignore_index": IGNORE_INDEX, "batch_size": args.batch_size, "model": model_summary(backend),
    })
    if map_score is not None:
        result["local_map"] = map_score[0].result()
    write_results(result, evaluation, args, out_bag, counters)
    return 0


@dataclass
class PairedFrames:
    """Which camera message (by ordinal on its topics) goes with which ground-truth message."""
    image_conns: list
    gt_conns: list
    pairs: list          # (image ordinal, gt ordinal), in stamp order
    pairing: dict        # counts for metrics.json


def pair_frames(reader, args, counters: Counters) -> PairedFrames:
    """Read every header stamp once and pair camera and ground-truth messages within the tolerance."""
    image_conns = topic_connections(reader, args.image_topic, "image")
    gt_conns = topic_connections(reader, args.gt_topic, "ground-truth")
    image_stamps = read_stamps(reader, image_conns, args.bag, counters, "image")
    gt_stamps = read_stamps(reader, gt_conns, args.bag, counters, "gt")
    tolerance = int(round(args.stamp_tolerance * 1e9))
    # Messages that could not be deserialised get a stamp no real message has, so they never pair.
    pairs = pair_stamps([s if s is not None else -(2**62) - i for i, s in enumerate(image_stamps)],
                        [s if s is not None else -(2**61) - j for j, s in enumerate(gt_stamps)], tolerance)
    pairs = [(i, j) for i, j in pairs if image_stamps[i] is not None and gt_stamps[j] is not None]
    pairing = {"image_messages": len(image_stamps), "gt_messages": len(gt_stamps), "paired": len(pairs),
               "unmatched_image": sum(s is not None for s in image_stamps) - len(pairs),
               "unmatched_gt": sum(s is not None for s in gt_stamps) - len(pairs),
               "tolerance_s": args.stamp_tolerance}
    if args.max_frames is not None and len(pairs) > args.max_frames:
        pairing["not_evaluated_max_frames"] = len(pairs) - args.max_frames
        pairs = pairs[:args.max_frames]
    if not pairs:
        raise BagError(f"no camera/ground-truth pairs within {args.stamp_tolerance} s in {args.bag}: "
                       f"{pairing}; check the topics or raise --stamp-tolerance")
    if pairing["unmatched_image"] or pairing["unmatched_gt"]:
        print(f"bag-eval: {pairing['unmatched_image']} camera and {pairing['unmatched_gt']} ground-truth "
              f"messages have no partner within {args.stamp_tolerance} s (counted in metrics.json)",
              file=sys.stderr)
    return PairedFrames(image_conns, gt_conns, pairs, pairing)


def map_scorer(reader, args, class_names: list[str]):
    """--map: (MapScore fed with the bag's odometry, Pinhole of the camera's first CameraInfo), else None."""
    if not args.map:
        return None
    from carla_seg_ros.evaluation.map_eval import MapScore, parse_mount, pinhole_of_info, pose_of_odometry
    from carla_seg_ros.runtime.occupancy_grid import load_occupancy_config

    parts = args.image_topic.strip("/").split("/")
    odom_topic = args.odometry_topic or (f"/{parts[0]}/{parts[1]}/odometry" if len(parts) >= 3 else "odometry")
    info_topic = args.image_topic.rsplit("/", 1)[0] + "/camera_info"
    try:
        score = MapScore(load_occupancy_config(names=class_names), parse_mount(args.mount))
    except ValueError as exc:
        raise BagError(f"--map: {exc}") from exc
    odom = [c for c in reader.connections if c.topic == odom_topic]
    info = [c for c in reader.connections if c.topic == info_topic]
    if not odom or not info:
        raise BagError(f"--map needs {odom_topic} and {info_topic} in {args.bag} (make-bag writes them from a "
                       f"recording with ego poses; --odometry-topic names another)")
    for conn, _, raw in iter_messages(reader, odom, args.bag):
        score.add_odometry(*pose_of_odometry(reader.deserialize(raw, conn.msgtype)))
    cam = None
    for conn, _, raw in iter_messages(reader, info, args.bag):
        cam = pinhole_of_info(reader.deserialize(raw, conn.msgtype))
        break
    return score, cam


def stream_pairs(reader, frames: PairedFrames, copy_conns, args, coding, hood, counters: Counters,
                 segmenter: Segmenter, evaluation: Evaluation, out_bag: PredictionBag | None,
                 map_score=None) -> None:
    """One pass over the bag: decode each paired message, and evaluate the pairs strictly in stamp order, in
    batches, as `carla-seg evaluate` does (so a bag made from a split gives its metrics to the last digit)."""
    from tqdm import tqdm

    pairs = frames.pairs
    lut = segmenter.backend.info.tag_lut(coding.name)     # ground truth in the model's own classes
    image_slot = {i: k for k, (i, _) in enumerate(pairs)}   # message ordinal -> pair index
    gt_slot = {j: k for k, (_, j) in enumerate(pairs)}
    pending: dict[int, dict] = {}       # pair index -> decoded parts collected so far
    next_pair = 0
    batch, batch_meta = [], []
    ordinal = {"image": 0, "gt": 0}
    image_topics = {c.id for c in frames.image_conns}
    gt_topics = {c.id for c in frames.gt_conns}
    all_conns = list({c.id: c for c in frames.image_conns + frames.gt_conns + copy_conns}.values())

    def flush():
        if batch:
            preds, confs = run_batch(segmenter, evaluation, batch)
            if map_score is not None:
                for (msg, _), (_, _, label), ids, conf in zip(batch_meta, batch, preds, confs):
                    map_score[0].add_frame(header_stamp_ns(msg) / 1e9, map_score[1], ids, conf, label)
            if out_bag is not None:
                for (msg, log_ns), ids, conf in zip(batch_meta, preds, confs):
                    out_bag.add(msg, log_ns, ids, conf)
            batch.clear()
            batch_meta.clear()

    with tqdm(total=len(pairs), desc=f"bag-eval {Path(args.bag).name}", unit="frame") as bar:
        for conn, log_ns, raw in iter_messages(reader, all_conns, args.bag):
            if out_bag is not None:
                out_bag.copy(conn, log_ns, raw)
            side = "image" if conn.id in image_topics else "gt" if conn.id in gt_topics else None
            if side is None:
                continue
            index = ordinal[side]
            ordinal[side] += 1
            slot = (image_slot if side == "image" else gt_slot).get(index)
            if slot is None or slot < next_pair:   # unpaired, or its partner already failed to decode
                continue
            entry = pending.setdefault(slot, {})
            try:
                msg = reader.deserialize(raw, conn.msgtype)
                if side == "image":
                    entry["rgb"], entry["msg"], entry["log_ns"] = decode_camera(msg), msg, log_ns
                    entry["stamp"] = header_stamp_ns(msg)
                else:
                    entry["label"] = labels_from_tag_ids(decode_ground_truth(msg, args.gt_format, coding, counters),
                                                         coding.name, hood, lut=lut)
            except ImageRejected as exc:
                counters.skip(f"{side}:{exc.reason}", f"{side} message {index} ({conn.topic}): {exc.message}")
                entry["failed"] = True
            while next_pair in pending and (pending[next_pair].get("failed") or
                                            {"rgb", "label"} <= pending[next_pair].keys()):
                done = pending.pop(next_pair)
                next_pair += 1
                bar.update(1)
                if done.get("failed"):
                    continue
                batch.append((f"t={done['stamp'] / 1e9:.3f}s", done["rgb"], done["label"]))
                batch_meta.append((done["msg"], done["log_ns"]))
                if len(batch) >= args.batch_size:
                    flush()
            if next_pair >= len(pairs) and out_bag is None:
                break
        flush()


def write_results(result: dict, evaluation: Evaluation, args, out_bag: PredictionBag | None,
                  counters: Counters) -> None:
    """metrics.json, the figures and the Markdown/HTML report in --out; one summary line on stdout."""
    from carla_seg_ros.evaluation import report

    out_dir = args.out
    extra = {}
    if out_bag is not None:
        extra["prediction_bag"] = args.write_bag
        result["prediction_topics"] = out_bag.topics
    files = report.write_all(result, evaluation, out_dir, f"carla-seg bag-eval: {Path(args.bag).name}", extra)
    html = files["report_html"]
    print(format_summary(result))
    pairing = result["pairing"]
    skipped = sum(counters.skipped.values())
    print(f"paired {pairing['paired']} frames, evaluated {evaluation.frames}, skipped {skipped}, unmatched "
          f"{pairing['unmatched_image']} camera / {pairing['unmatched_gt']} ground truth; "
          f"wrote {out_dir / 'metrics.json'}"
          f", {html}" + (f" and {args.write_bag}" if out_bag is not None else ""))


if __name__ == "__main__":
    raise SystemExit(main())
