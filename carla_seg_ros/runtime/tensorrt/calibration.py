"""INT8 calibration data for TensorRT: training frames through the node's own preprocessing, in fixed batches.

The entropy calibrator sees exactly what the engine will see at run time: uint8 RGB NHWC frames resized to the
model input with ``preprocess.resize_image`` (normalisation is inside the graph). Everything except the thin
TensorRT subclass is plain NumPy, so batching, ordering and the cache file are tested without TensorRT:

* ``select_frames``: a deterministic, evenly spaced subset of the sorted frame list (the dataset is mostly one
  continuous drive, so the first N frames would be N near-duplicates);
* ``CalibrationBatches``: fixed-size batches (TensorRT calibrates with the calibration profile's exact shape); the
  last partial batch is padded by wrapping around to the first frames (``last="pad"``, every frame is seen at least
  once) or dropped (``last="drop"``);
* ``CalibrationCache``: TensorRT's calibration table on disk, read back on the next build so calibration runs once.

TensorRT 10.1 deprecated implicit INT8 calibration in favour of explicit quantization (Q/DQ nodes); it still works
in TensorRT 10 and needs no extra tooling, so it is what ``--precision int8`` uses (see docs/concepts/gpu_tensorrt.md).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from carla_seg_ros.datasets import read_rgb
from carla_seg_ros.runtime.preprocess import resize_image

LAST_BATCH_POLICIES = ("pad", "drop")


def select_frames(paths: Sequence[Path], count: int | None) -> list[Path]:
    """``count`` paths spread evenly over the name-sorted list (all of them when count is None or too big)."""
    ordered = sorted(paths, key=lambda p: (Path(p).name, str(p)))
    if count is None or count >= len(ordered):
        return ordered
    if count <= 0:
        raise ValueError(f"calibration frame count must be positive, got {count}")
    idx = np.linspace(0, len(ordered) - 1, count).round().astype(int)
    return [ordered[i] for i in idx]


def calibration_id(paths: Sequence[Path], batch_size: int, last: str) -> str:
    """Identity of a calibration set (names, batch, policy): part of the engine key and the cache file name."""
    digest = hashlib.sha256(f"{batch_size}|{last}|".encode())
    for p in paths:
        digest.update(Path(p).name.encode() + b"\n")
    return f"{len(paths)}f-b{batch_size}-{last}-{digest.hexdigest()[:16]}"


class CalibrationBatches:
    """Iterable of uint8 (batch, H, W, 3) arrays from image files, in a fixed order, loaded lazily."""

    def __init__(self, paths: Sequence[Path], input_size: tuple[int, int], batch_size: int = 8, last: str = "pad",
                 reader: Callable[[Path], np.ndarray] = read_rgb):
        if batch_size < 1:
            raise ValueError(f"calibration batch size must be >= 1, got {batch_size}")
        if last not in LAST_BATCH_POLICIES:
            raise ValueError(f"last-batch policy must be one of {LAST_BATCH_POLICIES}, got {last!r}")
        self.paths = list(paths)
        if not self.paths:
            raise ValueError("no calibration frames")
        if last == "drop" and len(self.paths) < batch_size:
            raise ValueError(f"{len(self.paths)} calibration frames cannot fill one batch of {batch_size}")
        self.input_size = tuple(input_size)
        self.batch_size = batch_size
        self.last = last
        self.reader = reader

    @property
    def shape(self) -> tuple[int, int, int, int]:
        w, h = self.input_size
        return self.batch_size, h, w, 3

    def batch_indices(self) -> list[list[int]]:
        n, b = len(self.paths), self.batch_size
        full, rest = divmod(n, b)
        batches = [list(range(i * b, (i + 1) * b)) for i in range(full)]
        if rest and self.last == "pad":
            tail = list(range(full * b, n))
            batches.append(tail + [i % n for i in range(b - rest)])
        return batches

    def __len__(self) -> int:
        return len(self.batch_indices())

    def load(self, path: Path) -> np.ndarray:
        rgb = self.reader(path)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"calibration frame {path} is not uint8 RGB (got {rgb.dtype} {rgb.shape})")
        return resize_image(rgb, self.input_size)

    def __iter__(self):
        out = np.empty(self.shape, dtype=np.uint8)
        for indices in self.batch_indices():
            for slot, i in enumerate(indices):
                out[slot] = self.load(self.paths[i])
            yield out.copy()


class CalibrationCache:
    """TensorRT's calibration table file; unreadable or empty files count as absent (calibration reruns)."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None

    def read(self) -> bytes | None:
        if self.path is None:
            return None
        try:
            data = self.path.read_bytes()
        except OSError:
            return None
        return data or None

    def write(self, data: bytes) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(bytes(data))
        os.replace(tmp, self.path)


class CalibrationFeeder:
    """The calibrator's logic without TensorRT: next batch (or None at the end) and the cache file."""

    def __init__(self, batches: CalibrationBatches, cache: CalibrationCache):
        self.batches = batches
        self.cache = cache
        self._iter = iter(batches)
        self.served = 0

    @property
    def batch_size(self) -> int:
        return self.batches.batch_size

    def next_batch(self) -> np.ndarray | None:
        batch = next(self._iter, None)
        if batch is not None:
            self.served += 1
        return batch


def make_entropy_calibrator(trt, feeder: CalibrationFeeder):
    """A ``trt.IInt8EntropyCalibrator2`` serving ``feeder``'s batches from one CUDA buffer (PyTorch memory)."""
    import torch

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)  # pybind11 needs the explicit base __init__
            self.feeder = feeder
            self.device_batch = torch.empty(feeder.batches.shape, dtype=torch.uint8, device="cuda")

        def get_batch_size(self):
            return self.feeder.batch_size

        def get_batch(self, names):
            batch = self.feeder.next_batch()
            if batch is None:
                return None
            self.device_batch.copy_(torch.from_numpy(batch))
            torch.cuda.synchronize()  # TensorRT reads the pointer on its own stream
            return [int(self.device_batch.data_ptr())] * len(names)

        def read_calibration_cache(self):
            return self.feeder.cache.read()

        def write_calibration_cache(self, cache):
            self.feeder.cache.write(bytes(cache))

    return EntropyCalibrator()
