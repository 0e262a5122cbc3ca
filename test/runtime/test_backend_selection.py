"""Backend selection and fallback: create_backend, `auto`, BackendManager and its background switch.

Real runtimes only: ONNX Runtime and OpenVINO on the CPU with the committed model. TensorRT and CUDA are genuinely
absent on the CI machine, so the absence paths are the real ones; those tests skip (saying so) where present.
"""
from __future__ import annotations

import importlib.util
import logging
import sys
import threading

import numpy as np
import pytest

from carla_seg_ros.runtime.backend_manager import BackendManager
from carla_seg_ros.runtime.backends import AUTO_CPU_ORDER, BackendError, create_backend, resolve_auto
from carla_seg_ros.datasets import find_pairs, read_rgb
from carla_seg_ros.runtime.preprocess import resize_image

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
try:
    import torch
    HAVE_CUDA = torch.cuda.is_available()
except ImportError:
    HAVE_CUDA = False
no_trt = pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed here: its absence cannot be tested")
no_cuda = pytest.mark.skipif(HAVE_CUDA, reason="a CUDA GPU is present: its absence cannot be tested")


@pytest.fixture(scope="module")
def frames(model_path):
    from carla_seg_ros.paths import default_data_dir
    from carla_seg_ros.runtime.model_info import read_onnx_info
    size = read_onnx_info(model_path).input_size
    data = default_data_dir()
    if data is None:
        return np.random.default_rng(0).integers(0, 256, (2, size[1], size[0], 3), dtype=np.uint8)
    return np.stack([resize_image(read_rgb(p.rgb), size) for p in find_pairs(data, "val")[:2]])


class Lines:
    def __init__(self):
        self.lines = []
        self.lock = threading.Lock()

    def __call__(self, line):
        with self.lock:
            self.lines.append(line)


# ------------------------------------------------------------------------------------------ create_backend
def test_importing_the_gpu_backends_does_not_import_tensorrt():
    import carla_seg_ros.runtime.backends.tensorrt_backend  # noqa: F401
    import carla_seg_ros.runtime.backends.torch_cuda_backend  # noqa: F401
    assert "tensorrt" not in sys.modules or HAVE_TRT


@no_trt
def test_tensorrt_is_reported_unusable_with_a_reason():
    from carla_seg_ros.runtime.backends.tensorrt_backend import tensorrt_unusable_reason, tensorrt_usable
    assert not tensorrt_usable()
    assert tensorrt_unusable_reason() == "TensorRT is not installed"
    assert resolve_auto() == list(AUTO_CPU_ORDER)


@no_trt
def test_auto_without_tensorrt_is_the_fastest_cpu_runtime(model_path, frames):
    backend = create_backend("auto", model_path, threads=1)
    assert backend.name == AUTO_CPU_ORDER[0]
    ids, conf = backend.infer(frames)
    assert ids.shape == conf.shape == frames.shape[:3] and ids.dtype == np.uint8


@no_trt
def test_requested_tensorrt_without_tensorrt_is_a_clear_error(model_path):
    with pytest.raises(BackendError, match="TensorRT is not importable.*install TensorRT 10"):
        create_backend("tensorrt", model_path)


@no_trt
def test_tensorrt_backend_constructed_directly_raises_backend_error(model_path):
    from carla_seg_ros.runtime.backends.tensorrt_backend import TensorRTBackend
    with pytest.raises(BackendError, match="TensorRT is not importable"):
        TensorRTBackend(model_path)


@no_trt
def test_requested_tensorrt_falls_back_with_a_logged_reason(model_path, caplog):
    with caplog.at_level(logging.WARNING, logger="carla_seg_ros.runtime.backends"):
        backend = create_backend("tensorrt", model_path, allow_fallback=True, threads=1)
    assert backend.name == AUTO_CPU_ORDER[0]
    assert any(f"using backend {AUTO_CPU_ORDER[0]} instead of tensorrt" in r.getMessage() for r in caplog.records)


@no_cuda
def test_requested_torch_cuda_without_gpu_is_a_clear_error(model_path):
    with pytest.raises(BackendError, match="torch_cuda needs an NVIDIA GPU"):
        create_backend("torch_cuda", model_path)


@no_cuda
def test_torch_cuda_falls_back_when_allowed(model_path):
    assert create_backend("torch_cuda", model_path, allow_fallback=True, threads=1).name == AUTO_CPU_ORDER[0]


# ------------------------------------------------------------------------------------------ BackendManager
@no_trt
def test_manager_auto_starts_on_the_cpu_runtime(model_path, frames):
    log = Lines()
    manager = BackendManager("auto", model_path, threads=1, log_info=log)
    fastest = AUTO_CPU_ORDER[0]
    assert manager.backend.name == fastest and manager.wait_ready(0)
    assert manager.status.as_dict() == {"requested": "auto", "active": fastest, "state": "ready",
                                        "detail": fastest}
    assert log.lines == [f"backend {fastest} loaded for {model_path}"]
    assert manager.backend.infer(frames[:1])[0].shape == frames[:1].shape[:3]
    manager.close()


@no_trt
@pytest.mark.parametrize("background", [True, False])
def test_manager_tensorrt_without_fallback_is_an_error(model_path, background):
    with pytest.raises(BackendError, match="TensorRT is not importable"):
        BackendManager("tensorrt", model_path, background_build=background, threads=1)


@no_trt
@pytest.mark.parametrize("options", [None, {"precision": "int8", "max_batch": 4}])
def test_manager_tensorrt_with_fallback_runs_on_the_cpu(model_path, options):
    log = Lines()
    manager = BackendManager("tensorrt", model_path, allow_fallback=True, threads=1, log_info=log,
                             engine_options=options)
    assert manager.backend.name == manager.status.active == AUTO_CPU_ORDER[0]
    if options:  # engine options never reach the CPU runtimes; the manager logs the fallback itself
        assert any("backend tensorrt unavailable" in line for line in log.lines)


def test_manager_named_cpu_backend_and_bad_requests(model_path, tmp_path):
    assert BackendManager("openvino", model_path, threads=1).backend.name == "openvino"
    with pytest.raises(ValueError, match="unknown backend"):
        BackendManager("tensor-rt", model_path)
    with pytest.raises(FileNotFoundError):
        BackendManager("auto", tmp_path / "missing.onnx")


def test_background_switch_is_atomic_and_frames_keep_flowing(model_path, frames):
    log = Lines()
    manager = BackendManager("onnxruntime", model_path, threads=1, log_info=log)
    release = threading.Event()
    started = threading.Event()

    def build_openvino():  # a real second runtime stands in for the slow engine build
        started.set()
        release.wait(60)
        return create_backend("openvino", model_path, threads=1)

    manager.switch_in_background(build_openvino, "engine missing")
    assert started.wait(30)
    assert manager.status.state == "building" and "engine missing" in manager.status.detail
    with pytest.raises(RuntimeError, match="already running"):
        manager.switch_in_background(build_openvino)
    served = []
    for _ in range(3):  # the node keeps publishing during the build
        backend = manager.backend
        served.append((backend.name, backend.infer(frames[:1])[0]))
    release.set()
    assert manager.wait_ready(120)
    assert manager.backend.name == "openvino"
    assert manager.status.state == "ready" and manager.status.active == "openvino"
    assert [s[:2] for s in manager.status.switches] == [("onnxruntime", "openvino")]
    assert {name for name, _ in served} == {"onnxruntime"}
    after = manager.backend.infer(frames[:1])[0]
    assert (after == served[0][1]).mean() > 0.99, "both runtimes compute the same model"
    assert any(line.startswith("switched backend onnxruntime -> openvino") for line in log.lines)


def test_failed_background_build_keeps_the_cpu_backend(model_path, tmp_path):
    log, warnings = Lines(), Lines()
    manager = BackendManager("onnxruntime", model_path, threads=1, log_info=log, log_warning=warnings)
    before = manager.backend
    manager.switch_in_background(lambda: create_backend("tensorrt", tmp_path / "missing.onnx"), "test")
    assert manager.wait_ready(60)
    assert manager.backend is before
    assert manager.status.state == "build_failed" and "missing.onnx not found" in manager.status.detail
    assert len(warnings.lines) == 1 and "staying on onnxruntime" in warnings.lines[0]


def test_close_discards_a_build_that_finishes_later(model_path):
    manager = BackendManager("onnxruntime", model_path, threads=1, log_info=lambda line: None)
    release = threading.Event()

    def slow():
        release.wait(60)
        return create_backend("openvino", model_path, threads=1)

    manager.switch_in_background(slow)
    manager.close()
    release.set()
    assert manager.wait_ready(120)
    assert manager.backend.name == "onnxruntime" and manager.status.switches == []
