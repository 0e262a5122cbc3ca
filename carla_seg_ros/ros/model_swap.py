"""Live model swap of seg_node: `ros2 param set /seg_node model <name|path|rung>` while frames keep flowing.

1. The parameter callback (``request``) checks what it cheaply can and refuses with the reason in the
   set-parameter result, the old model running on: a name or path that resolves to no file, a file that is not a
   readable exported model (runtime/model_info.py metadata), a class table the node cannot serve (ids not 0..N-1,
   or an occupancy config the new classes do not satisfy), or a swap already under way.
2. A background thread loads the new model exactly as at startup (ros/model_selection.py) and runs one warm-up
   call at the node's batch size; the old model serves every frame meanwhile.
3. The inference thread takes the prepared model between two batches (``apply_pending``): backend, palette,
   class count, occupancy class groups, the local map's evidence tables and ``~/label_info`` (republished on every
   camera, transient local) all switch at once, and the old backend is released on a thread of its own. Frames parked at the old input size are resized again
   by SegPipeline._process, so nothing is lost at the switch.
A load that fails in the background (a runtime that rejects the graph) is logged as an error, shown in
/diagnostics (``model_swap``) and the parameter is set back to the running model.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rcl_interfaces.msg import SetParametersResult
from std_msgs.msg import String

from carla_seg_ros.ros.model_selection import select_model
from carla_seg_ros.ros.occupancy import load_classes
from carla_seg_ros.runtime.model_info import read_onnx_info
from carla_seg_ros.runtime.model_ladder import MODEL_CHOICES
from carla_seg_ros.runtime.user_models import resolve_model, user_models_dir


@dataclass
class Prepared:
    spec: str
    selection: object          # model_selection.Selection
    palette: np.ndarray
    num_classes: int
    label_info: str
    occupancy_classes: object
    map_tables: tuple | None       # the local map's evidence tables for these classes (runtime/local_map.py)


def palette_of(info) -> np.ndarray:
    palette = np.zeros((256, 3), np.uint8)
    for c in info.classes:
        palette[int(c["id"])] = c["color"]
    return palette


class ModelSwap:
    def __init__(self, node):
        self.node = node
        self._lock = threading.Lock()
        self._pending: Prepared | None = None
        self._loading: str | None = None
        self._reverting = False
        self.state = "none"            # /diagnostics model_swap: none | loading X | swapped to X | failed: why

    # ---------------------------------------------------------------- parameter callback (executor thread)
    def why_not(self, spec: str) -> str | None:
        """The reason a swap to ``spec`` is refused now, or None."""
        if self._loading is not None:
            return f"a swap to {self._loading!r} is still loading; try again when it is done"
        if spec in MODEL_CHOICES:
            return None
        directory = self.node.p.get("user_models_dir") or None
        path = resolve_model(spec, directory)
        if path is None:
            return (f"{spec!r} is neither {', '.join(MODEL_CHOICES)}, an existing model file, nor a model installed "
                    f"in {user_models_dir(directory)}")
        try:
            info = read_onnx_info(path)
        except Exception as exc:  # noqa: BLE001 - protobuf/JSON errors of a corrupt or foreign file
            return f"{path} is not a readable exported model: {exc}"
        ids = sorted(int(c["id"]) for c in info.classes)
        if not ids or ids != list(range(len(ids))) or len(ids) > 255:
            return f"{path}: class ids must be 0..N-1 with N <= 255, got {ids[:20]}"
        try:
            groups = load_classes(self.node.p, info)
            if getattr(self.node, "local_map", None) is not None:
                self.node.local_map.tables_for(groups)
        except ValueError as exc:
            return f"{path}: the occupancy groups do not fit its classes: {exc}"
        return None

    def request(self, spec: str) -> SetParametersResult:
        if self._reverting:
            return SetParametersResult(successful=True)
        reason = self.why_not(spec)
        if reason is not None:
            self.node.get_logger().warning(f"model swap refused, keeping {self.node.model_path}: {reason}")
            return SetParametersResult(successful=False, reason=f"model swap refused: {reason}")
        self._loading = spec
        self.state = f"loading {spec}"
        self.node.rung = dict(self.node.rung, model_swap=self.state)
        threading.Thread(target=self._load, args=(spec,), name="seg_model_swap", daemon=True).start()
        return SetParametersResult(successful=True, reason=f"loading {spec} in the background")

    # ---------------------------------------------------------------- background load
    def _load(self, spec: str) -> None:
        node, log = self.node, self.node.get_logger()
        try:        # the frames come first: this thread's own work (parsing, graph compilation) at the lowest priority
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (AttributeError, OSError):
            pass
        selection = None
        try:
            p = dict(node.p, model=spec, model_path="")
            selection = select_model(p, log)
            info = selection.manager.backend.info
            w, h = selection.manager.backend.input_size
            selection.manager.backend.infer(np.zeros((max(1, len(node.cameras)), h, w, 3), np.uint8))   # warm-up
            groups = load_classes(node.p, info)
            local_map = getattr(node, "local_map", None)
            prepared = Prepared(spec, selection, palette_of(info), info.num_classes, node.label_info_yaml(info),
                                groups, local_map.tables_for(groups) if local_map is not None else None)
        except Exception as exc:  # noqa: BLE001 - whatever the runtime raises: the old model keeps running
            log.error(f"model swap to {spec!r} failed, keeping {node.model_path}: {exc}")
            if selection is not None:
                selection.manager.close()
            self.state = f"failed: {spec}: {exc}"
            node.rung = dict(node.rung, model_swap=self.state)       # replaced whole: diagnostics read it
            self._loading = None
            self._revert()
            return
        with self._lock:
            self._pending = prepared
        if getattr(node, "_worker", None) is None:     # no inference thread (a managed node not active): now
            self.apply_pending()
            return
        with node._slot:                 # wake the inference thread even when no frame is waiting
            node._slot.notify()
        log.info(f"model swap: {selection.path} loaded and warmed; switching at the next frame")

    def _revert(self) -> None:
        from rclpy.parameter import Parameter
        self._reverting = True
        try:
            self.node.set_parameters([Parameter("model", value=self.node.p["model"])])
        finally:
            self._reverting = False

    # ---------------------------------------------------------------- switch (inference thread, between batches)
    def has_pending(self) -> bool:
        return self._pending is not None

    def apply_pending(self) -> None:
        with self._lock:
            prepared, self._pending = self._pending, None
        if prepared is None:
            return
        node = self.node
        old = node.manager
        sel = prepared.selection
        node.manager, node.model_path, node.model_choice = sel.manager, sel.path, sel.choice
        self.state = f"swapped to {prepared.spec}"
        node.rung = dict(sel.rung, model=prepared.spec, model_swap=self.state)
        node._palette, node.num_classes, node._label_info = prepared.palette, prepared.num_classes, prepared.label_info
        node.occupancy_classes = prepared.occupancy_classes
        node.p["model"] = prepared.spec
        local_map = getattr(node, "local_map", None)
        if local_map is not None:          # tables made while loading; or now, for a map activated since
            tables = prepared.map_tables or local_map.tables_for(prepared.occupancy_classes)
            local_map.use_classes(prepared.occupancy_classes, tables)
        for camera in node.cameras:
            camera.occupancy.classes = prepared.occupancy_classes
            camera.pub_label_info.publish(String(data=prepared.label_info))
        self._loading = None
        if old is not None and old is not sel.manager:      # released off the inference thread: frames go on
            threading.Thread(target=old.close, name="seg_model_release", daemon=True).start()
        node.get_logger().info(f"model swapped: now {Path(sel.path)} ({sel.choice}); label_info republished")
