"""TensorRT on an NVIDIA GPU: a cached engine (trt_builder + engine_cache) run with the TensorRT 10 tensor API.

* named I/O tensors (``engine.get_tensor_name`` / ``get_tensor_mode``), never binding indices;
* ``execute_async_v3`` on a dedicated CUDA stream;
* device buffers for the largest batch and width of the engine's profile and pinned host buffers, allocated once:
  a frame costs two async copies in, one launch, two async copies out and one stream synchronisation. Tensor
  addresses are set once (a smaller batch or a narrower keep_aspect frame uses the front of the same contiguous
  buffers); only the input shape, set with ``context.set_input_shape`` when the batch or the width changes, follows
  the call. The output shapes follow from it.

CUDA memory and streams come from PyTorch (the CUDA library this project already depends on), so neither pycuda
nor cuda-python is needed. Importing this module never imports TensorRT: ``tensorrt_usable`` and the constructor do.
Written against the documented TensorRT 10 Python API; it could not be executed for this project (no TensorRT).
"""
from __future__ import annotations

import functools
import importlib.util
import logging

import numpy as np

from carla_seg_ros.runtime.backends.base import Backend, BackendError
from carla_seg_ros.runtime.model_info import INPUT_NAME, OUTPUT_NAMES

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def tensorrt_unusable_reason() -> str | None:
    """Why the TensorRT backend cannot run here (None when TensorRT imports and a CUDA device is present)."""
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed"
    from carla_seg_ros.runtime.tensorrt.engine_builder import import_tensorrt, require_cuda
    try:
        import_tensorrt()
        require_cuda()
    except BackendError as exc:
        return str(exc)
    return None


def tensorrt_usable() -> bool:
    """TensorRT importable AND a CUDA device present (what `auto` asks before trying TensorRT)."""
    return tensorrt_unusable_reason() is None


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, model_path, info=None, threads: int = 0, log_info=None, **options):
        """``options``: trt_builder.EngineOptions fields (precision, max_batch, cache_dir, workspace_mb...)."""
        super().__init__(model_path, info, threads)
        from carla_seg_ros.runtime.tensorrt.engine_builder import (EngineOptions, import_tensorrt,
                                                                   load_or_build_engine, require_cuda)
        self.options = EngineOptions.from_mapping(options)
        trt = import_tensorrt()
        torch = require_cuda()
        self.runtime, self.engine, self.cache_result = load_or_build_engine(
            self.model_path, self.options, self.info, log_info=log_info or log.info)
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise BackendError("TensorRT could not create an execution context (out of GPU memory?)")

        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if inputs != [INPUT_NAME] or sorted(outputs) != sorted(OUTPUT_NAMES):
            raise BackendError(f"engine I/O {inputs} -> {outputs} is not {INPUT_NAME} -> {list(OUTPUT_NAMES)}")
        for name in names:
            dtype = self.engine.get_tensor_dtype(name)
            if dtype != trt.DataType.UINT8:
                raise BackendError(f"engine tensor {name!r} is {dtype}, expected UINT8 (rebuild the engine)")

        _, _, max_shape = self.engine.get_tensor_profile_shape(INPUT_NAME, 0)
        self.max_batch = int(max_shape[0])
        h, max_w = int(max_shape[1]), int(max_shape[2])      # the profile's largest frame (max_width, keep_aspect)
        w = self.input_size[0]
        self.torch = torch
        self.stream = torch.cuda.Stream()
        # Flat buffers of the largest batch x frame: a call of shape (n, h, w) uses the first n*h*w(*3) bytes.
        in_bytes, out_bytes = self.max_batch * h * max_w * 3, self.max_batch * h * max_w
        self.device_in = torch.empty(in_bytes, dtype=torch.uint8, device="cuda")
        self.device_out = {n: torch.empty(out_bytes, dtype=torch.uint8, device="cuda") for n in OUTPUT_NAMES}
        self.host_in = torch.empty(in_bytes, dtype=torch.uint8).pin_memory()
        self.host_out = {n: torch.empty(out_bytes, dtype=torch.uint8).pin_memory() for n in OUTPUT_NAMES}
        self.host_in_np = self.host_in.numpy()
        self.host_out_np = {n: t.numpy() for n, t in self.host_out.items()}
        self.context.set_tensor_address(INPUT_NAME, self.device_in.data_ptr())
        for n in OUTPUT_NAMES:
            self.context.set_tensor_address(n, self.device_out[n].data_ptr())
        self._shape = None
        self._infer(np.zeros((1, h, w, 3), dtype=np.uint8))  # first launch allocates TensorRT's lazy resources

    @property
    def description(self) -> str:
        state = "built" if self.cache_result.built else "cached"
        return f"tensorrt {self.options.precision} ({state} engine {self.cache_result.engine_path.name})"

    def _infer(self, images: np.ndarray):
        n = len(images)
        if n > self.max_batch:  # larger batches than the profile: run it in engine-sized chunks
            parts = [self._infer(images[i:i + self.max_batch]) for i in range(0, n, self.max_batch)]
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        torch = self.torch
        shape = images.shape
        if shape != self._shape:
            if not self.context.set_input_shape(INPUT_NAME, shape):
                raise BackendError(f"TensorRT rejected input shape {shape} (outside the engine's profile?)")
            self._shape = shape
        n_in, n_out = images.size, images.size // 3
        self.host_in_np[:n_in] = images.reshape(-1)
        with torch.cuda.stream(self.stream):
            self.device_in[:n_in].copy_(self.host_in[:n_in], non_blocking=True)
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise BackendError("TensorRT execute_async_v3 failed (see the TensorRT log)")
            for name in OUTPUT_NAMES:
                self.host_out[name][:n_out].copy_(self.device_out[name][:n_out], non_blocking=True)
        self.stream.synchronize()
        # Copies: the pinned buffers are overwritten by the next frame while the caller may still hold these.
        mask_shape = shape[:3]
        return (self.host_out_np[OUTPUT_NAMES[0]][:n_out].reshape(mask_shape).copy(),
                self.host_out_np[OUTPUT_NAMES[1]][:n_out].reshape(mask_shape).copy())
