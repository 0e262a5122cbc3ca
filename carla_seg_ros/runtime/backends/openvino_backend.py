"""OpenVINO on the CPU, reading the same .onnx file."""
from __future__ import annotations

import numpy as np

from carla_seg_ros.runtime.backends.base import Backend, BackendError


class OpenVinoBackend(Backend):
    name = "openvino"

    def __init__(self, model_path, info=None, threads: int = 0):
        super().__init__(model_path, info, threads)
        try:
            import openvino as ov
        except ImportError as exc:
            raise BackendError(f"openvino is not installed ({exc})") from exc
        core = ov.Core()
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            self.compiled = core.compile_model(str(self.model_path), "CPU", config)
        except Exception as exc:  # noqa: BLE001
            raise BackendError(f"OpenVINO cannot compile {self.model_path}: {exc}") from exc
        self.request = self.compiled.create_infer_request()

    def _infer(self, images: np.ndarray):
        result = self.request.infer({0: images})
        return result[self.compiled.output(0)], result[self.compiled.output(1)]
