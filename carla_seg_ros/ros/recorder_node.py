"""`carla-seg record`: record CARLA's RGB camera and its semantic camera from ROS 2 into a training dataset folder.

Examples:
    carla-seg record --out runs/rec/town10                          # the bridge's ego_vehicle/rgb_front + semantic
    carla-seg record --out runs/rec/native --native                 # CARLA 0.9.16 --ros2 (raw ids, 29 tags)
    carla-seg record --out runs/rec/x --rgb-topic /cam/image --gt-topic /sem/image --coding tags23
    carla-seg record --out runs/rec/drive --every 2 --min-change 2 --max-frames 5000

Subscribes both image topics (and the camera's CameraInfo), pairs camera and ground truth by header stamp with
seg_eval_node's pairing (evaluation/stamp_pairing.py), decodes the ground truth to raw tag ids with its decoder
(palette colours or raw ids; --coding), and writes ``rgb/NAME.png``, ``label/NAME.png`` and ``manifest.csv``
(evaluation/dataset_writer.py) on a writer thread. Publishes its counts as JSON on ``~/status`` (std_msgs/String,
transient local) every --status-period and after each written pair. Ctrl-C (or SIGTERM, or --max-frames) stops it:
pairs already queued are written, frames still waiting for a partner are counted as unpaired, the counts are
printed and written to ``DIR/record_summary.json``. An unwritable or full output folder ends it with one line and
exit code 2.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading

from carla_seg_ros.evaluation.bag_reading import Counters
from carla_seg_ros.capture.dataset_writer import DatasetWriteError, DatasetWriter, format_counts
from carla_seg_ros.capture.recording import PairRecorder, add_options, resolve_options
from carla_seg_ros.ros.playback.dds import DDS_CONFIGS, DEFAULT_DDS_CONFIG, apply_in_this_process

NODE_NAME = "carla_seg_recorder"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="carla-seg record", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p)
    r = p.add_argument_group("ROS")
    r.add_argument("--qos-reliability", choices=("reliable", "best_effort"), default="reliable",
                   help="of the subscriptions (the bridge publishes reliable; default: %(default)s)")
    r.add_argument("--qos-depth", type=int, default=30,
                   help="KEEP_LAST depth of the subscriptions: 1.5 s of a 20 Hz camera, so a busy moment of this "
                        "process does not lose messages (default: %(default)s)")
    r.add_argument("--dds", choices=DDS_CONFIGS, default=DEFAULT_DDS_CONFIG,
                   help="Fast DDS configuration of this process (config/fastdds_large_frames.xml: 32 MB socket "
                        "buffers, what seg_node's launch file applies; default: %(default)s)")
    r.add_argument("--writer-nice", type=int, default=0,
                   help="run the writer threads this much nicer (Linux per-thread nice) than the receiving ones, so "
                        "PNG encoding yields the CPU to the subscriptions and the queue absorbs it; not better "
                        "in `bench record` here; default: %(default)s")
    r.add_argument("--status-period", type=float, default=1.0, help="seconds between ~/status messages")
    return p


class RecorderNode:
    """The subscriptions, the pairing and the writer; one rclpy node (``self.node``) in the default context."""

    def __init__(self, args, topics: dict[str, str]):
        import rclpy
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image
        from std_msgs.msg import String

        self.node = rclpy.create_node(NODE_NAME)
        self._lock = threading.Lock()     # the callbacks and the writer thread's acknowledgements
        self.counters = Counters(log=self._log_skip)
        self.writer = DatasetWriter(args.out, every=args.every, min_change=args.min_change,
                                    max_frames=args.max_frames, queue_size=args.queue_size,
                                    png_level=args.png_level, threads=args.writers, nice=args.writer_nice,
                                    counters=self.counters,
                                    on_written=self._written)
        self.recorder = PairRecorder(self.writer, args.gt_format, args.coding, topics,
                                     tolerance_ns=int(round(args.stamp_tolerance * 1e9)),
                                     match_window_ns=int(round(args.match_window * 1e9)), counters=self.counters)
        reliability = (ReliabilityPolicy.RELIABLE if args.qos_reliability == "reliable"
                       else ReliabilityPolicy.BEST_EFFORT)
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=args.qos_depth, reliability=reliability)
        self.subs = [self.node.create_subscription(Image, topics["rgb"], self._on_rgb, qos),
                     self.node.create_subscription(Image, topics["gt"], self._on_gt, qos)]
        if "camera_info" in topics:
            self.subs.append(self.node.create_subscription(CameraInfo, topics["camera_info"], self._on_info, qos))
        latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.String = String
        self.pub_status = self.node.create_publisher(String, "~/status", latched)
        self.node.create_timer(args.status_period, self.publish_status)
        self.topics = topics
        self.node.get_logger().info(
            f"recording {topics['rgb']} + {topics['gt']} (ground truth {args.gt_format}, coding {args.coding}) "
            f"to {args.out}; Ctrl-C stops")

    def _log_skip(self, message: str) -> None:
        self.node.get_logger().warning(f"skipping: {message} (further frames with this problem are only counted)")

    def _on_rgb(self, msg) -> None:
        with self._lock:
            self.recorder.add_rgb(msg)

    def _on_gt(self, msg) -> None:
        with self._lock:
            self.recorder.add_gt(msg)

    def _on_info(self, msg) -> None:
        with self._lock:
            self.recorder.add_camera_info(msg)

    def _written(self, _name: str) -> None:
        self.publish_status()

    def status(self) -> dict:
        with self._lock:
            summary = self.recorder.summary(pending=self.writer.pending())
        summary.pop("skip_messages", None)
        return summary

    def publish_status(self) -> None:
        try:
            self.pub_status.publish(self.String(data=json.dumps(self.status())))
        except Exception:  # noqa: BLE001 - a status published while the node shuts down
            pass

    @property
    def done(self) -> bool:
        """--max-frames written, or the writer failed."""
        return self.writer.error is not None or (self.writer.full and self.writer.pending() == 0 and
                                                  self.writer.counts.written + self.writer.counts.failed_decode
                                                  >= self.writer.max_frames)

    def close(self) -> dict:
        with self._lock:
            self.recorder.finish()
        self.writer.close()
        summary = self.recorder.write_summary()
        self.publish_status()
        return summary


def main(argv=None) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from carla_seg_ros.ros.shutdown import ShutdownSignals, ignore_late_signals

    argv = list(sys.argv[1:] if argv is None else argv)
    ros_args = []
    if "--ros-args" in argv:
        k = argv.index("--ros-args")
        argv, ros_args = argv[:k], argv[k:]
    args = build_parser().parse_args(argv)
    try:
        topics = resolve_options(args)
    except ValueError as exc:
        print(f"carla-seg record: {exc}", file=sys.stderr)
        return 2
    apply_in_this_process(args.dds)
    stop = ShutdownSignals()
    rclpy.init(args=["carla-seg-record", *ros_args], signal_handler_options=SignalHandlerOptions.NO)
    try:
        recorder = RecorderNode(args, topics)
    except DatasetWriteError as exc:
        print(f"carla-seg record: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    executor = SingleThreadedExecutor()
    executor.add_node(recorder.node)
    try:
        while not stop.event.is_set() and executor.context.ok() and not recorder.done:
            executor.spin_once(timeout_sec=0.1)
    finally:
        summary = recorder.close()
        executor.shutdown(timeout_sec=1.0)
        recorder.node.destroy_node()
        rclpy.try_shutdown()
        ignore_late_signals()
    reason = stop.signal_name or ("--max-frames reached" if recorder.writer.full else "stopped")
    print(f"carla-seg record: {reason}: {format_counts(summary)}; {args.out}/record_summary.json", flush=True)
    if summary["error"]:
        print(f"carla-seg record: {summary['error']}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
