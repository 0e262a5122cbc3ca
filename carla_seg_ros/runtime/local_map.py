"""A rolling log-odds ground map around the ego, in the odometry frame, fed with per-frame cell evidence.

Layers (one float32 log-odds value per cell each; 0 = no evidence, > 0 = more likely than not):

* ``occupancy``: the static part of ``~/local_map``. Seen drivable ground pushes it down, seen non-drivable ground
  or a static obstacle (a wall, a pole, a sidewalk) pushes it up. A vehicle or pedestrian seen on a cell says
  nothing about what stays there, so it leaves this layer alone.
* one layer per class group of config/occupancy.yaml: seen with a class of the group pushes it up (weighted by the
  model's confidence), seen with another class pushes it down.

Groups named in ``dynamic`` (default vehicles and pedestrians) are things that move. Their positive evidence
decays linearly to 0 within ``decay_time`` seconds of stamp time, whatever its value, so a car that drove out of
view leaves no trail behind it; in view, seen free space clears it sooner. Static groups persist until evidence
against them. Every layer is clamped, so a cell that was certain for a minute still changes within a few frames.

The grid is ``size`` metres square, centred on the ego, with its edges on multiples of ``resolution`` in the
odometry frame. When the ego has moved ``recentre_distance`` from the centre, the layers shift by whole cells and
the cells that come in are unknown. ROS-free, pure numpy; docs/concepts/local_map.md has the model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from carla_seg_ros.runtime.occupancy_grid import FREE, OCCUPIED, SEEN_CODES, UNKNOWN, OccupancyClasses
from carla_seg_ros.runtime.odometry_buffer import PlanarPose

OCCUPANCY_LAYER = "occupancy"
MAX_MAP_CELLS = 4_000_000
_LUT_STEPS = 100                   # log-odds -> percent table: 0.01 log-odds steps


@dataclass(frozen=True)
class MapSpec:
    """Extent and cell size of the rolling map (metres), and how far the ego may stray from its centre."""
    resolution: float = 0.2
    size: float = 60.0
    recentre_distance: float = 1.0

    def check(self) -> "MapSpec":
        if not self.resolution > 0 or not self.size >= 2 * self.resolution:
            raise ValueError(f"map of {self.size} m with {self.resolution} m cells: resolution must be > 0 and the "
                             "size at least two cells")
        if self.cells ** 2 > MAX_MAP_CELLS:
            raise ValueError(f"map of {self.cells}x{self.cells} cells exceeds {MAX_MAP_CELLS} cells (coarser "
                             "resolution or a smaller size)")
        if not 0 <= self.recentre_distance <= self.size / 4:
            raise ValueError(f"recentre distance {self.recentre_distance} m must be within [0, size/4]")
        return self

    @property
    def cells(self) -> int:
        return max(2, int(round(self.size / self.resolution)))


@dataclass(frozen=True)
class FilterParams:
    """Log-odds increments and clamps. Static layers: ``hit``/``miss`` within [``low``, ``high``]; dynamic
    layers: ``dynamic_hit``/``dynamic_miss`` within [``dynamic_low``, ``dynamic_high``] and the decay."""
    hit: float = 0.85                # p 0.70: two agreeing frames outweigh one contrary frame
    miss: float = -0.4               # p 0.40
    low: float = -2.0                # p 0.12 .. 0.97: a settled cell still flips within about five frames
    high: float = 3.5
    dynamic_hit: float = 1.4         # p 0.80: a car must show up in one frame even on ground seen free for long
    dynamic_miss: float = -0.7
    dynamic_low: float = -1.0
    dynamic_high: float = 3.0
    decay_time: float = 2.0          # seconds from dynamic_high to 0

    def check(self) -> "FilterParams":
        if not (self.hit > 0 > self.miss and self.dynamic_hit > 0 > self.dynamic_miss):
            raise ValueError("hit increments must be > 0 and miss increments < 0")
        if not (self.low < 0 < self.high and self.dynamic_low < 0 < self.dynamic_high):
            raise ValueError("clamps must straddle 0")
        if not self.decay_time > 0:
            raise ValueError(f"decay time {self.decay_time} must be > 0 seconds")
        return self


def evidence_tables(classes: OccupancyClasses, dynamic: tuple[str, ...], f: FilterParams):
    """(layer names, is-dynamic flags, (layers, SEEN_CODES + 1) float32 increments per frame code, lows, highs).

    A code is class id x 256 + confidence (runtime/occupancy_grid.py); the not-seen code adds nothing.
    """
    unknown = sorted(set(dynamic) - set(classes.groups))
    if unknown:
        raise ValueError(f"dynamic groups {unknown} are not groups of the occupancy config "
                         f"({', '.join(classes.groups)})")
    names = [OCCUPANCY_LAYER, *classes.groups]
    is_dynamic = np.array([n in dynamic for n in names])
    moving = np.zeros(256, bool)
    for name in dynamic:
        moving |= classes.groups[name]
    weight = np.arange(256, dtype=np.float32) / 255.0           # the model's confidence scales every increment
    per_class = np.zeros((len(names), 256), np.float32)
    per_class[0] = np.where(classes.free, f.miss, np.where(moving, 0.0, f.hit))
    for k, name in enumerate(names[1:], 1):
        hit, miss = (f.dynamic_hit, f.dynamic_miss) if is_dynamic[k] else (f.hit, f.miss)
        per_class[k] = np.where(classes.groups[name], hit, miss)
    table = np.zeros((len(names), SEEN_CODES + 1), np.float32)
    table[:, :SEEN_CODES] = (per_class[:, :, None] * weight[None, None, :]).reshape(len(names), -1)
    lows = np.where(is_dynamic, f.dynamic_low, f.low).astype(np.float32)[:, None]
    highs = np.where(is_dynamic, f.dynamic_high, f.high).astype(np.float32)[:, None]
    return names, is_dynamic, table, lows, highs


class LocalMap:
    """The layers, their origin in the odometry frame, and the stamp of the newest fused frame."""

    def __init__(self, spec: MapSpec, classes: OccupancyClasses, dynamic=("vehicles", "pedestrians"),
                 params: FilterParams = FilterParams()):
        self.spec = spec.check()
        self.params = params.check()
        dynamic = tuple(d for d in dynamic if d)
        self.names, self.is_dynamic, self._table, self._low, self._high = evidence_tables(classes, dynamic, params)
        self.groups = self.names[1:]
        n = spec.cells
        self.layers = np.zeros((len(self.names), n * n), np.float32)
        self._spare = np.zeros_like(self.layers)                 # the shift's target, swapped in
        self._dynamic_rows = np.flatnonzero(self.is_dynamic)
        self.origin: tuple[float, float] | None = None           # odometry-frame corner of cell (0, 0)
        self.stamp: float | None = None                          # newest fused frame
        self._decayed_to: float | None = None
        lut_x = np.arange(int((params.low - 1) * _LUT_STEPS), int((max(params.high, params.dynamic_high) + 1)
                                                                  * _LUT_STEPS) + 1) / _LUT_STEPS
        self._lut_start = lut_x[0]
        self._percent = np.round(100.0 / (1.0 + np.exp(-lut_x))).astype(np.int8)
        self.resets = 0

    # ---------------------------------------------------------------- another model's classes (live model swap)
    def tables_for(self, classes: OccupancyClasses) -> tuple:
        """The evidence tables of another class table for the same layers (seg_node's live model swap: the class
        ids change, the groups of the occupancy config do not); ValueError if its groups give other layers."""
        dynamic = tuple(n for n, d in zip(self.names, self.is_dynamic) if d)
        names, is_dynamic, table, low, high = evidence_tables(classes, dynamic, self.params)
        if list(names) != list(self.names):
            raise ValueError(f"its occupancy groups ({', '.join(names[1:])}) differ from the local map's layers "
                             f"({', '.join(self.names[1:])})")
        return table, low, high

    def use_tables(self, tables: tuple) -> None:
        """Fuse the next frames with ``tables`` (from tables_for); the layers keep what they hold."""
        self._table, self._low, self._high = tables

    # ---------------------------------------------------------------- placement
    def _snapped_origin(self, pose: PlanarPose) -> tuple[float, float]:
        res, half = self.spec.resolution, self.spec.cells * self.spec.resolution / 2
        return (math.floor((pose.x - half) / res + 0.5) * res, math.floor((pose.y - half) / res + 0.5) * res)

    @property
    def centre(self) -> tuple[float, float] | None:
        if self.origin is None:
            return None
        half = self.spec.cells * self.spec.resolution / 2
        return self.origin[0] + half, self.origin[1] + half

    def follow(self, pose: PlanarPose) -> None:
        """Keep the ego near the centre: place the grid on the first pose, shift it by whole cells later."""
        if self.origin is None:
            self.origin = self._snapped_origin(pose)
            return
        cx, cy = self.centre
        if max(abs(pose.x - cx), abs(pose.y - cy)) < max(self.spec.recentre_distance, self.spec.resolution):
            return
        new = self._snapped_origin(pose)
        res = self.spec.resolution
        shift_col = int(round((new[0] - self.origin[0]) / res))
        shift_row = int(round((new[1] - self.origin[1]) / res))
        self._shift(shift_row, shift_col)
        self.origin = (self.origin[0] + shift_col * res, self.origin[1] + shift_row * res)

    def _shift(self, rows: int, cols: int) -> None:
        """Move the content by (-rows, -cols) cells (the grid moved by +rows, +cols); new cells are unknown."""
        n = self.spec.cells
        old = self.layers.reshape(len(self.names), n, n)
        new = self._spare.reshape(len(self.names), n, n)
        new[:] = 0.0
        if abs(rows) < n and abs(cols) < n:
            src_r, dst_r = (slice(rows, n), slice(0, n - rows)) if rows >= 0 else (slice(0, n + rows), slice(-rows, n))
            src_c, dst_c = (slice(cols, n), slice(0, n - cols)) if cols >= 0 else (slice(0, n + cols), slice(-cols, n))
            new[:, dst_r, dst_c] = old[:, src_r, src_c]
        self.layers, self._spare = self._spare, self.layers

    def reset(self) -> None:
        """Forget everything (an odometry jump: the old cells are in a frame that no longer holds)."""
        self.layers[:] = 0.0
        self.origin = None
        self.stamp = None
        self._decayed_to = None
        self.resets += 1

    # ---------------------------------------------------------------- evidence
    def decay(self, stamp: float) -> None:
        """Age the dynamic layers' positive evidence up to ``stamp`` (older stamps change nothing)."""
        if self._decayed_to is None or stamp <= self._decayed_to:
            self._decayed_to = stamp if self._decayed_to is None else self._decayed_to
            return
        step = (stamp - self._decayed_to) * self.params.dynamic_high / self.params.decay_time
        self._decayed_to = stamp
        for k in self._dynamic_rows:
            layer = self.layers[k]
            # positive values drop by step, never below 0; negative ones (seen free of cars) stay
            np.minimum(layer, np.maximum(layer - step, 0.0), out=layer)

    def fuse(self, stamp: float, pose: PlanarPose, xs: np.ndarray, ys: np.ndarray, codes: np.ndarray,
             weights: np.ndarray | None = None) -> int:
        """Add one camera frame: vehicle-frame cell centres (xs, ys) seen with ``codes`` (class x 256 +
        confidence) at ``pose``, each increment scaled by ``weights`` (None: 1). Returns the map cells touched."""
        self.follow(pose)
        self.decay(stamp)
        self.stamp = stamp if self.stamp is None else max(self.stamp, stamp)
        wx, wy = pose.to_world(xs, ys)
        res, n = self.spec.resolution, self.spec.cells
        col = np.floor((wx - self.origin[0]) * (1.0 / res)).astype(np.intp)
        row = np.floor((wy - self.origin[1]) * (1.0 / res)).astype(np.intp)
        inside = (col >= 0) & (col < n) & (row >= 0) & (row < n)
        cells = (row * n + col)[inside]
        increments = np.take(self._table, codes[inside], axis=1)
        if weights is not None:
            increments *= weights[inside]
        values = np.take(self.layers, cells, axis=1)
        values += increments
        np.clip(values, self._low, self._high, out=values)
        self.layers[:, cells] = values        # a cell hit twice in one frame takes one increment: no double count
        return int(cells.size)

    # ---------------------------------------------------------------- outputs
    def occupancy(self) -> np.ndarray:
        """(cells, cells) int8 as ~/occupancy: 0 free, 100 occupied (static or a dynamic group), -1 unknown."""
        static = self.layers[0]
        dynamic = self.layers[self._dynamic_rows].max(axis=0) if self._dynamic_rows.size else np.zeros_like(static)
        out = np.where(static > 0, OCCUPIED, FREE).astype(np.int8)
        out[dynamic > 0] = OCCUPIED
        out[(static == 0) & (dynamic <= 0)] = UNKNOWN
        return out.reshape(self.spec.cells, self.spec.cells)

    def group(self, name: str) -> np.ndarray:
        """(cells, cells) int8: the group's probability in percent, -1 where it has no evidence."""
        layer = self.layers[self.names.index(name)]
        index = np.rint((layer - self._lut_start) * _LUT_STEPS).astype(np.intp)
        out = np.take(self._percent, index)
        out[layer == 0] = UNKNOWN
        return out.reshape(self.spec.cells, self.spec.cells)

    def known(self) -> np.ndarray:
        """(cells, cells) bool: cells with any evidence in any layer."""
        return (self.layers != 0).any(axis=0).reshape(self.spec.cells, self.spec.cells)

