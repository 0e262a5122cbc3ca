"""Short `carla-seg bench soak` (about 30 s): seg_node stays up, answers a 20 Hz stream, memory bounded loosely.

The 5 % RSS and 10 % p50-drift targets are benchmark figures printed by the full-length command; only printed here.
"""
from __future__ import annotations

import pytest

from bench_command import run_bench


def test_soak_short_stream_is_answered_and_memory_stays_bounded(tmp_path):
    pytest.importorskip("rclpy")
    r = run_bench(["soak", "--frames", "400", "--window", "100", "--backend", "onnxruntime",
                   "--log", str(tmp_path / "seg_node.log")], tmp_path)
    assert r["alive_at_end"] and "error" not in r
    assert r["answered"] >= 0.5 * r["frames"], "seg_node answered too few frames of a 20 Hz stream"
    assert r["first"]["answered"] > 0 and r["last"]["answered"] > 0
    assert r["first"]["p50"] > 0 and r["last"]["p50"] > 0
    assert r["rss_warm_mb"] > 0 and r["rss_growth"] < 0.25, "seg_node's RSS grew by a quarter in 20 s"
    timeline = r["timeline"]
    assert [(row["first_frame"], row["end_frame"]) for row in timeline] == [(0, 100), (100, 200), (200, 300),
                                                                           (300, 400)]
    assert sum(row["answered"] for row in timeline) == r["answered"]
    assert all(row["node_cpu"] > 0 for row in timeline), "seg_node used no CPU while answering frames?"


def test_soak_of_the_echo_node_measures_the_transport_alone(tmp_path):
    pytest.importorskip("rclpy")
    r = run_bench(["soak", "--node", "echo_node", "--frames", "200", "--window", "50"], tmp_path)
    assert r["node"] == "echo_node" and r["alive_at_end"] and "error" not in r
    assert r["answered"] >= 0.9 * r["frames"], "echo_node lost a tenth of a 20 Hz stream"
    assert len(r["timeline"]) == 4 and r["node_diagnostics"] == {}
