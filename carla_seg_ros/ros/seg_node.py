"""seg_node: semantic segmentation of a camera topic (CARLA ROS bridge) with newest-frame-only inference.

Subscribes ``image`` (sensor_msgs/Image; the launch file remaps it to /carla/<role>/<camera>/image) and publishes,
each with the input message's exact header:

* ``~/mask``            mono8 class ids at the input resolution
* ``~/mask_color``      rgb8 palette colours                     (computed only while subscribed)
* ``~/overlay``         rgb8 camera image blended with the palette (``overlay_alpha``; only while subscribed)
* ``~/confidence``      mono8 max class probability x 255          (only while subscribed)
* ``~/class_fractions`` std_msgs/Float32MultiArray: fraction of the valid pixels predicted as each class
* ``~/label_info``      std_msgs/String, the class table as YAML (transient local: late subscribers get it)
* ``/diagnostics``      diagnostic_msgs/DiagnosticArray at 1 Hz (rates, latency percentiles, drops, rejections)

Threads: the executor thread runs the subscription callback, which validates the header (cheap) and parks the
message in a one-slot mailbox; a frame arriving while the slot is full replaces it and counts as dropped. The
inference thread takes the slot, runs the model and publishes. So nothing queues: latency stays one inference long
however slow the backend is, and the subscription is drained at once, which keeps the DDS reader history empty.
"""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Float32MultiArray, MultiArrayDimension, String

from carla_seg_ros import image_codec
from carla_seg_ros.runtime.backend_manager import BackendManager
from carla_seg_ros.runtime.backends import BACKEND_CHOICES
from carla_seg_ros.ros.node_stats import KeyedThrottle, NodeStats
from carla_seg_ros.paths import default_model
from carla_seg_ros.runtime.preprocess import resize_image, resize_mask

NODE_NAME = "seg_node"
QOS_RELIABILITIES = ("reliable", "best_effort")


@dataclass(frozen=True)
class Param:
    """One declared parameter: config/seg.yaml and test/test_launch.py check themselves against this table."""
    name: str
    default: object
    description: str
    low: float | None = None          # numeric range (inclusive); IntegerRange for ints, FloatingPointRange for floats
    high: float | None = None
    choices: tuple = ()               # allowed strings
    constraints: str = ""             # extra text shown by `ros2 param describe`
    dynamic: bool = False             # may change at run time; everything else needs a restart (read-only)

    def descriptor(self) -> ParameterDescriptor:
        types = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
                 float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING}
        d = ParameterDescriptor(name=self.name, type=types[type(self.default)], description=self.description,
                                read_only=not self.dynamic)
        constraints = [self.constraints] if self.constraints else []
        if self.choices:
            constraints.insert(0, "one of: " + ", ".join(self.choices))
        d.additional_constraints = "; ".join(constraints)
        if isinstance(self.default, int) and not isinstance(self.default, bool):
            d.integer_range = [IntegerRange(from_value=int(self.low), to_value=int(self.high), step=0)]
        elif isinstance(self.default, float):
            d.floating_point_range = [FloatingPointRange(from_value=float(self.low), to_value=float(self.high),
                                                         step=0.0)]
        return d


PARAMETERS = (
    Param("backend", "auto", "Inference runtime. auto: TensorRT when importable and a GPU is present, else the "
          "fastest CPU runtime for the model", choices=BACKEND_CHOICES),
    Param("allow_fallback", False, "When the requested backend cannot load, log why and use the next CPU runtime "
          "instead of failing at startup"),
    Param("model_path", "", "Exported ONNX model (with carla_seg metadata); empty = the package's "
          "models/carla_unet.onnx", constraints="an existing .onnx file exported by `carla-seg export`"),
    Param("threads", 0, "Intra-op threads of the CPU runtime (0 = the runtime's default)", 0, 256),
    Param("background_engine_build", True, "tensorrt/auto: serve frames with a CPU runtime while the TensorRT "
          "engine builds, then switch (false: block startup until the engine is built)"),
    Param("overlay_alpha", 0.5, "Weight of the palette colours in ~/overlay (0 = camera image only, 1 = colour "
          "mask only)", 0.0, 1.0, dynamic=True),
    Param("ignore_rows_from", 1.0, "~/class_fractions ignores the rows at and below this fraction of the image "
          "height (1.0 = use every row; 0.825 = the ego hood of CARLA 0.8 / Lyft-challenge frames)", 0.0, 1.0,
          dynamic=True),
    # REP-2003 says best-effort for sensor data; we default to RELIABLE (like the CARLA bridge's own publisher)
    # because, measured with a bridge-like 800x600 bgra8 publisher at 20 Hz (test/test_node_qos.py), a best-effort
    # reader got 2-19 % of the frames (one lost fragment of ~30 loses the frame) and a reliable one 100 %; seg_node
    # itself received 119-120 of 120 frames with reliable/10 on an overloaded 2-core machine, 96-120 with depth 5.
    # Newest-only processing keeps the depth from ever becoming a backlog. See config/seg.yaml and docs/node.md.
    Param("qos_reliability", "reliable", "Reliability of the image subscription. reliable is the default because "
          "a best-effort reader lost most 800x600 frames in measurements (see docs/node.md)",
          choices=QOS_RELIABILITIES),
    Param("qos_depth", 10, "KEEP_LAST depth of the image subscription (the node takes every message at once and "
          "keeps only the newest, so this is only room for fragment reassembly, never a backlog)", 1, 1000),
    Param("max_image_pixels", image_codec.DEFAULT_MAX_PIXELS, "Frames with more pixels (width x height) are rejected "
          "as too_large", 1, 2 ** 31 - 1),
    Param("diagnostics_period", 1.0, "Seconds between /diagnostics messages (steady clock, so they keep coming "
          "when sim time stops)", 0.1, 60.0),
    Param("stats_window", 500, "Latency percentiles cover the last this many frames", 10, 100000),
    Param("rate_window", 5.0, "Input/output rates are averaged over this many seconds", 0.5, 600.0),
    Param("warn_throttle", 5.0, "At most one warning per rejection reason per this many seconds", 0.0, 3600.0),
)
PARAMETERS_BY_NAME = {p.name: p for p in PARAMETERS}


class StartupError(RuntimeError):
    """The node cannot start: bad parameter, missing/corrupt model, backend that cannot load."""


class SegNode(Node):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self.p = self._declare_parameters()
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.stats = NodeStats(self.p["rate_window"], self.p["stats_window"], image_codec.REJECT_REASONS)
        self._throttle = KeyedThrottle(self.p["warn_throttle"])
        model_path = Path(self.p["model_path"] or default_model())
        try:
            self.manager = BackendManager(self.p["backend"], model_path, allow_fallback=self.p["allow_fallback"],
                                          background_build=self.p["background_engine_build"],
                                          threads=self.p["threads"], log_info=self.get_logger().info)
        except FileNotFoundError as exc:
            raise StartupError(f"model_path: {exc}") from exc
        except ValueError as exc:   # corrupt or foreign model file (or an unknown backend, caught earlier)
            raise StartupError(f"model_path: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - BackendError and whatever a runtime raises while loading
            raise StartupError(f"backend {self.p['backend']!r}: {exc}") from exc
        self.model_path = model_path
        loaded = self.manager.backend.name
        if self.p["backend"] not in ("auto", loaded):
            self.get_logger().warning(f"backend {self.p['backend']!r} could not load; allow_fallback is true, so "
                                      f"running on {loaded} (see the warning above for why)")
        info = self.manager.backend.info
        self.num_classes = info.num_classes
        self._palette = np.zeros((256, 3), np.uint8)
        for c in info.classes:
            self._palette[int(c["id"])] = c["color"]

        self.pub_mask = self.create_publisher(Image, "~/mask", 10)
        self.pub_color = self.create_publisher(Image, "~/mask_color", 10)
        self.pub_overlay = self.create_publisher(Image, "~/overlay", 10)
        self.pub_conf = self.create_publisher(Image, "~/confidence", 10)
        self.pub_fractions = self.create_publisher(Float32MultiArray, "~/class_fractions", 10)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                             reliability=ReliabilityPolicy.RELIABLE)
        self.pub_label_info = self.create_publisher(String, "~/label_info", latched)
        self.pub_label_info.publish(String(data=self.label_info_yaml(info)))
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        # One-slot mailbox between the subscription callback and the inference thread.
        self._slot_lock = threading.Condition()
        self._pending = None          # (msg, native pixels view, steady receive time)
        self._stopping = False
        self._worker = threading.Thread(target=self._inference_loop, name="seg_inference", daemon=True)
        self._worker.start()

        self.sub = self.create_subscription(Image, "image", self._on_image, self.image_qos())
        self._diag_timer = self.create_timer(self.p["diagnostics_period"], self._publish_diagnostics,
                                             clock=self._steady)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.get_logger().info(
            f"seg_node ready: backend {self.manager.backend.name}, model {model_path}, subscribing "
            f"{self.sub.topic_name} ({self.p['qos_reliability']}, depth {self.p['qos_depth']})")

    # ---------------------------------------------------------------- parameters
    def _declare_parameters(self) -> dict:
        values = {}
        for spec in PARAMETERS:
            try:
                value = self.declare_parameter(spec.name, spec.default, spec.descriptor()).value
            except rclpy.exceptions.InvalidParameterTypeException as exc:
                strict = isinstance(spec.default, float)
                hint = " (write 1.0, not 1: ROS parameters are strictly typed)" if strict else ""
                raise StartupError(f"parameter {spec.name}: wrong type, expected a {type(spec.default).__name__} "
                                   f"like {spec.default!r}{hint} ({exc})") from exc
            except rclpy.exceptions.InvalidParameterValueException as exc:
                raise StartupError(f"parameter {spec.name}: out of range [{spec.low}, {spec.high}] ({exc})") from exc
            if spec.choices and value not in spec.choices:
                raise StartupError(f"parameter {spec.name}: {value!r} is not one of {', '.join(spec.choices)}")
            values[spec.name] = value
        return values

    def _on_set_parameters(self, params) -> SetParametersResult:
        # Ranges and read-only are enforced by rclpy from the descriptors; the dynamic ones take effect here.
        for param in params:
            if param.name in ("overlay_alpha", "ignore_rows_from"):
                self.p[param.name] = float(param.value)
        return SetParametersResult(successful=True)

    def image_qos(self) -> QoSProfile:
        reliability = (ReliabilityPolicy.RELIABLE if self.p["qos_reliability"] == "reliable"
                       else ReliabilityPolicy.BEST_EFFORT)
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self.p["qos_depth"], reliability=reliability)

    @staticmethod
    def label_info_yaml(info) -> str:
        table = {"model": info.arch or "", "input_size": list(info.input_size), "ignore_index": 255,
                 "classes": [{"id": int(c["id"]), "name": str(c["name"]), "color": [int(v) for v in c["color"]]}
                             for c in info.classes]}
        return yaml.safe_dump(table, sort_keys=False, default_flow_style=None)

    # ---------------------------------------------------------------- input
    def _on_image(self, msg: Image) -> None:
        now = time.monotonic()
        self.stats.on_received(now)
        try:
            native = image_codec.pixels(msg, self.p["max_image_pixels"])
        except image_codec.ImageRejected as exc:
            self.stats.on_rejected(exc.reason)
            suppressed = self._throttle.ready(exc.reason, now)
            if suppressed is not None:
                more = f" ({suppressed} more since the last warning)" if suppressed else ""
                self.get_logger().warning(f"rejected frame from {msg.header.frame_id or '?'} "
                                          f"[{exc.reason}]: {exc.message}{more}")
            return
        with self._slot_lock:
            replaced = self._pending is not None
            self._pending = (msg, native, now)
            self._slot_lock.notify()
        self.stats.on_accepted(replaced)

    # ---------------------------------------------------------------- inference thread
    def _inference_loop(self) -> None:
        while True:
            with self._slot_lock:
                while self._pending is None and not self._stopping:
                    self._slot_lock.wait()
                if self._stopping:
                    return
                msg, native, received = self._pending
                self._pending = None
            try:
                self._process(msg, native, received)
            except Exception as exc:  # noqa: BLE001 - one bad frame must not stop the node
                self.stats.on_failed()
                if self._throttle.ready("inference_error", time.monotonic()) is not None:
                    self.get_logger().error(f"inference failed on a {msg.width}x{msg.height} {msg.encoding} "
                                            f"frame: {type(exc).__name__}: {exc}")

    def _process(self, msg: Image, native: np.ndarray, received: float) -> None:
        backend = self.manager.backend       # per frame: the manager may switch to TensorRT at any time
        height, width = native.shape[:2]
        # Resize in the message's channel order, then reorder the (small) result: one full-size pass only.
        small = image_codec.to_rgb(resize_image(native, backend.input_size), msg.encoding)
        ids, conf = backend.infer(np.ascontiguousarray(small)[None])
        mask = resize_mask(ids[0], (width, height))
        header = msg.header

        self.pub_mask.publish(image_codec.mono8(mask, header))
        self.pub_fractions.publish(self._fractions(mask))
        want_color = self.pub_color.get_subscription_count() > 0
        want_overlay = self.pub_overlay.get_subscription_count() > 0
        if want_color or want_overlay:
            # Colouring the model-size mask and then resizing (nearest) gives the same pixels as colouring the
            # full-size mask, at a fifth of the cost.
            color = resize_mask(self._palette[ids[0]], (width, height))
            if want_color:
                self.pub_color.publish(image_codec.rgb8(color, header))
            if want_overlay:
                alpha = self.p["overlay_alpha"]
                camera = image_codec.to_rgb_array(native, msg.encoding)
                blend = cv2.addWeighted(camera, 1.0 - alpha, color, alpha, 0.0)
                self.pub_overlay.publish(image_codec.rgb8(blend, header))
        if self.pub_conf.get_subscription_count():
            self.pub_conf.publish(image_codec.mono8(resize_mask(conf[0], (width, height)), header))

        stamp = header.stamp.sec + 1e-9 * header.stamp.nanosec
        ros_now = self.get_clock().now().nanoseconds * 1e-9
        self.stats.on_published(time.monotonic(), latency_wall=time.time() - stamp if stamp > 0 else None,
                                latency_ros=ros_now - stamp if ros_now > 0 and stamp > 0 else None,
                                processing=time.monotonic() - received)

    def _fractions(self, mask: np.ndarray) -> Float32MultiArray:
        rows = int(round(self.p["ignore_rows_from"] * mask.shape[0]))
        valid = mask[:rows]
        counts = np.bincount(valid.ravel(), minlength=self.num_classes)[:self.num_classes]
        total = max(int(valid.size), 1)
        msg = Float32MultiArray()
        msg.layout.dim = [MultiArrayDimension(label="class", size=self.num_classes, stride=self.num_classes)]
        msg.data = (counts / total).astype(np.float32).tolist()
        return msg

    # ---------------------------------------------------------------- diagnostics
    def diagnostic_status(self) -> DiagnosticStatus:
        s = self.stats.snapshot(time.monotonic())
        backend = self.manager.backend

        def fmt(value):
            if value is None:
                return "n/a"
            return f"{value:.2f}" if isinstance(value, float) else str(value)

        values = {
            "backend": backend.name, "backend_requested": self.p["backend"],
            "backend_state": self.manager.status.state,     # ready | building (TensorRT engine) | build_failed
            "model_file": str(self.model_path),
            "input_topic": self.sub.topic_name, "input_rate_hz": s["input_rate_hz"],
            "output_rate_hz": s["output_rate_hz"], "frames_received": s["received"],
            "frames_processed": s["processed"], "frames_dropped": s["dropped"], "frames_rejected": s["rejected"],
            "frames_failed": s["failed"],
            **{f"rejected_{reason}": count for reason, count in s["rejected_by_reason"].items()},
            "latency_wall_p50_ms": s["latency_wall_p50_ms"], "latency_wall_p99_ms": s["latency_wall_p99_ms"],
            "latency_ros_p50_ms": s["latency_ros_p50_ms"], "latency_ros_p99_ms": s["latency_ros_p99_ms"],
            "processing_p50_ms": s["processing_p50_ms"], "processing_p99_ms": s["processing_p99_ms"],
        }
        level, message = DiagnosticStatus.OK, "ok"
        if s["failed"]:
            level, message = DiagnosticStatus.ERROR, f"{s['failed']} frames failed in inference"
        elif s["rejected"]:
            level, message = DiagnosticStatus.WARN, f"{s['rejected']} malformed frames rejected"
        elif s["received"] == 0:
            level, message = DiagnosticStatus.WARN, f"no images received on {self.sub.topic_name} yet"
        return DiagnosticStatus(level=level, name=f"{self.get_fully_qualified_name()}: segmentation",
                                message=message, hardware_id=backend.name,
                                values=[KeyValue(key=k, value=fmt(v)) for k, v in values.items()])

    def _publish_diagnostics(self) -> None:
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [self.diagnostic_status()]
        self.pub_diag.publish(msg)

    # ---------------------------------------------------------------- shutdown
    def close(self) -> None:
        with self._slot_lock:
            self._stopping = True
            self._slot_lock.notify()
        self._worker.join(timeout=5.0)
        self.manager.close()


def main(args=None) -> int:
    rclpy.init(args=args)
    try:
        node = SegNode()
    except StartupError as exc:
        print(f"[seg_node] startup failed: {exc}", file=sys.stderr, flush=True)
        rclpy.try_shutdown()
        return 2
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.close()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
