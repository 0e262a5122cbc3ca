"""The semantic point cloud (runtime/point_cloud.py) against a rendered street: points from depth lie on the
surface their label names, ground points lie on the ground, contacts stand where the objects are."""
from __future__ import annotations

import numpy as np
import pytest

from carla_seg_ros.evaluation import synthetic_world as sw
from carla_seg_ros.runtime.occupancy_grid import load_occupancy_config
from carla_seg_ros.runtime.point_cloud import CONTACT_HEIGHTS, FLOAT32, UINT8, PointCloudBuilder, fields, point_dtype

CAM = sw.bridge_camera(400, 300)
POSE = sw.ego_pose(1.5)
T = 1.5
SURFACE_TOLERANCE = 1e-3          # metres: float32 points on exact geometry


@pytest.fixture(scope="module")
def scene():
    world = sw.town()
    labels, depth = sw.render(world, CAM, sw.FRONT, POSE, T)
    return world, labels, depth


def to_world(points: np.ndarray, mount=sw.FRONT, pose=POSE) -> np.ndarray:
    optical = np.stack([points["x"], points["y"], points["z"]], -1).astype(np.float64)
    vehicle = optical @ mount.vehicle_from_optical().T + mount.position
    wx, wy = pose.to_world(vehicle[:, 0], vehicle[:, 1])
    return np.stack([wx, wy, vehicle[:, 2] + pose.z], -1)


def distance_to_box(p: np.ndarray, box: sw.Box) -> np.ndarray:
    x0, x1, y0, y1 = box.at(T)
    lo, hi = np.array([x0, y0, 0.0]), np.array([x1, y1, box.height])
    outside = np.maximum(np.maximum(lo - p, p - hi), 0.0)
    return np.linalg.norm(outside, axis=1)


def test_the_layout_is_pointcloud2s():
    assert point_dtype(False).itemsize == 20 and point_dtype(True).itemsize == 24
    assert fields(True) == [("x", 0, FLOAT32), ("y", 4, FLOAT32), ("z", 8, FLOAT32), ("confidence", 12, FLOAT32),
                            ("label", 16, UINT8), ("rgb", 20, FLOAT32)]


@pytest.mark.parametrize("mask_scale", [1, 2])
def test_depth_points_lie_on_the_surface_their_label_names(scene, mask_scale):
    world, labels, depth = scene
    mask = labels[mask_scale // 2::mask_scale, mask_scale // 2::mask_scale]     # the model's smaller mask
    builder = PointCloudBuilder(CAM, sw.FRONT, 0.0, mask.shape, stride=4, max_range=60.0)
    points = builder.from_depth(depth, mask)
    sampled = depth[2::4, 2::4]
    assert len(points) == int((sampled <= 60.0).sum()) > 3000
    p = to_world(points)
    # the label of the depth pixel's own mask pixel; with a 2x smaller mask, pixels next to an edge take the
    # neighbour's class, so the check there is on all but a few per cent
    wrong = 0
    for label in np.unique(points["label"]):
        sel = points["label"] == label
        if label in (sw.ROAD, sw.SIDEWALK):
            ok = np.abs(p[sel, 2]) < SURFACE_TOLERANCE
        else:
            boxes = [b for b in world.boxes if b.label == label]
            ok = (np.min([distance_to_box(p[sel], b) for b in boxes], axis=0) < SURFACE_TOLERANCE if boxes
                  else np.zeros(int(sel.sum()), bool))
        wrong += int((~ok).sum())
    assert wrong <= (0 if mask_scale == 1 else 0.03 * len(points)), wrong
    assert (points["confidence"] == 1.0).all()


def test_rgb_and_confidence_are_carried(scene):
    _, labels, depth = scene
    rgb = np.zeros(labels.shape + (3,), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 10, 200, 30
    conf = np.full(labels.shape, 51, np.uint8)
    builder = PointCloudBuilder(CAM, sw.FRONT, 0.0, labels.shape, stride=8)
    points = builder.from_depth(depth, labels, conf, rgb)
    assert points.dtype == point_dtype(True)
    assert builder.from_ground(labels, load_occupancy_config().ground, conf, rgb).dtype == point_dtype(True)
    assert np.allclose(points["confidence"], 0.2)
    assert (points["rgb"].view(np.uint32) == (10 << 16 | 200 << 8 | 30)).all()


def test_ground_points_stop_at_each_columns_contact(scene):
    world, labels, _ = scene
    classes = load_occupancy_config()
    builder = PointCloudBuilder(CAM, sw.FRONT, 0.0, labels.shape, stride=4, max_range=40.0)
    points = builder.from_ground(labels, classes.ground)
    assert points.dtype == point_dtype(False)
    p = to_world(points)
    ground = classes.ground[points["label"]]
    assert len(points) > 2000 and np.abs(p[ground, 2]).max() < SURFACE_TOLERANCE       # flat classes: on the ground
    truth = world.ground_truth(p[:, 0], p[:, 1], T)
    assert (truth[ground] == points["label"][ground]).mean() > 0.99      # (a few straddle a kerb line)
    # Contacts: a column of CONTACT_HEIGHTS per sampled column at most, each at the foot of a box of its class,
    # within the ground span of one image row there (d^2 / (f h)) plus a pixel's width.
    contacts = points[~ground]
    pc = p[~ground]
    k = len(CONTACT_HEIGHTS)
    assert 0 < len(contacts) <= k * len(builder.image_cols) and len(contacts) % k == 0
    feet = pc[:len(pc) // k]
    for h, part in zip(CONTACT_HEIGHTS, np.split(pc, k)):
        assert np.allclose(part[:, :2], feet[:, :2], atol=1e-4) and np.allclose(part[:, 2], h, atol=1e-3)
    for point, label in zip(feet, contacts["label"][:len(feet)]):
        d = np.hypot(point[0] - POSE.x, point[1] - POSE.y)
        span = d * d / (CAM.fy * sw.FRONT.z) + d / CAM.fx
        near = min(distance_to_box(point[None], b)[0] for b in world.boxes if b.label == label)
        assert near <= span + 0.05, (point, label, near, span)
