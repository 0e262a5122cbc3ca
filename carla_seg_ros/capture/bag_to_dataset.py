"""`carla-seg bag-to-dataset`: a rosbag2 of CARLA's RGB + semantic cameras -> a training dataset folder.

Examples:
    carla-seg bag-to-dataset runs/bags/drive --out runs/data/drive
    carla-seg bag-to-dataset recording.mcap --out runs/data/native --native --every 2 --min-change 2

The same writer as `carla-seg record` with the same pairing and options: the bag's messages are fed in log-time
order to the code that pairs live topics (evaluation/recording.py), so a bag and a live recording of the same
stream give the same folder. mcap and sqlite3 bags; sensor_msgs/Image or sensor_msgs/CompressedImage (png, jpeg;
a jpeg-compressed palette is lossy: its unknown colours are counted). ``--coding auto`` takes the coding from the
bag's make-bag metadata, else from the palette. Nothing is dropped: the reader waits for the writer. A missing,
truncated or unreadable bag, a missing topic or an unwritable output folder is one line on stderr and exit code 2.

Where the bag has the bridge's odometry (``/carla/<role>/odometry``, nav_msgs/Odometry; make-bag writes it from a
``carla --record`` folder), each pair gets the ego pose and twist of its stamp in the manifest's ``ego_*``
columns, so `make-bag` can replay them. ``--odometry-topic ''`` leaves them out.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from carla_seg_ros.evaluation.bag_make import CODING_METADATA_KEY
from carla_seg_ros.evaluation.bag_reading import BagError, Counters, bag_custom_data, iter_messages, open_bag
from carla_seg_ros.capture.dataset_writer import DatasetWriteError, DatasetWriter, format_counts
from carla_seg_ros.capture.recording import PairRecorder, add_options, resolve_options

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="carla-seg bag-to-dataset", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bag", type=Path, help="rosbag2 folder, or its .mcap / .db3 file")
    add_options(p)
    p.add_argument("--odometry-topic", help="nav_msgs/Odometry topic for the manifest's ego pose columns, used where "
                                            "the bag has it (default: /carla/<role>/odometry; '' = none)")
    return p


def _connections(reader, topic: str, role: str, types: tuple[str, ...]) -> list:
    conns = [c for c in reader.connections if c.topic == topic]
    if not conns:
        listing = "\n".join(f"  {t} ({info.msgtype}, {info.msgcount} messages)"
                            for t, info in sorted(reader.topics.items()))
        raise BagError(f"{role} topic {topic!r} is not in the bag; it has:\n{listing or '  (no topics)'}")
    bad = {c.msgtype for c in conns} - set(types)
    if bad:
        raise BagError(f"{role} topic {topic!r} has type {', '.join(sorted(bad))}; expected {' or '.join(types)}")
    return conns


def convert(args, topics: dict[str, str]) -> dict:
    reader = open_bag(args.bag)
    try:
        rgb_conns = _connections(reader, topics["rgb"], "camera", IMAGE_TYPES)
        gt_conns = _connections(reader, topics["gt"], "ground-truth", IMAGE_TYPES)
        info_conns = []
        if "camera_info" in topics:
            info_conns = [c for c in reader.connections if c.topic == topics["camera_info"]
                          and c.msgtype == "sensor_msgs/msg/CameraInfo"]
            if not info_conns:
                topics.pop("camera_info")
        coding = args.coding
        if coding == "auto":
            coding = bag_custom_data(args.bag).get(CODING_METADATA_KEY, "auto")
        counters = Counters(log=lambda m: print(f"bag-to-dataset: skipping: {m} (further frames with this problem "
                                                "are only counted)", file=sys.stderr))
        writer = DatasetWriter(args.out, every=args.every, min_change=args.min_change, max_frames=args.max_frames,
                               queue_size=args.queue_size, block=True, png_level=args.png_level,
                               threads=args.writers, counters=counters)
        recorder = PairRecorder(writer, args.gt_format, coding, topics,
                                tolerance_ns=int(round(args.stamp_tolerance * 1e9)),
                                match_window_ns=int(round(args.match_window * 1e9)), source=f"bag {args.bag}")
        odometry_conns = [c for c in reader.connections if c.topic == topics.get("odometry")
                          and c.msgtype == "nav_msgs/msg/Odometry"]
        if not odometry_conns:
            topics.pop("odometry", None)
        # The poses first: they are looked up by stamp, whatever their order in the bag relative to the images.
        # (An empty connection list would mean every connection to rosbags.)
        for conn, _, raw in iter_messages(reader, odometry_conns, args.bag) if odometry_conns else ():
            try:
                recorder.add_odometry(reader.deserialize(raw, conn.msgtype))
            except Exception as exc:  # noqa: BLE001 - a corrupt CDR payload raises struct/index errors
                counters.skip("odometry:undeserialisable", f"{conn.topic}: {exc}")
        side = {c.id: "rgb" for c in rgb_conns} | {c.id: "gt" for c in gt_conns} | {c.id: "info" for c in info_conns}
        feed = {"rgb": recorder.add_rgb, "gt": recorder.add_gt, "info": recorder.add_camera_info}
        try:
            for conn, _, raw in iter_messages(reader, rgb_conns + gt_conns + info_conns, args.bag):
                if writer.full or writer.error:
                    break
                try:
                    msg = reader.deserialize(raw, conn.msgtype)
                except Exception as exc:  # noqa: BLE001 - a corrupt CDR payload raises struct/index errors
                    counters.skip(f"{side[conn.id]}:undeserialisable", f"{conn.topic}: {exc}")
                    continue
                feed[side[conn.id]](msg)
        finally:
            recorder.finish()
            writer.close()
        summary = recorder.write_summary(bag=str(args.bag))
        for key, side_name in (("rgb_messages", "rgb"), ("gt_messages", "gt")):
            if recorder.counts[key] == 0 and not writer.full:
                raise BagError(f"bag {args.bag} has no messages on {topics[side_name]}")
        return summary
    finally:
        reader.close()


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        topics = resolve_options(args)
        odometry = f"/carla/{args.role}/odometry" if args.odometry_topic is None else args.odometry_topic
        if odometry:
            topics["odometry"] = odometry
        summary = convert(args, topics)
    except (ValueError, BagError, DatasetWriteError) as exc:
        print(f"carla-seg bag-to-dataset: {exc}", file=sys.stderr)
        return 2
    poses = summary.get("pairing", {}).get("pairs_with_pose", 0)
    print(f"carla-seg bag-to-dataset: {format_counts(summary)}"
          f"{f', ego pose for {poses}' if 'odometry' in summary.get('topics', {}) else ''}; "
          f"{args.out}/record_summary.json")
    if summary["error"]:
        print(f"carla-seg bag-to-dataset: {summary['error']}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
