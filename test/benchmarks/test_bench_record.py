"""Short `carla-seg bench record` (about 25 s): both receivers get the 800x600 pairs, the recorder writes them and
the figures the benchmark prints are all there (the skip share itself depends on the machine and is only printed)."""
from __future__ import annotations

import pytest

from bench_command import run_bench


def test_record_bench_runs_both_receivers(tmp_path, data_dir):
    pytest.importorskip("rclpy")
    r = run_bench(["record", "--frames", "20", "--warmup", "5", "--publisher-dds", "large_frames",
                   "--data", str(data_dir)], tmp_path)
    assert r["size"] == "800x600" and r["cpu"] and r["publisher_dds"] == "large_frames"
    assert r["plain"]["sent"] == r["record"]["sent"] == 20
    assert r["plain"]["received_pairs"] >= 10 and r["record"]["written"] >= 10
    assert r["record"]["skipped"] == 20 - r["record"]["written"]
    assert r["record"]["png_bytes"] > 0 and "skipped_share" in r["record"]
