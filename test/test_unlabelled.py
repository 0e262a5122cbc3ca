"""The unlabelled frames: names, boxes.csv / manifest.csv reading, bad rows, and the held-out split."""
from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from carla_seg_ros.unlabelled import (GUARD, HELD_OUT, POOL, Box, UnlabelledFrame, frames_of, read_frame,
                                      read_unlabelled, sequence_and_number, split_unlabelled)

BOX_HEADER = ["name", "cls", "xmin", "ymin", "xmax", "ymax", "source_format"]


def make_folder(root: Path, names, boxes=None, weather=None) -> Path:
    """rgb/ with tiny images of the given names; boxes.csv / manifest.csv when given (None: no file)."""
    (root / "rgb").mkdir(parents=True)
    for name in names:
        cv2.imwrite(str(root / "rgb" / name), np.full((6, 8, 3), 90, np.uint8))
    if boxes is not None:
        with open(root / "boxes.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(BOX_HEADER)
            w.writerows(boxes)
    if weather is not None:
        with open(root / "manifest.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["name", "source_repo", "weather"])
            w.writerows([n, "x", weather.get(n, "")] for n in names)
    return root


def fake_frames(counts: dict[str, int]) -> list[UnlabelledFrame]:
    return [UnlabelledFrame(f"{seq}_{i}.jpg", Path(f"{seq}_{i}.jpg"), seq, i) for seq, n in counts.items()
            for i in range(n)]


@pytest.mark.parametrize("name, expected", [
    ("relke_000325.jpg", ("relke", 325)), ("ahvmousavi_night_57.jpg", ("ahvmousavi_night", 57)),
    ("town10_5.png", ("town10", 5)), ("frame12.jpg", ("frame", 12)), ("no_number.jpg", ("no_number", 0)),
])
def test_sequence_and_number(name, expected):
    assert sequence_and_number(name) == expected


def test_box_geometry():
    box = Box("car", 10, 20, 30, 60)
    assert box.area == 800
    assert box.grown(0.1, 100, 100) == Box("car", 8, 16, 32, 64)
    assert box.grown(1.0, 40, 70) == Box("car", 0, 0, 40, 70)              # clipped to the image
    assert Box("car", -10, 50, 90, 120).clipped(80, 100) == Box("car", 0, 50, 80, 100)
    assert Box("car", 900, 10, 950, 20).clipped(800, 600).area == 0          # entirely outside
    # Pixel centres inside: columns 10..29, rows 20..59; at half scale columns 5..14, rows 10..29.
    assert box.pixel_slices() == (slice(20, 60), slice(10, 30))
    assert box.pixel_slices(0.5, 0.5) == (slice(10, 30), slice(5, 15))
    assert Box("car", 10.4, 0, 10.6, 1).pixel_slices()[1] == slice(10, 11)  # only pixel 10's centre (10.5) inside


def test_read_folder_without_csvs(tmp_path):
    make_folder(tmp_path, ["b_3.jpg", "b_1.jpg", "a_10.png", "a_2.jpg"])
    (tmp_path / "rgb" / "notes.txt").write_text("not an image")
    frames = read_unlabelled(tmp_path)
    assert [f.name for f in frames] == ["a_2.jpg", "a_10.png", "b_1.jpg", "b_3.jpg"]   # by sequence, then number
    assert all(not f.boxes and not f.has_boxes and f.weather == "" for f in frames)
    assert read_frame(frames[0]).shape == (6, 8, 3)


def test_read_boxes_and_weather(tmp_path):
    names = ["relke_000004.jpg", "relke_000008.jpg", "ahvmousavi_night_1.jpg"]
    make_folder(tmp_path, names, boxes=[["relke_000004.jpg", "car", "1.5", "2", "7", "5.5", "yolo"],
                                        ["relke_000004.jpg", "person", "0", "0", "2", "3", "yolo"],
                                        ["gone_1.jpg", "car", "0", "0", "1", "1", "yolo"]],   # no such image: unused
                weather={"ahvmousavi_night_1.jpg": "night"})
    by_name = {f.name: f for f in read_unlabelled(tmp_path)}
    assert by_name["relke_000004.jpg"].boxes == (Box("car", 1.5, 2, 7, 5.5), Box("person", 0, 0, 2, 3))
    # A source that boxes its objects boxes all its frames: a frame without rows has no object in view.
    assert by_name["relke_000008.jpg"].has_boxes and by_name["relke_000008.jpg"].boxes == ()
    night = by_name["ahvmousavi_night_1.jpg"]
    assert not night.has_boxes and night.weather == "night" and night.source == "ahvmousavi"


@pytest.mark.parametrize("row, what", [
    (["relke_1.jpg", "car", "1", "2", "3"], "short row"),                 # DictReader fills xmax/ymax... with None
    (["relke_1.jpg", "car", "1", "2", "x", "4", "s"], "not a number"),
    (["relke_1.jpg", "car", "1", "2", "nan", "4", "s"], "nan"),
    (["relke_1.jpg", "car", "5", "2", "3", "4", "s"], "inverted"),
    (["relke_1.jpg", "", "1", "2", "3", "4", "s"], "empty class"),
])
def test_bad_box_row_is_a_clear_error(tmp_path, row, what):
    make_folder(tmp_path, ["relke_1.jpg"], boxes=[["relke_1.jpg", "car", "0", "0", "1", "1", "s"], row])
    with pytest.raises(ValueError, match=r"boxes.csv line 3: bad box row"):
        read_unlabelled(tmp_path)


def test_missing_folders_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no rgb/ folder"):
        read_unlabelled(tmp_path / "nope")
    (tmp_path / "rgb").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        read_unlabelled(tmp_path)
    (tmp_path / "rgb" / "a_1.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "manifest.csv").write_text("file,weather\na_1.jpg,day\n")
    with pytest.raises(ValueError, match="no 'name' column"):
        read_unlabelled(tmp_path)
    (tmp_path / "manifest.csv").unlink()
    with pytest.raises(ValueError, match="cannot read image"):
        read_frame(read_unlabelled(tmp_path)[0])


def check_split(frames, split, guard=2):
    """Disjoint parts covering every frame; within a sequence, pool and held-out frames are never closer than
    guard + 1 places (guard frames between them)."""
    assert set(split) == {f.name for f in frames} and set(split.values()) <= {POOL, HELD_OUT, GUARD}
    by_seq = {}
    for f in frames:
        by_seq.setdefault(f.sequence, []).append(f)
    for seq_frames in by_seq.values():
        parts = [split[f.name] for f in sorted(seq_frames, key=lambda f: f.number)]
        held = [i for i, p in enumerate(parts) if p == HELD_OUT]
        pool = [i for i, p in enumerate(parts) if p == POOL]
        assert all(abs(i - j) > guard for i in held for j in pool)


def test_split_blocks_and_guards():
    frames = fake_frames({"drive": 600, "short": 50, "tiny": 4})
    split = split_unlabelled(frames)
    check_split(frames, split)
    drive = "".join({POOL: ".", HELD_OUT: "H", GUARD: "g"}[split[f"drive_{i}.jpg"]] for i in range(600))
    # 10 blocks of 60 frames, every fifth held out: blocks 4 and 9, two guard frames on each open side.
    assert drive == "." * 238 + "gg" + "H" * 60 + "gg" + "." * 236 + "gg" + "H" * 60
    short = [split[f"short_{i}.jpg"] for i in range(50)]
    assert short == [POOL] * 38 + [GUARD] * 2 + [HELD_OUT] * 10
    # Four frames make fewer than five blocks: nothing can be held out, everything is pool.
    assert {split[f"tiny_{i}.jpg"] for i in range(4)} == {POOL}
    # The input order does not matter.
    assert split_unlabelled(frames[::-1]) == split


def test_split_of_the_real_folder(unlabelled_dir):
    frames = read_unlabelled(unlabelled_dir)
    split = split_unlabelled(frames)
    check_split(frames, split)
    assert Counter(split.values()) == {POOL: 1338, HELD_OUT: 340, GUARD: 26}
    held = frames_of(frames, split, HELD_OUT)
    # Every recording keeps about a fifth of itself out; relke's held-out blocks are spread over the drive.
    assert Counter(f.sequence for f in held) == {"relke": 300, "ahvmousavi_day": 10, "ahvmousavi_fog": 10,
                                                 "ahvmousavi_night": 10, "ahvmousavi_rain": 10}
    relke = sorted(f.number for f in held if f.sequence == "relke")
    assert relke[0] < 6000 and relke[-1] > 27000
