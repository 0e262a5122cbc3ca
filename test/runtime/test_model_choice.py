"""Model per backend: the CPU runtimes run the int8 file when it passed its accuracy check, the rest keep fp32."""
from __future__ import annotations

import json
import shutil

import onnx
import pytest

from carla_seg_ros.learning.quantize import record_check
from carla_seg_ros.paths import models_dir
from carla_seg_ros.runtime.model_choice import INT8_MODEL_NAME, QUANT_KEY, choose_model, sha256

FP32 = "carla_unet.onnx"


@pytest.fixture()
def models(tmp_path):
    src = models_dir()
    shutil.copy(src / FP32, tmp_path / FP32)
    # The committed model has no int8 file (it fails quantize's check); the choice reads only the file's metadata, so
    # a copy of the fp32 graph stands in for one.
    shutil.copy(src / FP32, tmp_path / INT8_MODEL_NAME)
    record_check(tmp_path / INT8_MODEL_NAME, {"source_sha256": sha256(tmp_path / FP32), "check_split": "val",
                                              "fp32_miou": 0.500, "int8_miou": 0.497})
    return tmp_path


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_cpu_runtimes_pick_the_checked_int8_file(models, backend):
    choice = choose_model(backend, models)
    assert choice.path == models / INT8_MODEL_NAME and choice.is_int8, choice.reason
    assert "val check recorded" in choice.reason


@pytest.mark.parametrize("backend", ["tensorrt", "torch", "torch_cuda"])
def test_tensorrt_and_torch_keep_fp32(models, backend):
    choice = choose_model(backend, models)
    assert choice.path == models / FP32 and not choice.is_int8


def test_missing_int8_falls_back_to_fp32(models):
    (models / INT8_MODEL_NAME).unlink()
    choice = choose_model("openvino", models)
    assert choice.path == models / FP32 and "no carla_unet_int8.onnx" in choice.reason


def test_int8_over_the_drop_limit_or_from_another_fp32_is_not_used(models):
    int8 = models / INT8_MODEL_NAME
    record_check(int8, {"source_sha256": sha256(models / FP32), "fp32_miou": 0.50, "int8_miou": 0.49})
    choice = choose_model("onnxruntime", models)
    assert choice.path == models / FP32 and "exceeds" in choice.reason
    record_check(int8, {"source_sha256": "0" * 64, "fp32_miou": 0.50, "int8_miou": 0.50})
    choice = choose_model("onnxruntime", models)
    assert choice.path == models / FP32 and "another" in choice.reason


def test_int8_without_record_is_used_only_with_the_fp32_metadata(models):
    int8 = models / INT8_MODEL_NAME
    model = onnx.load(str(int8))
    kept = [p for p in model.metadata_props if p.key != QUANT_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, str(int8))
    choice = choose_model("openvino", models)
    assert choice.is_int8 and "unverified" in choice.reason
    for p in model.metadata_props:
        if p.key == "carla_seg":
            meta = json.loads(p.value)
            meta["training"] = {"epochs": "1"}
            p.value = json.dumps(meta)
    onnx.save(model, str(int8))
    assert not choose_model("openvino", models).is_int8


def test_corrupt_int8_falls_back_to_fp32(models):
    (models / INT8_MODEL_NAME).write_bytes(b"not onnx")
    choice = choose_model("onnxruntime", models)
    assert choice.path == models / FP32 and "not a readable ONNX model" in choice.reason
