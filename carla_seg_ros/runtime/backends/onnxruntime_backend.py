"""ONNX Runtime on the CPU."""
from __future__ import annotations

import numpy as np

from carla_seg_ros.runtime.backends.base import Backend, BackendError
from carla_seg_ros.runtime.model_info import INPUT_NAME, OUTPUT_NAMES


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, model_path, info=None, threads: int = 0):
        super().__init__(model_path, info, threads)
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendError(f"onnxruntime is not installed ({exc})") from exc
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        # No busy-waiting between ops: in the node the DDS threads and the camera driver share the cores, and
        # spinning workers starved them (measured: 159 ms -> 101 ms per frame with a second process busy).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.model_path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise BackendError(f"ONNX Runtime cannot load {self.model_path}: {exc}") from exc

    def _infer(self, images: np.ndarray):
        ids, conf = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: images})
        return ids, conf

    def execution_info(self) -> dict:
        # MLAS picks its kernels from CPUID at load time; no setting limits them (ONEDNN_MAX_CPU_ISA does not).
        return {"inference_precision": "f32 (int8 for a QDQ model)", "kernel_isa": "MLAS: from CPUID, not limitable"}
