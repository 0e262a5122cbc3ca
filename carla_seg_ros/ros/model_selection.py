"""Which model seg_node runs: the file the ``model`` parameter names, a rung of the model ladder, or (``auto``) the
most accurate rung that fits the frame budget, timed on this machine (runtime/model_ladder.py).

Kept apart from the node so the choice reads in one place and a running node can load another model the same way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from carla_seg_ros.ros.seg_params import StartupError
from carla_seg_ros.runtime.backend_manager import BackendManager
from carla_seg_ros.runtime.user_models import resolve_model, user_models_dir
from carla_seg_ros.runtime.model_ladder import (MODEL_CHOICES, RUNG_FILES, RungChoice, budget_ms, choose_rung,
                                                discover, format_timings, parse_frame_size, time_interleaved)


def empty_rung() -> dict:
    """The /diagnostics values that say which rung runs and why (empty until a choice is made)."""
    return {"model_rung": "", "rung_choice": "", "rung_timings_ms": "", "rung_budget_ms": "", "rung_fits": ""}


@dataclass
class Selection:
    """A loaded model and why it was chosen: ``choice`` for the log and /diagnostics, ``rung`` its rung values."""
    manager: BackendManager
    path: Path
    choice: str
    rung: dict = field(default_factory=empty_rung)


def select_model(p: dict, log) -> Selection:
    """Load the model the node's parameters ``p`` name; ``log`` is the node's logger. Raises StartupError."""
    return ModelSelector(p, log).select()


class ModelSelector:
    def __init__(self, p: dict, log):
        self.p, self.log = p, log
        self.model_choice, self.rung = "", empty_rung()

    def select(self) -> Selection:
        manager, path = self._select_model()
        return Selection(manager, path, self.model_choice, self.rung)

    def _select_model(self) -> tuple[BackendManager, Path]:
        """Load the model the ``model`` parameter names (auto: the timed ladder choice); sets ``model_choice``
        (why this file) and ``rung`` (the /diagnostics values saying which rung and why)."""
        model, legacy = self.p["model"], self.p["model_path"]
        try:
            parse_frame_size(self.p["timing_frame_size"])
        except ValueError as exc:
            raise StartupError(f"parameter timing_frame_size: {exc}") from exc
        if legacy:
            if model != "auto":
                raise StartupError(f"parameters model ({model!r}) and model_path ({legacy!r}, deprecated) are both "
                                   f"set: set model alone")
            self.log.warning("parameter model_path is deprecated: use model:=<path> (same meaning)")
            self.model_choice = "model_path parameter"
            self.rung.update(model_rung="file", rung_choice="model_path parameter")
            return self._load(Path(legacy), "model_path"), Path(legacy)
        if model not in MODEL_CHOICES:
            path = resolve_model(model, self.p.get("user_models_dir") or None)
            if path is None:
                raise StartupError(f"parameter model: {model!r} is neither {', '.join(MODEL_CHOICES)}, an existing "
                                   f"model file, nor a model installed in "
                                   f"{user_models_dir(self.p.get('user_models_dir') or None)} (carla-seg models)")
            by_name = not Path(model).expanduser().is_file()
            self.model_choice = f"user model {model!r}" if by_name else "model parameter"
            self.rung.update(model_rung="file", rung_choice=self.model_choice)
            return self._load(path, "model"), path
        directory = Path(self.p["models_dir"]) if self.p["models_dir"] else None
        if directory is not None and not directory.is_dir():
            raise StartupError(f"parameter models_dir: {directory} is not a folder")
        ladder = discover(self.p["backend"], directory)
        for name, path, why in ladder.skipped:
            self.log.warning(f"model ladder: {name} rung {path} skipped: {why}")
        if model != "auto":
            rung = ladder.get(model)
            if rung is None:
                raise StartupError(f"parameter model: no usable {model} rung in {ladder.directory} "
                                   f"({RUNG_FILES[model]} missing or unreadable)")
            self.model_choice = f"rung {model} (model parameter); {rung.why_file}"
            self.rung.update(model_rung=model, rung_choice="model parameter")
            return self._load(rung.path, "model"), rung.path
        return self._auto_rung(ladder)

    def _load(self, path: Path, parameter: str) -> BackendManager:
        try:
            return BackendManager(self.p["backend"], path, allow_fallback=self.p["allow_fallback"],
                                  background_build=self.p["background_engine_build"],
                                  threads=self.p["threads"], log_info=self.log.info)
        except FileNotFoundError as exc:
            raise StartupError(f"{parameter}: {exc}") from exc
        except ValueError as exc:   # corrupt or foreign model file (or an unknown backend, caught earlier)
            raise StartupError(f"{parameter}: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - BackendError and whatever a runtime raises while loading
            raise StartupError(f"backend {self.p['backend']!r}: {exc}") from exc

    def _auto_rung(self, ladder) -> tuple[BackendManager, Path]:
        """model auto: load and time every rung (runtime/model_ladder.py), keep the most accurate that fits."""
        log = self.log
        if not ladder.rungs:
            skipped = "; ".join(f"{path}: {why}" for _, path, why in ladder.skipped)
            raise StartupError(f"model: auto found no usable rung in {ladder.directory} "
                               f"({skipped or 'no ' + ', '.join(RUNG_FILES.values())})")
        budget = budget_ms(self.p["target_rate"], self.p["budget_fraction"])   # both range-checked parameters
        frame_wh = parse_frame_size(self.p["timing_frame_size"])                # checked by _select_model
        batch = max(1, len(self.p["cameras"]))
        managers, timings, choice, last_error = {}, {}, None, None
        for rung in ladder.rungs:
            try:
                manager = self._load(rung.path, "model")
            except StartupError as exc:
                log.warning(f"model ladder: {rung.name} rung {rung.path} cannot load, skipped: {exc}")
                timings[rung.name], last_error = None, exc
                continue
            if manager.status.state == "building":
                if not managers:
                    # A CPU runtime serves while TensorRT builds: timing it says nothing about the GPU, where the
                    # accurate model is expected to fit any budget (not measured yet: docs/benchmarks.md);
                    # take this rung untimed.
                    managers[rung.name] = manager
                    choice = RungChoice(rung.name, f"{rung.name}: not timed, the TensorRT engine builds in the "
                                        f"background (the GPU runs it within budget)", True, budget, {})
                    break
                log.warning(f"model ladder: {rung.name} rung not timed: its TensorRT engine is not built yet")
                manager.close()
                timings[rung.name] = None
                continue
            managers[rung.name] = manager
            if manager.backend.name != "tensorrt":
                continue                       # the CPU rungs are timed together below, their calls interleaved
            ms = self._timed({rung.name: manager}, frame_wh, batch, ladder)[rung.name]
            timings[rung.name] = ms
            if ms is not None and ms <= budget and rung != ladder.rungs[-1]:
                # On the GPU the first rung that fits is the choice: the less accurate rungs would only cost
                # TensorRT engine builds (minutes each) to be timed.
                choice = RungChoice(rung.name, f"{rung.name}: the most accurate rung that fits the budget on "
                                    f"TensorRT (measured {format_timings(timings)} ms, budget {budget:.1f} ms; the "
                                    f"less accurate rungs not loaded)", True, budget, dict(timings))
                break
        if choice is None:
            untimed = {name: manager for name, manager in managers.items() if name not in timings}
            timings.update(self._timed(untimed, frame_wh, batch, ladder))
            timings = {r.name: timings[r.name] for r in ladder.rungs if r.name in timings}   # most accurate first
            try:
                choice = choose_rung(timings, budget)
            except ValueError as exc:
                for manager in managers.values():
                    manager.close()
                if last_error is not None:
                    raise last_error
                raise StartupError(f"model: auto: {exc}") from exc
        for name, manager in managers.items():
            if name != choice.rung:
                manager.close()
        rung = ladder.get(choice.rung)
        (log.info if choice.fits else log.warning)(
            f"model ladder: rung {choice.reason}; target {self.p['target_rate']:g} Hz, budget "
            f"{self.p['budget_fraction']:.0%} of the frame period")
        self.model_choice = f"rung {choice.reason}; {rung.why_file}"
        self.rung.update(model_rung=choice.rung, rung_choice=choice.reason,
                         rung_timings_ms=format_timings(choice.timings_ms), rung_budget_ms=f"{budget:.1f}",
                         rung_fits="true" if choice.fits else "false")
        return managers[choice.rung], rung.path

    def _timed(self, managers: dict, frame_wh, batch: int, ladder) -> dict:
        """Rung name -> median ms of its model call (runtime/model_ladder.time_interleaved); None, with a warning,
        for a rung whose call failed."""
        timings = {}
        for name, result in time_interleaved({n: m.backend for n, m in managers.items()}, frame_wh, batch).items():
            if isinstance(result, Exception):
                self.log.warning(f"model ladder: {name} rung {ladder.get(name).path} failed its timing, "
                                          f"skipped: {result}")
                result = None
            timings[name] = result
        return timings
