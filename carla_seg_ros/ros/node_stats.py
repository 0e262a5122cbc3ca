"""Rolling statistics for seg_node's diagnostics: counters, rates, latency percentiles, per-key throttling.

Pure Python (no ROS, no numpy) so it is unit-testable and cheap to update from the subscription callback and the
inference thread at once: every update takes one lock. Times are plain float seconds passed in by the caller, so tests
drive them directly.
"""
from __future__ import annotations

import math
import threading
from collections import Counter, deque


def percentile(values, q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence: the smallest value with >= q % at or below."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of an empty sequence")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


class RateMeter:
    """Events per second over the last ``window_s`` seconds."""

    def __init__(self, window_s: float = 5.0):
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self.window_s = window_s
        self._times: deque[float] = deque()

    def add(self, now: float) -> None:
        self._times.append(now)
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] <= now - self.window_s:
            self._times.popleft()

    def rate(self, now: float) -> float:
        """Events in the window divided by the window (0 when nothing arrived); exact for a steady stream."""
        self._trim(now)
        return len(self._times) / self.window_s


class LatencyWindow:
    """The last ``size`` latency samples (seconds); percentiles over them."""

    def __init__(self, size: int = 500):
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self._samples: deque[float] = deque(maxlen=size)

    def add(self, seconds: float) -> None:
        self._samples.append(seconds)

    def __len__(self) -> int:
        return len(self._samples)

    def percentile(self, q: float) -> float | None:
        """None while empty."""
        return percentile(self._samples, q) if self._samples else None


# The stages of a frame's processing (receive -> publish), timed one after the other on the steady clock, so
# /diagnostics shows where the time goes: decoding and resizing to the model's input (subscription callback), the
# wait until the inference thread runs it, the model call, and the mask resize plus every output published.
STAGES = ("preprocess", "handoff", "inference", "publish")
STAGE_PERCENTILES = (50, 99)
# The snapshot's (and /diagnostics') keys for them: preprocess_p50_ms, preprocess_p99_ms, handoff_p50_ms, ...
STAGE_KEYS = tuple(f"{stage}_p{q}_ms" for stage in STAGES for q in STAGE_PERCENTILES)


class NodeStats:
    """Everything /diagnostics reports, updated from several threads."""

    def __init__(self, rate_window_s: float = 5.0, latency_window: int = 500, reject_reasons=()):
        self._lock = threading.Lock()
        self.received = 0          # messages that arrived (accepted or rejected)
        self.accepted = 0          # well-formed frames handed to the inference thread
        self.processed = 0         # frames whose outputs were published
        self.dropped = 0           # accepted frames replaced by a newer one before inference took them
        self.failed = 0            # inference or publishing errors
        self.rejected: Counter[str] = Counter({reason: 0 for reason in reject_reasons})
        self.input_rate = RateMeter(rate_window_s)
        self.output_rate = RateMeter(rate_window_s)
        self.latency_wall = LatencyWindow(latency_window)      # input stamp -> publish, wall clock
        self.latency_ros = LatencyWindow(latency_window)       # input stamp -> publish, node clock (sim time)
        self.processing = LatencyWindow(latency_window)        # receive -> publish, steady clock
        self.stages = {stage: LatencyWindow(latency_window) for stage in STAGES}   # its parts (STAGES)

    def on_received(self, now: float) -> None:
        with self._lock:
            self.received += 1
            self.input_rate.add(now)

    def on_rejected(self, reason: str) -> None:
        with self._lock:
            self.rejected[reason] += 1

    def on_accepted(self, replaced_pending: bool) -> None:
        with self._lock:
            self.accepted += 1
            if replaced_pending:
                self.dropped += 1

    def on_failed(self) -> None:
        with self._lock:
            self.failed += 1

    def on_published(self, now: float, latency_wall: float | None, latency_ros: float | None,
                     processing: float, stages: dict[str, float] | None = None) -> None:
        """``stages``: seconds per STAGES name, any subset (the pipeline reports all four)."""
        with self._lock:
            self.processed += 1
            self.output_rate.add(now)
            if latency_wall is not None:
                self.latency_wall.add(latency_wall)
            if latency_ros is not None:
                self.latency_ros.add(latency_ros)
            self.processing.add(processing)
            for stage, seconds in (stages or {}).items():
                self.stages[stage].add(seconds)

    def snapshot(self, now: float) -> dict:
        """A consistent copy of every figure; latencies in milliseconds (None while no sample)."""
        def ms(window: LatencyWindow, q: float):
            value = window.percentile(q)
            return None if value is None else 1000.0 * value

        with self._lock:
            return {
                "received": self.received,
                "accepted": self.accepted,
                "processed": self.processed,
                "dropped": self.dropped,
                "failed": self.failed,
                "rejected": sum(self.rejected.values()),
                "rejected_by_reason": dict(self.rejected),
                "input_rate_hz": self.input_rate.rate(now),
                "output_rate_hz": self.output_rate.rate(now),
                "latency_wall_p50_ms": ms(self.latency_wall, 50),
                "latency_wall_p99_ms": ms(self.latency_wall, 99),
                "latency_ros_p50_ms": ms(self.latency_ros, 50),
                "latency_ros_p99_ms": ms(self.latency_ros, 99),
                "processing_p50_ms": ms(self.processing, 50),
                "processing_p99_ms": ms(self.processing, 99),
                **{f"{stage}_p{q}_ms": ms(window, q) for stage, window in self.stages.items()
                   for q in STAGE_PERCENTILES},
            }


class KeyedThrottle:
    """At most one message per key per ``period_s``; reports how many were suppressed in between.

    rclpy's ``throttle_duration_sec`` throttles per call site, so one kind of bad frame would hide another; this
    throttles per reason instead.
    """

    def __init__(self, period_s: float = 5.0):
        self.period_s = period_s
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()
        self._lock = threading.Lock()

    def ready(self, key: str, now: float) -> int | None:
        """None if suppressed; otherwise the number of messages suppressed for ``key`` since the last one."""
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.period_s:
                self._suppressed[key] += 1
                return None
            self._last[key] = now
            return self._suppressed.pop(key, 0)
