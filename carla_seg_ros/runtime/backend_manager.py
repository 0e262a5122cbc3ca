"""Owns the node's inference backend: creation, fallback and (with TensorRT) the switch from a CPU backend to an
engine that finishes building in the background.

The node reads ``manager.backend`` for every frame; everything about which runtime that is lives here.

Backend selection (the ``backend`` parameter):

* ``auto``: TensorRT when it is importable and a GPU is present, else the fastest CPU runtime
  (``backends.AUTO_CPU_ORDER``: openvino, onnxruntime, torch).
* ``tensorrt``: TensorRT; without TensorRT or a GPU this is an error, or, with ``allow_fallback``, a logged fallback
  to the CPU order.
* any other name (``onnxruntime``, ``openvino``, ``torch``, ``torch_cuda``): exactly that runtime; if it cannot load
  it is an error, or a logged fallback to the CPU order with ``allow_fallback``.

Background build (``background_build``, default on): when TensorRT is to be used (``auto`` or ``tensorrt`` on a
machine where TensorRT and a GPU are present) and no valid cached engine exists for this model, TensorRT version,
GPU, precision and shape, building one takes minutes. Instead of blocking, the manager starts with the fastest CPU
runtime, builds the engine in a background thread and then switches ``backend`` to TensorRT in one assignment
(a frame in flight finishes on the backend it started with), logging the switch. If the build fails the node
stays on the CPU runtime and says so in the log and in ``status``. With ``background_build`` off the build happens
in the constructor (the node starts publishing only once the engine is ready).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from carla_seg_ros.runtime.backends import AUTO_CPU_ORDER, Backend, BackendError, create_backend, tensorrt_available

log = logging.getLogger(__name__)


@dataclass
class ManagerStatus:
    """Diagnostics: which backend serves frames and what the background build is doing."""
    requested: str
    active: str
    state: str = "ready"             # ready | building | build_failed
    detail: str = ""                 # why building / why the build failed / which engine
    switches: list = field(default_factory=list)   # (from, to, seconds after start)

    def as_dict(self) -> dict:
        return {"requested": self.requested, "active": self.active, "state": self.state, "detail": self.detail}


class BackendManager:
    def __init__(self, backend: str, model_path: str | Path, allow_fallback: bool = False,
                 background_build: bool = True, threads: int = 0, log_info: Callable[[str], None] = log.info,
                 engine_options: dict | None = None, log_warning: Callable[[str], None] | None = None):
        """Load ``backend`` for ``model_path``; raises BackendError, FileNotFoundError or ValueError on failure.

        ``engine_options``: TensorRT engine settings (trt_builder.EngineOptions fields: precision, max_batch,
        cache_dir...); ignored by the other backends.
        """
        self.requested = backend
        self.model_path = Path(model_path)
        self.allow_fallback = allow_fallback
        self.background_build = background_build
        self.threads = threads
        self.engine_options = dict(engine_options or {})
        self._log = log_info
        self._warn = log_warning or log_info
        self._started = time.monotonic()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._ready.set()
        self.status = ManagerStatus(backend, active="")

        wants_trt = backend == "tensorrt" or (backend == "auto" and tensorrt_available())
        if wants_trt and tensorrt_available():
            self._start_tensorrt()
        else:  # includes `tensorrt` without TensorRT/GPU: the clear error, or the logged fallback
            self._backend = self._create(backend)
        with self._lock:
            if self.status.state == "ready":
                self.status.active = self._backend.name
                self.status.detail = self._backend.description
        self._log(f"backend {self._backend.name} loaded for {self.model_path}")

    @property
    def backend(self) -> Backend:
        return self._backend

    def _create(self, name: str) -> Backend:
        if name != "tensorrt" or not self.engine_options:
            return create_backend(name, self.model_path, allow_fallback=self.allow_fallback, threads=self.threads)
        # Engine options only mean something to TensorRT: fall back by hand instead of passing them on.
        try:
            return create_backend(name, self.model_path, threads=self.threads, **self.engine_options)
        except BackendError as exc:
            if not self.allow_fallback:
                raise
            self._warn(f"backend tensorrt unavailable ({exc}); falling back to the CPU runtimes")
            return self._cpu_backend()

    def _cpu_backend(self) -> Backend:
        return create_backend(AUTO_CPU_ORDER[0], self.model_path, allow_fallback=True, threads=self.threads)

    def _start_tensorrt(self) -> None:
        from carla_seg_ros.runtime.tensorrt.engine_builder import EngineOptions, cached_engine_reason
        try:
            reason = cached_engine_reason(self.model_path, EngineOptions.from_mapping(self.engine_options))
        except (BackendError, OSError, ValueError) as exc:  # bad engine options, no calibration data...
            if self.requested != "auto" and not self.allow_fallback:
                raise
            self._warn(f"TensorRT engine unusable ({exc}); using the CPU runtimes")
            self._backend = self._cpu_backend()
            return
        if reason is None or not self.background_build:
            # A valid engine loads in about a second; without background building we wait for the build.
            self._backend = self._create("tensorrt")
            return
        self._backend = self._cpu_backend()
        self.status.active = self._backend.name
        self._log(f"publishing with {self._backend.name} while the TensorRT engine builds in the background: "
                  f"{reason}")
        from carla_seg_ros.runtime.backends.tensorrt_backend import TensorRTBackend
        options = dict(self.engine_options)
        self.switch_in_background(
            lambda: TensorRTBackend(self.model_path, threads=self.threads, log_info=self._log, **options), reason)

    def switch_in_background(self, factory: Callable[[], Backend], reason: str = "") -> None:
        """Build a backend with ``factory`` in a thread and make it ``backend`` when it is ready.

        The swap is one attribute assignment: a frame already in flight completes on the old backend. A failing
        factory leaves the current backend in place and records the error in ``status``.
        """
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("a background backend build is already running")
        self._ready.clear()
        self.status.state = "building"
        self.status.detail = f"background build: {reason}" if reason else "background build"

        def run():
            start = time.monotonic()
            try:
                new = factory()
            except Exception as exc:  # noqa: BLE001 - whatever failed, the node keeps its current backend
                self._fail(exc)
                return
            with self._lock:
                if self._closed.is_set():
                    self._ready.set()
                    return
                old = self._backend
                self._backend = new
                self.status.active = new.name
                self.status.state = "ready"
                self.status.detail = getattr(new, "description", new.name)
                self.status.switches.append((old.name, new.name, round(time.monotonic() - self._started, 3)))
            self._log(f"switched backend {old.name} -> {new.name} after {time.monotonic() - start:.1f} s "
                      f"of background build")
            self._ready.set()

        self._thread = threading.Thread(target=run, name="backend-build", daemon=True)
        self._thread.start()

    def _fail(self, exc: Exception) -> None:
        with self._lock:
            self.status.state = "build_failed"
            self.status.detail = f"{type(exc).__name__}: {exc}"
        self._warn(f"background backend build failed, staying on {self._backend.name}: {exc}")
        self._ready.set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until no background build is pending (done, failed or closed); False on timeout."""
        return self._ready.wait(timeout)

    def close(self) -> None:
        """Stop switching: a build still running finishes in its daemon thread and is discarded."""
        self._closed.set()
