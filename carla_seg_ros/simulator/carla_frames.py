"""CARLA's left-handed world -> ROS's right-handed frames, and the depth camera's raw image -> metres.

No ``import carla`` here: the functions read the attributes of carla.Transform / Location / Rotation / Vector3D
(or anything with the same attributes), so they are tested without a server.

CARLA (Unreal) is left-handed: x forward, y right, z up, angles in degrees. ROS is right-handed (REP 103): x
forward, y left, z up, radians. The CARLA ROS bridge (carla_common/transforms.py) converts by negating y, keeping
roll and negating pitch and yaw. That is the mirror image through the x-z plane: with F = diag(1, -1, 1) the ROS
rotation matrix is F R_carla F, which the tests check against carla.Transform.get_matrix().

Twist: nav_msgs/Odometry defines it in the child frame (the vehicle). CARLA reports the velocity in world
coordinates (m/s) and the angular velocity about the world axes (deg/s, with the bridge's sign rules: x kept, y
and z negated); both are mirrored into the ROS map frame and then rotated into the vehicle frame (R^T v). On level
ground this is the bridge's twist; on a slope the bridge rotates the world velocity the other way (R v) and leaves
the angular velocity in world axes, which is not the child frame the message promises.
"""
from __future__ import annotations

import math

import numpy as np

from carla_seg_ros.evaluation.ego_motion import EgoState, rotation_matrix

# CARLA's depth camera encodes the depth in 24 bits of its BGRA image: (R + G*256 + B*256^2) / (256^3 - 1) of
# 1000 m. The 24-bit integer is exact; one float64 product then float32, like the bridge's depth camera.
DEPTH_MAX_M = 1000.0
DEPTH_UNIT_M = DEPTH_MAX_M / (256 ** 3 - 1)


def ros_position(location) -> tuple[float, float, float]:
    """carla.Location (metres, y right) -> ROS point (y left)."""
    return float(location.x), -float(location.y), float(location.z)


def ros_rpy(rotation) -> tuple[float, float, float]:
    """carla.Rotation (degrees) -> ROS roll, pitch, yaw (radians): roll kept, pitch and yaw negated."""
    return math.radians(rotation.roll), -math.radians(rotation.pitch), -math.radians(rotation.yaw)


def ego_state(transform, velocity, angular_velocity) -> EgoState:
    """An actor's carla.Transform, velocity (m/s, world) and angular velocity (deg/s, world) -> its EgoState:
    pose in the ROS map frame, twist in its own (child) frame."""
    x, y, z = ros_position(transform.location)
    roll, pitch, yaw = ros_rpy(transform.rotation)
    to_child = rotation_matrix(roll, pitch, yaw).T
    linear = to_child @ np.array(ros_position(velocity))
    angular = to_child @ np.radians([angular_velocity.x, -angular_velocity.y, -angular_velocity.z])
    return EgoState(x, y, z, roll, pitch, yaw, *map(float, linear), *map(float, angular))


def depth_metres(bgra: np.ndarray) -> np.ndarray:
    """CARLA depth camera image (H, W, 4) uint8 BGRA -> (H, W) float32 metres along the optical axis (0..1000)."""
    if bgra.ndim != 3 or bgra.shape[2] != 4 or bgra.dtype != np.uint8:
        raise ValueError(f"a CARLA depth image is (H, W, 4) uint8 BGRA, got {bgra.dtype} {bgra.shape}")
    # Integer shifts, not the bridge's float dot product with (65536, 256, 1, 0): 3 ms instead of 10-19 ms at 800x600
    # on this CPU, and the same float32 values.
    code = bgra[..., 2].astype(np.uint32)
    code |= bgra[..., 1].astype(np.uint32) << 8
    code |= bgra[..., 0].astype(np.uint32) << 16
    return (code * DEPTH_UNIT_M).astype(np.float32)


def odometry_msg(state: EgoState, stamp: int, role: str):
    """nav_msgs/Odometry as the bridge's odometry pseudo-sensor sends it: frame ``map``, child ``<role>``."""
    from nav_msgs.msg import Odometry
    msg = Odometry()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp), 10**9)
    msg.header.frame_id = "map"
    msg.child_frame_id = role
    p, q = msg.pose.pose.position, msg.pose.pose.orientation
    p.x, p.y, p.z = state.x, state.y, state.z
    q.x, q.y, q.z, q.w = state.quaternion
    lin, ang = msg.twist.twist.linear, msg.twist.twist.angular
    lin.x, lin.y, lin.z = state.vx, state.vy, state.vz
    ang.x, ang.y, ang.z = state.wx, state.wy, state.wz
    return msg


def depth_image_msg(depth: np.ndarray, stamp: int, frame_id: str):
    """sensor_msgs/Image 32FC1 (metres), as the bridge's depth camera publishes it."""
    from sensor_msgs.msg import Image
    depth = np.ascontiguousarray(depth, "<f4")      # little-endian whatever the host: is_bigendian = 0
    msg = Image()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp), 10**9)
    msg.header.frame_id = frame_id
    msg.height, msg.width = depth.shape
    msg.encoding, msg.is_bigendian, msg.step = "32FC1", 0, depth.shape[1] * 4
    msg.data = depth.tobytes()
    return msg
