"""Inference backends: one interface, several runtimes.

Every backend takes uint8 RGB frames already resized to the model's input size, shape (N, H, W, 3), and returns
``(class_ids, confidence)``, both uint8 (N, H, W). Pre- and post-processing live inside the model graph
(models.DeployModel), so all backends return the same thing for the same bytes.

``create_backend(name, model_path)`` picks one:
* ``onnxruntime`` / ``openvino``: CPU runtimes reading the exported .onnx file.
* ``torch``: PyTorch eager on the CPU, from the .safetensors beside the .onnx (the reference and a baseline).
* ``torch_cuda``: PyTorch on an NVIDIA GPU, fp16, channels-last, CUDA graph (see backends/torch_cuda.py).
* ``tensorrt``: a TensorRT engine built from the .onnx and cached (see backends/tensorrt.py).
* ``auto``: TensorRT when it is importable and a GPU is present, else the fastest CPU runtime (AUTO_CPU_ORDER).
"""
from __future__ import annotations

import importlib
import logging
from pathlib import Path


from carla_seg_ros.runtime.backends.base import Backend, BackendError
from carla_seg_ros.runtime.model_info import read_onnx_info

log = logging.getLogger(__name__)

BACKENDS = {
    "onnxruntime": "carla_seg_ros.runtime.backends.onnxruntime_backend:OnnxRuntimeBackend",
    "openvino": "carla_seg_ros.runtime.backends.openvino_backend:OpenVinoBackend",
    "torch": "carla_seg_ros.runtime.backends.torch_backend:TorchBackend",
    "torch_cuda": "carla_seg_ros.runtime.backends.torch_cuda_backend:TorchCudaBackend",
    "tensorrt": "carla_seg_ros.runtime.backends.tensorrt_backend:TensorRTBackend",
}
BACKEND_CHOICES = ("auto",) + tuple(BACKENDS)
# CPU runtimes for `auto`, fastest first for the committed model on the 2-core dev machine
# (`carla-seg bench model`, 300 frames: OpenVINO p50 15.3 ms, ONNX Runtime 17.5 ms, PyTorch 17.3 ms; docs/history/
# performance.md). ONNX Runtime stays the reference runtime of the evaluators.
AUTO_CPU_ORDER = ("openvino", "onnxruntime", "torch")


def _load_class(name: str):
    module_name, cls_name = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module_name), cls_name)


def tensorrt_available() -> bool:
    """TensorRT importable and a CUDA device present."""
    try:
        from carla_seg_ros.runtime.backends.tensorrt_backend import tensorrt_usable
    except ImportError:
        return False
    return tensorrt_usable()


def resolve_auto() -> list[str]:
    """Backends `auto` tries, in order."""
    return (["tensorrt"] if tensorrt_available() else []) + list(AUTO_CPU_ORDER)


def create_backend(name: str, model_path: str | Path, allow_fallback: bool = False, threads: int = 0,
                   **options) -> Backend:
    """Load backend ``name`` for the model; with ``allow_fallback`` fall back to the CPU order, logging why.

    Raises FileNotFoundError / ValueError for a missing or corrupt model (no backend can help there) and
    BackendError when the requested runtime cannot load.
    """
    if name not in BACKEND_CHOICES:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_CHOICES)}")
    info = read_onnx_info(model_path)  # fails early and clearly on missing/corrupt model files
    candidates = resolve_auto() if name == "auto" else [name]
    if allow_fallback and name != "auto":
        candidates += [b for b in AUTO_CPU_ORDER if b != name]
    errors = []
    for candidate in candidates:
        try:
            # Options (engine settings...) belong to the requested backend; CPU fallbacks take none.
            wanted = candidate == name or (name == "auto" and candidate == "tensorrt")
            backend = _load_class(candidate)(model_path, info=info, threads=threads, **(options if wanted else {}))
        except (ImportError, OSError, RuntimeError, BackendError) as exc:
            errors.append(f"{candidate}: {exc}")
            if candidate == name and not allow_fallback:
                break
            log.warning("backend %s unavailable (%s); trying the next one", candidate, exc)
            continue
        if errors:
            log.warning("using backend %s instead of %s: %s", candidate, name, "; ".join(errors))
        return backend
    raise BackendError(f"backend {name!r} cannot load: " + "; ".join(errors))
