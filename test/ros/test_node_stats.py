"""Rolling statistics behind seg_node's /diagnostics (carla_seg_ros.ros.node_stats), driven with explicit times."""
from __future__ import annotations

import threading

import pytest

from carla_seg_ros.ros.node_stats import STAGES, KeyedThrottle, LatencyWindow, NodeStats, RateMeter, percentile


def test_percentile_nearest_rank():
    values = list(range(1, 101))            # 1..100
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0) == 1
    assert percentile([7.0], 99) == 7.0
    assert percentile([3, 1, 2], 50) == 2   # unsorted input
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1], 101)


def test_rate_meter_steady_stream_and_silence():
    meter = RateMeter(window_s=2.0)
    for i in range(100):                    # 20 Hz for 5 s
        meter.add(i * 0.05)
    assert meter.rate(4.95) == pytest.approx(20.0)
    assert meter.rate(100.0) == 0.0         # nothing in the last 2 s
    with pytest.raises(ValueError):
        RateMeter(0)


def test_latency_window_keeps_only_the_newest_samples():
    window = LatencyWindow(size=3)
    assert window.percentile(50) is None
    for v in (10.0, 1.0, 2.0, 3.0):
        window.add(v)
    assert len(window) == 3
    assert window.percentile(99) == 3.0     # the old 10.0 is gone


def test_node_stats_counts_and_snapshot():
    stats = NodeStats(rate_window_s=1.0, latency_window=100, reject_reasons=("zero_size", "big_endian"))
    t = 0.0
    for i in range(20):
        t = i * 0.05
        stats.on_received(t)
        stats.on_accepted(replaced_pending=(i % 4 == 3))
        if i % 4 != 3:
            stats.on_published(t + 0.01, latency_wall=0.020 + i * 0.001, latency_ros=None, processing=0.010)
    stats.on_received(t)
    stats.on_rejected("zero_size")
    stats.on_rejected("unknown_encoding")
    stats.on_failed()
    snap = stats.snapshot(t + 0.01)
    assert snap["received"] == 21 and snap["accepted"] == 20 and snap["dropped"] == 5
    assert snap["processed"] == 15 and snap["failed"] == 1 and snap["rejected"] == 2
    assert snap["rejected_by_reason"] == {"zero_size": 1, "big_endian": 0, "unknown_encoding": 1}
    assert snap["input_rate_hz"] == pytest.approx(21.0)   # 20 frames + the rejected one in the last second
    assert snap["latency_ros_p50_ms"] is None
    assert snap["latency_wall_p50_ms"] == pytest.approx(29.0)
    assert snap["latency_wall_p99_ms"] == pytest.approx(38.0)
    assert snap["processing_p99_ms"] == pytest.approx(10.0)
    assert all(snap[f"{stage}_p50_ms"] is None for stage in STAGES)      # no stage times reported here


def test_node_stats_stage_percentiles():
    stats = NodeStats(latency_window=100)
    for i in range(10):
        stats.on_published(float(i), latency_wall=None, latency_ros=None, processing=0.030,
                           stages={"preprocess": 0.002, "handoff": 0.0001, "inference": 0.010 + 0.001 * i,
                                   "publish": 0.003})
    snap = stats.snapshot(10.0)
    assert snap["preprocess_p50_ms"] == pytest.approx(2.0) and snap["publish_p99_ms"] == pytest.approx(3.0)
    assert snap["inference_p50_ms"] == pytest.approx(14.0) and snap["inference_p99_ms"] == pytest.approx(19.0)


def test_node_stats_is_thread_safe():
    stats = NodeStats()

    def hammer():
        for i in range(5000):
            stats.on_received(float(i))
            stats.on_accepted(replaced_pending=True)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    snap = stats.snapshot(5000.0)
    assert snap["received"] == snap["accepted"] == snap["dropped"] == 20000


def test_keyed_throttle_per_key_with_suppressed_count():
    throttle = KeyedThrottle(period_s=5.0)
    assert throttle.ready("zero_size", 0.0) == 0
    assert throttle.ready("zero_size", 1.0) is None
    assert throttle.ready("zero_size", 2.0) is None
    assert throttle.ready("big_endian", 2.0) == 0      # another reason is not hidden by the first
    assert throttle.ready("zero_size", 5.0) == 2       # two were suppressed in between
    assert throttle.ready("zero_size", 6.0) is None
