"""`carla-seg bench map` end to end on a short drive: its figures, CPU line and picture (no speed is asserted:
the figures are compared in the same run, on whatever machine runs it)."""
from __future__ import annotations

from bench_command import run_bench

STAGES = ("grid", "evidence", "fuse", "points_depth", "points_ground", "publish", "fusion_plus_points",
          "fusion_plus_ground_points")


def test_bench_map_prints_every_stage_beside_the_per_frame_grid(tmp_path):
    picture = tmp_path / "map.png"
    figures = run_bench(["map", "--steps", "8", "--repeats", "1", "--depth-frames", "2", "--mask", "192x144",
                         "--image", "400x300", "--cameras", "2", "--picture", str(picture)], tmp_path)
    stats = figures["stats"]
    assert set(STAGES) <= set(stats)
    for stage in ("grid", "evidence", "fuse", "points_depth", "points_ground", "fusion_plus_points"):
        assert stats[stage]["samples"] == 16 and stats[stage]["cpu_p50_ms"] > 0, stage   # 8 steps x 2 cameras
    assert stats["publish"]["samples"] == 2                 # every 4th step
    assert figures["cpu"]["model"] is not None
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
