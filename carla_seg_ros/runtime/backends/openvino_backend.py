"""OpenVINO on the CPU, reading the same .onnx file.

A fixed-shape model is compiled once, as it is (its batch axis stays dynamic). A keep_aspect model (dynamic width,
runtime/input_size.py) is compiled once per input width, with the width made static and the batch dynamic, because
OpenVINO's CPU plugin plans and picks kernels for static shapes far better than for dynamic ones. The compiled
models are kept in a small LRU cache (``SHAPE_CACHE`` widths; the model's own width is compiled at load): a node
serving one camera compiles one extra width on its first frame, a rig of cameras a few; an evaluation over frames
of many aspects recompiles only when more than ``SHAPE_CACHE`` widths alternate.
"""
from __future__ import annotations

import collections
import threading

import numpy as np

from carla_seg_ros.runtime.backends.base import Backend, BackendError
from carla_seg_ros.runtime.input_size import KEEP_ASPECT

SHAPE_CACHE = 4     # compiled widths kept (each holds its own plan and buffers, a few MB for the committed model)


class OpenVinoBackend(Backend):
    name = "openvino"

    def __init__(self, model_path, info=None, threads: int = 0):
        super().__init__(model_path, info, threads)
        try:
            import openvino as ov
        except ImportError as exc:
            raise BackendError(f"openvino is not installed ({exc})") from exc
        self.ov = ov
        self.core = ov.Core()
        self.config = {"PERFORMANCE_HINT": "LATENCY"}
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = threads
        self._lock = threading.Lock()
        self._compiled: collections.OrderedDict = collections.OrderedDict()   # width -> (compiled, request)
        self.compilations = 0
        try:
            if self.info.input_policy == KEEP_ASPECT:
                self.model = self.core.read_model(str(self.model_path))
                self._for_width(self.info.input_width)
            else:
                compiled = self.core.compile_model(str(self.model_path), "CPU", self.config)
                self._compiled[None] = (compiled, compiled.create_infer_request())
                self.compilations = 1
        except Exception as exc:  # noqa: BLE001
            raise BackendError(f"OpenVINO cannot compile {self.model_path}: {exc}") from exc

    @property
    def compiled_widths(self) -> list:
        """Widths with a compiled model in the cache, least recently used first (``[None]``: fixed shape)."""
        return list(self._compiled)

    def _for_width(self, width):
        entry = self._compiled.get(width)
        if entry is not None:
            self._compiled.move_to_end(width)
            return entry
        h = self.info.input_height
        self.model.reshape({self.model.input(0): self.ov.PartialShape([self.ov.Dimension(), h, width, 3])})
        compiled = self.core.compile_model(self.model, "CPU", self.config)
        entry = self._compiled[width] = (compiled, compiled.create_infer_request())
        self.compilations += 1
        while len(self._compiled) > SHAPE_CACHE:
            self._compiled.popitem(last=False)
        return entry

    def _infer(self, images: np.ndarray):
        with self._lock:
            compiled, request = self._for_width(images.shape[2] if None not in self._compiled else None)
            result = request.infer({0: images})
            return result[compiled.output(0)], result[compiled.output(1)]
