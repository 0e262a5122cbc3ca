"""GPU path: torch_cuda (fp16, CUDA graph) and TensorRT engines against ONNX Runtime on real frames.

Runs only where CUDA (torch_cuda tests) or TensorRT + CUDA (TensorRT tests) is present; elsewhere every test is
skipped with the reason (`pytest -ra` prints it). No GPU was lent to the session that wrote these tests, so they
have not been executed yet: see docs/concepts/gpu_tensorrt.md.
"""
from __future__ import annotations

import numpy as np
import pytest

from carla_seg_ros.runtime.backends import create_backend
from carla_seg_ros.datasets import find_pairs, read_rgb
from carla_seg_ros.runtime.model_info import read_onnx_info
from carla_seg_ros.runtime.preprocess import resize_image


def _cuda_reason():
    try:
        import torch
    except ImportError as exc:
        return f"PyTorch is not installed ({exc})"
    if not torch.cuda.is_available():
        return f"no CUDA device (PyTorch {torch.__version__}, CUDA build {torch.version.cuda or 'none'})"
    return None


def _trt_reason():
    from carla_seg_ros.runtime.backends.tensorrt_backend import tensorrt_unusable_reason
    return tensorrt_unusable_reason()


CUDA_REASON = _cuda_reason()
needs_cuda = pytest.mark.skipif(CUDA_REASON is not None, reason=f"needs a CUDA GPU: {CUDA_REASON}")
needs_trt = pytest.mark.skipif(CUDA_REASON is not None or _trt_reason() is not None,
                               reason=f"needs TensorRT and a CUDA GPU: {CUDA_REASON or _trt_reason()}")

# fp16 against the fp32 reference: near-tie pixels may flip class, confidence may move by a rounding step or two.
ID_AGREEMENT_MIN = 0.995
CONF_TOLERANCE = 2
CONF_WITHIN_MIN = 0.999


@pytest.fixture(scope="module")
def frames(model_path, data_dir):
    size = read_onnx_info(model_path).input_size
    return np.stack([resize_image(read_rgb(p.rgb), size) for p in find_pairs(data_dir, "val")[:9]])


@pytest.fixture(scope="module")
def reference(model_path, frames):
    return create_backend("onnxruntime", model_path).infer(frames)


def assert_parity(ids, conf, ref_ids, ref_conf, what):
    agree = float((ids == ref_ids).mean())
    within = float((np.abs(conf.astype(int) - ref_conf.astype(int)) <= CONF_TOLERANCE).mean())
    print(f"{what}: class-id agreement {agree * 100:.3f} %, confidence within +-{CONF_TOLERANCE}: "
          f"{within * 100:.3f} %")
    assert ids.dtype == conf.dtype == np.uint8 and ids.shape == ref_ids.shape
    assert agree >= ID_AGREEMENT_MIN, f"{what}: class ids agree on {agree:.4%} < {ID_AGREEMENT_MIN:.1%}"
    assert within >= CONF_WITHIN_MIN, f"{what}: confidence within tolerance on {within:.4%}"


# -------------------------------------------------------------------------------------------- torch_cuda
@needs_cuda
def test_torch_cuda_matches_onnxruntime(model_path, frames, reference):
    backend = create_backend("torch_cuda", model_path)
    ids, conf = map(np.concatenate, zip(*(backend.infer(frames[i:i + 1]) for i in range(len(frames)))))
    assert_parity(ids, conf, *reference, "torch_cuda batch 1 (CUDA graph)")
    assert_parity(*backend.infer(frames), *reference, "torch_cuda batch 9 (eager)")


@needs_cuda
def test_cuda_graph_replays_the_current_input(model_path, frames):
    graph = create_backend("torch_cuda", model_path)
    eager = create_backend("torch_cuda", model_path, cuda_graph=False)
    assert graph.graph is not None and eager.graph is None
    a_first = graph.infer(frames[:1])
    b = graph.infer(frames[1:2])
    a_again = graph.infer(frames[:1])
    np.testing.assert_array_equal(a_first[0], a_again[0])  # no state leaks from one replay into the next
    assert (a_first[0] != b[0]).any(), "different frames must give different masks (static input updated)"
    assert (a_first[0] == eager.infer(frames[:1])[0]).mean() >= 0.999
    held = a_first[0].copy()
    graph.infer(frames[2:3])
    np.testing.assert_array_equal(a_first[0], held)  # returned arrays are not the reused pinned buffers


# ---------------------------------------------------------------------------------------------- TensorRT
@needs_trt
def test_tensorrt_engine_builds_caches_and_matches_onnxruntime(model_path, frames, reference, tmp_path):
    lines = []
    options = dict(cache_dir=str(tmp_path), max_batch=8)
    first = create_backend("tensorrt", model_path, log_info=lines.append, **options)
    assert first.cache_result.built and first.cache_result.reason == "no cached engine"
    assert sum(line.startswith("building TensorRT engine") for line in lines) == 1
    ids, conf = map(np.concatenate, zip(*(first.infer(frames[i:i + 1]) for i in range(len(frames)))))
    assert_parity(ids, conf, *reference, "tensorrt fp16 batch 1")
    assert_parity(*first.infer(frames[:8]), reference[0][:8], reference[1][:8], "tensorrt fp16 batch 8")
    assert_parity(*first.infer(frames), *reference, "tensorrt fp16 batch 9 (two launches)")

    second = create_backend("tensorrt", model_path, log_info=lines.append, **options)
    assert not second.cache_result.built, "the second start must load the cached engine"

    engine = first.cache_result.engine_path
    engine.write_bytes(engine.read_bytes()[:-1000])
    third = create_backend("tensorrt", model_path, log_info=lines.append, **options)
    assert third.cache_result.built and "size" in third.cache_result.reason
    np.testing.assert_array_equal(third.infer(frames[:1])[0].shape, frames[:1].shape[:3])


@needs_trt
def test_manager_switches_to_tensorrt_after_background_build(model_path, frames, tmp_path):
    from carla_seg_ros.runtime.backend_manager import BackendManager
    lines = []
    manager = BackendManager("auto", model_path, log_info=lines.append,
                             engine_options={"cache_dir": str(tmp_path)})
    assert manager.backend.name == "onnxruntime" and manager.status.state == "building"
    manager.backend.infer(frames[:1])
    assert manager.wait_ready(900), "engine build did not finish within 15 minutes"
    assert manager.backend.name == "tensorrt", manager.status
    assert any(line.startswith("switched backend onnxruntime -> tensorrt") for line in lines)
    again = BackendManager("auto", model_path, log_info=lines.append, engine_options={"cache_dir": str(tmp_path)})
    assert again.backend.name == "tensorrt" and again.status.state == "ready", "cached engine: no CPU detour"
