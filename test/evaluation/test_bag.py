"""make-bag / bag-eval on real rosbag2 files (mcap and sqlite3, written and read with rosbags) and real ONNX Runtime."""
from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer

from carla_seg_ros.runtime.backends import create_backend
from carla_seg_ros.evaluation.bag_eval import main as bag_eval_main
from carla_seg_ros.evaluation.bag_reading import pair_stamps
from carla_seg_ros.evaluation.bag_make import MessageFactory, main as make_bag_main, topics, typestore
from carla_seg_ros.classes import load_coding
from carla_seg_ros.datasets import find_pairs, read_rgb, read_tag_ids
from carla_seg_ros.evaluation.evaluate import main as evaluate_main
from carla_seg_ros.runtime.inference import Segmenter

FRAMES = 6
BATCH = "3"
T = topics("ego_vehicle")


def read_bag(path):
    """{topic: [(log_ns, msg), ...]} of a bag, deserialised with rosbags."""
    out = {}
    with AnyReader([path]) as reader:
        for conn, log_ns, raw in reader.messages():
            out.setdefault(conn.topic, []).append((log_ns, reader.deserialize(raw, conn.msgtype)))
        types = {c.topic: c.msgtype for c in reader.connections}
    return out, types


def image_array(msg) -> np.ndarray:
    channels = msg.step // msg.width
    return np.asarray(msg.data).reshape(msg.height, msg.width, channels)


def stamp(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


@pytest.fixture(scope="module")
def bags(tmp_path_factory, data_dir):
    """Palette bags in both storage formats and a raw-id bag, from the first FRAMES test frames."""
    root = tmp_path_factory.mktemp("bags")
    made = {}
    for name, extra in (("mcap", ["--storage", "mcap"]), ("sqlite3", ["--storage", "sqlite3"]),
                        ("ids", ["--raw-ids"])):
        made[name] = root / name
        assert make_bag_main(["--data", str(data_dir), "--split", "test", "--limit", str(FRAMES),
                              "--out", str(made[name]), *extra]) == 0
    return made


@pytest.fixture(scope="module")
def folder_eval(tmp_path_factory, data_dir, model_path):
    out = tmp_path_factory.mktemp("eval") / "test.json"
    assert evaluate_main(["--data", str(data_dir), "--split", "test", "--limit", str(FRAMES), "--batch-size", BATCH,
                          "--model", str(model_path), "--json", str(out)]) == 0
    return json.loads(out.read_text())


def run_bag_eval(bag, out, *args) -> dict:
    rc = bag_eval_main([str(bag), "--out", str(out), "--batch-size", BATCH, *args])
    assert rc == 0
    return json.loads((out / "metrics.json").read_text())


def assert_same_metrics(a: dict, b: dict):
    """Exact equality of the confusion matrix and every metric (only measured timings may differ)."""
    assert a["confusion_matrix"] == b["confusion_matrix"]
    ma, mb = json.loads(json.dumps(a["metrics"])), json.loads(json.dumps(b["metrics"]))
    for m in (ma, mb):
        del m["lyft"]["fps"], m["lyft"]["score"]
    assert ma == mb
    assert [f["pixel_accuracy"] for f in a["per_frame"]] == [f["pixel_accuracy"] for f in b["per_frame"]]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_make_bag_round_trip(bags, data_dir, storage):
    bag = bags[storage]
    assert any(p.suffix == (".mcap" if storage == "mcap" else ".db3") for p in bag.iterdir())
    msgs, types = read_bag(bag)
    assert types == {T["image"]: "sensor_msgs/msg/Image", T["camera_info"]: "sensor_msgs/msg/CameraInfo",
                     T["semantic"]: "sensor_msgs/msg/Image", T["clock"]: "rosgraph_msgs/msg/Clock"}
    assert all(len(v) == FRAMES for v in msgs.values())
    pairs = find_pairs(data_dir, "test")[:FRAMES]
    palette = load_coding("tags13")
    for i, pair in enumerate(pairs):
        ns = 10**9 + i * 50_000_000                      # --start-time 1 s, 20 Hz
        (log_img, img), (_, sem), (_, info), (_, clock) = (msgs[T[k]][i] for k in
                                                           ("image", "semantic", "camera_info", "clock"))
        assert log_img == ns and stamp(img) == stamp(sem) == stamp(info) == ns
        assert clock.clock.sec * 10**9 + clock.clock.nanosec == ns
        assert img.header.frame_id == info.header.frame_id == "ego_vehicle/rgb_front"
        assert sem.header.frame_id == "ego_vehicle/semantic_segmentation_front"
        assert img.encoding == sem.encoding == "bgra8"
        bgra = image_array(img)
        assert np.array_equal(bgra[..., 2::-1], read_rgb(pair.rgb)) and (bgra[..., 3] == 255).all()
        ids, unknown = palette.colors_to_ids(np.ascontiguousarray(image_array(sem)[..., 2::-1]))
        assert unknown == 0 and np.array_equal(ids, read_tag_ids(pair.label))
        assert (info.width, info.height, info.distortion_model) == (400, 300, "plumb_bob")
        fx = 400 / (2 * math.tan(math.radians(45)))
        assert np.allclose(info.k, [fx, 0, 200, 0, fx, 150, 0, 0, 1]) and np.allclose(info.p[[0, 2, 5, 6]],
                                                                                      [fx, 200, fx, 150])


def test_make_bag_raw_ids(bags, data_dir):
    msgs, _ = read_bag(bags["ids"])
    sem = [m for _, m in msgs[T["semantic"]]]
    assert {m.encoding for m in sem} == {"mono8"}
    for m, pair in zip(sem, find_pairs(data_dir, "test")):
        assert np.array_equal(image_array(m)[..., 0], read_tag_ids(pair.label))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_eval_equals_evaluate(bags, folder_eval, tmp_path, storage):
    r = run_bag_eval(bags[storage], tmp_path)
    assert r["frames"] == FRAMES and r["coding"] == "tags13"
    assert r["pairing"] == {"image_messages": FRAMES, "gt_messages": FRAMES, "paired": FRAMES,
                            "unmatched_image": 0, "unmatched_gt": 0, "tolerance_s": 0.01}
    assert r["skipped"] == {} and r["unknown_color_pixels"] == 0
    assert_same_metrics(r, folder_eval)
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4 and "Lyft F2 car" in html
    assert (tmp_path / "report.md").is_file()


def test_bag_eval_raw_ids_equals_evaluate(bags, folder_eval, tmp_path):
    r = run_bag_eval(bags["ids"], tmp_path, "--gt-format", "ids")
    assert r["unknown_id_pixels"] == 0
    assert_same_metrics(r, folder_eval)


def test_bag_eval_max_frames_and_palette_as_ids_is_wrong(bags, tmp_path):
    r = run_bag_eval(bags["mcap"], tmp_path / "a", "--max-frames", "2")
    assert r["frames"] == 2 and r["pairing"]["not_evaluated_max_frames"] == FRAMES - 2
    # Raw ids read from palette colours (red channel) must show up as unknown ids, not pass silently.
    r = run_bag_eval(bags["mcap"], tmp_path / "b", "--max-frames", "1", "--gt-format", "ids")
    assert r["unknown_id_pixels"] > 0


def test_bag_eval_modern_coding_from_metadata(tmp_path, modern_dir, model_path, capsys):
    assert make_bag_main(["--data", str(modern_dir), "--out", str(tmp_path / "mixed")]) == 2
    assert "mixes CARLA codings" in capsys.readouterr().err
    assert make_bag_main(["--data", str(modern_dir), "--coding", "tags29", "--out", str(tmp_path / "t29")]) == 0
    r = run_bag_eval(tmp_path / "t29", tmp_path / "out")
    assert r["coding"] == "tags29" and r["frames"] == 4 and r["unknown_color_pixels"] == 0
    assert r["metrics"]["pixels"] == 4 * 400 * 300


def test_bag_eval_missing_topic(bags, tmp_path, capsys):
    assert bag_eval_main([str(bags["mcap"]), "--out", str(tmp_path), "--gt-topic", "/carla/hero/semseg"]) == 2
    err = capsys.readouterr().err
    assert "'/carla/hero/semseg' is not in the bag" in err
    for topic in T.values():
        assert topic in err


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_eval_truncated_bag(bags, tmp_path, capsys, storage):
    bag = tmp_path / "truncated"
    shutil.copytree(bags[storage], bag)
    data_file = next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))
    os.truncate(data_file, data_file.stat().st_size // 2)
    assert bag_eval_main([str(bag), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "truncated" in err and str(bag) in err
    assert bag_eval_main([str(tmp_path / "no_such_bag"), "--out", str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert bag_eval_main([str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    assert "no metadata.yaml" in capsys.readouterr().err


def write_custom_bag(path, frames, data_dir):
    """A bridge-like bag whose frames are (image encoding, gt stamp offset ns, extra gt message?) per frame."""
    store = typestore()
    make = MessageFactory(store)
    palette = load_coding("tags13").palette_lut()
    pairs = find_pairs(data_dir, "test")
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        ci = w.add_connection(T["image"], "sensor_msgs/msg/Image", typestore=store)
        cs = w.add_connection(T["semantic"], "sensor_msgs/msg/Image", typestore=store)
        for i, (encoding, gt_offset) in enumerate(frames):
            ns = 10**9 + i * 50_000_000
            rgb, tags = read_rgb(pairs[i].rgb), read_tag_ids(pairs[i].label)
            pixels = {"bgra8": np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 255, np.uint8)]),
                      "rgb8": rgb, "16UC1": np.zeros(rgb.shape[:2] + (2,), np.uint8)}[encoding]
            w.write(ci, ns, make.serialize(make.image(pixels, encoding, make.header(ns, "ego_vehicle/rgb_front"))))
            if gt_offset is not None:
                sem = np.dstack([palette[tags][..., ::-1], np.full(tags.shape, 255, np.uint8)])
                gt_ns = ns + gt_offset
                w.write(cs, gt_ns, make.serialize(make.image(sem, "bgra8", make.header(gt_ns, "sem"))))


def test_bag_eval_undecodable_and_unmatched_frames_are_counted(tmp_path, data_dir, capsys):
    bag = tmp_path / "odd"
    # frame 1: an encoding no decoder handles; frame 2: rgb8 is fine; frame 3: ground truth 15 ms late (unmatched
    # at the default 10 ms tolerance); frame 4: no ground truth at all.
    write_custom_bag(bag, [("bgra8", 0), ("16UC1", 0), ("rgb8", 0), ("bgra8", 15_000_000), ("bgra8", None)],
                     data_dir)
    r = run_bag_eval(bag, tmp_path / "out")
    assert r["frames"] == 2
    assert r["skipped"] == {"image:unknown_encoding": 1}
    assert "16UC1" in r["skip_messages"]["image:unknown_encoding"]
    assert r["pairing"]["paired"] == 3 and r["pairing"]["unmatched_image"] == 2 and r["pairing"]["unmatched_gt"] == 1
    err = capsys.readouterr().err
    assert "16UC1" in err and "no partner" in err
    # A wider tolerance pairs the late frame too.
    r = run_bag_eval(bag, tmp_path / "wide", "--stamp-tolerance", "0.02")
    assert r["pairing"]["paired"] == 4 and r["frames"] == 3


def test_pair_stamps_nearest_first():
    # 100 is nearer to 101 than 98; 98 then goes unmatched rather than stealing 101's partner.
    assert pair_stamps([0, 100, 200], [98, 101, 205, 300], 5) == [(1, 1), (2, 2)]
    assert pair_stamps([0, 0], [0], 0) == [(0, 0)]


def test_bag_eval_write_bag(bags, data_dir, model_path, tmp_path):
    out_bag = tmp_path / "pred"
    r = run_bag_eval(bags["mcap"], tmp_path / "out", "--write-bag", str(out_bag), "--max-frames", "3")
    assert r["prediction_topics"] == {"mask": "/seg_node/mask", "mask_color": "/seg_node/mask_color",
                                      "confidence": "/seg_node/confidence"}
    msgs, types = read_bag(out_bag)
    for topic in (T["image"], T["semantic"], T["camera_info"], T["clock"]):
        assert len(msgs[topic]) == FRAMES                  # inputs copied for replay
    masks = msgs["/seg_node/mask"]
    assert len(masks) == 3 and len(msgs["/seg_node/mask_color"]) == 3 and len(msgs["/seg_node/confidence"]) == 3
    segmenter = Segmenter(create_backend("onnxruntime", model_path))
    colors = load_coding("tags13").palette_lut()
    for i, ((log_ns, mask), (_, color)) in enumerate(zip(masks, msgs["/seg_node/mask_color"])):
        ns = 10**9 + i * 50_000_000
        assert log_ns == ns and stamp(mask) == stamp(color) == ns
        assert mask.header.frame_id == "ego_vehicle/rgb_front"
        assert (mask.encoding, color.encoding) == ("mono8", "rgb8")
        expected, _ = segmenter.segment(read_rgb(find_pairs(data_dir, "test")[i].rgb))
        ids = image_array(mask)[..., 0]
        assert np.array_equal(ids, expected)
        assert np.array_equal(image_array(color), colors[ids])
    assert bag_eval_main([str(bags["mcap"]), "--out", str(tmp_path / "o2"), "--write-bag", str(out_bag)]) == 2


def test_make_bag_kaggle_layout(tmp_path, data_dir):
    """The Kaggle lyft-udacity layout: CameraRGB/ + CameraSeg/ with the tag id in the red channel of an RGB PNG."""
    import cv2
    kaggle = tmp_path / "kaggle" / "dataA"
    (kaggle / "CameraRGB").mkdir(parents=True)
    (kaggle / "CameraSeg").mkdir()
    pairs = find_pairs(data_dir, "test")[:2]
    for i, pair in enumerate(pairs):
        shutil.copy(pair.rgb, kaggle / "CameraRGB" / f"02_00_00{i}.png")
        tags = read_tag_ids(pair.label)
        cv2.imwrite(str(kaggle / "CameraSeg" / f"02_00_00{i}.png"),
                    np.dstack([np.zeros_like(tags), np.zeros_like(tags), tags]))   # BGR on disk: id in red
    assert make_bag_main(["--data", str(tmp_path / "kaggle"), "--split", "all", "--out", str(tmp_path / "bag")]) == 0
    msgs, _ = read_bag(tmp_path / "bag")
    palette = load_coding("tags13")
    for (_, sem), pair in zip(msgs[T["semantic"]], pairs):
        ids, unknown = palette.colors_to_ids(np.ascontiguousarray(image_array(sem)[..., 2::-1]))
        assert unknown == 0 and np.array_equal(ids, read_tag_ids(pair.label))
