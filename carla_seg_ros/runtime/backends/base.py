"""What every backend shares: the Backend interface, BackendError and the CUDA check.

A module of its own so that the backends and the TensorRT engine builder can import it without importing the
backend registry (``runtime.backends``), which imports them lazily in turn.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from carla_seg_ros.runtime.input_size import accepts, input_size_for
from carla_seg_ros.runtime.model_info import ModelInfo, read_onnx_info


class BackendError(RuntimeError):
    """A backend cannot be loaded (runtime missing, no GPU, unreadable model...)."""


class Backend:
    """Base class: subclasses set ``name`` and implement ``_infer``."""

    name = "base"

    def __init__(self, model_path: str | Path, info: ModelInfo | None = None, threads: int = 0):
        self.model_path = Path(model_path)
        self.info = info or read_onnx_info(self.model_path)
        self.threads = threads

    @property
    def input_size(self) -> tuple[int, int]:
        """The model's own (width, height): what a 4:3 frame runs at, and every frame of a fixed-shape model."""
        return self.info.input_size

    def input_size_for(self, frame_wh: tuple[int, int]) -> tuple[int, int]:
        """(width, height) a frame of ``frame_wh`` runs at: the model's policy (runtime/input_size.py)."""
        return input_size_for(frame_wh, self.info)

    @property
    def description(self) -> str:
        return self.name

    def execution_info(self) -> dict:
        """What the runtime actually runs (precision, kernel ISA), for benchmarks and diagnostics; {} if unknown."""
        return {}

    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3 \
                or not accepts((images.shape[2], images.shape[1]), self.info):
            w, h = self.input_size
            widths = f"{w}" if self.info.input_policy != "keep_aspect" else \
                f"W ({self.info.min_width}..{self.info.max_width}, multiple of {self.info.width_multiple})"
            raise ValueError(f"{self.name}: expected uint8 (N, {h}, {widths}, 3), got {images.dtype} {images.shape}")
        return self._infer(np.ascontiguousarray(images))

    def _infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


def require_cuda(purpose: str):
    """PyTorch with a CUDA device (both GPU backends use its memory, streams and kernels), else BackendError."""
    try:
        import torch
    except ImportError as exc:
        raise BackendError(f"{purpose} needs PyTorch with CUDA: {exc}") from exc
    if not torch.cuda.is_available():
        raise BackendError(f"{purpose} needs an NVIDIA GPU: no CUDA device (PyTorch {torch.__version__}, "
                           f"CUDA build {torch.version.cuda or 'none'})")
    return torch
