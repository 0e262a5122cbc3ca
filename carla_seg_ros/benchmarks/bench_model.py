"""`carla-seg bench model`: model-only latency of every CPU backend at the model's input size, same run, same frame.

Prints p50/p99 latency, frames per second and the speed-up against PyTorch eager (the baseline measured in the
same run). Further models (by default the committed int8 model, when present) are timed in the same run on the ONNX
runtimes, so their ratios share that baseline. The 20 ms/frame target for the default model is printed next to the
figures, not asserted.

``--rate HZ`` paces the calls like a camera stream (one call every 1/HZ s, the runtime idle in between) instead of
calling back to back: the node's situation, where the tail of the model call is what a latency budget meets.

Per input shape (a keep_aspect model runs each camera aspect at its own width, runtime/input_size.py):
``--cameras 800x600,1280x720,1382x512`` times each backend at the input size the model's policy gives each camera
size (384x288, 512x288, 768x288 for the committed model), ``--shapes 384x288,512x288`` at those model input sizes
directly; one row per backend and shape, labelled ``backend @WxH``. The frame is the same test frame, resized.

Model ladder (runtime/model_ladder.py): ``--models accurate,fast`` (rung names, files in ``--models-dir``, default
the package's models/; or .onnx paths) times every backend on each model in the same run, rows labelled
``backend [model]``, and prints for each backend the rung seg_node's ``model: auto`` would choose from these p50s at
``--target-rate`` (default 20 Hz; budget = half of the frame period). A rung whose file is missing is skipped.

``--interleave`` times the rows round by round (one call of each per round) rather than row after row: on a shared
VM the speed drifts by 10 % and more within a minute, which row-after-row timing turns into differences between
rows. ``--openvino-f32-layout on,off`` times OpenVINO with and without its f32 layout choices
(runtime/backends/openvino_backend.py: made by default when it computes in f32), rows labelled
``openvino (f32 layout on)``.

The last row, ``machine baseline``, times a fixed numpy matrix-multiply workload the same way. Its p99/p50 is the
machine's own jitter (other tenants of a VM, frequency changes): a runtime whose p99/p50 is close to it adds no
tail of its own.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from carla_seg_ros.runtime.backends import AUTO_CPU_ORDER, BackendError, create_backend
from carla_seg_ros.runtime.cpu_info import add_cpu_option, apply_cpu_option, execution_line
from carla_seg_ros.datasets import find_pairs, read_rgb
from carla_seg_ros.paths import default_data_dir, default_model
from carla_seg_ros.runtime.input_size import accepts, parse_size
from carla_seg_ros.runtime.model_ladder import (BUDGET_FRACTION, DEFAULT_TARGET_RATE, RUNG_FILES, budget_ms,
                                                choose_rung)
from carla_seg_ros.runtime.preprocess import resize_image

TARGET_MS = 20.0
DEFAULT_INT8 = default_model().with_name("carla_unet_int8.onnx")


def time_backend(backend, batch: np.ndarray, iters: int, warmup: int, rate: float = 0.0) -> np.ndarray:
    """Milliseconds per call; with ``rate`` > 0 the calls start on a fixed 1/rate grid (a late call is not made up)."""
    for _ in range(warmup):
        backend.infer(batch)
    times = np.empty(iters)
    start = time.perf_counter()
    for i in range(iters):
        if rate > 0:
            time.sleep(max(0.0, start + i / rate - time.perf_counter()))
        t0 = time.perf_counter()
        backend.infer(batch)
        times[i] = time.perf_counter() - t0
    return times * 1000.0


def time_interleaved_rows(rows: list, iters: int, warmup: int) -> list:
    """Milliseconds per call of each (backend, batch) row, timed round by round (one call of each per round), so
    a slow spell of a shared machine lands on every row alike instead of on whichever row was being timed."""
    times = np.empty((len(rows), iters))
    for i in range(warmup + iters):
        for r, (backend, batch) in enumerate(rows):
            t0 = time.perf_counter()
            backend.infer(batch)
            if i >= warmup:
                times[r, i - warmup] = time.perf_counter() - t0
    return list(times * 1000.0)


class MachineBaseline:
    """A fixed compute workload (60 float32 300x300 matrix products on numpy's BLAS and its default threads, ~20 ms
    on the 2-core machine), timed like a backend."""
    name = "numpy matmul"

    def __init__(self, products: int = 60):
        self.a = np.random.default_rng(0).random((300, 300), dtype=np.float32)
        self.products = products

    def infer(self, batch):
        for _ in range(self.products):
            np.dot(self.a, self.a)


F32_LAYOUT = {"auto": None, "on": True, "off": False}     # OpenVinoBackend's f32_layout


def parse_f32_layout(text: str) -> list:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    if not modes or any(m not in F32_LAYOUT for m in modes):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(F32_LAYOUT)}, got {text!r}")
    return list(dict.fromkeys(modes))


def openvino_variants(runs: list, f32_layout: list) -> list:
    """(label, model, backend, options) rows: each openvino row once per ``f32_layout`` mode (labelled when several)."""
    out = []
    for label, model, name in runs:
        if name != "openvino" or f32_layout == ["auto"]:
            out.append((label, model, name, {}))
            continue
        for mode in f32_layout:
            out.append((f"{label} (f32 layout {mode})" if len(f32_layout) > 1 else label, model, name,
                        {"f32_layout": F32_LAYOUT[mode]}))
    return out


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """'800x600,1280x720' -> [(800, 600), (1280, 720)]."""
    try:
        return [parse_size(item) for item in text.split(",")]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def input_shapes(backend, shapes, cameras) -> list[tuple[tuple[int, int], str]]:
    """[((width, height) of the model input, label suffix)]; the model's own size alone when neither is given."""
    out = [(tuple(s), f" @{s[0]}x{s[1]}") for s in shapes or []]
    for cam in cameras or []:
        w, h = backend.input_size_for(cam)
        out.append(((w, h), f" @{w}x{h} ({cam[0]}x{cam[1]} camera)"))
    return out or [(backend.input_size, "")]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="carla-seg bench model", description=__doc__)
    p.add_argument("--model", type=Path, default=default_model(), help="exported .onnx (default: committed model)")
    p.add_argument("--backends", default=",".join(AUTO_CPU_ORDER), help="comma-separated (default: %(default)s)")
    p.add_argument("--also", type=Path, action="append",
                   help="another .onnx timed in the same run on the ONNX runtimes (repeatable; default: "
                        f"{DEFAULT_INT8.name} beside the default model, when present)")
    p.add_argument("--models", default=None, metavar="RUNG|PATH,...",
                   help="time these models instead of --model/--also: model ladder rungs (large, accurate, fast) or "
                        ".onnx paths, e.g. accurate,fast; the first is the torch baseline's")
    p.add_argument("--models-dir", type=Path, default=None,
                   help="folder of the ladder's rung files (default: the package's models/)")
    p.add_argument("--target-rate", type=float, default=DEFAULT_TARGET_RATE, metavar="HZ",
                   help="--models: frame rate of the ladder verdict (default: %(default)s)")
    p.add_argument("--batch", type=int, default=1, help="frames per inference call")
    p.add_argument("--iters", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, default=0, help="runtime threads (0 = runtime default)")
    p.add_argument("--rate", type=float, default=0.0, metavar="HZ",
                   help="pace the calls at this rate, like a camera (default: 0 = back to back)")
    p.add_argument("--interleave", action="store_true",
                   help="time every row round by round (one call of each per round) instead of row after row: "
                        "for A/B comparisons on a shared machine, whose slow spells then hit every row alike")
    p.add_argument("--shapes", type=parse_sizes, default=None, metavar="WxH,...",
                   help="model input sizes to time, e.g. 384x288,512x288,768x288 (default: the model's own)")
    p.add_argument("--cameras", type=parse_sizes, default=None, metavar="WxH,...",
                   help="camera frame sizes, each timed at the input size the model's policy gives it, e.g. "
                        "800x600,1280x720,1382x512")
    p.add_argument("--openvino-f32-layout", type=parse_f32_layout, default=["auto"], metavar="MODE,...",
                   help="OpenVINO's f32 layout choices (static batch of one, class reductions channels-last): auto "
                        "(when it computes in f32), on, off; several give one row each, in the same run "
                        "(default: auto)")
    p.add_argument("--data", type=Path, default=default_data_dir(), help="a real frame is used when available")
    p.add_argument("--json", type=Path, help="also write the figures as JSON")
    add_cpu_option(p)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.rate < 0:
        parser.error("--rate must be >= 0")
    if args.interleave and args.rate > 0:
        parser.error("--interleave times calls back to back; it does not combine with --rate")
    cpu = apply_cpu_option(args)          # before any runtime loads: --emulate-avx2 works through the environment
    backends = [b.strip() for b in args.backends.split(",")]
    ladder = []        # [(model label, path)] with --models
    if args.models:
        ladder = resolve_models(args.models, args.models_dir)
        if not ladder:
            print("none of --models is there")
            return 1
        args.model = ladder[0][1]
        runs = [(f"{name} [{label}]", path, name) for label, path in ladder for name in backends
                if name != "torch" or path.with_suffix(".safetensors").is_file()]
    else:
        also = args.also if args.also is not None else [m for m in [DEFAULT_INT8] if m.is_file() and m != args.model]
        # (row label, model, backend): the torch backend needs the model's .safetensors: only the main model's
        runs = [(name, args.model, name) for name in backends]
        runs += [(f"{name} [{model.stem}]", model, name) for model in also for name in backends if name != "torch"]
    source = None
    shapes_timed = []
    rows = []          # (label, model, backend, input (w, h), batch of frames)
    for label, model, name, options in openvino_variants(runs, args.openvino_f32_layout):
        try:
            backend = create_backend(name, model, threads=args.threads, **options)
        except (BackendError, FileNotFoundError, ValueError) as exc:
            print(f"{label}: skipped ({exc})")
            continue
        if source is None:
            if args.data is not None and Path(args.data).is_dir():
                source = read_rgb(find_pairs(args.data, "test")[0].rgb)
            else:
                source = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
        for (w, h), suffix in input_shapes(backend, args.shapes, args.cameras):
            if not accepts((w, h), backend.info):
                print(f"{label}{suffix}: skipped (the model does not take {w}x{h} inputs)")
                continue
            frame = resize_image(source, (w, h))
            rows.append((label + suffix, model, backend, (w, h), np.stack([frame] * args.batch)))
            if (w, h) not in shapes_timed:
                shapes_timed.append((w, h))
    if not rows:
        print("no backend could be loaded")
        return 1
    timed = [(backend, batch) for _, _, backend, _, batch in rows]
    if args.interleave:
        all_ms = time_interleaved_rows(timed, args.iters, args.warmup)
    else:
        all_ms = [time_backend(backend, batch, args.iters, args.warmup, args.rate) for backend, batch in timed]
    # The baseline row after the runtimes, never between their calls: numpy's BLAS threads spin after a product
    # and would slow the runtime call that follows.
    all_ms.append(time_backend(MachineBaseline(), None, args.iters, args.warmup, args.rate))
    results = {}
    for (label, model, backend, (w, h), _), ms in zip(rows, all_ms):
        results[label] = {"model": str(model), "backend": backend.name, "input": [w, h],
                          "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
                          "max_ms": float(ms.max()), "mean_ms": float(ms.mean()),
                          "fps": float(1000.0 * args.batch / ms.mean()), "execution": backend.execution_info()}
    ms = all_ms[-1]
    machine = {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
               "max_ms": float(ms.max())}
    w, h = shapes_timed[0]
    pacing = f"paced at {args.rate:g} Hz" if args.rate > 0 else "interleaved" if args.interleave else "back to back"
    inputs = ", ".join(f"{sw}x{sh}" for sw, sh in shapes_timed)
    print(f"\nmodel {args.model.name}, input {inputs}, batch {args.batch}, {args.iters} iterations {pacing}, "
          f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()})")
    width = max(len("machine baseline"), *(len(label) for label in results))
    print(f"{'backend':<{width}} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'p99/p50':>8} {'fps':>8} {'vs torch':>9}")
    for label, r in results.items():
        # The baseline: PyTorch eager at the same input size, in the same run.
        base = next((b["mean_ms"] for b in results.values() if b["backend"] == "torch" and b["model"] == str(args.model)
                     and b["input"] == r["input"]), None)
        ratio = f"{base / r['mean_ms']:.2f}x" if base else "-"
        print(f"{label:<{width}} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['max_ms']:8.2f} "
              f"{r['p99_ms'] / r['p50_ms']:8.2f} {r['fps']:8.1f} {ratio:>9}")
    print(f"{'machine baseline':<{width}} {machine['p50_ms']:8.2f} {machine['p99_ms']:8.2f} {machine['max_ms']:8.2f} "
          f"{machine['p99_ms'] / machine['p50_ms']:8.2f} {'-':>8} {'-':>9}   ({MachineBaseline.name}, same pacing)")
    for label, r in results.items():
        if r["execution"]:
            print(f"{label}: {execution_line(r['execution'])}")
    for sw, sh in shapes_timed:
        at = [n for n in results if results[n]["input"] == [sw, sh]]
        best = min(at, key=lambda n: results[n]["p50_ms"])
        per_frame = results[best]["p50_ms"] / args.batch
        verdict = "meets" if per_frame <= TARGET_MS else "MISSES"
        where = "fastest" if len(shapes_timed) == 1 else f"fastest at {sw}x{sh}"
        print(f"{where}: {best}, {per_frame:.2f} ms/frame p50 -> {verdict} the {TARGET_MS:.0f} ms/frame target")
    best = min((n for n in results if results[n]["input"] == [w, h]), key=lambda n: results[n]["p50_ms"])
    verdicts = ladder_verdicts(results, ladder, backends, args.target_rate, args.batch) if ladder else {}
    if args.json:
        args.json.write_text(json.dumps({"model": str(args.model), "input": [w, h],
                                         "inputs": [list(s) for s in shapes_timed], "batch": args.batch,
                                         "rate_hz": args.rate, "results": results, "machine_baseline": machine,
                                         "fastest": best, "ladder": verdicts, "cpu": cpu}, indent=2))
    return 0


def resolve_models(text: str, directory: Path | None) -> list[tuple[str, Path]]:
    """``accurate,fast,/x/m.onnx`` -> [(label, path)]: rung names are files of the ladder's folder; missing ones are
    reported and left out."""
    from carla_seg_ros.paths import models_dir
    directory = Path(directory) if directory is not None else models_dir()
    out = []
    for entry in (e.strip() for e in text.split(",") if e.strip()):
        path = directory / RUNG_FILES[entry] if entry in RUNG_FILES else Path(entry)
        if not path.is_file():
            print(f"{entry}: skipped ({path} not found)")
            continue
        out.append((entry if entry in RUNG_FILES else path.stem, path))
    return out


def ladder_verdicts(results: dict, ladder: list, backends: list, rate: float, batch: int) -> dict:
    """Per backend, the rung `model: auto` would choose from these p50s (per frame) at ``rate`` (printed)."""
    budget = budget_ms(rate, BUDGET_FRACTION)
    out = {}
    print(f"\nmodel ladder at {rate:g} Hz (budget {budget:.1f} ms = {BUDGET_FRACTION:.0%} of the frame period; "
          f"seg_node's model: auto times the same way at startup):")
    for name in backends:
        timings = {}
        for label, path in ladder:
            # the model's own input size, the first row of that backend and model
            row = next((r for key, r in results.items() if r["backend"] == name and r["model"] == str(path)
                        and key.startswith(f"{name} [{label}]")), None)
            timings[label] = row["p50_ms"] / batch if row else None
        try:
            choice = choose_rung(timings, budget)
        except ValueError:
            continue
        out[name] = {"rung": choice.rung, "fits": choice.fits, "timings_ms": timings, "budget_ms": budget}
        print(f"  {name}: {choice.reason}")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
