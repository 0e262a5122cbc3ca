"""Engine cache: keying, every invalidation rule, sidecar parsing, rebuild-instead-of-crash (no TensorRT needed).

The "engine" bytes here are arbitrary payloads and the loader is a plain function that accepts or rejects them,
because the cache never looks inside an engine; TensorRT facts are injected data (PlatformFacts).
"""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from carla_seg_ros.runtime.tensorrt.engine_cache import (BUILDER_VERSION, CACHE_ENV, SIDECAR_FORMAT, EngineCache,
                                                         EngineKey, PlatformFacts, default_cache_dir, sha256_file)

H100 = PlatformFacts("10.3.0", "NVIDIA H100 80GB HBM3", "9.0")
PAYLOAD = b"serialized-engine-" + bytes(range(256)) * 4


@pytest.fixture
def onnx_file(tmp_path):
    path = tmp_path / "carla_unet.onnx"
    path.write_bytes(b"onnx model bytes v1")
    return path


def make_key(onnx_file, facts=H100, precision="fp16", shape=(288, 384, 3), profile=(1, 1, 8), calibration=""):
    return EngineKey.create(onnx_file, facts, precision, shape, profile, calibration=calibration)


class Recorder:
    """Collects log lines and build calls; the loader accepts only the bytes a build produced."""

    def __init__(self, payload=PAYLOAD):
        self.lines, self.builds, self.payload = [], 0, payload

    def log(self, line):
        self.lines.append(line)

    def build(self):
        self.builds += 1
        return self.payload

    @staticmethod
    def load(data):
        if not data.startswith(b"serialized-engine-"):
            raise ValueError("magic tag does not match")
        return ("engine", len(data))


def run(cache, key, rec, **kw):
    return cache.load_or_build(key, rec.build, rec.load, log_info=rec.log, **kw)


# ---------------------------------------------------------------------------------------------------- keying
def test_key_holds_every_fact(onnx_file):
    key = make_key(onnx_file)
    assert key.onnx_sha256 == sha256_file(onnx_file)
    assert (key.tensorrt_version, key.gpu_name, key.compute_capability) == ("10.3.0", "NVIDIA H100 80GB HBM3", "9.0")
    assert key.input_shape == (288, 384, 3) and key.batch_profile == (1, 1, 8)
    assert key.builder_version == BUILDER_VERSION and key.model_stem == "carla_unet"


def test_key_round_trips_through_json(onnx_file):
    key = make_key(onnx_file, precision="int8", calibration="256f-b8-pad-abc")
    again = EngineKey.from_dict(json.loads(json.dumps(key.to_dict())))
    assert again == key and again.differences(key) == []


def test_slot_names_model_precision_shape_profile_and_gpu(onnx_file):
    slot = make_key(onnx_file).slot()
    assert slot == "carla_unet.fp16.384x288.b1-1-8.nvidia-h100-80gb-hbm3.sm90"
    # What a user asks for changes the file; versions and model hashes do not (they are checked instead).
    assert make_key(onnx_file, precision="int8", calibration="x").slot() != slot
    assert make_key(onnx_file, profile=(1, 2, 16)).slot() != slot
    assert make_key(onnx_file, facts=PlatformFacts("10.3.0", "NVIDIA GeForce RTX 4090", "8.9")).slot() != slot
    assert make_key(onnx_file, facts=replace(H100, tensorrt_version="10.5.0")).slot() == slot


def test_differences_name_each_changed_field(onnx_file):
    old = make_key(onnx_file)
    new = make_key(onnx_file, facts=replace(H100, tensorrt_version="10.5.0"), shape=(256, 320, 3))
    diffs = old.differences(new)
    assert diffs == ["tensorrt_version '10.3.0' -> '10.5.0'", "input_shape 288x384x3 -> 256x320x3"]


@pytest.mark.parametrize("bad", [dict(precision="int4"), dict(profile=(2, 1, 8)), dict(profile=(0, 1, 1))])
def test_key_rejects_nonsense(onnx_file, bad):
    with pytest.raises(ValueError):
        make_key(onnx_file, **bad)


def test_default_cache_dir_honours_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "engines"))
    assert default_cache_dir() == tmp_path / "engines"
    monkeypatch.delenv(CACHE_ENV)
    assert default_cache_dir().parts[-3:] == (".cache", "carla_seg_ros", "engines")
    assert EngineCache(None).dir == default_cache_dir()


# ---------------------------------------------------------------------------------------------- build & hit
def test_first_use_builds_stores_sidecar_then_hits(tmp_path, onnx_file):
    cache, key, rec = EngineCache(tmp_path / "c"), make_key(onnx_file), Recorder()
    first = run(cache, key, rec, extra={"model_info": {"input_width": 384}})
    assert first.built and first.reason == "no cached engine" and rec.builds == 1
    assert first.value == ("engine", len(PAYLOAD)) and first.build_seconds is not None
    assert len(rec.lines) == 2 and rec.lines[0].endswith(": no cached engine") and "built" in rec.lines[1]
    sidecar = json.loads(cache.sidecar_path(first.engine_path).read_text())
    assert sidecar["format"] == SIDECAR_FORMAT and sidecar["engine_size"] == len(PAYLOAD)
    assert sidecar["key"] == key.to_dict() and sidecar["build_seconds"] >= 0
    assert sidecar["model_info"] == {"input_width": 384}

    second = run(cache, key, rec)
    assert not second.built and second.reason is None and rec.builds == 1
    assert len(rec.lines) == 2, "a cache hit logs nothing about building"


def test_force_rebuilds_a_valid_engine(tmp_path, onnx_file):
    cache, key, rec = EngineCache(tmp_path), make_key(onnx_file), Recorder()
    run(cache, key, rec)
    result = run(cache, key, rec, force=True)
    assert result.built and result.reason == "rebuild forced" and rec.builds == 2


# ------------------------------------------------------------------------------------------ invalidation
def _stale(tmp_path, onnx_file, mutate):
    """Build once, apply ``mutate(cache, key, engine_path)``, and return (lookup reason, rebuild result, rec)."""
    cache, key, rec = EngineCache(tmp_path / "cache"), make_key(onnx_file), Recorder()
    engine = run(cache, key, rec).engine_path
    wanted = mutate(cache, key, engine)
    wanted = wanted if isinstance(wanted, EngineKey) else key
    reason = cache.lookup(wanted).reason
    rec.lines.clear()
    result = run(cache, wanted, rec)
    return reason, result, rec


def assert_rebuilt_once(result, rec, reason):
    assert result.built and result.reason == reason and rec.builds == 2
    why = [line for line in rec.lines if line.startswith("building")]
    assert len(why) == 1 and why[0].endswith(reason), rec.lines
    assert result.value == ("engine", len(PAYLOAD))


def test_tensorrt_upgrade_rebuilds_in_place(tmp_path, onnx_file):
    new_key = replace(make_key(onnx_file), tensorrt_version="10.5.0")
    reason, result, rec = _stale(tmp_path, onnx_file, lambda c, k, e: new_key)
    assert reason == "engine key changed: tensorrt_version '10.3.0' -> '10.5.0'"
    assert_rebuilt_once(result, rec, reason)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [result.engine_path.name,
                                                                       result.engine_path.with_suffix(".json").name]


def test_new_onnx_model_rebuilds(tmp_path, onnx_file):
    def retrain(cache, key, engine):
        onnx_file.write_bytes(b"onnx model bytes v2")
        return make_key(onnx_file)
    reason, result, rec = _stale(tmp_path, onnx_file, retrain)
    assert reason.startswith("engine key changed: onnx_sha256 ")
    assert_rebuilt_once(result, rec, reason)


def test_new_builder_version_rebuilds(tmp_path, onnx_file):
    new_key = replace(make_key(onnx_file), builder_version=BUILDER_VERSION + 1)
    reason, result, rec = _stale(tmp_path, onnx_file, lambda c, k, e: new_key)
    assert reason == f"engine key changed: builder_version {BUILDER_VERSION!r} -> {BUILDER_VERSION + 1!r}"
    assert_rebuilt_once(result, rec, reason)


def test_truncated_engine_rebuilds(tmp_path, onnx_file):
    reason, result, rec = _stale(tmp_path, onnx_file, lambda c, k, e: e.write_bytes(e.read_bytes()[:100]))
    assert reason.startswith(f"engine file size 100 != {len(PAYLOAD)}")
    assert_rebuilt_once(result, rec, reason)


def test_same_size_corruption_is_caught_by_sha(tmp_path, onnx_file):
    def flip(cache, key, engine):
        data = bytearray(engine.read_bytes())
        data[-1] ^= 0xFF
        engine.write_bytes(bytes(data))
    reason, result, rec = _stale(tmp_path, onnx_file, flip)
    assert reason == "engine file sha256 differs from the sidecar (corrupt or replaced)"
    assert_rebuilt_once(result, rec, reason)


def test_missing_engine_file_rebuilds(tmp_path, onnx_file):
    reason, result, rec = _stale(tmp_path, onnx_file, lambda c, k, e: e.unlink())
    assert reason == f"engine file {result.engine_path.name} is missing"
    assert_rebuilt_once(result, rec, reason)


def test_missing_sidecar_rebuilds(tmp_path, onnx_file):
    reason, result, rec = _stale(tmp_path, onnx_file, lambda c, k, e: c.sidecar_path(e).unlink())
    assert reason == f"sidecar {result.engine_path.with_suffix('.json').name} is missing"
    assert_rebuilt_once(result, rec, reason)


def test_deserialize_failure_rebuilds(tmp_path, onnx_file):
    """An engine whose bytes and sidecar agree but which TensorRT rejects (e.g. written by another build)."""
    def foreign(cache, key, engine):
        cache.store(key, b"not-an-engine-at-all", 1.0)
    reason, result, rec = _stale(tmp_path, onnx_file, foreign)
    assert reason is None, "the sidecar vouches for the bytes; only deserialisation can tell"
    assert result.built and result.reason == "cached engine cannot be deserialized (magic tag does not match)"
    assert len([line for line in rec.lines if line.startswith("building")]) == 1


# ---------------------------------------------------------------------------------------- sidecar parsing
@pytest.mark.parametrize("content, expected", [
    (b"{ not json", "is unreadable"),
    (b"\xff\xfe\x00garbage", "is unreadable"),
    (b"", "is unreadable"),
    (b"[1, 2, 3]", f"is not a {SIDECAR_FORMAT} file"),
    (b'{"name": "some other tool"}', f"is not a {SIDECAR_FORMAT} file"),
    (json.dumps({"format": SIDECAR_FORMAT}).encode(), "has an invalid key"),
    (json.dumps({"format": SIDECAR_FORMAT, "key": {"precision": "fp16"}}).encode(), "has an invalid key"),
    (json.dumps({"format": SIDECAR_FORMAT, "key": "fp16"}).encode(), "has an invalid key"),
])
def test_bad_sidecars_rebuild_with_a_reason(tmp_path, onnx_file, content, expected):
    reason, result, rec = _stale(tmp_path, onnx_file, lambda c, k, e: c.sidecar_path(e).write_bytes(content))
    assert expected in reason
    assert_rebuilt_once(result, rec, reason)
    # The rebuilt sidecar is valid again.
    assert EngineCache(tmp_path / "cache").lookup(make_key(onnx_file)).ok


def test_sidecar_with_wrong_precision_value_is_invalid_not_a_crash(tmp_path, onnx_file):
    def tamper(cache, key, engine):
        side = json.loads(cache.sidecar_path(engine).read_text())
        side["key"]["precision"] = "int3"
        cache.sidecar_path(engine).write_text(json.dumps(side))
    reason, result, rec = _stale(tmp_path, onnx_file, tamper)
    assert "has an invalid key" in reason and "int3" in reason
    assert_rebuilt_once(result, rec, reason)


# --------------------------------------------------------------------------------------------- failures
def test_build_failure_propagates_and_leaves_no_half_files(tmp_path, onnx_file):
    cache, key = EngineCache(tmp_path / "c"), make_key(onnx_file)

    def broken_build():
        raise RuntimeError("builder ran out of memory")
    with pytest.raises(RuntimeError, match="out of memory"):
        cache.load_or_build(key, broken_build, Recorder.load, log_info=lambda line: None)
    assert not cache.engine_path(key).exists() and cache.lookup(key).reason == "no cached engine"


def test_engine_that_never_deserializes_is_an_error_not_a_loop(tmp_path, onnx_file):
    cache, key, rec = EngineCache(tmp_path), make_key(onnx_file), Recorder(payload=b"garbage")
    with pytest.raises(ValueError, match="magic tag"):
        run(cache, key, rec)
    assert rec.builds == 1


def test_store_leaves_no_temporary_files(tmp_path, onnx_file):
    cache, key = EngineCache(tmp_path / "c"), make_key(onnx_file)
    cache.store(key, PAYLOAD, 2.5)
    cache.store(key, PAYLOAD + b"x", 3.5)
    names = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert names == [f"{key.slot()}.engine", f"{key.slot()}.json"]
    assert cache.lookup(key).data == PAYLOAD + b"x"
