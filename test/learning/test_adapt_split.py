"""The split of `carla-seg adapt`: the held-out part is one contiguous stretch at the end, after a guard band;
the prepared layout it writes is read back by datasets.find_pairs with each frame's coding."""
from __future__ import annotations

import pytest

from carla_seg_ros.datasets import Pair, find_pairs
from carla_seg_ros.learning.adapt_split import (TooFewFrames, keep_parts, ordered_pairs, split_in_time, thin,
                                                write_prepared)


def frames(n):
    return [Pair(f"f{i:03d}", None, None) for i in range(n)]


def test_held_out_is_the_end_after_a_guard_band():
    s = split_in_time(frames(100), 0.2, 10)
    assert [p.name for p in s.held_out] == [f"f{i:03d}" for i in range(80, 100)]
    assert [p.name for p in s.guard] == [f"f{i:03d}" for i in range(70, 80)]
    assert [p.name for p in s.finetune] == [f"f{i:03d}" for i in range(70)]


def test_guard_shrinks_on_short_recordings_and_too_few_frames_is_refused():
    s = split_in_time(frames(20), 0.2, 10)
    assert len(s.held_out) == 4 and len(s.finetune) >= 10 and len(s.finetune) + len(s.guard) + 4 == 20
    with pytest.raises(TooFewFrames, match="too few frames: 5"):
        split_in_time(frames(5))
    with pytest.raises(ValueError, match="--held-out"):
        split_in_time(frames(50), 1.5)


def test_thin_spreads_evenly():
    assert [p.name for p in thin(frames(10), 5)] == ["f000", "f002", "f004", "f006", "f008"]
    assert len(thin(frames(3), 5)) == 3


def test_prepared_layout_keeps_codings(tmp_path, data_dir, modern_dir):
    old = find_pairs(data_dir, "val")[:2]
    new = [p for p in find_pairs(modern_dir, "all") if p.coding == "tags29"][:2]
    write_prepared(tmp_path / "ft", {"train": [(f"u{i}_{p.name}", p) for i, p in enumerate(new + old)]})
    back = {p.name: p.coding for p in find_pairs(tmp_path / "ft", "train")}
    assert sorted(back.values()) == ["tags13", "tags13", "tags29", "tags29"]
    assert ordered_pairs([tmp_path / "ft"])[0].name.startswith("u")


def test_keep_parts_of_a_prepared_folder(data_dir):
    train, scored = keep_parts(data_dir)
    assert {p.name for p in scored} == {p.name for p in find_pairs(data_dir, "val")} and len(train) > len(scored)
