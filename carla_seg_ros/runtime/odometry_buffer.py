"""Recent odometry poses, and the pose of the vehicle at a camera frame's stamp.

The local map (runtime/local_map.py) places each camera frame with the vehicle's pose at the frame's stamp. Odometry
and camera frames are separate topics, so a frame's stamp rarely equals an odometry stamp: the pose is interpolated
between the two odometry samples around it, when the nearer one lies within ``tolerance`` seconds. What can go
wrong on a real graph, and what this does about it:

* out-of-order odometry (two publishers, a reordering transport): inserted at its place in time;
* late odometry (the frame is newer than the newest pose): the frame is answered "ahead", and the caller keeps it
  until a pose after it arrives; within ``tolerance`` of the newest pose it is extrapolated at the last velocity;
* missing odometry (a gap wider than twice the tolerance around the frame): "gap", the frame is not placed;
* a jump (teleport, respawn, a new episode): a pose farther from its neighbour in time than any vehicle drives
  (``jump_distance`` and faster than ``max_speed``), or a stamp that goes back past the kept history (a restarted
  simulation clock), empties the buffer and is reported, so the map that was built on the old poses is reset.

Poses are planar (x, y, yaw) plus a height: the map is a ground grid, and the flat-ground camera model ignores the
vehicle's roll and pitch anyway (docs/occupancy.md, Limitations). ROS-free, pure Python and numpy.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import numpy as np

# add() answers
ACCEPTED, OUT_OF_ORDER, DUPLICATE, TOO_OLD, JUMP, REWIND, INVALID = (
    "accepted", "out_of_order", "duplicate", "too_old", "jump", "rewind", "invalid")
# pose_at() answers
OK, NO_ODOMETRY, AHEAD, BEHIND, GAP = "ok", "no_odometry", "ahead", "behind", "gap"


@dataclass(frozen=True)
class PlanarPose:
    """The vehicle frame's pose in the odometry frame: position (m) and heading (rad, about z, REP-103)."""
    x: float
    y: float
    z: float = 0.0
    yaw: float = 0.0

    def to_world(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vehicle-frame ground points -> odometry-frame points."""
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        return self.x + c * xs - s * ys, self.y + s * xs + c * ys

    def distance(self, other: "PlanarPose") -> float:
        return math.hypot(self.x - other.x, self.y - other.y)


def yaw_of_quaternion(x: float, y: float, z: float, w: float) -> float:
    """Heading (rotation about z) of a unit quaternion, as nav_msgs/Odometry carries it."""
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def interpolate(a: PlanarPose, b: PlanarPose, f: float) -> PlanarPose:
    """The pose a fraction ``f`` of the way from a to b (f outside [0, 1] extrapolates); yaw on the short arc."""
    dyaw = math.remainder(b.yaw - a.yaw, 2 * math.pi)
    return PlanarPose(a.x + f * (b.x - a.x), a.y + f * (b.y - a.y), a.z + f * (b.z - a.z),
                      math.remainder(a.yaw + f * dyaw, 2 * math.pi))


class OdometryBuffer:
    """Odometry samples of the last ``horizon`` seconds, sorted by stamp (seconds, any clock the frames share)."""

    def __init__(self, tolerance: float = 0.1, horizon: float = 5.0, jump_distance: float = 5.0,
                 max_speed: float = 70.0):
        if not tolerance > 0 or not horizon > tolerance:
            raise ValueError(f"odometry tolerance {tolerance} must be > 0 and below the horizon {horizon}")
        self.tolerance = tolerance
        self.horizon = horizon
        self.jump_distance = jump_distance
        self.max_speed = max_speed          # m/s: 250 km/h; faster than that between two samples is a jump
        self.stamps: list[float] = []
        self.poses: list[PlanarPose] = []
        self.floor: float | None = None     # stamp of the last reset: older frames belong to the old map

    def __len__(self) -> int:
        return len(self.stamps)

    @property
    def newest(self) -> float | None:
        return self.stamps[-1] if self.stamps else None

    def clear(self) -> None:
        self.stamps.clear()
        self.poses.clear()
        self.floor = None

    def _restart(self, stamp: float, pose: PlanarPose) -> None:
        self.clear()
        self.stamps.append(stamp)
        self.poses.append(pose)
        self.floor = stamp

    def add(self, stamp: float, pose: PlanarPose) -> str:
        """Insert one odometry sample; the answer says what happened (JUMP and REWIND mean: reset the map)."""
        if not all(math.isfinite(v) for v in (stamp, pose.x, pose.y, pose.z, pose.yaw)):
            return INVALID
        if not self.stamps:
            self.stamps.append(stamp)
            self.poses.append(pose)
            return ACCEPTED
        newest = self.stamps[-1]
        if self.floor is not None and stamp < self.floor:
            return TOO_OLD                  # from before the last reset: the old episode's
        if stamp < newest - self.horizon:
            # Far older than anything kept: a restarted clock (new episode) if it is near the start of time,
            # else a straggler. Both cannot be told apart by the stamp alone; a straggler that old is useless,
            # and a restarted clock will send many more such stamps, so one is taken as the sign of a rewind.
            self._restart(stamp, pose)
            return REWIND
        i = bisect.bisect_left(self.stamps, stamp)
        if i < len(self.stamps) and self.stamps[i] == stamp:
            return DUPLICATE
        for j in (i - 1, i):        # the neighbours in time, before and after
            if 0 <= j < len(self.stamps) and self._is_jump(self.stamps[j], self.poses[j], stamp, pose):
                self._restart(stamp, pose)
                return JUMP
        newest_now = i == len(self.stamps)
        self.stamps.insert(i, stamp)
        self.poses.insert(i, pose)
        drop = bisect.bisect_left(self.stamps, self.stamps[-1] - self.horizon)
        if drop:
            del self.stamps[:drop], self.poses[:drop]
        return ACCEPTED if newest_now else OUT_OF_ORDER

    def _is_jump(self, t0: float, p0: PlanarPose, t1: float, p1: PlanarPose) -> bool:
        d = p0.distance(p1)
        return d > self.jump_distance and d > self.max_speed * abs(t1 - t0)

    def pose_at(self, stamp: float) -> tuple[PlanarPose | None, str]:
        """The pose at ``stamp`` and OK, or None and why (NO_ODOMETRY, AHEAD: wait for newer odometry, BEHIND:
        older than the history, GAP: no sample within the tolerance)."""
        if not self.stamps:
            return None, NO_ODOMETRY
        if self.floor is not None and stamp < self.floor:
            return None, BEHIND
        tol = self.tolerance
        if stamp > self.stamps[-1]:
            if stamp - self.stamps[-1] > tol:
                return None, AHEAD
            if len(self.stamps) == 1 or self.stamps[-1] - self.stamps[-2] > 2 * tol:
                return self.poses[-1], OK
            t0, t1 = self.stamps[-2], self.stamps[-1]         # constant velocity for at most the tolerance
            return interpolate(self.poses[-2], self.poses[-1], (stamp - t0) / (t1 - t0)), OK
        if stamp < self.stamps[0]:
            return (self.poses[0], OK) if self.stamps[0] - stamp <= tol else (None, BEHIND)
        i = bisect.bisect_left(self.stamps, stamp)
        if self.stamps[i] == stamp:
            return self.poses[i], OK
        t0, t1 = self.stamps[i - 1], self.stamps[i]
        if min(stamp - t0, t1 - stamp) > tol:
            return None, GAP
        return interpolate(self.poses[i - 1], self.poses[i], (stamp - t0) / (t1 - t0)), OK
