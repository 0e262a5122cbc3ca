"""`carla-seg record` over real DDS, and `carla-seg bag-to-dataset` on the same bags: the same dataset folders.

Bags are made by `carla-seg make-bag` from the real CARLA frames: 13 tags (palette colours), 23 tags (palette)
and 29 tags (raw ids, mono8). A real publisher plays each bag's camera, CameraInfo and semantic messages over Fast
DDS on loopback to `carla-seg record` running as its own process, interleaved and out of order (the semantic
image of a frame before its camera image, two frames crossed), plus a camera frame and a semantic frame that have no
partner. Nothing depends on speed: after each group of messages the test waits for the recorder's own counts on
~/status (messages received, pairs written) before sending the next group. Every written pair must equal its
source frame pixel for pixel and tag id for tag id, the lone frames must be counted as unpaired, and
bag-to-dataset on the bag must write the very same files. Then `carla-seg evaluate` runs on a recorded folder.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 wheels (extra `ros`) are not installed")

from carla_seg_ros.datasets import find_pairs, read_rgb, read_tag_ids  # noqa: E402
from carla_seg_ros.evaluation.bag_make import main as make_bag_main, topics as bag_topics  # noqa: E402
from carla_seg_ros.capture.bag_to_dataset import main as bag_to_dataset_main  # noqa: E402
from carla_seg_ros.capture.dataset_writer import frame_name  # noqa: E402
from carla_seg_ros.ros.playback import NodeProcess  # noqa: E402

DOMAIN_ID = 43
PREFIX = f"/rectest{os.getpid()}"    # other tests share the domain: every topic of these tests lives under it
BAG = bag_topics("ego_vehicle")
RGB, INFO, GT = PREFIX + BAG["image"], PREFIX + BAG["camera_info"], PREFIX + BAG["semantic"]
STATUS = PREFIX + "/carla_seg_recorder/status"
FRAMES = 4                           # the modern set holds 4 frames of 29 tags
LONE_OFFSET_NS = 25_000_000          # half a 20 Hz tick from every frame: beyond the 10 ms tolerance

CASES = {   # name: (dataset fixture, make-bag args, recorder args)
    "tags13_palette": ("data_dir", ["--split", "test"], []),
    "tags23_palette": ("modern_dir", ["--coding", "tags23"], []),
    "tags29_ids": ("modern_dir", ["--coding", "tags29", "--raw-ids"], ["--coding", "tags29"]),
}


def dds_env() -> dict:
    return dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                PYTHONUNBUFFERED="1")


def record_argv(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "carla_seg_ros.cli", "record", "--out", str(out), "--rgb-topic", RGB,
            "--gt-topic", GT, "--camera-info-topic", INFO, "--status-period", "0.2", "--qos-depth", "50", *extra,
            "--ros-args", "-r", f"__ns:={PREFIX}"]


class StatusWatch:
    """The recorder's ~/status JSON (transient local: the latest one arrives even after a late subscribe)."""

    def __init__(self, player):
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from std_msgs.msg import String
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.latest = None
        self.player = player
        player.node.create_subscription(String, STATUS, self._cb, qos)

    def _cb(self, msg):
        self.latest = json.loads(msg.data)

    def wait(self, predicate, process: NodeProcess, what: str, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.player.executor.spin_once(timeout_sec=0.05)
            process.check()
            if self.latest is not None and predicate(self.latest):
                return self.latest
        raise AssertionError(f"timed out waiting for {what}; last status: {self.latest}\n{process.tail()}")


def stamp_of(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def lone_copy(msg, offset_ns: int):
    """The same message with its stamp moved off every frame's: a frame without a partner."""
    from rclpy.serialization import deserialize_message, serialize_message
    copy = deserialize_message(serialize_message(msg), type(msg))
    copy.header.stamp.sec, copy.header.stamp.nanosec = divmod(stamp_of(msg) + offset_ns, 10**9)
    return copy


def play_scrambled(player, watch, proc, msgs: dict) -> int:
    """Groups of messages, each acknowledged by the recorder before the next; returns the messages sent."""
    rgbs, infos, gts = msgs[BAG["image"]], msgs[BAG["camera_info"]], msgs[BAG["semantic"]]
    n = len(rgbs)
    groups = [
        [("gt", 0), ("rgb", 0)],                                    # ground truth first
        [("info", 1), ("rgb", 1), ("info", 2), ("rgb", 2), ("gt", 2), ("gt", 1)],   # two frames crossed
        [("lone_rgb", 2), ("lone_gt", 3)],                          # no partner within the tolerance
        *[[("info", i), ("gt", i), ("rgb", i)] if i % 2 else [("info", i), ("rgb", i), ("gt", i)]
          for i in range(3, n)],
    ]
    topic = {"rgb": RGB, "gt": GT, "info": INFO, "lone_rgb": RGB, "lone_gt": GT}
    # The first CameraInfo is acknowledged before any image: the manifest's K then never depends on which topic's
    # message DDS delivers first (later frames fall back to the newest CameraInfo, identical for one camera).
    player.publish(INFO, infos[0])
    watch.wait(lambda s: s["pairing"]["camera_info_messages"] >= 1, proc, "the first CameraInfo")
    sent, pairs = 0, 0
    for group in groups:
        for kind, i in group:
            msg = {"rgb": rgbs, "gt": gts, "info": infos}[kind.replace("lone_", "")][i]
            if kind.startswith("lone_"):
                msg = lone_copy(msg, LONE_OFFSET_NS)
            player.publish(topic[kind], msg)
            sent += kind != "info"
        pairs += sum(kind == "rgb" for kind, _ in group)
        watch.wait(lambda s, sent=sent, pairs=pairs: s["pairing"]["rgb_messages"] + s["pairing"]["gt_messages"]
                   == sent and s["written"] == pairs, proc, f"{sent} messages received and {pairs} pairs written")
    return sent


def assert_same_as_source(out: Path, source_pairs, stamps: list[int], coding: str) -> None:
    got = find_pairs(out, "all")
    assert [p.name for p in got] == [frame_name(s, coding) for s in stamps]
    assert {p.coding for p in got} == {coding}
    for g, s in zip(got, source_pairs):
        assert np.array_equal(read_rgb(g.rgb), read_rgb(s.rgb)), g.name
        assert np.array_equal(read_tag_ids(g.label), read_tag_ids(s.label)), g.name


def same_folders(a: Path, b: Path) -> None:
    for sub in ("rgb", "label"):
        names = sorted(p.name for p in (a / sub).iterdir())
        assert names == sorted(p.name for p in (b / sub).iterdir())
        for name in names:
            assert (a / sub / name).read_bytes() == (b / sub / name).read_bytes(), f"{sub}/{name}"
    rows = [sorted(({k: v for k, v in r.items() if k != "source"} for r in csv.DictReader(open(d / "manifest.csv"))),
                   key=lambda r: r["name"]) for d in (a, b)]
    assert rows[0] == rows[1]


@pytest.mark.parametrize("case", list(CASES))
def test_record_equals_source_and_bag_to_dataset(case, tmp_path, request):
    from carla_seg_ros.ros.playback.bag_player import BagPlayer, read_bag
    fixture, make_args, rec_args = CASES[case]
    data = request.getfixturevalue(fixture)
    bag = tmp_path / "bag"
    assert make_bag_main(["--data", str(data), "--out", str(bag), "--limit", str(FRAMES), *make_args]) == 0
    coding = [a for a in make_args if a.startswith("tags")] or ["tags13"]
    source = [p for p in find_pairs(data, "test") if p.coding == coding[0]][:FRAMES]
    msgs = read_bag(bag, [BAG["image"], BAG["camera_info"], BAG["semantic"]])
    stamps = [stamp_of(m) for m in msgs[BAG["image"]]]

    out = tmp_path / "recorded"
    with NodeProcess("carla-seg record", record_argv(out, *rec_args), tmp_path / "record.log", env=dds_env()) as proc, \
            BagPlayer(domain_id=DOMAIN_ID, clock_topic=PREFIX + "/clock", depth=50) as player:
        for topic, msg in ((RGB, msgs[BAG["image"]][0]), (GT, msgs[BAG["semantic"]][0]),
                           (INFO, msgs[BAG["camera_info"]][0])):
            player.publisher(topic, type(msg))
        watch = StatusWatch(player)
        deadline = time.monotonic() + 60
        while any(player.pubs[t].get_subscription_count() == 0 for t in (RGB, GT, INFO)):
            proc.check()
            assert time.monotonic() < deadline, f"recorder never subscribed\n{proc.tail()}"
            time.sleep(0.05)
        sent = play_scrambled(player, watch, proc, msgs)
        assert proc.stop() == 0, proc.tail()      # SIGINT: flush, count the lone frames, write the summary
        log = proc.tail()

    summary = json.loads((out / "record_summary.json").read_text())
    assert summary["pairing"]["rgb_messages"] + summary["pairing"]["gt_messages"] == sent
    assert summary["written"] == summary["paired"] == FRAMES
    assert summary["unpaired"] == {"rgb": 1, "gt": 1}
    assert summary["dropped_writer"] == 0 and summary["skipped"] == {} and summary["error"] is None
    assert summary["codings"] == {coding[0]: FRAMES}
    assert f"paired {FRAMES}, unpaired 2 (rgb 1, gt 1)" in log and f"written {FRAMES}" in log
    assert_same_as_source(out, source, stamps, coding[0])
    rows = list(csv.DictReader(open(out / "manifest.csv")))
    assert sorted(int(r["stamp_ns"]) for r in rows) == stamps     # written by two threads: any order
    info = msgs[BAG["camera_info"]][0]
    for row in rows:
        assert (row["rgb_topic"], row["gt_topic"], row["coding"]) == (RGB, GT, coding[0])
        assert (row["rgb_frame_id"], row["gt_frame_id"]) == ("ego_vehicle/rgb_front",
                                                             "ego_vehicle/semantic_segmentation_front")
        assert float(row["fx"]) == pytest.approx(info.k[0]) and int(row["info_width"]) == info.width

    converted = tmp_path / "converted"
    assert bag_to_dataset_main([str(bag), "--out", str(converted), "--rgb-topic", BAG["image"],
                                "--gt-topic", BAG["semantic"], *rec_args]) == 0
    rows = list(csv.DictReader(open(converted / "manifest.csv")))
    for row in rows:        # the bag's topics, not the namespaced live ones
        row["rgb_topic"], row["gt_topic"] = RGB, GT
    with open(converted / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    same_folders(out, converted)

    if case == "tags23_palette":      # `carla-seg evaluate` reads a recorded folder as it is
        result = tmp_path / "eval.json"
        proc = subprocess.run([sys.executable, "-m", "carla_seg_ros.cli", "evaluate", "--data", str(out),
                               "--json", str(result), "--samples", "0"], capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        got = json.loads(result.read_text())
        assert len(got["per_frame"]) == FRAMES and 0 < got["metrics"]["pixel_accuracy"] <= 1


def test_record_unwritable_folder_is_one_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = blocker / "dataset"
    proc = subprocess.run(record_argv(out), capture_output=True, text=True, timeout=120, env=dds_env())
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(out) in lines[0] and "cannot write to output folder" in lines[0], proc.stderr


@pytest.fixture
def bag13(tmp_path, data_dir) -> Path:
    bag = tmp_path / "bag13"
    assert make_bag_main(["--data", str(data_dir), "--out", str(bag), "--limit", "4"]) == 0
    return bag


def test_bag_to_dataset_bad_bags_and_folders(bag13, tmp_path, capsys):
    truncated = tmp_path / "truncated"
    shutil.copytree(bag13, truncated)
    data_file = next(p for p in truncated.iterdir() if p.suffix == ".mcap")
    os.truncate(data_file, data_file.stat().st_size // 2)
    assert bag_to_dataset_main([str(truncated), "--out", str(tmp_path / "o1")]) == 2
    err = capsys.readouterr().err.strip()
    assert "truncated" in err and str(truncated) in err
    assert bag_to_dataset_main([str(tmp_path / "missing"), "--out", str(tmp_path / "o2")]) == 2
    assert "does not exist" in capsys.readouterr().err
    garbage = tmp_path / "garbage.mcap"
    garbage.write_bytes(b"\x89MCAP0\r\n" + os.urandom(300))
    assert bag_to_dataset_main([str(garbage), "--out", str(tmp_path / "o3")]) == 2
    assert str(garbage) in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert bag_to_dataset_main([str(bag13), "--out", str(blocker / "ds")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write to output folder" in err[0] and str(blocker / "ds") in err[0]
    assert bag_to_dataset_main([str(bag13), "--out", str(tmp_path / "o4"), "--gt-topic", "/nope"]) == 2
    assert "'/nope' is not in the bag" in capsys.readouterr().err
    assert bag_to_dataset_main([str(bag13), "--out", str(tmp_path / "o5"), "--gt-format", "ids"]) == 2
    assert "give --coding" in capsys.readouterr().err


def test_bag_to_dataset_every_max_frames_and_min_change(bag13, tmp_path, capsys):
    out = tmp_path / "every"
    assert bag_to_dataset_main([str(bag13), "--out", str(out), "--every", "2"]) == 0
    s = json.loads((out / "record_summary.json").read_text())
    assert (s["paired"], s["written"], s["skipped_every"]) == (4, 2, 2)
    out = tmp_path / "max"
    assert bag_to_dataset_main([str(bag13), "--out", str(out), "--max-frames", "3"]) == 0
    assert len(list((out / "rgb").glob("*.png"))) == 3
    out = tmp_path / "still"      # every frame is a different scene: nothing is still at 1 grey level
    assert bag_to_dataset_main([str(bag13), "--out", str(out), "--min-change", "1"]) == 0
    assert json.loads((out / "record_summary.json").read_text())["written"] == 4
    out = tmp_path / "still_all"  # ... but all are within 255 grey levels of the first
    assert bag_to_dataset_main([str(bag13), "--out", str(out), "--min-change", "255"]) == 0
    s = json.loads((out / "record_summary.json").read_text())
    assert (s["written"], s["skipped_still"]) == (1, 3)


def test_bag_to_dataset_compressed_images(tmp_path, modern_dir):
    """CompressedImage (png) camera and raw-id ground truth, as image_transport's compressed plugin records them."""
    import cv2
    from rosbags.rosbag2 import StoragePlugin, Writer

    from carla_seg_ros.evaluation.bag_make import MessageFactory, typestore
    store = typestore()
    make = MessageFactory(store)
    pairs = [p for p in find_pairs(modern_dir, "all") if p.coding == "tags29"][:3]
    bag = tmp_path / "compressed"
    Compressed = store.types["sensor_msgs/msg/CompressedImage"]
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conns = [w.add_connection(t, "sensor_msgs/msg/CompressedImage", typestore=store)
                 for t in ("/cam/image/compressed", "/sem/image/compressed")]
        for i, pair in enumerate(pairs):
            ns = 10**9 + i * 50_000_000
            for conn, img, fmt in ((conns[0], cv2.imread(str(pair.rgb)), "bgr8; png compressed bgr8"),
                                   (conns[1], read_tag_ids(pair.label), "mono8; png compressed mono8")):
                data = np.frombuffer(cv2.imencode(".png", img)[1].tobytes(), np.uint8)
                w.write(conn, ns, store.serialize_cdr(Compressed(header=make.header(ns, "f"), format=fmt, data=data),
                                                      "sensor_msgs/msg/CompressedImage"))
    out = tmp_path / "ds"
    assert bag_to_dataset_main([str(bag), "--out", str(out), "--rgb-topic", "/cam/image/compressed",
                                "--gt-topic", "/sem/image/compressed", "--coding", "tags29"]) == 0
    got = find_pairs(out, "all")
    assert len(got) == 3 and {p.coding for p in got} == {"tags29"}
    for g, s in zip(got, pairs):
        assert np.array_equal(read_rgb(g.rgb), read_rgb(s.rgb))
        assert np.array_equal(read_tag_ids(g.label), read_tag_ids(s.label))


def test_full_disk_is_one_error(bag13, tmp_path, capsys):
    """A 200 kB tmpfs fills after a frame or two: one error naming the folder, no half-written pair."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        out = mount / "ds"
        assert bag_to_dataset_main([str(bag13), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "cannot write to output folder" in err and str(out) in err and "No space left" in err
        rgb = {p.name for p in (out / "rgb").iterdir()}
        assert not [n for n in rgb if not n.endswith(".png")], rgb           # no temp file left behind
        listed = [r["name"] + ".png" for r in csv.DictReader(open(out / "manifest.csv"))]
        assert set(listed) <= rgb and all((out / "label" / n).is_file() for n in rgb)
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_record_full_disk_stops_with_one_error(bag13, tmp_path):
    """Live: the output folder fills up while recording; the recorder stops by itself with exit code 2 and one
    line naming the folder, and what it wrote is whole pairs only."""
    from carla_seg_ros.ros.playback.bag_player import BagPlayer, read_bag
    mount = tmp_path / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        out = mount / "ds"
        msgs = read_bag(bag13, [BAG["image"], BAG["semantic"]])
        with NodeProcess("carla-seg record", record_argv(out), tmp_path / "record.log", env=dds_env()) as proc, \
                BagPlayer(domain_id=DOMAIN_ID, clock_topic=PREFIX + "/clock", depth=50) as player:
            for topic, msg in ((RGB, msgs[BAG["image"]][0]), (GT, msgs[BAG["semantic"]][0])):
                player.publisher(topic, type(msg))
            deadline = time.monotonic() + 60
            while any(player.pubs[t].get_subscription_count() == 0 for t in (RGB, GT)):
                proc.check()
                assert time.monotonic() < deadline, f"recorder never subscribed\n{proc.tail()}"
                time.sleep(0.05)
            k = 0
            while proc.alive and time.monotonic() < deadline:      # the same pairs again under new stamps
                i = k % len(msgs[BAG["image"]])
                for topic, msg in ((RGB, msgs[BAG["image"]][i]), (GT, msgs[BAG["semantic"]][i])):
                    player.publish(topic, lone_copy(msg, k * 10**9))
                k += 1
                time.sleep(0.2)
            assert not proc.alive, f"recorder still running after {k} pairs\n{proc.tail()}"
            assert proc.proc.returncode == 2, proc.tail()
            log = proc.tail()
        error = [ln for ln in log.splitlines() if "cannot write to output folder" in ln]
        assert len(error) == 1 and str(out) in error[0] and "No space left" in error[0], log
        listed = [r["name"] + ".png" for r in csv.DictReader(open(out / "manifest.csv"))]
        rgb = {p.name for p in (out / "rgb").iterdir()}
        assert set(listed) <= rgb and all(n.endswith(".png") and (out / "label" / n).is_file() for n in rgb)
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_bag_to_dataset_sqlite3_equals_mcap(bag13, tmp_path, data_dir):
    db3 = tmp_path / "bag13_db3"
    assert make_bag_main(["--data", str(data_dir), "--out", str(db3), "--limit", "4", "--storage", "sqlite3"]) == 0
    outs = [tmp_path / "from_mcap", tmp_path / "from_db3"]
    for bag, out in zip((bag13, db3), outs):
        assert bag_to_dataset_main([str(bag), "--out", str(out), "--queue-size", "1"]) == 0
    same_folders(*outs)
    assert len(find_pairs(outs[0], "all")) == 4
