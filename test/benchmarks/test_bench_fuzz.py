"""Short `carla-seg bench fuzz` (about 25 s): seg_node survives malformed Images of every kind, keeps answering
valid frames and counts every message it took under its rejection reason; memory bounded loosely (the 5 % target is
the full-length command's printed figure).
"""
from __future__ import annotations

import pytest

from bench_command import run_bench


def test_fuzz_node_survives_and_counts_every_malformed_message(tmp_path):
    pytest.importorskip("rclpy")
    from carla_seg_ros.image_codec import REJECT_REASONS
    r = run_bench(["fuzz", "--malformed", "2500", "--warmup", "500", "--rate", "200", "--backend", "onnxruntime",
                   "--log", str(tmp_path / "seg_node.log")], tmp_path)
    assert r["alive_at_end"] and "error" not in r
    assert r["valid_answered"] >= 1, "seg_node stopped answering valid frames among the malformed ones"
    assert set(r["sent_by_reason"]) == set(REJECT_REASONS), "every rejection reason must be exercised"
    assert r["all_counted"], "received != rejected + processed + dropped + failed"
    for reason in REJECT_REASONS:
        assert 0 < r["counted_by_reason"][reason] <= r["sent_by_reason"][reason], reason
    assert int(r["node_diagnostics"]["frames_failed"]) == 0
    assert r["rss_growth"] < 0.25, "seg_node's RSS grew by a quarter after the warm-up"
