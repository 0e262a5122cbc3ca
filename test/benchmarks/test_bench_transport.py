"""Short `carla-seg bench transport` (about 25 s): every pairing of the default and the shipped large-frame Fast DDS
configurations matches and carries 800x600 frames (the latency figures and the share of frames that come back,
which is the machine's speed, are only printed).
"""
from __future__ import annotations

import pytest

from bench_command import run_bench


def test_transport_bench_pairs_default_and_large_frames_configurations(tmp_path):
    pytest.importorskip("rclpy")
    r = run_bench(["transport", "--frames", "30"], tmp_path)
    pairs = {(p["publisher"], p["echo"]): p for p in r["pairings"]}
    assert set(pairs) == {(a, b) for a in ("default", "large_frames") for b in ("default", "large_frames")}
    for key, p in pairs.items():
        # the shipped profile must talk to Fast DDS defaults both ways: a CARLA bridge is not configured by us
        assert "error" not in p, f"{key} did not match: {p.get('error')}"
        assert 1 <= p["frames_received"] <= 30 and p["latency_ms"]["p50"] > 0, key
