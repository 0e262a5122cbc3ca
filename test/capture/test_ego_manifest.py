"""The dataset writer's ego pose columns and depth files: written, read back exactly, and old folders kept working."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from carla_seg_ros.capture.dataset_writer import MANIFEST_FIELDS, DatasetWriter, Sample
from carla_seg_ros.datasets import find_pairs, read_manifest
from carla_seg_ros.evaluation.ego_motion import EGO_FIELDS, EgoState, depth_path, ego_from_row, read_depth

OLD_FIELDS = ("name", "stamp_ns", "stamp_s", "rgb_topic", "gt_topic", "coding", "rgb_frame_id", "gt_frame_id",
              "width", "height", "info_width", "info_height", "fx", "fy", "cx", "cy", "source")


def sample(k: int, ego=None, depth=None, h=6, w=8) -> Sample:
    rng = np.random.default_rng(k)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    tags = rng.integers(0, 29, (h, w), dtype=np.uint8)
    return Sample(k * 50_000_000, rgb, lambda: (tags, "tags29"), {"source": "test"}, ego=ego, depth=depth)


def test_pose_and_depth_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    egos = [EgoState(1.0 / 3 + k, -2.5 * k, 0.1, 0.01, -0.02, 1.2345678901234567 * k, 8.0, 0.1, 0.0, 0.0, 0.0, -0.3)
            for k in range(3)]
    depths = [rng.uniform(0, 1000, (6, 8)).astype(np.float32) for _ in range(3)]
    writer = DatasetWriter(tmp_path / "ds", block=True)
    for k in range(3):       # the depth as an array, or as a function run on the writer thread (carla --record)
        assert writer.offer(sample(k + 1, egos[k], depths[k] if k else (lambda: depths[0]))) == "queued"
    writer.close()
    pairs = find_pairs(tmp_path / "ds", "all")
    rows = read_manifest(tmp_path / "ds")
    assert len(pairs) == 3
    for k, pair in enumerate(pairs):
        assert ego_from_row(rows[pair.name]) == egos[k]                 # every float back bit for bit
        stored = read_depth(depth_path(tmp_path / "ds", pair.name))
        assert stored.dtype == np.float32 and np.array_equal(stored, depths[k])
        assert np.array_equal(np.load(tmp_path / "ds" / "depth" / f"{pair.name}.npy"), depths[k])   # plain numpy


def test_a_depth_image_of_the_wrong_size_is_rejected_not_written(tmp_path):
    writer = DatasetWriter(tmp_path / "ds", block=True)
    writer.offer(sample(1, depth=np.zeros((3, 4), np.float32)))
    writer.close()
    assert writer.counts.failed_decode == 1 and writer.counts.written == 0
    assert writer.counters.skipped == {"depth:depth_mismatch": 1}
    assert not list((tmp_path / "ds" / "rgb").iterdir())


def test_old_folders_keep_working(tmp_path):
    """A folder recorded before the ego columns: its manifest gets today's header when a writer appends to it, its
    rows keep their values and have no pose; a sample without pose or depth writes no depth folder."""
    out = tmp_path / "old"
    old = DatasetWriter(out, block=True)            # today's writer without ego/depth = the old folder's content
    old.offer(sample(1))
    old.close()
    assert not (out / "depth").exists()
    rows = list(csv.DictReader(open(out / "manifest.csv")))
    assert [ego_from_row(r) for r in rows] == [None] and all(rows[0][k] == "" for k in EGO_FIELDS)
    # Rewrite it as an old recorder wrote it: the old header, plus a column of the user's own.
    with open(out / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, OLD_FIELDS + ("note",), extrasaction="ignore")
        w.writeheader()
        w.writerow(dict(rows[0], note="mine"))
    before = rows[0]
    writer = DatasetWriter(out, block=True)
    writer.offer(sample(2, EgoState(1, 2, 3, 0, 0, 0.5)))
    writer.close()
    with open(out / "manifest.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == MANIFEST_FIELDS + ("note",)
        rows = list(reader)
    assert len(rows) == 2
    assert {k: rows[0][k] for k in OLD_FIELDS} == {k: before[k] for k in OLD_FIELDS} and rows[0]["note"] == "mine"
    assert ego_from_row(rows[0]) is None and ego_from_row(rows[1]) == EgoState(1, 2, 3, 0, 0, 0.5)
    assert rows[1]["note"] == ""
    assert [p.name for p in find_pairs(out, "all")] == sorted(r["name"] for r in rows)


def test_an_unreadable_depth_file_is_one_clear_error(tmp_path):
    bad = tmp_path / "x.npy"
    np.save(bad, np.zeros((2, 2), np.float64))
    with pytest.raises(ValueError, match=r"x\.npy is float64 \(2, 2\); expected float32"):
        read_depth(bad)
    bad.write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="cannot read depth image"):
        read_depth(bad)
