"""bag-eval --map: the local map fused from masks against the one fused from the ground truth
(evaluation/map_eval.py), on the synthetic street; then end to end through make-bag and bag-eval on a real bag."""
from __future__ import annotations

import json

import numpy as np
import pytest

from carla_seg_ros.classes import colors_for, tag_lut
from carla_seg_ros.evaluation import synthetic_world as sw
from carla_seg_ros.evaluation.map_eval import MapScore, hood_row_of, parse_mount
from carla_seg_ros.runtime.occupancy_grid import load_occupancy_config

CAM = sw.bridge_camera(320, 240)
STEPS = 20


@pytest.fixture(scope="module")
def drive():
    world = sw.town()
    out = []
    for i in range(STEPS):
        t = i * 0.1
        pose = sw.ego_pose(t)
        out.append((t, pose, sw.render(world, CAM, sw.FRONT, pose, t)[0]))
    return out


def score(drive, model_of) -> dict:
    s = MapScore(load_occupancy_config(), sw.FRONT, every=5)
    for t, pose, _ in drive:
        s.add_odometry(t, pose)
    for t, _, labels in drive:
        s.add_frame(t, CAM, model_of(labels), None, labels)
    return s.result()


def test_a_perfect_model_scores_one_and_a_blind_one_does_not(drive):
    perfect = score(drive, lambda labels: labels)
    assert perfect["frames"] == STEPS and perfect["snapshots"] == STEPS // 5
    for name in ("occupied", "drivable", "vehicles", "static_obstacles"):
        assert perfect["iou"][name] == 1.0, (name, perfect["counts"][name])
    road_only = score(drive, lambda labels: np.where(labels == sw.SKY, sw.SKY, sw.ROAD).astype(np.uint8))
    assert road_only["iou"]["vehicles"] == 0.0 and road_only["iou"]["occupied"] < 0.5, road_only["iou"]
    rng = np.random.default_rng(1)
    noisy = score(drive, lambda labels: sw.add_label_noise(labels, 0.02, rng))
    assert 0.5 < noisy["iou"]["drivable"] < 1.0


def test_helpers():
    assert parse_mount("2,0,2,0,0,0") == sw.FRONT
    with pytest.raises(ValueError, match="6 numbers"):
        parse_mount("1,2")
    labels = np.zeros((6, 4), np.uint8)
    labels[4:] = 255
    assert hood_row_of(labels) == 4 and hood_row_of(labels[:4]) == 4


def test_bag_eval_scores_the_local_map_of_a_bag_with_odometry(tmp_path, drive):
    pytest.importorskip("rosbags", reason="rosbags (extra `tools`) is not installed")
    from carla_seg_ros.capture.dataset_writer import DatasetWriter, Sample
    from carla_seg_ros.evaluation.bag_eval import main as bag_eval_main
    from carla_seg_ros.evaluation.bag_make import main as make_bag_main
    from carla_seg_ros.evaluation.ego_motion import EgoState

    lut = tag_lut("tags29")                      # tag -> model class; its inverse writes the street as tags
    to_tag = np.zeros(256, np.uint8)
    for tag in range(len(lut) - 1, -1, -1):
        if lut[tag] < 255:
            to_tag[lut[tag]] = tag
    palette = colors_for()
    writer = DatasetWriter(tmp_path / "ds", block=True)
    for i, (t, pose, labels) in enumerate(drive):
        ego = EgoState(pose.x, pose.y, 0.0, 0.0, 0.0, pose.yaw)
        writer.offer(Sample(10**9 + i * 100_000_000, palette[labels], lambda labels=labels: (to_tag[labels], "tags29"),
                            {}, ego=ego))
    writer.close()
    bag = tmp_path / "bag"
    assert make_bag_main(["--data", str(tmp_path / "ds"), "--split", "all", "--out", str(bag), "--rate", "10"]) == 0
    out = tmp_path / "eval"
    assert bag_eval_main([str(bag), "--out", str(out), "--map", "--batch-size", "4"]) == 0
    result = json.loads((out / "metrics.json").read_text())["local_map"]
    assert result["frames"] == STEPS and result["snapshots"] == STEPS // 10
    assert set(result["iou"]) == {"occupied", "drivable", "vehicles", "pedestrians", "static_obstacles"}
    assert result["fusion"]["frames_fused"] == STEPS
    assert result["iou"]["drivable"] is not None and 0.0 <= result["iou"]["drivable"] <= 1.0
    # a bag without odometry is a one-line error
    assert make_bag_main(["--data", str(tmp_path / "ds"), "--split", "all", "--out", str(tmp_path / "bag2"),
                          "--no-odometry"]) == 0
    assert bag_eval_main([str(tmp_path / "bag2"), "--out", str(tmp_path / "eval2"), "--map"]) == 2
