"""Every camera's frames into one local map: per-camera cell evidence, odometry pairing, late frames, resets.

``CameraEvidence`` turns one camera's class mask into seen cells in the vehicle frame with the per-frame rule of
runtime/occupancy_grid.py (free to the contact, the contact's class at the contact, unknown behind), over a
vehicle-frame grid that covers the whole map around the vehicle at a finer step than the map's cells. The finer
step matters: a rotated copy of a grid at the same step onto the map leaves map cells that no source cell lands
in; at 1/1.5 of the map's step every map cell within the view gets at least one at any heading.

``MapFuser`` pairs each frame with the odometry at its stamp (runtime/odometry_buffer.py) and fuses it into the
``LocalMap``. A frame that cannot be placed yet (no odometry, or none past its stamp: late odometry) waits, up to
``max_pending`` frames, and is fused when its odometry arrives, or dropped once odometry ``max_wait`` seconds
newer than it has come without it (missing odometry). An odometry jump or a rewound clock resets the map. ``counts`` and
``state`` say what happened, for /diagnostics. ROS-free, pure numpy.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np

from carla_seg_ros.runtime.ground_projection import GridSpec, Mount, Pinhole, build_lookup, pixel_to_ground
from carla_seg_ros.runtime.local_map import LocalMap
from carla_seg_ros.runtime.occupancy_grid import SEEN_CODES, OccupancyClasses, project_cells
from carla_seg_ros.runtime.odometry_buffer import (AHEAD, BEHIND, GAP, JUMP, NO_ODOMETRY, OK, REWIND, OdometryBuffer,
                                                   PlanarPose)

OVERSAMPLE = 1.5
# Cells farther from the camera than this take no evidence: at 20 m one row of a 288-row mask already spans about
# 1 m of ground (docs/occupancy.md, Range resolution), and the map keeps what it saw nearer as the ego drives on.
DEFAULT_RANGE = 20.0


class CameraEvidence:
    """One camera (intrinsics at the mask's size, mount, ground) -> vehicle-frame cells seen in a mask."""

    def __init__(self, cam: Pinhole, mount: Mount, ground_z: float, map_size: float, map_resolution: float,
                 classes: OccupancyClasses, hood_row: int | None = None, max_range: float | None = DEFAULT_RANGE):
        half = map_size / 2
        step = map_resolution / OVERSAMPLE
        # Whole steps around the vehicle origin, so the far edges land where the map's do.
        n = int(np.ceil(half / step))
        grid = GridSpec(-n * step, n * step, -n * step, n * step, step)
        self.lookup = build_lookup(cam, mount, ground_z, grid, hood_row)
        xc, yc = grid.cell_centres()
        self.xs = xc.ravel()[self.lookup.cells].astype(np.float32)
        self.ys = yc.ravel()[self.lookup.cells].astype(np.float32)
        # How much ground one mask row covers at each cell: an object's contact there could be anywhere along
        # that span, so its evidence is spread (weight = cell size / span, at most 1) instead of marking the whole
        # span as certain. Far contacts (a row spans metres) thus weigh little; ground evidence is not spread.
        lk = self.lookup
        near_x, near_y = pixel_to_ground(cam, mount, ground_z, lk.col, lk.row + 0.5)
        far_x, far_y = pixel_to_ground(cam, mount, ground_z, lk.col, lk.row - 0.5)
        span = np.hypot(far_x - near_x, far_y - near_y)
        self.contact_weight = np.where(np.isfinite(span), np.minimum(1.0, map_resolution / np.maximum(span, 1e-6)),
                                       0.0).astype(np.float32)
        if max_range is not None:     # far cells: a mask row spans metres there; keep them out of the map
            self._keep(np.hypot(self.xs - mount.x, self.ys - mount.y) <= max_range)
        self.classes = classes
        self._ground = classes.ground
        self.shape = self.lookup.shape

    def _keep(self, which: np.ndarray) -> None:
        lk = self.lookup
        self.lookup = type(lk)(lk.grid, lk.shape, lk.hood_row, lk.cells[which], lk.pixel[which], lk.col[which],
                               lk.row[which], lk.row_far[which], lk.row_near[which],
                               int(lk.row_far[which].min()) if which.any() else lk.hood_row)
        self.xs, self.ys = self.xs[which], self.ys[which]
        self.contact_weight = self.contact_weight[which]

    def cells(self, class_ids: np.ndarray, confidence: np.ndarray | None = None):
        """(xs, ys, codes, weights) of the seen cells: vehicle-frame centres, class x 256 + confidence, and the
        weight of each cell's evidence (1 on the ground, the spread of a contact elsewhere)."""
        codes = project_cells(self.lookup, class_ids, self.classes, confidence)
        seen = np.flatnonzero(codes != SEEN_CODES)
        codes = np.take(codes, seen)
        weights = np.where(np.take(self._ground, codes >> 8), np.float32(1.0), np.take(self.contact_weight, seen))
        return np.take(self.xs, seen), np.take(self.ys, seen), codes, weights


@dataclass
class _Pending:
    stamp: float
    xs: np.ndarray
    ys: np.ndarray
    codes: np.ndarray
    weights: np.ndarray | None


class MapFuser:
    """Odometry + seen cells of every camera -> ``local_map``."""

    def __init__(self, local_map: LocalMap, odometry: OdometryBuffer, max_pending: int = 8, max_wait: float = 0.5):
        self.map = local_map
        self.odometry = odometry
        self.pending: collections.deque[_Pending] = collections.deque()
        self.max_pending = max_pending      # frames (all cameras together) waiting for their odometry
        self.max_wait = max_wait            # seconds of newer odometry after which a frame's is taken as lost
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

    def add_frame(self, stamp: float, xs: np.ndarray, ys: np.ndarray, codes: np.ndarray,
                  weights: np.ndarray | None = None) -> str:
        """Fuse one camera frame's cells (CameraEvidence.cells) seen at ``stamp``; the answer says what happened
        (OK: fused; anything else: kept for odometry that may still come, or dropped when it cannot)."""
        if self.odometry.floor is not None and stamp < self.odometry.floor:
            self.counts["frames_dropped_before_reset"] += 1
            return BEHIND
        pose, status = self.odometry.pose_at(stamp)
        if status == OK:
            self.map.fuse(stamp, pose, xs, ys, codes, weights)
            self.counts["frames_fused"] += 1
            self.state = "ok"
            return status
        if self._still_hopeful(stamp):
            if len(self.pending) >= self.max_pending:
                self.pending.popleft()
                self.counts["frames_dropped_waiting_too_long"] += 1
            self.pending.append(_Pending(stamp, xs, ys, codes, weights))
            self.counts["frames_waiting"] += 1
        else:
            self._drop(stamp, status)
        if status == NO_ODOMETRY:
            self.state = "no odometry received yet"
        return status

    def _still_hopeful(self, stamp: float) -> bool:
        """Odometry for ``stamp`` may still come: none yet, or the newest is less than ``max_wait`` past it
        (odometry arrives late and out of order on a busy graph)."""
        newest = self.odometry.newest
        return newest is None or newest - stamp <= self.max_wait

    def _drop(self, stamp: float, status: str) -> None:
        self.counts[f"frames_dropped_{status}"] += 1
        self.state = {NO_ODOMETRY: "no odometry received yet",
                      AHEAD: f"no odometry after frame stamp {stamp:.3f}",
                      GAP: f"no odometry within {self.odometry.tolerance:g} s of frame stamp {stamp:.3f}",
                      BEHIND: f"frame stamp {stamp:.3f} older than the odometry kept"}[status]

    def _retry_pending(self) -> None:
        keep = collections.deque()
        for frame in sorted(self.pending, key=lambda f: f.stamp):
            if self.odometry.floor is not None and frame.stamp < self.odometry.floor:
                self.counts["frames_dropped_before_reset"] += 1
                continue
            pose, status = self.odometry.pose_at(frame.stamp)
            if status == OK:
                self.map.fuse(frame.stamp, pose, frame.xs, frame.ys, frame.codes, frame.weights)
                self.counts["frames_fused"] += 1
                self.counts["frames_fused_late"] += 1
                self.state = "ok"
            elif self._still_hopeful(frame.stamp):
                keep.append(frame)
            else:
                self._drop(frame.stamp, status)
        self.pending = keep
