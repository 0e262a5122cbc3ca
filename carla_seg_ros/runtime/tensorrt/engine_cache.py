"""On-disk cache of TensorRT engines: one engine file plus a small JSON sidecar per model/precision/shape/GPU.

A serialized TensorRT engine only runs on the TensorRT version and GPU model it was built for, and only computes the
model it was built from. The reference systems name their engines after the model and then fail at start-up with
"version tag does not match" or "incompatible device" after an upgrade. Here every engine carries an EngineKey
(ONNX sha256, TensorRT version, GPU name, compute capability, precision, input shape, batch profile, builder
version, calibration set) in its sidecar, and ``EngineCache.load_or_build`` checks it before use:

* no engine for this slot, sidecar missing/unreadable/foreign, key mismatch (names each differing field), engine
  file missing, size or sha256 different from the sidecar, or deserialisation failing -> the engine is rebuilt, with
  one log line saying why before the build and one with the build time after it; never a crash;
* the build time is stored in the sidecar.

The file name is the *slot* (model stem, precision, input size, batch profile, GPU): a new TensorRT version or a new
ONNX file replaces the engine in its slot instead of piling up stale files, and the sidecar says what changed.
Everything here is pure Python; the TensorRT facts (version, GPU) are injected as a PlatformFacts, so the rules are
tested without TensorRT. Writes are atomic (temporary file + rename): a crash mid-write leaves the old engine or
nothing, never a half file that looks valid.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, TypeVar

log = logging.getLogger(__name__)

CACHE_ENV = "CARLA_SEG_ENGINE_CACHE"
SIDECAR_FORMAT = "carla_seg_ros/engine-sidecar/1"
PRECISIONS = ("fp16", "fp32", "int8")
# Bump when the way engines are built changes (graph rewrite, builder flags...): old engines then rebuild.
BUILDER_VERSION = 1

T = TypeVar("T")


def default_cache_dir() -> Path:
    """`$CARLA_SEG_ENGINE_CACHE`, else `~/.cache/carla_seg_ros/engines`."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "carla_seg_ros" / "engines"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class PlatformFacts:
    """What a serialized engine is tied to besides the model: the TensorRT version and the GPU."""
    tensorrt_version: str
    gpu_name: str
    compute_capability: str      # "9.0"


@dataclass(frozen=True)
class EngineKey:
    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    input_shape: tuple           # (H, W, C) of one NHWC frame
    batch_profile: tuple         # (min, opt, max) batch of the optimisation profile
    model_stem: str = "model"
    builder_version: int = BUILDER_VERSION
    calibration: str = ""        # identity of the INT8 calibration set; "" for fp16/fp32
    width_profile: tuple = ()    # (min, opt, max) input width of a keep_aspect model's profile; () = fixed shape

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        lo, opt, hi = self.batch_profile
        if not 1 <= lo <= opt <= hi:
            raise ValueError(f"batch profile must satisfy 1 <= min <= opt <= max, got {self.batch_profile}")
        # JSON round trips give lists; keep tuples so keys compare equal after a round trip.
        object.__setattr__(self, "input_shape", tuple(int(v) for v in self.input_shape))
        object.__setattr__(self, "batch_profile", tuple(int(v) for v in self.batch_profile))
        object.__setattr__(self, "width_profile", tuple(int(v) for v in self.width_profile))

    @classmethod
    def create(cls, onnx_path: str | Path, facts: PlatformFacts, precision: str, input_shape, batch_profile,
               calibration: str = "", width_profile=()) -> "EngineKey":
        onnx_path = Path(onnx_path)
        return cls(onnx_sha256=sha256_file(onnx_path), tensorrt_version=facts.tensorrt_version,
                   gpu_name=facts.gpu_name, compute_capability=facts.compute_capability, precision=precision,
                   input_shape=tuple(input_shape), batch_profile=tuple(batch_profile), model_stem=onnx_path.stem,
                   calibration=calibration, width_profile=tuple(width_profile))

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "EngineKey":
        names = {f.name for f in fields(cls)}
        missing = names - set(data) - {"model_stem", "builder_version", "calibration", "width_profile"}
        if missing:
            raise ValueError(f"engine key lacks {sorted(missing)}")
        return cls(**{k: v for k, v in data.items() if k in names})

    def differences(self, other: "EngineKey") -> list[str]:
        """Human-readable 'field: cached -> wanted' for each field that differs (self = cached)."""
        out = []
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if mine != theirs:
                if f.name == "onnx_sha256":
                    mine, theirs = mine[:12], theirs[:12]
                out.append(f"{f.name} {_fmt(mine)} -> {_fmt(theirs)}")
        return out

    def slot(self) -> str:
        """File stem: what a user asks for on this machine (not versions or model hashes, see module doc)."""
        h, w = self.input_shape[:2]
        lo, opt, hi = self.batch_profile
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.model_stem)
        calib = f".cal-{hashlib.sha256(self.calibration.encode()).hexdigest()[:8]}" if self.calibration else ""
        gpu = gpu_tag(self.gpu_name, self.compute_capability)
        size = f"w{'-'.join(map(str, self.width_profile))}x{h}" if self.width_profile else f"{w}x{h}"
        return f"{stem}.{self.precision}.{size}.b{lo}-{opt}-{hi}.{gpu}{calib}"


def gpu_tag(gpu_name: str, compute_capability: str) -> str:
    """File-name-safe GPU identity, e.g. ``nvidia-h100-80gb-hbm3.sm90``."""
    gpu = re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-") or "gpu"
    return f"{gpu}.sm{compute_capability.replace('.', '')}"


def _fmt(value) -> str:
    return "x".join(map(str, value)) if isinstance(value, tuple) else repr(value)


@dataclass
class Lookup:
    """Result of EngineCache.lookup: ``data`` holds the engine bytes when ``reason`` is None."""
    engine_path: Path
    reason: str | None = None
    data: bytes | None = None
    sidecar: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.reason is None


@dataclass
class LoadResult:
    value: object                # whatever the caller's loader returned (a deserialized engine)
    engine_path: Path
    built: bool                  # False: served from the cache
    reason: str | None           # why it was (re)built; None when cached
    build_seconds: float | None


class EngineCache:
    def __init__(self, cache_dir: str | Path | None = None):
        self.dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()

    def engine_path(self, key: EngineKey) -> Path:
        return self.dir / f"{key.slot()}.engine"

    @staticmethod
    def sidecar_path(engine_path: Path) -> Path:
        return engine_path.with_suffix(".json")

    def lookup(self, key: EngineKey) -> Lookup:
        """Check the engine in ``key``'s slot; ``reason`` says why it cannot be used (None: usable)."""
        engine = self.engine_path(key)
        sidecar_file = self.sidecar_path(engine)
        if not engine.exists() and not sidecar_file.exists():
            return Lookup(engine, "no cached engine")
        try:
            sidecar = json.loads(sidecar_file.read_text())
        except FileNotFoundError:
            return Lookup(engine, f"sidecar {sidecar_file.name} is missing")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            return Lookup(engine, f"sidecar {sidecar_file.name} is unreadable ({exc})")
        if not isinstance(sidecar, dict) or sidecar.get("format") != SIDECAR_FORMAT:
            return Lookup(engine, f"sidecar {sidecar_file.name} is not a {SIDECAR_FORMAT} file")
        try:
            cached_key = EngineKey.from_dict(sidecar["key"])
        except (KeyError, TypeError, ValueError) as exc:
            return Lookup(engine, f"sidecar {sidecar_file.name} has an invalid key ({exc})", sidecar=sidecar)
        diffs = cached_key.differences(key)
        if diffs:
            return Lookup(engine, "engine key changed: " + "; ".join(diffs), sidecar=sidecar)
        try:
            data = engine.read_bytes()
        except FileNotFoundError:
            return Lookup(engine, f"engine file {engine.name} is missing", sidecar=sidecar)
        except OSError as exc:
            return Lookup(engine, f"engine file {engine.name} is unreadable ({exc})", sidecar=sidecar)
        if len(data) != sidecar.get("engine_size"):
            return Lookup(engine, f"engine file size {len(data)} != {sidecar.get('engine_size')} in the sidecar "
                                  "(truncated or replaced)", sidecar=sidecar)
        if hashlib.sha256(data).hexdigest() != sidecar.get("engine_sha256"):
            return Lookup(engine, "engine file sha256 differs from the sidecar (corrupt or replaced)",
                          sidecar=sidecar)
        return Lookup(engine, None, data, sidecar)

    def store(self, key: EngineKey, data: bytes, build_seconds: float, extra: dict | None = None) -> Path:
        """Write the engine, then its sidecar (so a sidecar never vouches for an engine not yet written)."""
        engine = self.engine_path(key)
        self.dir.mkdir(parents=True, exist_ok=True)
        sidecar = {
            "format": SIDECAR_FORMAT,
            "key": key.to_dict(),
            "engine_file": engine.name,
            "engine_size": len(data),
            "engine_sha256": hashlib.sha256(data).hexdigest(),
            "build_seconds": round(float(build_seconds), 3),
            "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        if extra:
            sidecar.update(extra)
        atomic_write(engine, data)
        atomic_write(self.sidecar_path(engine), (json.dumps(sidecar, indent=2, sort_keys=True) + "\n").encode())
        return engine

    def load_or_build(self, key: EngineKey, build: Callable[[], bytes], load: Callable[[bytes], T],
                      force: bool = False, extra: dict | None = None,
                      log_info: Callable[[str], None] = log.info) -> LoadResult:
        """Load the cached engine with ``load``; (re)build it with ``build`` when missing, stale or corrupt.

        ``load`` raises (any exception) when the bytes cannot be deserialized: that counts as a corrupt engine.
        Errors of ``build`` and of loading a freshly built engine propagate: there is nothing left to fall back to.
        """
        engine = self.engine_path(key)
        if force:
            reason = "rebuild forced"
        else:
            hit = self.lookup(key)
            reason = hit.reason
            if hit.ok:
                try:
                    return LoadResult(load(hit.data), engine, False, None, hit.sidecar.get("build_seconds"))
                except Exception as exc:  # noqa: BLE001 - any deserialisation failure means "rebuild"
                    reason = f"cached engine cannot be deserialized ({exc})"
        log_info(f"building TensorRT engine {engine}: {reason}")
        start = time.perf_counter()
        data = build()
        seconds = time.perf_counter() - start
        self.store(key, data, seconds, extra)
        log_info(f"built TensorRT engine {engine.name} in {seconds:.1f} s ({len(data) / 1e6:.1f} MB)")
        return LoadResult(load(data), engine, True, reason, seconds)


def atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
