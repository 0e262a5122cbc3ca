"""One camera of seg_node: its input subscription, its outputs, its newest-frame slot and its statistics.

A node has one CameraIO per camera: a single one named "" (topic ``image``, outputs ``~/mask`` ...) by default, or
one per entry of the ``cameras`` parameter (outputs ``~/<name>/mask`` ...). Cameras share the node's inference
thread (which batches the newest frame of every camera into one call) but nothing else, so a malformed or fast
camera cannot disturb another's headers, drops or diagnostics. Each camera has its own occupancy grids
(ros/occupancy.py), from its own ``camera_info`` (the image topic's sibling) and mount (``<name>.camera_x`` ...).
"""
from __future__ import annotations

import collections
import time
from dataclasses import dataclass

import numpy as np

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Float32MultiArray, String

from carla_seg_ros import image_codec
from carla_seg_ros.ros.node_stats import STAGE_KEYS, KeyedThrottle, NodeStats
from carla_seg_ros.ros.occupancy import OccupancyOutputs, camera_info_topic
from carla_seg_ros.ros.seg_params import StartupError, declare_camera_mount
from carla_seg_ros.runtime.cpu_info import execution_line

LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)


def image_qos(p: dict) -> QoSProfile:
    reliability = ReliabilityPolicy.RELIABLE if p["qos_reliability"] == "reliable" else ReliabilityPolicy.BEST_EFFORT
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=p["qos_depth"], reliability=reliability)


@dataclass(frozen=True)
class Frame:
    """An accepted camera frame waiting for the inference thread."""
    msg: Image
    native: np.ndarray          # (H, W, C) view of msg.data in the message's channel order
    model_input: np.ndarray     # (1, h, w, 3) uint8 RGB at the model's input size for this frame's aspect
    received: float             # steady clock: the callback started
    parked: float               # steady clock: the frame was ready for the inference thread


class CameraIO:
    """Publishers, subscription and mailbox of one camera; ``slot`` is the node's shared Condition."""

    def __init__(self, node, name: str, topic: str, slot, label_info: str):
        self.node = node
        self.name = name
        self.slot = slot
        self.pending = None          # a Frame, guarded by ``slot``
        p = node.p
        self.stats = NodeStats(p["rate_window"], p["stats_window"], image_codec.REJECT_REASONS)
        self.throttle = KeyedThrottle(p["warn_throttle"])
        prefix = f"~/{name}/" if name else "~/"
        self.pub_mask = node.create_publisher(Image, prefix + "mask", 10)
        self.pub_color = node.create_publisher(Image, prefix + "mask_color", 10)
        self.pub_overlay = node.create_publisher(Image, prefix + "overlay", 10)
        self.pub_conf = node.create_publisher(Image, prefix + "confidence", 10)
        self.pub_fractions = node.create_publisher(Float32MultiArray, prefix + "class_fractions", 10)
        self.pub_label_info = node.create_publisher(String, prefix + "label_info", LATCHED)
        self.pub_label_info.publish(String(data=label_info))
        # Per camera: its own mount over the node-wide parameters (a live view, so ignore_rows_from stays dynamic).
        params = collections.ChainMap(declare_camera_mount(node, name), p) if name else p
        try:
            self.occupancy = OccupancyOutputs(node, params, image_qos(p), node.occupancy_classes, self.throttle,
                                              prefix, camera_info_topic(topic), label=name)
        except ValueError as exc:        # e.g. a per-camera camera_z below ground_z
            raise StartupError(f"camera {name}: {exc}" if name else str(exc)) from exc
        self.sub = node.create_subscription(Image, topic, self.on_image, image_qos(p))

    @property
    def publishers(self) -> list:
        return [self.pub_mask, self.pub_color, self.pub_overlay, self.pub_conf, self.pub_fractions,
                self.pub_label_info]

    def destroy(self) -> None:
        self.occupancy.destroy(self.node)
        self.node.destroy_subscription(self.sub)
        for pub in self.publishers:
            self.node.destroy_publisher(pub)

    # ---------------------------------------------------------------- input (executor thread)
    def on_image(self, msg: Image) -> None:
        now = time.monotonic()
        self.stats.on_received(now)
        try:
            native = image_codec.pixels(msg, self.node.p["max_image_pixels"])
        except image_codec.ImageRejected as exc:
            self.stats.on_rejected(exc.reason)
            self.warn(exc.reason, f"rejected frame from {msg.header.frame_id or '?'} [{exc.reason}]: {exc.message}")
            return
        # The resize to the model's input runs here, on the thread that has just deserialised the frame and still
        # has it in its cache: 2.6 ms p50 here against 3.2 on the inference thread (2 OpenCV threads, 20 Hz). A
        # frame replaced before inference takes it was resized for nothing: 3 % of the frames at 30 Hz here.
        try:
            model_input = self.node.model_input(native, msg.encoding)
        except Exception as exc:  # noqa: BLE001 - an exception here would end the executor's spin, and the node
            self.stats.on_failed()
            self.warn("preprocess_error", f"preprocessing failed on a {msg.width}x{msg.height} {msg.encoding} "
                      f"frame: {type(exc).__name__}: {exc}", error=True)
            return
        frame = Frame(msg, native, model_input, received=now, parked=time.monotonic())
        with self.slot:
            replaced = self.pending is not None
            self.pending = frame
            self.slot.notify()
        # Hand the GIL over now: otherwise the woken inference thread waits for it until this thread's executor
        # loop next blocks in rcl_wait, 0.8 ms p50 measured (0.1 ms with this yield).
        time.sleep(0)
        self.stats.on_accepted(replaced)

    def take(self):
        """The pending frame or None; call with ``slot`` held."""
        item, self.pending = self.pending, None
        return item

    def warn(self, key: str, text: str, error: bool = False) -> None:
        suppressed = self.throttle.ready(key, time.monotonic())
        if suppressed is None:
            return
        more = f" ({suppressed} more since the last warning)" if suppressed else ""
        where = f"camera {self.name}: " if self.name else ""
        log = self.node.get_logger()
        (log.error if error else log.warning)(f"{where}{text}{more}")

    # ---------------------------------------------------------------- diagnostics
    def diagnostic_status(self, manager, model_path, requested: str, fqn: str,
                          model_choice: str = "", rung: dict | None = None) -> DiagnosticStatus:
        s = self.stats.snapshot(time.monotonic())
        backend = manager.backend
        execution = backend.execution_info()

        def fmt(value):
            if value is None:
                return "n/a"
            return f"{value:.2f}" if isinstance(value, float) else str(value)

        values = {
            "backend": backend.name, "backend_requested": requested,
            "backend_state": manager.status.state,     # ready | building (TensorRT engine) | build_failed
            "model_file": str(model_path), "model_choice": model_choice,
            # what the runtime really runs: OpenVINO's resolved precision (bf16 / f32) and its kernels per ISA
            "inference_precision": execution.get("inference_precision", "n/a"),
            "kernels": execution_line(execution) if execution else "n/a",
            # the ladder (runtime/model_ladder.py): model_rung, rung_choice, rung_timings_ms, rung_budget_ms, rung_fits
            **(rung or {}),
            **({"camera": self.name} if self.name else {}),
            "input_topic": self.sub.topic_name, "input_rate_hz": s["input_rate_hz"],
            "output_rate_hz": s["output_rate_hz"], "frames_received": s["received"],
            "frames_processed": s["processed"], "frames_dropped": s["dropped"], "frames_rejected": s["rejected"],
            "frames_failed": s["failed"],
            **{f"rejected_{reason}": count for reason, count in s["rejected_by_reason"].items()},
            "latency_wall_p50_ms": s["latency_wall_p50_ms"], "latency_wall_p99_ms": s["latency_wall_p99_ms"],
            "latency_ros_p50_ms": s["latency_ros_p50_ms"], "latency_ros_p99_ms": s["latency_ros_p99_ms"],
            "processing_p50_ms": s["processing_p50_ms"], "processing_p99_ms": s["processing_p99_ms"],
            **self.occupancy.diagnostics(),
            # processing's parts (node_stats.STAGES): preprocess, handoff, inference (the model call), publish
            **{key: s[key] for key in STAGE_KEYS},
        }
        level, message = DiagnosticStatus.OK, "ok"
        if s["failed"]:
            level, message = DiagnosticStatus.ERROR, f"{s['failed']} frames failed in inference"
        elif s["rejected"]:
            level, message = DiagnosticStatus.WARN, f"{s['rejected']} malformed frames rejected"
        elif self.occupancy.problem():
            level, message = DiagnosticStatus.WARN, self.occupancy.problem()
        elif s["received"] == 0:
            level, message = DiagnosticStatus.WARN, f"no images received on {self.sub.topic_name} yet"
        elif (rung or {}).get("rung_fits") == "false":     # model auto: even the fastest rung missed the budget
            level = DiagnosticStatus.WARN
            message = (f"model rung {rung['model_rung']} over the frame budget ({rung['rung_timings_ms']} ms, budget "
                       f"{rung['rung_budget_ms']} ms)")
        # "<node>: segmentation" as before for the single camera; "<node>: <camera> segmentation" per camera.
        name = f"{fqn}: {self.name + ' ' if self.name else ''}segmentation"
        return DiagnosticStatus(level=level, name=name, message=message, hardware_id=backend.name,
                                values=[KeyValue(key=k, value=fmt(v)) for k, v in values.items()])
