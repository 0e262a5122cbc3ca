"""The ego vehicle's motion and depth as a dataset folder stores them, and the ROS geometry make-bag replays them with.

A folder recorded by ``carla-seg carla --record`` holds, per frame, the ego vehicle's state in ROS conventions:

* pose in the ROS ``map`` frame (right-handed: x forward, y left, z up; CARLA's world with y negated), metres, and
  roll, pitch, yaw in radians (ROS fixed-axis RPY, rotation = Rz(yaw) Ry(pitch) Rx(roll));
* twist in the vehicle (child) frame, m/s and rad/s, as nav_msgs/Odometry defines it;

in the manifest columns ``EGO_FIELDS``; and, with ``--depth``, the depth camera's image as ``depth/NAME.npy``: a
float32 (H, W) array of metres along the optical axis, exactly the values of the bridge's 32FC1 depth image
(``numpy.load``, no pickle). Older folders have neither: ``ego_from_row`` gives None and make-bag writes no
odometry for them.
"""
from __future__ import annotations

import math
from dataclasses import astuple, dataclass, fields
from pathlib import Path

import numpy as np

DEPTH_DIR = "depth"
DEPTH_SUFFIX = ".npy"


@dataclass(frozen=True)
class EgoState:
    """Pose (map frame) and twist (child frame) of the ego vehicle in ROS units: metres, radians, m/s, rad/s."""
    x: float
    y: float
    z: float
    roll: float
    pitch: float
    yaw: float
    vx: float = 0.0
    vy: float = 0.0
    vz: float = 0.0
    wx: float = 0.0
    wy: float = 0.0
    wz: float = 0.0

    def to_row(self) -> dict[str, str]:
        """Manifest columns; ``repr`` of a float reads back to the same float."""
        return {f"ego_{f.name}": repr(float(v)) for f, v in zip(fields(self), astuple(self))}

    @property
    def quaternion(self) -> tuple[float, float, float, float]:
        return quaternion(self.roll, self.pitch, self.yaw)


EGO_FIELDS = tuple(f"ego_{f.name}" for f in fields(EgoState))
POSE_FIELDS = EGO_FIELDS[:6]


def ego_from_row(row: dict) -> EgoState | None:
    """The EgoState of a manifest row; None where the row has no pose (older folders, `record`, `bag-to-dataset`).

    A pose without a twist (hand-made manifests) gets zero velocity. ValueError for a value that is not a finite
    number, so a damaged manifest is reported rather than replayed as a teleport."""
    if not all(str(row.get(k) or "").strip() for k in POSE_FIELDS):
        return None
    values = []
    for key in EGO_FIELDS:
        text = str(row.get(key) or "").strip()
        try:
            value = float(text) if text else 0.0
        except ValueError:
            raise ValueError(f"manifest column {key} of {row.get('name', '?')}: {text!r} is not a number") from None
        if not math.isfinite(value):
            raise ValueError(f"manifest column {key} of {row.get('name', '?')}: {text!r} is not finite")
        values.append(value)
    return EgoState(*values)


def rotation_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """3x3 rotation of ROS fixed-axis roll, pitch, yaw (radians): child frame -> parent frame."""
    cr, sr, cp, sp, cy, sy = (math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch), math.cos(yaw),
                              math.sin(yaw))
    return np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                     [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                     [-sp, cp * sr, cp * cr]])


def quaternion(roll: float, pitch: float, yaw: float) -> tuple[float, float, float, float]:
    """(x, y, z, w) of ROS fixed-axis roll, pitch, yaw (tf2's Quaternion.setRPY; the bridge's quaternion too)."""
    cr, sr = math.cos(roll / 2), math.sin(roll / 2)
    cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    return (sr * cp * cy - cr * sp * sy, cr * sp * cy + sr * cp * sy, cr * cp * sy - sr * sp * cy,
            cr * cp * cy + sr * sp * sy)


def rpy_from_quaternion(x: float, y: float, z: float, w: float) -> tuple[float, float, float]:
    """ROS fixed-axis roll, pitch, yaw of a quaternion (tf2's getRPY); ``quaternion``'s inverse for |pitch| < 90 deg."""
    norm = math.sqrt(x * x + y * y + z * z + w * w) or 1.0
    x, y, z, w = x / norm, y / norm, z / norm, w / norm
    roll = math.atan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = math.asin(max(-1.0, min(1.0, 2 * (w * y - z * x))))
    yaw = math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return roll, pitch, yaw


def ego_from_odometry(msg) -> EgoState:
    """A nav_msgs/Odometry (rclpy or rosbags message) as an EgoState: its pose and its twist as they are."""
    p, q = msg.pose.pose.position, msg.pose.pose.orientation
    lin, ang = msg.twist.twist.linear, msg.twist.twist.angular
    return EgoState(float(p.x), float(p.y), float(p.z), *rpy_from_quaternion(q.x, q.y, q.z, q.w),
                    float(lin.x), float(lin.y), float(lin.z), float(ang.x), float(ang.y), float(ang.z))


def depth_path(folder: Path, name: str) -> Path:
    return Path(folder) / DEPTH_DIR / f"{name}{DEPTH_SUFFIX}"


def read_depth(path: Path) -> np.ndarray:
    """A recorded depth image: float32 (H, W) metres. ValueError naming the file for anything else."""
    try:
        depth = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read depth image {path}: {exc}") from exc
    if depth.dtype != np.float32 or depth.ndim != 2:
        raise ValueError(f"depth image {path} is {depth.dtype} {depth.shape}; expected float32 (H, W) metres")
    return depth
