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
from pathlib import Path

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
from carla_seg_ros.ros.occupancy import check_parameters as check_occupancy_parameters, load_classes
from carla_seg_ros.ros.seg_camera import CameraIO
from carla_seg_ros.ros.seg_params import (NODE_NAME, PARAMETERS, PARAMETERS_BY_NAME, QOS_RELIABILITIES,  # noqa: F401
                                          Param, StartupError, declare_parameters)
from carla_seg_ros.ros.shutdown import run_node
from carla_seg_ros.runtime.backend_manager import BackendManager
from carla_seg_ros.runtime.cpu_info import execution_line
from carla_seg_ros.runtime import frame_ops, memory
from carla_seg_ros.runtime.inference import group_by_size
from carla_seg_ros.runtime.input_size import width_range
from carla_seg_ros.runtime.model_ladder import (MODEL_CHOICES, RUNG_FILES, RungChoice, budget_ms, choose_rung,
                                                discover, format_timings, parse_frame_size,
                                                time_interleaved)
from carla_seg_ros.runtime.preprocess import resize_mask

MANAGED_FLAG = "--managed"


class SegPipeline:
    """The node's work, shared by SegNode (plain) and ManagedSegNode (lifecycle); mixed into an rclpy Node."""

    manager = None
    cameras: list = []
    _worker = None
    _diag_timer = None
    _param_callback = None

    # ---------------------------------------------------------------- configure / cleanup: the model
    def _configure_pipeline(self) -> None:
        self.p = declare_parameters(self)
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        frame_ops.set_opencv_threads(self.p["opencv_threads"])     # measured in runtime/frame_ops.py
        self.manager, model_path = self._select_model()
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
        self._label_info = self.label_info_yaml(info)
        try:    # checked at configure, so a managed node fails its transition, not its activation
            check_occupancy_parameters(self.p)
            self.occupancy_classes = load_classes(self.p, [str(c["name"]) for c in
                                                           sorted(info.classes, key=lambda c: int(c["id"]))])
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

    # ---------------------------------------------------------------- the model: a ladder rung or a file
    def _select_model(self) -> tuple[BackendManager, Path]:
        """Load the model the ``model`` parameter names (auto: the timed ladder choice); sets ``model_choice``
        (why this file) and ``rung`` (the /diagnostics values saying which rung and why)."""
        model, legacy = self.p["model"], self.p["model_path"]
        self.rung = {"model_rung": "", "rung_choice": "", "rung_timings_ms": "", "rung_budget_ms": "", "rung_fits": ""}
        try:
            parse_frame_size(self.p["timing_frame_size"])
        except ValueError as exc:
            raise StartupError(f"parameter timing_frame_size: {exc}") from exc
        if legacy:
            if model != "auto":
                raise StartupError(f"parameters model ({model!r}) and model_path ({legacy!r}, deprecated) are both "
                                   f"set: set model alone")
            self.get_logger().warning("parameter model_path is deprecated: use model:=<path> (same meaning)")
            self.model_choice = "model_path parameter"
            self.rung.update(model_rung="file", rung_choice="model_path parameter")
            return self._load(Path(legacy), "model_path"), Path(legacy)
        if model not in MODEL_CHOICES:
            if not Path(model).is_file():
                raise StartupError(f"parameter model: {model!r} is neither {', '.join(MODEL_CHOICES)} nor an "
                                   f"existing model file")
            self.model_choice = "model parameter"
            self.rung.update(model_rung="file", rung_choice="model parameter")
            return self._load(Path(model), "model"), Path(model)
        directory = Path(self.p["models_dir"]) if self.p["models_dir"] else None
        if directory is not None and not directory.is_dir():
            raise StartupError(f"parameter models_dir: {directory} is not a folder")
        ladder = discover(self.p["backend"], directory)
        for name, path, why in ladder.skipped:
            self.get_logger().warning(f"model ladder: {name} rung {path} skipped: {why}")
        if model != "auto":
            rung = ladder.get(model)
            if rung is None:
                raise StartupError(f"parameter model: no usable {model} rung in {ladder.directory} "
                                   f"({RUNG_FILES[model]} missing or unreadable)")
            self.model_choice = f"rung {model} (model parameter); {rung.why_file}"
            self.rung.update(model_rung=model, rung_choice="model parameter")
            return self._load(rung.path, "model"), rung.path
        return self._auto_rung(ladder)

    def _load(self, path: Path, parameter: str) -> BackendManager:
        try:
            return BackendManager(self.p["backend"], path, allow_fallback=self.p["allow_fallback"],
                                  background_build=self.p["background_engine_build"],
                                  threads=self.p["threads"], log_info=self.get_logger().info)
        except FileNotFoundError as exc:
            raise StartupError(f"{parameter}: {exc}") from exc
        except ValueError as exc:   # corrupt or foreign model file (or an unknown backend, caught earlier)
            raise StartupError(f"{parameter}: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - BackendError and whatever a runtime raises while loading
            raise StartupError(f"backend {self.p['backend']!r}: {exc}") from exc

    def _auto_rung(self, ladder) -> tuple[BackendManager, Path]:
        """model auto: load and time every rung (runtime/model_ladder.py), keep the most accurate that fits."""
        log = self.get_logger()
        if not ladder.rungs:
            skipped = "; ".join(f"{path}: {why}" for _, path, why in ladder.skipped)
            raise StartupError(f"model: auto found no usable rung in {ladder.directory} "
                               f"({skipped or 'no ' + ', '.join(RUNG_FILES.values())})")
        budget = budget_ms(self.p["target_rate"], self.p["budget_fraction"])   # both range-checked parameters
        frame_wh = parse_frame_size(self.p["timing_frame_size"])                # checked by _select_model
        batch = max(1, len(self.p["cameras"]))
        managers, timings, choice, last_error = {}, {}, None, None
        for rung in ladder.rungs:
            try:
                manager = self._load(rung.path, "model")
            except StartupError as exc:
                log.warning(f"model ladder: {rung.name} rung {rung.path} cannot load, skipped: {exc}")
                timings[rung.name], last_error = None, exc
                continue
            if manager.status.state == "building":
                if not managers:
                    # A CPU runtime serves while TensorRT builds: timing it says nothing about the GPU, where the
                    # accurate model is expected to fit any budget (not measured yet: README, Performance, GPU);
                    # take this rung untimed.
                    managers[rung.name] = manager
                    choice = RungChoice(rung.name, f"{rung.name}: not timed, the TensorRT engine builds in the "
                                        f"background (the GPU runs it within budget)", True, budget, {})
                    break
                log.warning(f"model ladder: {rung.name} rung not timed: its TensorRT engine is not built yet")
                manager.close()
                timings[rung.name] = None
                continue
            managers[rung.name] = manager
            if manager.backend.name != "tensorrt":
                continue                       # the CPU rungs are timed together below, their calls interleaved
            ms = self._timed({rung.name: manager}, frame_wh, batch, ladder)[rung.name]
            timings[rung.name] = ms
            if ms is not None and ms <= budget and rung != ladder.rungs[-1]:
                # On the GPU the first rung that fits is the choice: the less accurate rungs would only cost
                # TensorRT engine builds (minutes each) to be timed.
                choice = RungChoice(rung.name, f"{rung.name}: the most accurate rung that fits the budget on "
                                    f"TensorRT (measured {format_timings(timings)} ms, budget {budget:.1f} ms; the "
                                    f"less accurate rungs not loaded)", True, budget, dict(timings))
                break
        if choice is None:
            untimed = {name: manager for name, manager in managers.items() if name not in timings}
            timings.update(self._timed(untimed, frame_wh, batch, ladder))
            timings = {r.name: timings[r.name] for r in ladder.rungs if r.name in timings}   # most accurate first
            try:
                choice = choose_rung(timings, budget)
            except ValueError as exc:
                for manager in managers.values():
                    manager.close()
                if last_error is not None:
                    raise last_error
                raise StartupError(f"model: auto: {exc}") from exc
        for name, manager in managers.items():
            if name != choice.rung:
                manager.close()
        rung = ladder.get(choice.rung)
        (log.info if choice.fits else log.warning)(
            f"model ladder: rung {choice.reason}; target {self.p['target_rate']:g} Hz, budget "
            f"{self.p['budget_fraction']:.0%} of the frame period")
        self.model_choice = f"rung {choice.reason}; {rung.why_file}"
        self.rung.update(model_rung=choice.rung, rung_choice=choice.reason,
                         rung_timings_ms=format_timings(choice.timings_ms), rung_budget_ms=f"{budget:.1f}",
                         rung_fits="true" if choice.fits else "false")
        return managers[choice.rung], rung.path

    def _timed(self, managers: dict, frame_wh, batch: int, ladder) -> dict:
        """Rung name -> median ms of its model call (runtime/model_ladder.time_interleaved); None, with a warning,
        for a rung whose call failed."""
        timings = {}
        for name, result in time_interleaved({n: m.backend for n, m in managers.items()}, frame_wh, batch).items():
            if isinstance(result, Exception):
                self.get_logger().warning(f"model ladder: {name} rung {ladder.get(name).path} failed its timing, "
                                          f"skipped: {result}")
                result = None
            timings[name] = result
        return timings

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
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._worker = threading.Thread(target=self._inference_loop, name="seg_inference", daemon=True)
        self._worker.start()
        self._diag_timer = self.create_timer(self.p["diagnostics_period"], self._publish_diagnostics,
                                             clock=self._steady)
        if self._param_callback is None:
            self._param_callback = self.add_on_set_parameters_callback(self._on_set_parameters)
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
                while not self._stopping and not any(c.pending is not None for c in self.cameras):
                    self._slot.wait()
                if self._stopping:
                    return
                batch = [(c, frame) for c in self.cameras if (frame := c.take()) is not None]
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
    managed = MANAGED_FLAG in rclpy.utilities.remove_ros_args(argv)
    memory.bound_heap_growth()          # before any thread exists: see runtime/memory.py
    return run_node(ManagedSegNode if managed else SegNode, "seg_node", argv)


if __name__ == "__main__":
    sys.exit(main())
