"""seg_node: semantic segmentation of camera topics (CARLA ROS bridge) with newest-frame-only inference.

Subscribes ``image`` (sensor_msgs/Image; the launch file remaps it to /carla/<role>/<camera>/image) and publishes,
each with the input message's exact header:

* ``~/mask``            mono8 class ids at the input resolution
* ``~/mask_color``      rgb8 palette colours                     (computed only while subscribed)
* ``~/overlay``         rgb8 camera image blended with the palette (``overlay_alpha``; only while subscribed)
* ``~/confidence``      mono8 max class probability x 255          (only while subscribed)
* ``~/class_fractions`` std_msgs/Float32MultiArray: fraction of the valid pixels predicted as each class
* ``~/label_info``      std_msgs/String, the class table as YAML (transient local: late subscribers get it)
* ``~/occupancy``, ``~/occupancy/<group>``  nav_msgs/OccupancyGrid in the vehicle frame, from the mask and
  ``camera_info`` (ros/occupancy.py; only while subscribed)
* ``~/points``          sensor_msgs/PointCloud2 in the camera frame, from an aligned ``depth`` image or the ground rule
* ``~/local_map``, ``~/local_map/<group>``  every camera fused over time with ``odometry`` (ros/local_map_outputs.py)
* ``/diagnostics``      diagnostic_msgs/DiagnosticArray at 1 Hz (rates, latency percentiles, drops, rejections)

With ``cameras: [a, b, ...]`` one process serves several cameras: it subscribes each (``a/image`` or the topic
given) and publishes each camera's outputs under ``~/a/mask`` etc. (seg_camera.CameraIO).

Threads: the executor thread runs the subscription callbacks, which validate the header, resize the frame to the
model's input (while it is still in this thread's cache, 2-3 ms; at the camera's aspect for a keep_aspect model,
runtime/input_size.py) and park it in the camera's one-slot mailbox; a
frame arriving while the slot is full replaces it and counts as dropped. The inference thread takes the newest
frame of every camera that has one, runs them as one batch per input size (cameras of one aspect share a call)
and publishes. So nothing queues: latency stays one
inference long however slow the backend is, and the subscriptions are drained at once, which keeps the DDS reader
history empty.

Run as a managed (lifecycle) node with ``--managed`` (ManagedSegNode): configure loads and warms the model,
activate creates the subscriptions and publishers, deactivate destroys them, cleanup releases the backend. The
plain node does configure + activate in its constructor; both share SegPipeline.
"""
from __future__ import annotations

import sys
import threading
import time

import cv2
import numpy as np
import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.node import Node
from std_msgs.msg import Float32MultiArray, MultiArrayDimension

from carla_seg_ros import image_codec
from carla_seg_ros.ros.local_map_outputs import LocalMapOutputs, check_parameters as check_map_parameters
from carla_seg_ros.ros.occupancy import check_parameters as check_occupancy_parameters, load_classes
from carla_seg_ros.ros.seg_camera import CameraIO, image_qos
from carla_seg_ros.ros.seg_params import (NODE_NAME, PARAMETERS, PARAMETERS_BY_NAME, QOS_RELIABILITIES,  # noqa: F401
                                          Param, StartupError, declare_parameters)
from carla_seg_ros.ros import node_help
from carla_seg_ros.ros.model_selection import select_model
from carla_seg_ros.ros.model_swap import ModelSwap, palette_of
from carla_seg_ros.ros.shutdown import run_node
from carla_seg_ros.runtime.cpu_info import execution_line
from carla_seg_ros.runtime import frame_ops, memory
from carla_seg_ros.runtime.inference import group_by_size
from carla_seg_ros.runtime.input_size import width_range
from carla_seg_ros.runtime.preprocess import resize_mask

MANAGED_FLAG = "--managed"
HELP_EXAMPLES = (
    "ros2 launch carla_seg_ros seg.launch.py                      # next to the CARLA ROS bridge",
    "ros2 launch carla_seg_ros seg.launch.py cameras:=rgb_front,rgb_left rviz:=true",
    "ros2 run carla_seg_ros seg_node --ros-args -r image:=/carla/ego_vehicle/rgb_front/image -p use_sim_time:=true",
)


class SegPipeline:
    """The node's work, shared by SegNode (plain) and ManagedSegNode (lifecycle); mixed into an rclpy Node."""

    manager = None
    cameras: list = []
    local_map = None
    _worker = None
    _diag_timer = None
    _param_callback = None

    # ---------------------------------------------------------------- configure / cleanup: the model
    def _configure_pipeline(self) -> None:
        self.p = declare_parameters(self)
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        frame_ops.set_opencv_threads(self.p["opencv_threads"])     # measured in runtime/frame_ops.py
        selection = select_model(self.p, self.get_logger())
        self.manager, self.model_path = selection.manager, selection.path
        self.model_choice, self.rung = selection.choice, dict(selection.rung, model=self.p["model"],
                                                                 model_swap="none")
        self.swap = ModelSwap(self)
        if self._param_callback is None:     # at configure: a managed node takes a model swap while inactive too
            self._param_callback = self.add_on_set_parameters_callback(self._on_set_parameters)
        loaded = self.manager.backend.name
        if self.p["backend"] not in ("auto", loaded):
            self.get_logger().warning(f"backend {self.p['backend']!r} could not load; allow_fallback is true, so "
                                      f"running on {loaded} (see the warning above for why)")
        info = self.manager.backend.info
        self.num_classes = info.num_classes
        self._palette = palette_of(info)
        self._label_info = self.label_info_yaml(info)
        try:    # checked at configure, so a managed node fails its transition, not its activation
            check_occupancy_parameters(self.p)
            self.occupancy_classes = load_classes(self.p, info)
            check_map_parameters(self.p, list(self.occupancy_classes.groups))
        except ValueError as exc:
            self._cleanup_pipeline()
            raise StartupError(str(exc)) from exc
        # Warm-up at the batch size the node will run: the first call of a runtime allocates and plans.
        w, h = self.manager.backend.input_size
        try:
            self.manager.backend.infer(np.zeros((max(1, len(self.p["cameras"])), h, w, 3), np.uint8))
        except Exception as exc:  # noqa: BLE001 - a model that loads but cannot run is a startup error too
            self._cleanup_pipeline()
            raise StartupError(f"backend {self.manager_name()}: warm-up inference failed: {exc}") from exc

    def manager_name(self) -> str:
        return self.manager.backend.name if self.manager is not None else self.p["backend"]

    def _cleanup_pipeline(self) -> None:
        if self.manager is not None:
            self.manager.close()
            self.manager = None

    # ---------------------------------------------------------------- activate / deactivate: the I/O
    def _activate_pipeline(self) -> None:
        self._slot = threading.Condition()
        self._stopping = False
        streams = self.p["cameras"] or [("", "image")]
        self.cameras = [CameraIO(self, name, topic, self._slot, self._label_info) for name, topic in streams]
        self.local_map = LocalMapOutputs(self, self.p, self.cameras, self.occupancy_classes, image_qos(self.p))
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._worker = threading.Thread(target=self._inference_loop, name="seg_inference", daemon=True)
        self._worker.start()
        self._diag_timer = self.create_timer(self.p["diagnostics_period"], self._publish_diagnostics,
                                             clock=self._steady)
        topics = ", ".join(c.sub.topic_name for c in self.cameras)
        execution = self.manager.backend.execution_info()       # e.g. OpenVINO's precision: bf16 or f32
        self.get_logger().info(
            f"seg_node ready: backend {self.manager.backend.name}, model {self.model_path} ({self.model_choice}), "
            f"subscribing {topics} ({self.p['qos_reliability']}, depth {self.p['qos_depth']})"
            + (f"; {execution_line(execution)}" if execution else ""))

    def _deactivate_pipeline(self) -> None:
        if self._worker is not None:
            with self._slot:
                self._stopping = True
                self._slot.notify()
            self._worker.join(timeout=5.0)
            self._worker = None
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self.destroy_publisher(self.pub_diag)
            self._diag_timer = None
        if self.local_map is not None:
            self.local_map.destroy(self)
            self.local_map = None
        for camera in self.cameras:
            camera.destroy()
        self.cameras = []

    def close(self) -> None:
        """Stop the I/O and release the backend; safe to call in any state, more than once."""
        self._deactivate_pipeline()
        self._cleanup_pipeline()

    # ---------------------------------------------------------------- parameters
    def _on_set_parameters(self, params) -> SetParametersResult:
        # Ranges and read-only are enforced by rclpy from the descriptors; the dynamic ones take effect here.
        for param in params:
            if param.name == "model" and getattr(self, "swap", None) is not None and self.manager is not None:
                return self.swap.request(str(param.value))     # ros/model_swap.py: refused with the reason
            if param.name in ("overlay_alpha", "ignore_rows_from") and hasattr(self, "p"):
                self.p[param.name] = float(param.value)
        return SetParametersResult(successful=True)

    @staticmethod
    def label_info_yaml(info) -> str:
        # input_size: the model's own (a 4:3 frame's); keep_aspect models run other aspects at input_widths.
        table = {"model": info.arch or "", "class_set": info.class_set, "input_size": list(info.input_size),
                 "input_policy": info.input_policy, "input_widths": list(width_range(info)), "ignore_index": 255,
                 "classes": [{"id": int(c["id"]), "name": str(c["name"]), "color": [int(v) for v in c["color"]]}
                             for c in info.classes]}
        return yaml.safe_dump(table, sort_keys=False, default_flow_style=None)

    # ---------------------------------------------------------------- inference thread
    def _inference_loop(self) -> None:
        while True:
            with self._slot:
                while not self._stopping and not self.swap.has_pending() and \
                        not any(c.pending is not None for c in self.cameras):
                    self._slot.wait()
                if self._stopping:
                    return
                batch = [(c, frame) for c in self.cameras if (frame := c.take()) is not None]
            if self.swap.has_pending():     # a new model loaded in the background: switch between two batches
                self.swap.apply_pending()
            if not batch:
                continue
            try:
                self._process(batch)
            except Exception as exc:  # noqa: BLE001 - one bad batch must not stop the node
                for camera, frame in batch:
                    camera.stats.on_failed()
                    msg = frame.msg
                    camera.warn("inference_error", f"inference failed on a {msg.width}x{msg.height} {msg.encoding} "
                                f"frame: {type(exc).__name__}: {exc}", error=True)

    def model_input(self, native: np.ndarray, encoding: str) -> np.ndarray:
        """A frame's pixels -> the current backend's input at the size the model's policy gives the frame's
        aspect (runtime/input_size.py; called in the subscription callback)."""
        size = self.manager.backend.input_size_for((native.shape[1], native.shape[0]))
        return frame_ops.model_input(native, encoding, size)

    def _process(self, batch: list) -> None:
        """[(camera, Frame)] -> one inference call per input size (cameras of one aspect share it) -> each camera's
        outputs."""
        backend = self.manager.backend       # per batch: the manager may switch to TensorRT at any time
        small = []
        for _, f in batch:
            w, h = backend.input_size_for((f.native.shape[1], f.native.shape[0]))
            small.append(f.model_input if f.model_input.shape[1:3] == (h, w)
                         else self.model_input(f.native, f.msg.encoding))
        ids, conf = [None] * len(batch), [None] * len(batch)
        infer_start = time.monotonic()
        for indices in group_by_size([s.shape[1:3] for s in small]).values():
            group = small[indices[0]] if len(indices) == 1 else np.concatenate([small[i] for i in indices])
            group_ids, group_conf = backend.infer(group)
            for j, i in enumerate(indices):
                ids[i], conf[i] = group_ids[j], group_conf[j]
        infer_end = time.monotonic()
        for i, (camera, frame) in enumerate(batch):
            stages = {"preprocess": frame.parked - frame.received, "handoff": infer_start - frame.parked,
                      "inference": infer_end - infer_start}
            try:
                self._publish_outputs(camera, frame, ids[i], conf[i], stages)
            except Exception as exc:  # noqa: BLE001 - a camera's publishing error must not cost the others
                camera.stats.on_failed()
                camera.warn("publish_error", f"publishing failed: {type(exc).__name__}: {exc}", error=True)

    def _publish_outputs(self, camera: CameraIO, frame, ids: np.ndarray, conf: np.ndarray,
                         stages: dict | None = None) -> None:
        """Every output of one camera's frame. ``stages``: the frame's stage times so far (node_stats.STAGES);
        this adds "publish", its own time from start to the stats update."""
        publish_start = time.monotonic()
        msg, native = frame.msg, frame.native
        height, width = native.shape[:2]
        mask = resize_mask(ids, (width, height))
        header = msg.header

        camera.pub_mask.publish(image_codec.mono8(mask, header))
        camera.pub_fractions.publish(self._fractions(ids, (width, height)))
        want_color = camera.pub_color.get_subscription_count() > 0
        want_overlay = camera.pub_overlay.get_subscription_count() > 0
        if want_color or want_overlay:
            # Colouring the model-size mask and then resizing (nearest) gives the same pixels as colouring the
            # full-size mask, at a fifth of the cost.
            color = resize_mask(self._palette[ids], (width, height))
            if want_color:
                camera.pub_color.publish(image_codec.rgb8(color, header))
            if want_overlay:
                alpha = self.p["overlay_alpha"]
                rgb = image_codec.to_rgb_array(native, msg.encoding)
                blend = cv2.addWeighted(rgb, 1.0 - alpha, color, alpha, 0.0)
                camera.pub_overlay.publish(image_codec.rgb8(blend, header))
        if camera.pub_conf.get_subscription_count():
            camera.pub_conf.publish(image_codec.mono8(resize_mask(conf, (width, height)), header))
        camera.occupancy.publish(ids, conf, header, (width, height))     # no-op unless subscribed
        self.local_map.on_frame(camera, ids, conf, header, (width, height), native, msg.encoding)   # likewise

        stamp = header.stamp.sec + 1e-9 * header.stamp.nanosec
        ros_now = self.get_clock().now().nanoseconds * 1e-9
        now = time.monotonic()
        camera.stats.on_published(now, latency_wall=time.time() - stamp if stamp > 0 else None,
                                  latency_ros=ros_now - stamp if ros_now > 0 and stamp > 0 else None,
                                  processing=now - frame.received,
                                  stages={**(stages or {}), "publish": now - publish_start})

    def _fractions(self, ids: np.ndarray, size_wh: tuple[int, int]) -> Float32MultiArray:
        """Class fractions of the input-size mask above ``ignore_rows_from``, counted on the model-size ids."""
        width, height = size_wh
        rows = min(int(round(self.p["ignore_rows_from"] * height)), height)
        counts = frame_ops.class_counts(ids, size_wh, rows, self.num_classes)
        total = max(rows * width, 1)
        msg = Float32MultiArray()
        msg.layout.dim = [MultiArrayDimension(label="class", size=self.num_classes, stride=self.num_classes)]
        msg.data = (counts / total).astype(np.float32).tolist()
        return msg

    # ---------------------------------------------------------------- diagnostics
    def _publish_diagnostics(self) -> None:
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        fqn = self.get_fully_qualified_name()
        msg.status = [c.diagnostic_status(self.manager, self.model_path, self.p["backend"], fqn, self.model_choice,
                                          self.rung) for c in self.cameras]
        msg.status.append(self.local_map.diagnostic_status(fqn))
        self.pub_diag.publish(msg)


class SegNode(SegPipeline, Node):
    """The plain node: loads the model and starts serving in its constructor."""

    def __init__(self, **kwargs):
        Node.__init__(self, NODE_NAME, **kwargs)
        try:
            self._configure_pipeline()
            self._activate_pipeline()
        except BaseException:
            self.close()
            raise


class ManagedSegNode(SegPipeline, LifecycleNode):
    """The managed node: the standard lifecycle transitions drive SegPipeline's four steps.

        unconfigured --configure--> inactive     parameters read, model loaded and warmed (startup errors fail here)
        inactive     --activate---> active       camera subscriptions, outputs, /diagnostics, inference thread
        active       --deactivate-> inactive     all of those destroyed; the model stays loaded
        inactive     --cleanup----> unconfigured backend released;   any --shutdown--> finalized

    Driven through ``<node>/change_state`` and ``get_state`` (``ros2 lifecycle set /seg_node configure``).
    """

    def __init__(self, **kwargs):
        LifecycleNode.__init__(self, NODE_NAME, **kwargs)
        self.get_logger().info("seg_node (managed) waiting in state unconfigured: send `configure`")

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            self._configure_pipeline()
        except StartupError as exc:
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f"configured: backend {self.manager.backend.name}, model {self.model_path} "
                               f"({self.model_choice})")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        self._activate_pipeline()
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._deactivate_pipeline()
        self.get_logger().info("deactivated: subscriptions and outputs stopped, model kept loaded")
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self.close()
        self.get_logger().info("cleaned up: backend released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self.close()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        self.close()
        return TransitionCallbackReturn.SUCCESS


def main(args=None) -> int:
    argv = list(sys.argv if args is None else args)
    if node_help.wants_help(argv):
        print(node_help.usage("seg_node", __doc__.split("\nThreads:")[0], PARAMETERS, flags=f"[{MANAGED_FLAG}]",
                              examples=HELP_EXAMPLES))
        return 0
    managed = MANAGED_FLAG in rclpy.utilities.remove_ros_args(argv)
    memory.bound_heap_growth()          # before any thread exists: see runtime/memory.py
    return run_node(ManagedSegNode if managed else SegNode, "seg_node", argv)


if __name__ == "__main__":
    sys.exit(main())
