"""seg_eval_node: online accuracy of seg_node's masks against CARLA's semantic camera, while the simulation runs.

Subscribes the masks (``mask_topic``, mono8 class ids, default ``/seg_node/mask``) and the ground truth
(``gt_topic``, default ``/carla/ego_vehicle/semantic_segmentation_front/image``: the bridge's palette colours in
bgra8, or raw tag ids in mono8 or in the red channel of a colour image, in the 13/23/29-tag coding), pairs them by
header stamp and keeps a running confusion matrix with `carla-seg bag-eval`'s own code (evaluation/online.py,
ground_truth.py). Publishes, at ``metrics_period`` on the steady clock:

* ``~/metrics``   std_msgs/String, one JSON object: whole run, sliding window and timely pixel accuracy, per-class
                  IoU and mIoU, pairing and skip counts, mask latency (JSON: per-class tables and nulls need no
                  custom message, and every ROS tool can echo it);
* ``/diagnostics`` diagnostic_msgs/DiagnosticArray with the same figures as key/values.

Services (std_srvs/Trigger): ``~/write_report`` writes metrics.json + report.md + report.html to ``output_dir``
now (frames still waiting for a partner are listed as waiting), ``~/reset`` starts a new run. On shutdown (Ctrl-C)
the run is closed (waiting frames become unmatched) and the report is written when ``write_on_shutdown`` is set.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from carla_seg_ros import image_codec
from carla_seg_ros.datasets import HOOD_MODES
from carla_seg_ros.evaluation.bag_reading import Counters, header_stamp_ns
from carla_seg_ros.evaluation.evaluate import hood_rule
from carla_seg_ros.evaluation.ground_truth import CODING_CHOICES, GT_FORMATS, GroundTruthDecoder
from carla_seg_ros.evaluation.online import OnlineEvaluation
from carla_seg_ros.paths import default_model
from carla_seg_ros.ros import node_help
from carla_seg_ros.ros.eval_report import diagnostic_status, metrics_json, run_result
from carla_seg_ros.ros.node_stats import KeyedThrottle
from carla_seg_ros.ros.shutdown import run_node
from carla_seg_ros.ros.seg_params import QOS_RELIABILITIES, Param, StartupError, declare_parameters
from carla_seg_ros.runtime.model_info import read_onnx_info

NODE_NAME = "seg_eval_node"

PARAMETERS = (
    Param("mask_topic", "/seg_node/mask", "Masks to score: mono8 class ids (seg_node's ~/mask)"),
    Param("gt_topic", "/carla/ego_vehicle/semantic_segmentation_front/image", "Ground truth: CARLA's semantic "
          "camera at the segmented camera's size and pose (config/carla_objects.json)"),
    Param("gt_format", "auto", "palette: CityScapes colours (the ROS bridge); ids: raw tag ids (mono8, or the red "
          "channel of a colour image: CARLA 0.9.16's native ROS 2 publisher); auto: mono8 = ids, colour = palette",
          choices=GT_FORMATS),
    Param("coding", "auto", "CARLA tag coding of the ground truth: tags13 (<= 0.9.9), tags23 (0.9.10-0.9.13), "
          "tags29 (>= 0.9.14); auto: told apart by the palette (palette ground truth only)", choices=CODING_CHOICES),
    Param("model_path", "", "ONNX model whose metadata gives the class table and hood rule; empty = the "
          "package's models/carla_unet.onnx (use seg_node's model_path)"),
    Param("hood", "auto", "Ego-hood rule for 13-tag ground truth; auto = the rule stored in the model",
          choices=HOOD_MODES + ("auto",)),
    Param("hood_row", -1.0, "First hood row as a fraction of the height; -1 = the model's", -1.0, 1.0),
    Param("stamp_tolerance", 0.01, "Max |mask stamp - ground-truth stamp| in seconds for a pair", 0.0, 10.0),
    Param("match_window", 2.0, "A frame whose partner has not come once the stream is this many seconds (by "
          "stamp) further on is counted as unmatched", 0.01, 3600.0),
    Param("window_frames", 100, "Sliding-window metrics cover the last this many pairs", 1, 1000000),
    Param("timely_budget", 0.05, "Timely score: the planner reads the newest mask at ground-truth stamp + this "
          "many seconds (node clock; one 20 Hz tick by default)", 0.0, 3600.0),
    Param("mask_history", 30, "Masks kept for the timely score (the newest one in time is used)", 1, 100000),
    Param("output_dir", "runs/seg_eval", "Folder for metrics.json, report.md and report.html"),
    Param("write_on_shutdown", True, "Write the report to output_dir when the node stops"),
    Param("metrics_period", 1.0, "Seconds between ~/metrics and /diagnostics messages (steady clock)", 0.1, 60.0),
    Param("qos_reliability", "reliable", "Reliability of both subscriptions (the bridge publishes RELIABLE; a "
          "best_effort publisher, e.g. some native CARLA builds, needs best_effort)", choices=QOS_RELIABILITIES),
    Param("qos_depth", 10, "KEEP_LAST depth of both subscriptions", 1, 1000),
    Param("max_image_pixels", image_codec.DEFAULT_MAX_PIXELS, "Frames with more pixels are rejected", 1, 2**31 - 1),
    Param("warn_throttle", 5.0, "At most one warning per problem per this many seconds", 0.0, 3600.0),
)


class SegEvalNode(Node):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self.p = declare_parameters(self, PARAMETERS)
        self.model_path = Path(self.p["model_path"] or default_model())
        try:
            self.info = read_onnx_info(self.model_path)
        except (FileNotFoundError, ValueError) as exc:
            raise StartupError(f"model_path: {exc}") from exc
        row = None if self.p["hood_row"] < 0 else self.p["hood_row"]
        self.hood = hood_rule(self.p["hood"], self.info, row)
        self.class_names = [c["name"] for c in self.info.classes]
        self._throttle = KeyedThrottle(self.p["warn_throttle"])
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.reset()

        reliability = (ReliabilityPolicy.RELIABLE if self.p["qos_reliability"] == "reliable"
                       else ReliabilityPolicy.BEST_EFFORT)
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self.p["qos_depth"], reliability=reliability)
        self.sub_mask = self.create_subscription(Image, self.p["mask_topic"], self._on_mask, qos)
        self.sub_gt = self.create_subscription(Image, self.p["gt_topic"], self._on_gt, qos)
        self.pub_metrics = self.create_publisher(String, "~/metrics", 10)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_service(Trigger, "~/write_report", self._srv_write_report)
        self.create_service(Trigger, "~/reset", self._srv_reset)
        self.create_timer(self.p["metrics_period"], self._publish, clock=self._steady)
        self.get_logger().info(
            f"seg_eval_node ready: masks {self.sub_mask.topic_name}, ground truth {self.sub_gt.topic_name} "
            f"({self.p['gt_format']}, coding {self.p['coding']}), hood {self.hood.mode}, classes from "
            f"{self.model_path}; report to {self.p['output_dir'] or '(none)'}")

    def reset(self) -> None:
        """A new run: fresh counters, matrices and pairing buffers."""
        self.counters = Counters(log=self._log_skip)
        # ground truth in the model's own classes: its metadata maps each coding's tags to its class set
        self.decoder = GroundTruthDecoder(self.p["gt_format"], self.p["coding"], self.hood, self.counters,
                                          tag_lut=self.info.tag_lut)
        self.online = OnlineEvaluation(
            self.class_names, self.counters, tolerance_ns=int(round(self.p["stamp_tolerance"] * 1e9)),
            match_window_ns=int(round(self.p["match_window"] * 1e9)), window_frames=self.p["window_frames"],
            timely_budget_ns=int(round(self.p["timely_budget"] * 1e9)), history=self.p["mask_history"])
        self._coding_logged = False

    def _log_skip(self, message: str) -> None:
        self.get_logger().warning(f"skipping frame: {message} (further frames with this problem are only counted "
                                  "in ~/metrics and /diagnostics)")

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    # ---------------------------------------------------------------- input
    def _on_mask(self, msg: Image) -> None:
        now = self._now_ns()
        stamp = header_stamp_ns(msg)
        try:
            mask = self._decode_mask(msg)
        except image_codec.ImageRejected as exc:
            self.counters.skip(f"mask:{exc.reason}", f"mask at t={stamp / 1e9:.3f}s: {exc.message}")
            mask = None
        self.online.add_mask(stamp, now, mask)
        self.online.advance(now)

    def _decode_mask(self, msg: Image) -> np.ndarray:
        native = image_codec.pixels(msg, self.p["max_image_pixels"])
        if msg.encoding != "mono8":
            raise image_codec.ImageRejected("not_mono8", f"masks are mono8 class ids, got {msg.encoding!r}")
        mask = np.ascontiguousarray(native[..., 0])
        top = int(mask.max())
        if top >= len(self.class_names):
            raise image_codec.ImageRejected("class_out_of_range", f"mask holds class id {top}, the model has "
                                                                  f"{len(self.class_names)} classes")
        return mask

    def _on_gt(self, msg: Image) -> None:
        stamp = header_stamp_ns(msg)
        try:
            image_codec.pixels(msg, self.p["max_image_pixels"])     # size limit first, as for masks
            label = self.decoder.decode(msg)
        except image_codec.ImageRejected as exc:
            self.counters.skip(f"gt:{exc.reason}", f"ground truth at t={stamp / 1e9:.3f}s ({msg.encoding}, "
                                                   f"{msg.width}x{msg.height}): {exc.message}")
            label = None
        if label is not None and self.decoder.locked and not self._coding_logged:
            self._coding_logged = True
            self.get_logger().info(f"ground truth coding: {self.decoder.coding_name}")
        self.online.add_ground_truth(stamp, label)
        self.online.advance(self._now_ns())

    # ---------------------------------------------------------------- output
    def _publish(self) -> None:
        self.online.advance(self._now_ns())
        snapshot = self.online.snapshot()
        self.pub_metrics.publish(String(data=metrics_json(snapshot, self._now_ns(), self.decoder.coding_name)))
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [diagnostic_status(snapshot, self.get_fully_qualified_name(), self.decoder.coding_name,
                                        self.sub_gt.topic_name)]
        self.pub_diag.publish(msg)

    def write_report(self) -> Path:
        """metrics.json + report.md + report.html in output_dir, as `carla-seg bag-eval` writes them."""
        from carla_seg_ros.evaluation import report
        if not self.p["output_dir"]:
            raise RuntimeError("output_dir is empty: nowhere to write the report")
        out_dir = Path(self.p["output_dir"])
        clock = "sim (/clock)" if self.get_parameter("use_sim_time").value else "wall"
        result = run_result(self.online, self.p, self.decoder.coding_name, self.hood, self.info, self.model_path,
                            clock)
        report.write_all(result, self.online.evaluation, out_dir, f"seg_eval_node: {self.sub_gt.topic_name}")
        return out_dir / "metrics.json"

    def _srv_write_report(self, _request, response):
        try:
            self.online.advance(self._now_ns())
            path = self.write_report()
            response.success, response.message = True, str(path)
        except Exception as exc:  # noqa: BLE001 - a failed write (disk full, no matplotlib) is the caller's answer
            response.success, response.message = False, f"{type(exc).__name__}: {exc}"
        return response

    def _srv_reset(self, _request, response):
        self.reset()
        response.success, response.message = True, "new run started"
        return response

    def close(self) -> None:
        """End of the run: waiting frames become unmatched; the report is written if asked for."""
        self.online.finish()
        if self.p["write_on_shutdown"] and self.p["output_dir"] and self.online.counts["mask_messages"] + \
                self.online.counts["gt_messages"]:
            path = self.write_report()
            print(f"[seg_eval_node] wrote {path}", file=sys.stderr, flush=True)


def usage() -> str:
    return node_help.usage("seg_eval_node", __doc__, PARAMETERS, examples=(
        "ros2 launch carla_seg_ros carla_live.launch.py output_dir:=out/live",
        "ros2 run carla_seg_ros seg_eval_node --ros-args -p mask_topic:=/seg_node/mask -p output_dir:=out/live"))


def main(args=None) -> int:
    argv = list(sys.argv if args is None else args)
    if node_help.wants_help(argv):
        print(usage())
        return 0
    # Ctrl-C only sets a flag (seg_node's shutdown), so the report is written even when `ros2 launch` and the
    # terminal both signal the process group; close() writes it before anything ROS is torn down.
    return run_node(SegEvalNode, "seg_eval_node", argv, on_signal="closing the run")


if __name__ == "__main__":
    sys.exit(main())
