"""`carla-seg bench cameras` runs both layouts (one node with N cameras, N single-camera nodes) and reports
per-camera latency and CPU for each. A short run (2 cameras, 5 frames); figures are printed, not asserted."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from carla_seg_ros.benchmarks.bench_cameras import layouts

ROOT = Path(__file__).resolve().parents[2]
DOMAIN_ID = "42"


def test_layouts_one_node_with_cameras_and_separate_nodes(tmp_path):
    lay = layouts(3, tmp_path / "m.onnx", {})
    argvs, outputs = lay["one node"]
    assert len(argvs) == 1 and "cameras:=[/bench/cam0/image,/bench/cam1/image,/bench/cam2/image]" in argvs[0]
    assert outputs == ["/seg_node/cam0/mask", "/seg_node/cam1/mask", "/seg_node/cam2/mask"]
    argvs, outputs = lay["separate"]
    assert len(argvs) == 3 and "image:=/bench/cam2/image" in argvs[2] and outputs[2] == "/seg_node_2/mask"


def test_bench_cameras_reports_both_layouts(data_dir, tmp_path):
    pytest.importorskip("rclpy")
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "carla_seg_ros", "bench", "cameras", "--data", str(data_dir), "--cameras", "2",
           "--frames", "5", "--backend", "onnxruntime", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, ROS_DOMAIN_ID=DOMAIN_ID), capture_output=True,
                          text=True, timeout=300)
    print(proc.stdout[-3000:], proc.stderr[-2000:])
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    assert [(r["config"], r["processes"]) for r in results] == [("one node", 1), ("separate", 2)]
    for r in results:
        assert [c["sent"] for c in r["per_camera"]] == [5, 5]
        assert all(c["received"] >= 1 for c in r["per_camera"]), r
        assert r["cpu_percent"] > 0 and 0 < r["p50_ms"] <= r["p99_ms"]
    assert "CPU %" in proc.stdout
