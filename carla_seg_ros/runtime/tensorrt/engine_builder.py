"""`carla-seg build-engine`: ONNX -> TensorRT engine, cached per model/TensorRT version/GPU (see engine_cache).

    carla-seg build-engine --model models/carla_unet.onnx                      # FP16, batch profile 1/1/8
    carla-seg build-engine --precision int8 --calib-split train --calib-frames 256
    carla-seg build-engine --list                                              # what the cache holds (no TensorRT)

The node builds the same engine on first start (in the background, see backend_manager); running this beforehand
just moves the minutes of building out of the node's start-up. The engine is built from a copy of the ONNX graph
rewritten so uint8 tensors are only network I/O (trt_graph.py), with one optimisation profile over the batch
dimension and, for a keep_aspect model, the width (``profile_shapes``: the model's height, widths from its
min_width to its max_width, 4:3 to 8:3 at 384x288, so 16:9 and 21:9 cameras run at their own aspect; opt = the
4:3 width of CARLA's default camera, or ``--opt-width``), a workspace limit, and a persistent timing cache (later
builds on the same GPU and TensorRT reuse the layer timings). Written against the TensorRT 10 Python API; TensorRT
itself could not be run for this project.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from carla_seg_ros.runtime.backends.base import BackendError
from carla_seg_ros.runtime.backends.base import require_cuda as _require_cuda
from carla_seg_ros.runtime.tensorrt.engine_cache import (CACHE_ENV, PRECISIONS, EngineCache, EngineKey, LoadResult,
                                                         PlatformFacts, atomic_write, default_cache_dir, gpu_tag)
from carla_seg_ros.runtime.input_size import KEEP_ASPECT, tensorrt_width_profile
from carla_seg_ros.runtime.model_info import INPUT_NAME, ModelInfo, read_onnx_info
from carla_seg_ros.paths import default_data_dir, default_model

log = logging.getLogger(__name__)

INSTALL_HINT = ("install TensorRT 10 for your CUDA version (e.g. `pip install tensorrt-cu12` or NVIDIA's apt "
                "packages) on a machine with an NVIDIA GPU")


@dataclass
class EngineOptions:
    precision: str = "fp16"
    workspace_mb: int = 1024
    min_batch: int = 1
    opt_batch: int = 1            # the node runs batch 1: tune kernels for it
    max_batch: int = 8
    opt_width: int | None = None  # keep_aspect models: the width kernels are tuned for (default: the model's, 4:3)
    cache_dir: str | None = None
    timing_cache: str | None = None   # default: one file per TensorRT version + GPU in the cache dir
    calib_data: str | None = None
    calib_split: str = "train"
    calib_frames: int | None = 256
    calib_batch: int = 8
    force: bool = False

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(f"batch profile needs 1 <= min <= opt <= max, got "
                             f"{self.min_batch}/{self.opt_batch}/{self.max_batch}")
        if self.workspace_mb < 1:
            raise ValueError(f"workspace must be at least 1 MB, got {self.workspace_mb}")

    @property
    def batch_profile(self) -> tuple[int, int, int]:
        return self.min_batch, self.opt_batch, self.max_batch

    @classmethod
    def from_mapping(cls, options: dict) -> "EngineOptions":
        known = {k: v for k, v in options.items() if k in cls.__dataclass_fields__}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(f"unknown TensorRT engine options {unknown}")
        return cls(**known)


def import_tensorrt():
    """The tensorrt module, or BackendError saying why it cannot be used."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendError(f"TensorRT is not importable ({exc}); {INSTALL_HINT}") from exc
    except Exception as exc:  # noqa: BLE001 - the PyPI stub packages raise odd errors when incomplete
        raise BackendError(f"TensorRT failed to import ({type(exc).__name__}: {exc}); {INSTALL_HINT}") from exc
    if not hasattr(trt, "Builder"):
        raise BackendError(f"the installed `tensorrt` package is a stub without the runtime; {INSTALL_HINT}")
    return trt


def require_cuda():
    """torch with a CUDA device: the TensorRT path uses PyTorch for device memory and streams."""
    return _require_cuda("the TensorRT backend")


def detect_facts(trt, device: int = 0) -> PlatformFacts:
    torch = require_cuda()
    major, minor = torch.cuda.get_device_capability(device)
    return PlatformFacts(tensorrt_version=trt.__version__, gpu_name=torch.cuda.get_device_name(device),
                         compute_capability=f"{major}.{minor}")


def profile_shapes(info: ModelInfo, options: EngineOptions) -> tuple[tuple, tuple, tuple]:
    """The (min, opt, max) NHWC input shapes of the engine's optimisation profile: the batch profile and, for a
    keep_aspect model, the width profile (input_size.tensorrt_width_profile) at the model's height."""
    lo_w, opt_w, hi_w = tensorrt_width_profile(info, options.opt_width)
    lo, opt, hi = options.batch_profile
    h = info.input_height
    return (lo, h, lo_w, 3), (opt, h, opt_w, 3), (hi, h, hi_w, 3)


def calibration_frames(options: EngineOptions) -> list[Path]:
    from carla_seg_ros.runtime.tensorrt.calibration import select_frames
    from carla_seg_ros.datasets import find_pairs
    data = options.calib_data or default_data_dir()
    if data is None:
        raise ValueError("INT8 calibration needs training frames: pass --calib-data (no dataset found)")
    return select_frames([p.rgb for p in find_pairs(data, options.calib_split)], options.calib_frames)


def engine_key(model_path: Path, info: ModelInfo, options: EngineOptions, facts: PlatformFacts,
               calib_paths: list[Path] | None = None) -> EngineKey:
    calibration = ""
    if options.precision == "int8":
        from carla_seg_ros.runtime.tensorrt.calibration import calibration_id
        calibration = calibration_id(calib_paths or [], options.calib_batch, "pad")
    widths = tensorrt_width_profile(info, options.opt_width) if info.input_policy == KEEP_ASPECT else ()
    return EngineKey.create(model_path, facts, options.precision, (info.input_height, info.input_width, 3),
                            options.batch_profile, calibration=calibration, width_profile=widths)


def timing_cache_path(options: EngineOptions, facts: PlatformFacts) -> Path:
    if options.timing_cache:
        return Path(options.timing_cache).expanduser()
    # A timing cache is only valid for one GPU and TensorRT version: one file per pair, never a mismatch.
    cache_dir = Path(options.cache_dir).expanduser() if options.cache_dir else default_cache_dir()
    gpu = gpu_tag(facts.gpu_name, facts.compute_capability)
    return cache_dir / f"timing.trt{facts.tensorrt_version}.{gpu}.cache"


class _Progress:
    """tqdm bars for TensorRT's top-level build phases (IProgressMonitor, TensorRT >= 10.0)."""

    @staticmethod
    def attach(trt, config) -> object | None:
        if not hasattr(trt, "IProgressMonitor") or not sys.stderr.isatty():
            return None
        from tqdm import tqdm

        class Monitor(trt.IProgressMonitor):
            def __init__(self):
                trt.IProgressMonitor.__init__(self)
                self.bars = {}

            def phase_start(self, phase_name, parent_phase, num_steps):
                if parent_phase is None:
                    self.bars[phase_name] = tqdm(total=num_steps, desc=phase_name, leave=False)

            def step_complete(self, phase_name, step):
                if phase_name in self.bars:
                    self.bars[phase_name].update(1)
                return True  # False would cancel the build

            def phase_finish(self, phase_name):
                bar = self.bars.pop(phase_name, None)
                if bar is not None:
                    bar.close()

        monitor = Monitor()
        config.progress_monitor = monitor
        return monitor  # must outlive the build


def build_serialized_engine(trt, logger, model_path: Path, info: ModelInfo, options: EngineOptions,
                            facts: PlatformFacts, calib_paths: list[Path] | None = None,
                            log_info: Callable[[str], None] = log.info) -> bytes:
    """Parse the (rewritten) ONNX graph and build a serialized engine; BackendError on any TensorRT failure."""
    from carla_seg_ros.runtime.tensorrt.onnx_rewrite import tensorrt_onnx_bytes
    builder = trt.Builder(logger)
    # TensorRT 10 networks are always explicit-batch (the flag is deprecated and ignored); 8.x still needs it.
    flags = 0 if int(trt.__version__.split(".")[0]) >= 10 else \
        1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(tensorrt_onnx_bytes(model_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT cannot parse {model_path}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, *profile_shapes(info, options))
    config.add_optimization_profile(profile)

    if options.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # int8: layers without int8 kernels fall back to fp16, not fp32
    calibrator = None
    if options.precision == "int8":
        from carla_seg_ros.runtime.tensorrt.calibration import (CalibrationBatches, CalibrationCache,
                                                                CalibrationFeeder, make_entropy_calibrator)
        config.set_flag(trt.BuilderFlag.INT8)
        batches = CalibrationBatches(calib_paths or calibration_frames(options), info.input_size,
                                     options.calib_batch, last="pad")
        cache_dir = Path(options.cache_dir).expanduser() if options.cache_dir else default_cache_dir()
        key = engine_key(model_path, info, options, facts, batches.paths)
        cache = CalibrationCache(cache_dir / f"{key.slot()}.calib")
        calibrator = make_entropy_calibrator(trt, CalibrationFeeder(batches, cache))
        config.int8_calibrator = calibrator
        # Dynamic shapes: TensorRT calibrates with the calibration profile's shape, one fixed batch size.
        calib_profile = builder.create_optimization_profile()
        shape = batches.shape
        calib_profile.set_shape(INPUT_NAME, shape, shape, shape)
        config.set_calibration_profile(calib_profile)
        log_info(f"INT8 calibration: {len(batches.paths)} frames of {options.calib_split} in {len(batches)} "
                 f"batches of {options.calib_batch} (table cached at {cache.path})")

    timing_file = timing_cache_path(options, facts)
    blob = timing_file.read_bytes() if timing_file.is_file() else b""
    timing = config.create_timing_cache(blob)
    if not config.set_timing_cache(timing, False):
        log_info(f"timing cache {timing_file} does not match this GPU/TensorRT; starting an empty one")
        timing = config.create_timing_cache(b"")
        config.set_timing_cache(timing, False)
    monitor = _Progress.attach(trt, config)  # noqa: F841 - kept alive for the build

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"TensorRT failed to build an engine for {model_path} (see the TensorRT log above)")
    timing_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(timing_file, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def load_or_build_engine(model_path: str | Path, options: EngineOptions | None = None, info: ModelInfo | None = None,
                         log_info: Callable[[str], None] = log.info):
    """(runtime, engine, LoadResult): the cached engine for this model/GPU/TensorRT, built first when needed."""
    options = options or EngineOptions()
    model_path = Path(model_path)
    info = info or read_onnx_info(model_path)
    trt = import_tensorrt()
    facts = detect_facts(trt)
    calib_paths = calibration_frames(options) if options.precision == "int8" else None
    key = engine_key(model_path, info, options, facts, calib_paths)
    logger = trt.Logger(trt.Logger.WARNING)
    runtime = trt.Runtime(logger)

    def load(data: bytes):
        engine = runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise ValueError("deserialize_cuda_engine returned None")
        return engine

    def build() -> bytes:
        return build_serialized_engine(trt, logger, model_path, info, options, facts, calib_paths, log_info)

    extra = {"model_info": json.loads(info.to_json()), "model_path": str(model_path.resolve()),
             "options": {k: v for k, v in asdict(options).items() if k != "force"}}
    result: LoadResult = EngineCache(options.cache_dir).load_or_build(
        key, build, load, force=options.force, extra=extra, log_info=log_info)
    return runtime, result.value, result


def cached_engine_reason(model_path: str | Path, options: EngineOptions | None = None,
                         info: ModelInfo | None = None) -> str | None:
    """Why the cached engine cannot be used as is (None: it can), without building anything.

    Needs TensorRT and a GPU (the key holds their versions); deserialisation is not tried here.
    """
    options = options or EngineOptions()
    model_path = Path(model_path)
    info = info or read_onnx_info(model_path)
    facts = detect_facts(import_tensorrt())
    calib_paths = calibration_frames(options) if options.precision == "int8" else None
    return EngineCache(options.cache_dir).lookup(engine_key(model_path, info, options, facts, calib_paths)).reason


def list_cache(cache_dir: Path) -> list[str]:
    """One line per engine sidecar in ``cache_dir`` (pure Python: works without TensorRT)."""
    lines = []
    for sidecar in sorted(cache_dir.glob("*.json")):
        try:
            data = json.loads(sidecar.read_text())
            key = data["key"]
            lines.append(f"{data['engine_file']}: TensorRT {key['tensorrt_version']}, {key['gpu_name']} "
                         f"(sm {key['compute_capability']}), {key['precision']}, onnx {key['onnx_sha256'][:12]}, "
                         f"built {data.get('built_at', '?')} in {data.get('build_seconds', '?')} s")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            lines.append(f"{sidecar.name}: unreadable sidecar ({exc})")
    return lines


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="carla-seg build-engine", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=default_model(), help="exported .onnx (default: %(default)s)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp16", help="engine precision (default: fp16)")
    p.add_argument("--calib-data", type=Path, default=None,
                   help="dataset for INT8 calibration (default: the project dataset)")
    p.add_argument("--calib-split", default="train", help="split for INT8 calibration (default: %(default)s)")
    p.add_argument("--calib-frames", type=int, default=256,
                   help="frames for INT8 calibration, evenly spaced over the split (default: %(default)s)")
    p.add_argument("--calib-batch", type=int, default=8, help="INT8 calibration batch size (default: %(default)s)")
    p.add_argument("--workspace-mb", type=int, default=1024, help="builder workspace limit (default: %(default)s)")
    p.add_argument("--min-batch", type=int, default=1, help="smallest batch of the profile (default: %(default)s)")
    p.add_argument("--opt-batch", type=int, default=1, help="batch the kernels are tuned for (default: %(default)s)")
    p.add_argument("--max-batch", type=int, default=8, help="largest batch of the profile (default: %(default)s)")
    p.add_argument("--opt-width", type=int, default=None,
                   help="keep_aspect models: the input width kernels are tuned for (default: the model's own, 4:3; "
                        "e.g. 512 for 16:9 cameras at height 288)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help=f"engine cache (default: ${CACHE_ENV} or {default_cache_dir()})")
    p.add_argument("--timing-cache", type=Path, default=None,
                   help="timing cache file (default: one per TensorRT version and GPU in the cache dir)")
    p.add_argument("--force", action="store_true", help="rebuild even when the cached engine is valid")
    p.add_argument("--list", action="store_true", help="list the cached engines and exit (no TensorRT needed)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cache_dir = args.cache_dir or default_cache_dir()
    if args.list:
        lines = list_cache(cache_dir)
        print("\n".join(lines) if lines else f"no engines in {cache_dir}")
        return 0
    try:
        options = EngineOptions(precision=args.precision, workspace_mb=args.workspace_mb, min_batch=args.min_batch,
                                opt_batch=args.opt_batch, max_batch=args.max_batch, opt_width=args.opt_width,
                                cache_dir=str(cache_dir),
                                timing_cache=str(args.timing_cache) if args.timing_cache else None,
                                calib_data=str(args.calib_data) if args.calib_data else None,
                                calib_split=args.calib_split, calib_frames=args.calib_frames,
                                calib_batch=args.calib_batch, force=args.force)
        info = read_onnx_info(args.model)
        _, engine, result = load_or_build_engine(args.model, options, info, log_info=print)
    except (BackendError, FileNotFoundError, ValueError) as exc:
        print(f"carla-seg build-engine: {exc}", file=sys.stderr)
        return 1
    state = f"built ({result.reason}) in {result.build_seconds:.1f} s" if result.built else \
        f"valid, served from the cache (built in {result.build_seconds} s)"
    print(f"engine {result.engine_path}: {state}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
