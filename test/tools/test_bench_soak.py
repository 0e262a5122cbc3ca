"""Short `carla-seg bench soak` (about 30 s): seg_node stays up, answers a 20 Hz stream, memory bounded loosely.

The 5 % RSS and 10 % p50-drift targets are benchmark figures printed by the full-length command; only printed here.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOMAIN_ID = "44"


def run(args: list[str], tmp_path: Path, timeout: float = 240) -> dict:
    out = tmp_path / "figures.json"
    env = dict(os.environ, ROS_DOMAIN_ID=DOMAIN_ID, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    proc = subprocess.run([sys.executable, "-m", "carla_seg_ros", "bench", *args, "--json", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)
    print(proc.stdout[-3000:], proc.stderr[-2000:])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_soak_short_stream_is_answered_and_memory_stays_bounded(tmp_path):
    pytest.importorskip("rclpy")
    r = run(["soak", "--frames", "400", "--window", "100", "--backend", "onnxruntime",
             "--log", str(tmp_path / "seg_node.log")], tmp_path)
    assert r["alive_at_end"] and "error" not in r
    assert r["answered"] >= 0.5 * r["frames"], "seg_node answered too few frames of a 20 Hz stream"
    assert r["first"]["answered"] > 0 and r["last"]["answered"] > 0
    assert r["first"]["p50"] > 0 and r["last"]["p50"] > 0
    assert r["rss_warm_mb"] > 0 and r["rss_growth"] < 0.25, "seg_node's RSS grew by a quarter in 20 s"
