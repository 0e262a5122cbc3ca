"""Every camera's frames into one local map: per-camera cell evidence, odometry pairing, late frames, resets.

``CameraEvidence`` turns one camera's class mask into seen cells in the vehicle frame with the per-frame rule of
runtime/occupancy_grid.py (free to the contact, the contact's class at the contact, unknown behind), over a
vehicle-frame grid that covers the whole map around the vehicle at a finer step than the map's cells. The finer
step matters: a rotated copy of a grid at the same step onto the map leaves map cells that no source cell lands
in; at 1/1.5 of the map's step every map cell within the view gets at least one at any heading.

``MapFuser`` pairs each frame with the odometry at its stamp (runtime/odometry_buffer.py) and fuses it into the
``LocalMap``. A frame newer than the newest odometry (late odometry) waits, up to ``max_pending`` frames, and is
fused when odometry past its stamp arrives. An odometry jump or a rewound clock resets the map. ``counts`` and
``state`` say what happened, for /diagnostics. ROS-free, pure numpy.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np

from carla_seg_ros.runtime.ground_projection import GridSpec, Mount, Pinhole, build_lookup
from carla_seg_ros.runtime.local_map import LocalMap
from carla_seg_ros.runtime.occupancy_grid import SEEN_CODES, OccupancyClasses, project_cells
from carla_seg_ros.runtime.odometry_buffer import AHEAD, JUMP, OK, REWIND, OdometryBuffer, PlanarPose

OVERSAMPLE = 1.5


class CameraEvidence:
    """One camera (intrinsics at the mask's size, mount, ground) -> vehicle-frame cells seen in a mask."""

    def __init__(self, cam: Pinhole, mount: Mount, ground_z: float, map_size: float, map_resolution: float,
                 classes: OccupancyClasses, hood_row: int | None = None, max_range: float | None = None):
        half = map_size / 2
        step = map_resolution / OVERSAMPLE
        # Whole steps around the vehicle origin, so the far edges land where the map's do.
        n = int(np.ceil(half / step))
        grid = GridSpec(-n * step, n * step, -n * step, n * step, step)
        self.lookup = build_lookup(cam, mount, ground_z, grid, hood_row)
        xc, yc = grid.cell_centres()
        self.xs = xc.ravel()[self.lookup.cells].astype(np.float32)
        self.ys = yc.ravel()[self.lookup.cells].astype(np.float32)
        if max_range is not None:     # far cells: a mask row spans metres there; keep them out of the map
            near = np.hypot(self.xs - mount.x, self.ys - mount.y) <= max_range
            self._keep(near)
        self.classes = classes
        self.shape = self.lookup.shape

    def _keep(self, which: np.ndarray) -> None:
        lk = self.lookup
        self.lookup = type(lk)(lk.grid, lk.shape, lk.hood_row, lk.cells[which], lk.pixel[which], lk.col[which],
                               lk.row[which], lk.row_far[which], lk.row_near[which],
                               int(lk.row_far[which].min()) if which.any() else lk.hood_row)
        self.xs, self.ys = self.xs[which], self.ys[which]

    def cells(self, class_ids: np.ndarray, confidence: np.ndarray | None = None):
        """(xs, ys, codes) of the seen cells: vehicle-frame centres and class x 256 + confidence."""
        codes = project_cells(self.lookup, class_ids, self.classes, confidence)
        seen = np.flatnonzero(codes != SEEN_CODES)
        return np.take(self.xs, seen), np.take(self.ys, seen), np.take(codes, seen)


@dataclass
class _Pending:
    stamp: float
    xs: np.ndarray
    ys: np.ndarray
    codes: np.ndarray


class MapFuser:
    """Odometry + seen cells of every camera -> ``local_map``."""

    def __init__(self, local_map: LocalMap, odometry: OdometryBuffer, max_pending: int = 8):
        self.map = local_map
        self.odometry = odometry
        self.pending: collections.deque[_Pending] = collections.deque()
        self.max_pending = max_pending
        self.counts = collections.Counter()
        self.state = "no odometry received yet"

    def add_odometry(self, stamp: float, pose: PlanarPose) -> str:
        answer = self.odometry.add(stamp, pose)
        self.counts[f"odometry_{answer}"] += 1
        if answer in (JUMP, REWIND):
            self.map.reset()
            self.counts["frames_dropped_reset"] += len(self.pending)
            self.pending.clear()
            self.state = (f"map reset at stamp {stamp:.3f}: odometry "
                          + ("jumped" if answer == JUMP else "went back in time (new episode?)"))
        self._retry_pending()
        return answer

    def add_frame(self, stamp: float, xs: np.ndarray, ys: np.ndarray, codes: np.ndarray) -> str:
        """Fuse one camera frame's cells (CameraEvidence.cells) seen at ``stamp``; the answer says what happened."""
        pose, status = self.odometry.pose_at(stamp)
        if status == OK:
            self.map.fuse(stamp, pose, xs, ys, codes)
            self.counts["frames_fused"] += 1
            self.state = "ok"
        elif status == AHEAD:
            if len(self.pending) >= self.max_pending:
                self.pending.popleft()
                self.counts["frames_dropped_late_odometry"] += 1
            self.pending.append(_Pending(stamp, xs, ys, codes))
            self.counts["frames_waiting"] += 1
        else:
            self.counts[f"frames_dropped_{status}"] += 1
            self.state = {"no_odometry": "no odometry received yet",
                          "gap": f"no odometry within {self.odometry.tolerance:g} s of frame stamp {stamp:.3f}",
                          "behind": f"frame stamp {stamp:.3f} older than the odometry kept"}[status]
        return status

    def _retry_pending(self) -> None:
        keep = collections.deque()
        for frame in sorted(self.pending, key=lambda f: f.stamp):
            pose, status = self.odometry.pose_at(frame.stamp)
            if status == OK:
                self.map.fuse(frame.stamp, pose, frame.xs, frame.ys, frame.codes)
                self.counts["frames_fused"] += 1
                self.counts["frames_fused_late"] += 1
                self.state = "ok"
            elif status == AHEAD:
                keep.append(frame)
            else:
                self.counts[f"frames_dropped_{status}"] += 1
        self.pending = keep
