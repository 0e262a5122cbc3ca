"""`carla-seg bench node` runs its pipelines one after the other and reports comparable figures for each.

A short run (seg_node on ONNX Runtime + the echo baseline, 30 frames); the performance targets themselves are
printed by the benchmark, not asserted here: this 2-core machine's timings depend on what else runs.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOMAIN_ID = "54"


def test_bench_node_reports_seg_node_and_echo_baseline(data_dir, tmp_path):
    pytest.importorskip("rclpy")
    out = tmp_path / "bench.json"
    plot = tmp_path / "cdf.png"
    cmd = [sys.executable, "-m", "carla_seg_ros", "bench", "node", "--data", str(data_dir), "--frames", "30",
           "--backends", "onnxruntime", "--json", str(out), "--plot", str(plot), "--log-dir", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, ROS_DOMAIN_ID=DOMAIN_ID), capture_output=True,
                          text=True, timeout=500)
    print(proc.stdout[-4000:], proc.stderr[-2000:])
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    labels = [p["pipeline"] for p in report["pipelines"]]
    assert labels == ["seg_node [onnxruntime]", "echo_node"]
    for p in report["pipelines"]:
        assert p["frames_sent"] == 30
        assert p["frames_received"] >= 1 and p["dropped"] == 30 - p["frames_received"]
        assert 0 < p["latency_ms"]["p50"] <= p["latency_ms"]["p99"]
        assert len(p["latencies_ms"]) == p["frames_received"]
    seg = report["pipelines"][0]
    assert seg["p50_above_echo_ms"] == pytest.approx(
        seg["latency_ms"]["p50"] - report["pipelines"][1]["latency_ms"]["p50"])
    assert "p50 - echo_node p50" in proc.stdout
    assert plot.is_file() and plot.stat().st_size > 0
