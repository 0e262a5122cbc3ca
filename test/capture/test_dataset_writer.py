"""The live pairing (stamp_pairing.StampPairer) and the dataset writer without ROS: pairing in any order, unmatched
frames, the writer's selection, its bounded queue (pairs it cannot keep up with are counted, never half-written)."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from carla_seg_ros.datasets import find_pairs, read_rgb, read_tag_ids
from carla_seg_ros.capture.dataset_writer import DatasetWriteError, DatasetWriter, Sample, frame_name, thumbnail
from carla_seg_ros.evaluation.stamp_pairing import FIRST, SECOND, StampPairer

MS = 1_000_000


def pairer(tolerance_ms=10, window_ms=200):
    pairs, unmatched = [], []
    p = StampPairer(tolerance_ms * MS, window_ms * MS, lambda a, x, b, y: pairs.append((a, x, b, y)),
                    lambda side, stamp: unmatched.append((side, stamp)))
    return p, pairs, unmatched


def test_pairs_in_any_order_nearest_within_tolerance():
    p, pairs, unmatched = pairer()
    p.add(SECOND, 100 * MS, "g100")
    p.add(FIRST, 150 * MS, "r150")        # arrives before its partner
    p.add(FIRST, 100 * MS, "r100")        # pairs with the waiting g100, not with anything else
    p.add(SECOND, 153 * MS, "g153")       # 3 ms off: within the tolerance
    p.add(SECOND, 175 * MS, "g175")       # 25 ms from r150 (taken anyway): waits
    assert pairs == [(100 * MS, "r100", 100 * MS, "g100"), (150 * MS, "r150", 153 * MS, "g153")]
    p.add(FIRST, 400 * MS, "r400")        # the stream moved 200 ms on: g175 is unmatched
    assert unmatched == [(SECOND, 175 * MS)]
    assert p.waiting(FIRST) == 1
    p.finish()
    assert unmatched == [(SECOND, 175 * MS), (FIRST, 400 * MS)]


def test_undecodable_frames_take_their_partner_but_are_not_unmatched():
    p, pairs, unmatched = pairer()
    p.add(FIRST, 0, None)
    p.add(SECOND, 0, "g0")
    p.add(SECOND, 50 * MS, None)
    p.finish()
    assert pairs == [(0, None, 0, "g0")] and unmatched == []


def test_duplicate_stamp_counts_as_unmatched():
    p, pairs, unmatched = pairer()
    p.add(FIRST, 0, "a")
    p.add(FIRST, 0, "b")
    assert unmatched == [(FIRST, 0)] and p.waiting(FIRST) == 1


def sample(stamp, rgb, tags, coding="tags23"):
    return Sample(stamp, rgb, lambda: (tags, coding), {"rgb_topic": "/cam"})


def test_writer_writes_whole_pairs_and_counts(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    tags = rng.integers(0, 23, (6, 8), dtype=np.uint8)
    w = DatasetWriter(tmp_path / "ds", every=2, block=True)
    outcomes = [w.offer(sample(k * 50 * MS, rgb, tags)) for k in range(5)]
    w.close()
    assert outcomes == ["queued", "skipped_every", "queued", "skipped_every", "queued"]
    got = find_pairs(tmp_path / "ds", "all")
    assert [p.name for p in got] == [frame_name(k * 50 * MS, "tags23") for k in (0, 2, 4)]
    assert got[0].name == "t23_0000000000_000000000" and got[0].coding == "tags23"
    assert np.array_equal(read_rgb(got[0].rgb), rgb) and np.array_equal(read_tag_ids(got[0].label), tags)
    summary = w.write_summary()
    assert (summary["written"], summary["skipped_every"], summary["paired"]) == (3, 2, 5)
    assert json.loads((tmp_path / "ds" / "record_summary.json").read_text())["written"] == 3
    assert not list((tmp_path / "ds").rglob("*.tmp"))


def test_writer_that_cannot_keep_up_counts_dropped_pairs(tmp_path):
    release = threading.Event()
    tags = np.zeros((4, 4), np.uint8)

    def slow_rgb():
        release.wait(10)
        return np.zeros((4, 4, 3), np.uint8)

    w = DatasetWriter(tmp_path / "ds", queue_size=2)
    outcomes = [w.offer(Sample(k, slow_rgb, lambda: (tags, "tags13"))) for k in range(6)]
    release.set()
    w.close()
    # one pair in the writer's hands, two in the queue, the rest dropped without waiting
    assert outcomes.count("dropped_writer") >= 3 and w.counts.dropped_writer == outcomes.count("dropped_writer")
    assert w.counts.written == outcomes.count("queued") == len(find_pairs(tmp_path / "ds", "all"))


def test_min_change_and_max_frames(tmp_path):
    base = np.full((16, 16, 3), 100, np.uint8)
    tags = np.zeros((16, 16), np.uint8)
    w = DatasetWriter(tmp_path / "ds", min_change=2.0, max_frames=2, block=True)
    frames = [base, base + 1, base + 5, base + 9]          # +1 grey level: a car standing still
    outcomes = [w.offer(sample(k, f, tags, "tags13"), thumbnail(f)) for k, f in enumerate(frames)]
    w.close()
    assert outcomes == ["queued", "skipped_still", "queued", "skipped_max_frames"]


def test_unwritable_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetWriteError, match=r"cannot write to output folder .*file/ds"):
        DatasetWriter(tmp_path / "file" / "ds")


def test_blocking_writer_waits_for_a_full_queue_without_deadlock(tmp_path):
    """bag-to-dataset and carla --record wait for the writer: many more pairs than the queue holds go through."""
    rgb, tags = np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)
    w = DatasetWriter(tmp_path / "ds", queue_size=1, block=True, threads=1)
    done = threading.Event()

    def produce():
        for k in range(40):
            w.offer(sample(k * MS, rgb, tags, "tags13"))
        done.set()

    threading.Thread(target=produce, daemon=True).start()
    assert done.wait(60), "the producer hung on the full queue"
    w.close()
    assert w.counts.written == 40 and w.counts.dropped_writer == 0
