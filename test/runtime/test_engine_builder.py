"""`carla-seg build-engine` without TensorRT: help, the clear error, option checks, --list, keys and file names.

TensorRT is genuinely absent on the CI machine; tests of that absence skip (saying so) where it is installed.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from carla_seg_ros.runtime.tensorrt import engine_builder as trt_builder
from carla_seg_ros.runtime.backends import BackendError
from carla_seg_ros.runtime.tensorrt.engine_cache import EngineCache, EngineKey, PlatformFacts
from carla_seg_ros.runtime.model_info import read_onnx_info

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
needs_no_trt = pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed here: the absence path cannot be tested")
FACTS = PlatformFacts("10.3.0", "NVIDIA H100 80GB HBM3", "9.0")


def test_help_works_without_tensorrt():
    out = subprocess.run([sys.executable, "-m", "carla_seg_ros.cli", "build-engine", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for flag in ("--model", "--precision", "--calib-data", "--calib-split", "--calib-frames", "--workspace-mb",
                 "--max-batch", "--cache-dir", "--timing-cache", "--force", "--list"):
        assert flag in out.stdout
    assert "usage: carla-seg build-engine" in out.stdout


@needs_no_trt
def test_build_without_tensorrt_is_a_clear_error(model_path, tmp_path, capsys):
    rc = trt_builder.main(["--model", str(model_path), "--cache-dir", str(tmp_path / "engines")])
    err = capsys.readouterr().err
    assert rc == 1
    assert "TensorRT is not importable" in err and "install TensorRT 10" in err
    assert "Traceback" not in err
    assert not (tmp_path / "engines").exists(), "nothing is written when nothing can be built"


@needs_no_trt
def test_import_tensorrt_raises_backend_error():
    with pytest.raises(BackendError, match="TensorRT is not importable"):
        trt_builder.import_tensorrt()


def test_missing_model_is_reported_before_anything_else(tmp_path, capsys):
    rc = trt_builder.main(["--model", str(tmp_path / "nope.onnx"), "--cache-dir", str(tmp_path)])
    assert rc == 1 and "nope.onnx not found" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--min-batch", "4", "--max-batch", "2"], "batch profile"),
    (["--workspace-mb", "0"], "workspace"),
])
def test_bad_options_are_clear_errors(model_path, tmp_path, capsys, argv, message):
    assert trt_builder.main(["--model", str(model_path), "--cache-dir", str(tmp_path)] + argv) == 1
    assert message in capsys.readouterr().err


def test_unknown_precision_is_rejected_by_argparse(capsys):
    with pytest.raises(SystemExit) as exc:
        trt_builder.main(["--precision", "int4"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_engine_options_from_mapping():
    opts = trt_builder.EngineOptions.from_mapping({"precision": "int8", "max_batch": 4})
    assert opts.batch_profile == (1, 1, 4) and opts.precision == "int8"
    with pytest.raises(ValueError, match="unknown TensorRT engine options"):
        trt_builder.EngineOptions.from_mapping({"precison": "fp16"})


def test_list_shows_cached_engines_and_unreadable_sidecars(model_path, tmp_path, capsys):
    info = read_onnx_info(model_path)
    key = trt_builder.engine_key(model_path, info, trt_builder.EngineOptions(), FACTS)
    EngineCache(tmp_path).store(key, b"engine-bytes", 42.0)
    (tmp_path / "broken.json").write_text("{ nope")
    assert trt_builder.main(["--list", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert out[0].startswith("broken.json: unreadable sidecar")
    assert "TensorRT 10.3.0, NVIDIA H100 80GB HBM3 (sm 9.0), fp16" in out[1] and "in 42.0 s" in out[1]


def test_list_of_an_empty_cache(tmp_path, capsys):
    assert trt_builder.main(["--list", "--cache-dir", str(tmp_path / "none")]) == 0
    assert "no engines in" in capsys.readouterr().out


def test_engine_key_uses_model_shape_and_calibration(model_path, data_dir):
    info = read_onnx_info(model_path)
    fp16 = trt_builder.engine_key(model_path, info, trt_builder.EngineOptions(), FACTS)
    assert fp16.input_shape == (info.input_height, info.input_width, 3) and fp16.calibration == ""
    opts = trt_builder.EngineOptions(precision="int8", calib_data=str(data_dir), calib_frames=16)
    frames = trt_builder.calibration_frames(opts)
    assert len(frames) == 16 and all(p.parent.parent.name == "train" for p in frames)
    int8 = trt_builder.engine_key(model_path, info, opts, FACTS, frames)
    assert int8.calibration.startswith("16f-b8-pad-") and int8.slot() != fp16.slot()
    assert EngineKey.from_dict(json.loads(json.dumps(int8.to_dict()))) == int8


def test_timing_cache_is_per_tensorrt_version_and_gpu(tmp_path):
    opts = trt_builder.EngineOptions(cache_dir=str(tmp_path))
    a = trt_builder.timing_cache_path(opts, FACTS)
    assert a == tmp_path / "timing.trt10.3.0.nvidia-h100-80gb-hbm3.sm90.cache"
    assert trt_builder.timing_cache_path(opts, PlatformFacts("10.5.0", FACTS.gpu_name, "9.0")) != a
    explicit = trt_builder.EngineOptions(timing_cache=str(tmp_path / "mine.cache"))
    assert trt_builder.timing_cache_path(explicit, FACTS) == Path(tmp_path / "mine.cache")


def test_keep_aspect_model_gets_a_width_profile_in_its_key_and_engine(model_path, tmp_path):
    """The optimisation profile of a keep_aspect model: the model height, widths min_width..max_width (4:3 to 8:3,
    16:9 and 21:9 inside), opt at the 4:3 width or --opt-width; the key and the engine file name say so. The build
    itself runs against a stand-in for the TensorRT builder API that records the profile it is given."""
    info = read_onnx_info(model_path)
    if info.input_policy != "keep_aspect":
        pytest.skip("the committed model has a fixed shape")
    opts = trt_builder.EngineOptions()
    shapes = trt_builder.profile_shapes(info, opts)
    assert shapes == ((1, 288, 384, 3), (1, 288, 384, 3), (8, 288, 768, 3))
    wide = trt_builder.EngineOptions(opt_width=512)
    assert trt_builder.profile_shapes(info, wide)[1] == (1, 288, 512, 3)
    key = trt_builder.engine_key(model_path, info, opts, FACTS)
    assert key.width_profile == (384, 384, 768) and ".w384-384-768x288." in key.slot()
    assert trt_builder.engine_key(model_path, info, wide, FACTS).slot() != key.slot()
    assert EngineKey.from_dict(json.loads(json.dumps(key.to_dict()))) == key
    fixed = dataclasses.replace(info, input_policy="fixed", min_width=0, max_width=0)
    assert trt_builder.profile_shapes(fixed, opts) == ((1, 288, 384, 3), (1, 288, 384, 3), (8, 288, 384, 3))
    assert trt_builder.engine_key(model_path, fixed, opts, FACTS).width_profile == ()

    recorded = {}

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            recorded[name] = (lo, opt, hi)

    class Config:
        def set_memory_pool_limit(self, *a): pass
        def add_optimization_profile(self, p): recorded["profiles"] = recorded.get("profiles", 0) + 1
        def set_flag(self, flag): recorded.setdefault("flags", []).append(flag)
        def create_timing_cache(self, blob): return object()
        def set_timing_cache(self, cache, ignore): return True
        def get_timing_cache(self): return types.SimpleNamespace(serialize=lambda: b"timings")

    class Builder:
        def __init__(self, logger): pass
        def create_network(self, flags): return object()
        def create_builder_config(self): return Config()
        def create_optimization_profile(self): return Profile()
        def build_serialized_network(self, network, config): return b"engine"

    class Parser:
        def __init__(self, network, logger): pass
        def parse(self, data): return len(data) > 0

    trt = types.SimpleNamespace(__version__="10.3.0", Builder=Builder, OnnxParser=Parser,
                                MemoryPoolType=types.SimpleNamespace(WORKSPACE=0),
                                BuilderFlag=types.SimpleNamespace(FP16="FP16", INT8="INT8"))
    opts = trt_builder.EngineOptions(cache_dir=str(tmp_path))
    assert trt_builder.build_serialized_engine(trt, None, model_path, info, opts, FACTS) == b"engine"
    assert recorded["image"] == ((1, 288, 384, 3), (1, 288, 384, 3), (8, 288, 768, 3))
    assert recorded["profiles"] == 1 and recorded["flags"] == ["FP16"]
