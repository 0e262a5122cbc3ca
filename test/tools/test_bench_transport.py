"""Short `carla-seg bench transport` (about 25 s): every pairing of the default and the shipped large-frame Fast DDS
configurations matches and carries 800x600 frames (the latency figures are only printed).
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


def test_transport_bench_pairs_default_and_large_frames_configurations(tmp_path):
    pytest.importorskip("rclpy")
    r = run(["transport", "--frames", "30"], tmp_path)
    pairs = {(p["publisher"], p["echo"]): p for p in r["pairings"]}
    assert set(pairs) == {(a, b) for a in ("default", "large_frames") for b in ("default", "large_frames")}
    for key, p in pairs.items():
        # the shipped profile must talk to Fast DDS defaults both ways: a CARLA bridge is not configured by us
        assert "error" not in p, f"{key} did not match: {p.get('error')}"
        assert p["frames_received"] >= 25 and p["latency_ms"]["p50"] > 0, key
