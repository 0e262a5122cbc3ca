"""`bag-eval --map`: the local map made from the model's masks against the same map made from the ground truth.

Both maps take the same frames, the same odometry and the same camera geometry (runtime/map_fusion.py), so every
difference between them comes from the masks. Every ``every`` frames the two are compared within ``radius`` of
the ego where both have evidence: per group (and for occupied cells) true and false positives and misses with a
one-cell boundary tolerance (evaluation/map_scores.py), summed over the snapshots into one IoU per group.

The odometry and CameraInfo come from the bag (the bridge's /carla/<role>/odometry and the camera's camera_info);
the mount is the bridge's rgb_front unless given.
"""
from __future__ import annotations

import numpy as np

from carla_seg_ros.classes import IGNORE_INDEX
from carla_seg_ros.evaluation.map_scores import tolerant_iou
from carla_seg_ros.runtime.ground_projection import Mount, Pinhole
from carla_seg_ros.runtime.local_map import LocalMap, MapSpec
from carla_seg_ros.runtime.map_fusion import CameraEvidence, MapFuser
from carla_seg_ros.runtime.occupancy_grid import OccupancyClasses
from carla_seg_ros.runtime.odometry_buffer import OdometryBuffer, PlanarPose, yaw_of_quaternion


def parse_mount(text: str) -> Mount:
    """'x,y,z,roll,pitch,yaw' (metres, degrees) -> Mount; ValueError naming the problem."""
    values = [float(v) for v in text.split(",")]
    if len(values) != 6:
        raise ValueError(f"mount {text!r}: expected x,y,z,roll,pitch,yaw (6 numbers)")
    return Mount(*values)


def pose_of_odometry(msg) -> tuple[float, PlanarPose]:
    """(stamp seconds, planar pose) of a nav_msgs/Odometry (rclpy's or the rosbags reader's)."""
    p, q = msg.pose.pose.position, msg.pose.pose.orientation
    stamp = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec
    return stamp, PlanarPose(p.x, p.y, p.z, yaw_of_quaternion(q.x, q.y, q.z, q.w))


def pinhole_of_info(msg) -> Pinhole:
    k = [float(v) for v in msg.k]
    return Pinhole(k[0], k[4], k[2], k[5], int(msg.width), int(msg.height)).check()


def hood_row_of(labels: np.ndarray) -> int:
    """The first of the bottom rows that are entirely ignored (the hood rule's), else the height."""
    ignored = (labels == IGNORE_INDEX).all(axis=1)
    row = labels.shape[0]
    while row > 0 and ignored[row - 1]:
        row -= 1
    return row


class MapScore:
    """Two fusers (model, ground truth) over the same odometry; ``add_frame`` per evaluated frame."""

    def __init__(self, classes: OccupancyClasses, mount: Mount, ground_z: float = 0.0, spec: MapSpec = MapSpec(),
                 radius: float = 20.0, every: int = 10, tolerance: float = 0.1):
        self.classes, self.mount, self.ground_z, self.spec = classes, mount, ground_z, spec
        self.radius, self.every = radius, every
        self.model = MapFuser(LocalMap(spec, classes), OdometryBuffer(tolerance, horizon=1e9))
        self.truth = MapFuser(LocalMap(spec, classes), OdometryBuffer(tolerance, horizon=1e9))
        self._evidence_key, self._evidence = None, None
        self.frames = 0
        self.sums = {name: np.zeros(3, np.int64) for name in ("occupied", *classes.groups)}   # tp, fp, fn
        self.snapshots = 0

    def add_odometry(self, stamp: float, pose: PlanarPose) -> None:
        self.model.add_odometry(stamp, pose)
        self.truth.add_odometry(stamp, pose)

    def add_frame(self, stamp: float, cam: Pinhole, pred: np.ndarray, confidence: np.ndarray | None,
                  truth: np.ndarray) -> None:
        """One frame: the model's class ids (and confidence) and the ground truth, both at ``cam``'s size."""
        hood = hood_row_of(truth)
        key = (cam, pred.shape, hood)
        if key != self._evidence_key:
            self._evidence = CameraEvidence(cam.for_image(pred.shape[1], pred.shape[0]), self.mount, self.ground_z,
                                            self.spec.size, self.spec.resolution, self.classes, hood)
            self._evidence_key = key
        self.model.add_frame(stamp, *self._evidence.cells(pred, confidence))
        # Ignored pixels above the hood (tags outside the model's classes) take the model's class: they then make
        # no difference between the two maps, where any fixed class would make one.
        self.truth.add_frame(stamp, *self._evidence.cells(np.where(truth == IGNORE_INDEX, pred, truth)))
        self.frames += 1
        if self.frames % self.every == 0:
            self.snapshot()

    def snapshot(self) -> None:
        m, t = self.model.map, self.truth.map
        if m.stamp is None or t.stamp is None or m.origin != t.origin:
            return
        pose, _ = self.model.odometry.pose_at(m.stamp)
        if pose is None:
            return
        n, res = self.spec.cells, self.spec.resolution
        xs = m.origin[0] + (np.arange(n) + 0.5) * res
        ys = m.origin[1] + (np.arange(n) + 0.5) * res
        near = (xs[None, :] - pose.x) ** 2 + (ys[:, None] - pose.y) ** 2 <= self.radius ** 2
        pairs = {"occupied": (m.occupancy(), t.occupancy())}
        pairs.update({g: (m.group(g), t.group(g)) for g in self.classes.groups})
        for name, (model, truth) in pairs.items():
            s = tolerant_iou(model > 50, truth > 50, (model >= 0) & (truth >= 0) & near)
            self.sums[name] += (s["tp"], s["fp"], s["fn"])
        self.snapshots += 1

    def result(self) -> dict:
        def iou(s):
            total = int(s.sum())
            return float(s[0] / total) if total else None

        return {"frames": self.frames, "snapshots": self.snapshots, "radius_m": self.radius,
                "boundary_tolerance_cells": 1, "resolution_m": self.spec.resolution, "size_m": self.spec.size,
                "iou": {name: iou(s) for name, s in self.sums.items()},
                "counts": {name: dict(zip(("tp", "fp", "fn"), map(int, s))) for name, s in self.sums.items()},
                "fusion": {k: int(v) for k, v in self.model.counts.items()}}
