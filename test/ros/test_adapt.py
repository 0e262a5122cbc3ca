"""Sim-in-the-loop adaptation end to end: models fine-tuned or trained by `carla-seg train` on recorded-style
folders, exported by `carla-seg export` and served by a real seg_node process (rclpy over DDS on loopback), with
no code change per class set.

* lyft13: the shipped model fine-tuned with --init for one step on a recorded folder of mixed codings.
* carla18 (CARLA 0.9.14+ classes): a small network trained for one short epoch on the few t29_ frames of
  carla_seg_modern (test data only, never a shipped model). seg_node publishes its 18-class table and masks;
  bag-eval and seg_eval_node score 29-tag ground truth in those 18 classes and agree to the last digit.
"""
from __future__ import annotations

import csv
import os
import time

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 wheels (extra `ros`) are not installed")
import yaml  # noqa: E402
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header, String  # noqa: E402

from seg_probe import Probe, start_node, stop_node, wait_for  # noqa: E402
from carla_seg_ros import image_codec  # noqa: E402
from carla_seg_ros.datasets import find_pairs, read_rgb  # noqa: E402
from carla_seg_ros.learning import export, train  # noqa: E402
from carla_seg_ros.paths import models_dir  # noqa: E402
from carla_seg_ros.runtime.model_info import read_onnx_info  # noqa: E402

NODE = f"adapt_seg_{os.getpid()}"          # a node name of this process: other tests may share the domain
TOPIC = f"/{NODE}_camera/image"


def recorded_folder(root, pairs):
    """rgb/ label/ manifest.csv as `carla-seg record` writes them (links to existing frames, stamps in order)."""
    (root / "rgb").mkdir(parents=True)
    (root / "label").mkdir()
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["name", "stamp_ns", "coding"])
        w.writeheader()
        for k, p in enumerate(pairs):
            os.symlink(p.rgb, root / "rgb" / f"{p.name}.png")
            os.symlink(p.label, root / "label" / f"{p.name}.png")
            w.writerow({"name": p.name, "stamp_ns": 10**9 * (k + 1), "coding": p.coding})
    return root


@pytest.fixture(scope="module")
def models(tmp_path_factory, data_dir, modern_dir):
    root = tmp_path_factory.mktemp("adapt")
    modern = find_pairs(modern_dir, "all")
    mixed = recorded_folder(root / "rec_mixed", find_pairs(data_dir, "train")[:4]
                            + [p for p in modern if p.coding == "tags23"][:2])
    t29 = recorded_folder(root / "rec_t29", [p for p in modern if p.coding == "tags29"])
    assert train.main(["--init", str(models_dir() / "carla_unet.safetensors"), "--data", str(mixed),
                       "--out", str(root / "ft"), "--batch-size", "2", "--max-steps", "1", "--threads", "2",
                       "--bf16", "off"]) == 0
    assert train.main(["--preset", "fast_unet", "--classes", "carla18", "--data", str(t29), "--out",
                       str(root / "c18"), "--input-size", "128x96", "--crop", "128x96", "--batch-size", "2",
                       "--epochs", "1", "--threads", "2", "--bf16", "off"]) == 0
    out = {"lyft13": root / "ft.onnx", "carla18": root / "c18.onnx"}
    assert export.main(["--weights", str(root / "ft" / "final.safetensors"), "--out", str(out["lyft13"]),
                        "--data", str(mixed), "--split", "all"]) == 0
    assert export.main(["--weights", str(root / "c18" / "final.safetensors"), "--out", str(out["carla18"]),
                        "--data", str(t29), "--split", "all"]) == 0
    return out


@pytest.fixture(scope="module")
def probe():
    p = Probe("adapt_probe")
    yield p
    p.close()


def test_exported_metadata_carries_the_class_set(models):
    lyft, c18 = read_onnx_info(models["lyft13"]), read_onnx_info(models["carla18"])
    assert lyft.class_set == "lyft13" and lyft.num_classes == 13 and lyft.training["preset"] == "finetune"
    assert c18.class_set == "carla18" and c18.num_classes == 18
    names = [c["name"] for c in c18.classes]
    assert {"Sky", "Terrain", "TrafficLight", "TrafficSign", "Unlabeled", "Other"} <= set(names)
    assert c18.tag_lut("tags29")[11] == names.index("Sky") and c18.tag_lut("tags29")[7] == names.index("TrafficLight")


@pytest.mark.parametrize("class_set", ["lyft13", "carla18"])
def test_seg_node_serves_the_trained_model(models, probe, tmp_path, modern_dir, class_set):
    info = read_onnx_info(models[class_set])
    log = tmp_path / "node.log"
    received, tables = [], []
    mask_sub = probe.node.create_subscription(Image, f"/{NODE}/mask", received.append, 10)
    latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    info_sub = probe.node.create_subscription(String, f"/{NODE}/label_info", tables.append, latched)
    camera = probe.camera(TOPIC)
    proc = start_node(log, "-r", f"__node:={NODE}", "-r", f"image:={TOPIC}", "-p", f"model_path:={models[class_set]}",
                      "-p", "backend:=onnxruntime")
    try:
        wait_for(lambda: camera.get_subscription_count() >= 1, 120, "the camera subscription", proc, log)
        rgb = read_rgb(next(p for p in find_pairs(modern_dir, "all") if p.coding == "tags29").rgb)
        header = Header(frame_id="cam")
        header.stamp.sec, header.stamp.nanosec = 12, 345
        msg = image_codec.to_image(image_codec.from_rgb(rgb, "bgra8"), "bgra8", header)
        deadline = time.monotonic() + 60
        while not received and time.monotonic() < deadline:       # until the node's mask comes back
            camera.publish(msg)
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        wait_for(lambda: received and tables, 30, "a mask and the label table", proc, log)
    finally:
        stop_node(proc)
        probe.node.destroy_publisher(camera)
        probe.node.destroy_subscription(mask_sub)
        probe.node.destroy_subscription(info_sub)
    mask = received[0]
    assert (mask.width, mask.height) == (rgb.shape[1], rgb.shape[0])
    ids = np.frombuffer(mask.data, np.uint8).reshape(mask.height, mask.step)[:, :mask.width]
    assert ids.max() < info.num_classes
    table = yaml.safe_load(tables[-1].data)
    assert table["class_set"] == class_set
    assert table["classes"] == info.classes                                   # the model's table, not lyft13's


def test_bag_eval_and_seg_eval_node_score_29_tag_ground_truth_in_the_models_classes(models, tmp_path, modern_dir):
    pytest.importorskip("std_srvs", reason="ros-kilted-std-srvs (extra `ros`) is not installed")
    from eval_helpers import assert_same_metrics, make_bags
    from test_seg_eval_node import run_node_on
    model = str(models["carla18"])
    pred, expected = make_bags(tmp_path, modern_dir, "c18", ["--coding", "tags29", "--raw-ids", "--limit", "4"],
                               ["--gt-format", "ids", "--model", model])
    names = [c["name"] for c in read_onnx_info(models["carla18"]).classes]
    assert expected["class_names"] == names and len(expected["confusion_matrix"]) == 18
    # ground-truth sky is scored as the model's Sky (a row of its own), not as Unlabeled
    assert sum(expected["confusion_matrix"][names.index("Sky")]) > 0
    got = run_node_on(tmp_path, pred, "c18", coding="tags29", gt_format="ids", model_path=model)
    assert_same_metrics(got, expected)
    assert got["class_names"] == names


def test_a_running_node_swaps_to_a_model_of_another_class_set(models, probe, tmp_path, modern_dir):
    """lyft13 -> carla18 while frames flow: label_info, class_fractions and masks follow the 18-class table."""
    import subprocess
    import sys

    from std_msgs.msg import Float32MultiArray

    from seg_probe import FramePublisher, node_env
    c18 = read_onnx_info(models["carla18"])
    masks, tables, fractions = [], [], []
    latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    subs = [probe.node.create_subscription(Image, f"/{NODE}/mask", masks.append, 10),
            probe.node.create_subscription(String, f"/{NODE}/label_info", tables.append, latched),
            probe.node.create_subscription(Float32MultiArray, f"/{NODE}/class_fractions", fractions.append, 10)]
    camera = probe.camera(TOPIC)
    log = tmp_path / "node.log"
    proc = start_node(log, "-r", f"__node:={NODE}", "-r", f"image:={TOPIC}", "-p", f"model:={models['lyft13']}",
                      "-p", "backend:=onnxruntime")
    rgb = read_rgb(next(p for p in find_pairs(modern_dir, "all") if p.coding == "tags29").rgb)
    publisher = FramePublisher(camera, rgb, rate=10.0, first_stamp_s=200)
    try:
        wait_for(lambda: camera.get_subscription_count() >= 1, 120, "the camera subscription", proc, log)
        publisher.start()
        wait_for(lambda: masks and tables and fractions, 60, "masks of the lyft13 model", proc, log)
        assert yaml.safe_load(tables[-1].data)["class_set"] == "lyft13" and len(fractions[-1].data) == 13
        result = subprocess.run([sys.executable, "-m", "carla_seg_ros.ros.model_swap_client", f"/{NODE}",
                                 str(models["carla18"]), "--timeout", "30"], env=node_env(), capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, result.stderr + log.read_text()[-2000:]
        wait_for(lambda: yaml.safe_load(tables[-1].data)["class_set"] == "carla18", 60,
                 "label_info of the carla18 model", proc, log)
        wait_for(lambda: len(fractions[-1].data) == 18, 60, "class fractions over 18 classes", proc, log)
        count = len(masks)
        wait_for(lambda: len(masks) > count + 3, 60, "masks after the swap", proc, log)
        assert proc.poll() is None
    finally:
        publisher.stop()
        stop_node(proc)
        probe.node.destroy_publisher(camera)
        for sub in subs:
            probe.node.destroy_subscription(sub)
    assert yaml.safe_load(tables[-1].data)["classes"] == c18.classes
    mask = masks[-1]
    ids = np.frombuffer(mask.data, np.uint8).reshape(mask.height, mask.step)[:, :mask.width]
    assert ids.max() < c18.num_classes
