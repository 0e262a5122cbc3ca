"""The model ladder: which rung (large, accurate or fast model) seg_node runs, for ``model: auto``.

Rungs, most accurate first (``RUNGS``), are found by file name in the models folder (``RUNG_FILES``):

* ``large``: ``carla_unet_large.onnx``, the same network at a higher input height for fast machines (AVX-512 bf16
  or AMX CPUs, GPUs), for small and far vehicles (``carla-seg export --rung large``);
* ``accurate``: ``carla_unet.onnx`` (on the CPU runtimes its checked int8 twin when there is one:
  runtime/model_choice.py);
* ``fast``: ``carla_unet_fast.onnx``, a smaller or lower-resolution model (``carla-seg export --rung fast`` writes
  that name; it is an ordinary export, e.g. ``--input-height 224``).

A file name, not a metadata field, makes a rung: what a rung *is* is its place in the ladder, and a file copied
into models/ under a rung's name is that rung without re-exporting it.

``model: auto`` times every rung present at startup on the runtime the node chose (``time_interleaved``: the rungs'
calls alternate, ``WARMUP_CALLS`` untimed rounds, then the median of ``TIMED_CALLS``, at the size the node times:
``timing_size``) and ``choose_rung`` takes the most accurate rung whose median fits the frame budget, else the
fastest rung with a warning. The budget is ``budget_fraction`` (default ``BUDGET_FRACTION`` = 0.5) of the frame
period of ``target_rate``: at 20 Hz, 50 % of 50 ms = 25 ms. The other half is the work around the model call in
seg_node (decode and resize in, resize and publish the outputs, the occupancy grids, DDS; 5-10 ms measured by
`carla-seg bench node` at 800x600) plus headroom for the jitter of a shared CPU, whose p99 runs 1.3-1.5x its median:
25 ms x 1.4 + 7 ms leaves 8 ms of the 50. At 0.6 (30 ms) that sum reaches the whole period, and `make demo` under
AVX2 emulation showed it: when ``auto`` took the accurate rung at a startup-timed 29-33 ms, 31-38 of 40 masks came
back; with the fast rung (23-25 ms), 39-40 of 40.

A missing rung file is simply not a rung (a ladder of one: ``auto`` runs the accurate model and says so); an
unreadable one is reported and skipped. ``choose_rung`` is pure (timings in, choice and reason out) so it is tested
without timing anything.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from carla_seg_ros.paths import DEFAULT_MODEL_NAME, models_dir
from carla_seg_ros.runtime.input_size import parse_size

RUNGS = ("large", "accurate", "fast")      # most accurate first
LARGE_MODEL_NAME = "carla_unet_large.onnx"
FAST_MODEL_NAME = "carla_unet_fast.onnx"
RUNG_FILES = {"large": LARGE_MODEL_NAME, "accurate": DEFAULT_MODEL_NAME, "fast": FAST_MODEL_NAME}
MODEL_CHOICES = ("auto",) + RUNGS          # the `model` parameter: one of these, or a path to an .onnx file
BUDGET_FRACTION = 0.5
DEFAULT_TARGET_RATE = 20.0
WARMUP_CALLS = 2
TIMED_CALLS = 7


@dataclass(frozen=True)
class Rung:
    name: str
    path: Path
    why_file: str = ""           # which file of the rung and why (int8 or fp32: runtime/model_choice.py)


@dataclass
class Ladder:
    """The rungs found in a models folder, most accurate first, and the files that were skipped (and why)."""
    directory: Path
    rungs: list = field(default_factory=list)
    skipped: list = field(default_factory=list)      # [(rung name, path, why)]

    def get(self, name: str) -> Rung | None:
        return next((r for r in self.rungs if r.name == name), None)


@dataclass(frozen=True)
class RungChoice:
    rung: str
    reason: str
    fits: bool                   # False: no rung fits the budget, this is the fastest
    budget_ms: float
    timings_ms: dict             # rung -> median ms (None: could not be timed)


def budget_ms(target_rate: float, fraction: float = BUDGET_FRACTION) -> float:
    """The model call's share of a frame period: ``fraction`` of 1000 / ``target_rate`` ms."""
    if target_rate <= 0 or not 0 < fraction <= 1:
        raise ValueError(f"target_rate must be > 0 and budget_fraction in (0, 1], got {target_rate}, {fraction}")
    return 1000.0 / target_rate * fraction


def format_timings(timings_ms: dict) -> str:
    """``accurate=17.2, fast=9.1`` (ms; ``failed`` for a rung that could not be timed)."""
    return ", ".join(f"{name}={'failed' if ms is None else f'{ms:.1f}'}" for name, ms in timings_ms.items())


def choose_rung(timings_ms: dict, budget: float) -> RungChoice:
    """The most accurate rung whose time fits ``budget`` (ms), else the fastest. Pure: no timing, no files.

    ``timings_ms``: rung name -> median ms of one model call (None: the rung could not be timed), most accurate
    first (the ladder's order). Ties: the more accurate rung wins, both when two fit and when none fits.
    ValueError when no rung has a time.
    """
    timed = [(name, ms) for name, ms in timings_ms.items() if ms is not None]
    if not timed:
        raise ValueError(f"no rung could be timed ({format_timings(timings_ms) or 'no rungs'})")
    measured = f"measured {format_timings(timings_ms)} ms, budget {budget:.1f} ms"
    untimed = [name for name, ms in timings_ms.items() if ms is None]
    note = f"; {', '.join(untimed)} could not be timed" if untimed else ""
    first = next(iter(timings_ms))
    for name, ms in timed:
        if ms <= budget:
            if len(timings_ms) == 1:
                why = "the only rung in the models folder, fits the budget"
            elif name == first:
                why = "the most accurate rung fits the budget"
            else:
                why = "the most accurate rung that fits the budget"
            return RungChoice(name, f"{name}: {why} ({measured}{note})", True, budget, dict(timings_ms))
    fastest = min(timed, key=lambda item: item[1])[0]       # min keeps the first (more accurate) of equal times
    why = "the only rung in the models folder, over the budget" if len(timings_ms) == 1 else \
        "no rung fits the budget, running the fastest"
    return RungChoice(fastest, f"{fastest}: {why} ({measured}{note})", False, budget, dict(timings_ms))


def discover(backend: str, directory: Path | None = None) -> Ladder:
    """The rungs in ``directory`` (default: the package's models/) for ``backend``; unreadable files are skipped.

    The accurate rung's file is model_choice.choose_model's (int8 on the CPU runtimes when it passed its check).
    """
    from carla_seg_ros.runtime.model_choice import choose_model
    from carla_seg_ros.runtime.model_info import read_onnx_info

    directory = Path(directory) if directory is not None else models_dir()
    ladder = Ladder(directory)
    for name in RUNGS:
        if not (directory / RUNG_FILES[name]).is_file():
            continue
        if name == "accurate":
            choice = choose_model(backend, directory)
            rung = Rung(name, choice.path, choice.reason)
        else:
            rung = Rung(name, directory / RUNG_FILES[name], "fp32")
        try:
            read_onnx_info(rung.path)
        except (OSError, ValueError) as exc:
            ladder.skipped.append((name, rung.path, str(exc)))
            continue
        ladder.rungs.append(rung)
    return ladder


def time_interleaved(backends: dict, frame_wh: tuple[int, int] | None, batch: int = 1,
                     warmup: int = WARMUP_CALLS, calls: int = TIMED_CALLS) -> dict:
    """Median ms of one call of each backend (name -> backend), on a (batch, H, W, 3) frame at ``timing_size``.

    The rungs are timed round by round, one call of each per round (``warmup`` untimed rounds first), so a burst of
    other work on a shared machine slows every rung alike instead of whichever was being timed during it (timed one
    after the other, the fast rung once came out slower than the accurate one). Returns name -> ms, or name -> the
    exception its call raised (that rung then leaves the rounds), in the order of ``backends``."""
    rng = np.random.default_rng(0)
    frames, results = {}, {}
    for name, backend in backends.items():
        try:
            width, height = timing_size(backend, frame_wh)
            frames[name] = rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
        except Exception as exc:  # noqa: BLE001 - reported per rung by the caller
            results[name] = exc
    times = {name: [] for name in frames}
    for round_index in range(warmup + calls):
        for name in list(frames):
            start = time.perf_counter()
            try:
                backends[name].infer(frames[name])
            except Exception as exc:  # noqa: BLE001 - a rung that cannot run is the caller's to report
                results[name] = exc
                del frames[name]
                continue
            if round_index >= warmup:
                times[name].append((time.perf_counter() - start) * 1000.0)
    results.update({name: float(np.median(times[name])) for name in frames})
    return {name: results[name] for name in backends}


def timing_size(backend, frame_wh: tuple[int, int] | None) -> tuple[int, int]:
    """The input size a rung is timed at: the camera's (its policy width at the rung's height) when the frame size
    is known, else the rung's own 4:3 size."""
    return backend.input_size_for(frame_wh) if frame_wh else backend.input_size


def parse_frame_size(text: str) -> tuple[int, int] | None:
    """``"800x600"`` -> (800, 600); ``""`` -> None (not set); ValueError otherwise."""
    return parse_size(text) if text.strip() else None
