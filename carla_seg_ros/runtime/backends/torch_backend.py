"""PyTorch eager on the CPU: the reference implementation and the baseline the benchmarks compare against.

Loads the .safetensors stored beside the .onnx (same stem), never a pickle.
"""
from __future__ import annotations

import numpy as np

from carla_seg_ros.runtime.backends.base import Backend, BackendError


def weights_beside(model_path):
    path = model_path.with_suffix(".safetensors")
    if not path.is_file():
        raise BackendError(f"the torch backends need the weights {path} beside {model_path}")
    return path


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model_path, info=None, threads: int = 0):
        super().__init__(model_path, info, threads)
        try:
            import torch
        except ImportError as exc:
            raise BackendError(f"PyTorch is not installed ({exc})") from exc
        from carla_seg_ros.networks.models import DeployModel
        from carla_seg_ros.networks.weights import load_model
        if threads:
            torch.set_num_threads(threads)
        net, _ = load_model(weights_beside(self.model_path))
        self.model = DeployModel(net).eval()
        self.torch = torch

    def execution_info(self) -> dict:
        # ATen's kernels follow ATEN_CPU_CAPABILITY (reported here), its oneDNN ones ONEDNN_MAX_CPU_ISA.
        return {"inference_precision": "f32", "kernel_isa": self.torch.backends.cpu.get_cpu_capability()}

    def _infer(self, images: np.ndarray):
        with self.torch.inference_mode():
            ids, conf = self.model(self.torch.from_numpy(images))
        return ids.numpy(), conf.numpy()
