"""CARLA -> ROS frames for the odometry, and the depth camera's raw image, without a CARLA server.

Real: carla.Transform / Location / Rotation / Vector3D objects of the installed CARLA 0.9.16 client library (their
own get_matrix, get_forward_vector, transform_vector serve as the independent reference), the bridge publisher over
Fast DDS on loopback. Hand-computed cases pin the sign rules (yaw 90 degrees, pitched, rolled, velocity in the
vehicle frame).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from carla_seg_ros.evaluation.ego_motion import EgoState, ego_from_row, quaternion, rotation_matrix
from carla_seg_ros.simulator import carla_sensors as cs
from carla_seg_ros.simulator.carla_frames import DEPTH_MAX_M, depth_metres, ego_state, ros_position, ros_rpy

carla = pytest.importorskip("carla", reason="the CARLA client wheel (extra `carla`) is not installed")

F = np.diag([1.0, -1.0, 1.0])       # CARLA's y (right) <-> ROS's y (left)


def at(x=0.0, y=0.0, z=0.0, roll=0.0, pitch=0.0, yaw=0.0):
    return carla.Transform(carla.Location(x=x, y=y, z=z), carla.Rotation(roll=roll, pitch=pitch, yaw=yaw))


def vec(x, y, z):
    return carla.Vector3D(x=x, y=y, z=z)


def quat_to_matrix(q):
    x, y, z, w = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def test_yaw_90_faces_carla_y_which_is_ros_minus_y():
    """CARLA yaw 90: the car points along CARLA +y (to the right of +x), i.e. ROS -y; driving forward at 8 m/s and
    turning right (CARLA yaw rate +10 deg/s) is +8 m/s along the child x and a negative ROS yaw rate."""
    s = ego_state(at(x=10, y=5, z=0.5, yaw=90), vec(0, 8, 0), vec(0, 0, 10))
    assert (s.x, s.y, s.z) == (10.0, -5.0, 0.5)
    assert (s.roll, s.pitch) == (0.0, -0.0) and s.yaw == pytest.approx(-math.pi / 2)
    assert s.quaternion == pytest.approx((0.0, 0.0, -math.sqrt(0.5), math.sqrt(0.5)))
    assert (s.vx, s.vy, s.vz) == pytest.approx((8.0, 0.0, 0.0), abs=1e-12)
    assert (s.wx, s.wy, s.wz) == pytest.approx((0.0, 0.0, -math.radians(10)), abs=1e-12)
    # Angular velocity about the world axes, rotated into the child frame: (a, b, c) deg/s in CARLA is
    # (a, -b, -c) rad/s in the ROS map frame, and with the car facing ROS -y that is (b, a, -c) in its own frame.
    s = ego_state(at(yaw=90), vec(0, 0, 0), vec(1, 2, 3))
    assert (s.wx, s.wy, s.wz) == pytest.approx(tuple(math.radians(v) for v in (2, 1, -3)), abs=1e-12)


def test_pitched_and_rolled_cases_by_hand():
    # Nose up 30 degrees (CARLA pitch +30 = ROS pitch -30), driving 10 m/s along the nose: the world velocity is
    # (10 cos 30, 0, 10 sin 30) and in the child frame it is straight ahead.
    s = ego_state(at(pitch=30), vec(10 * math.cos(math.radians(30)), 0, 10 * math.sin(math.radians(30))),
                  vec(0, 0, 0))
    assert s.pitch == pytest.approx(-math.pi / 6) and (s.roll, s.yaw) == (0.0, -0.0)
    assert (s.vx, s.vy, s.vz) == pytest.approx((10.0, 0.0, 0.0), abs=1e-5)   # carla.Vector3D holds float32
    assert s.quaternion == pytest.approx((0.0, -math.sin(math.pi / 12), 0.0, math.cos(math.pi / 12)))
    # Rolled 20 degrees (left side up, roof leaning right): a world-up velocity of 1 m/s has a +sin 20 component
    # along the child's y (left) axis and cos 20 along its z.
    s = ego_state(at(roll=20), vec(0, 0, 1), vec(0, 0, 0))
    assert s.roll == pytest.approx(math.radians(20))
    assert (s.vx, s.vy, s.vz) == pytest.approx((0.0, math.sin(math.radians(20)), math.cos(math.radians(20))),
                                               abs=1e-5)


@pytest.mark.parametrize("rot", [(10, 90, 5), (-25, 33, 40), (0, -120, 0), (60, 10, -70), (5, 179, -3)])
def test_rotation_is_carla_mirrored_through_the_xz_plane(rot):
    """For any rotation the ROS matrix is F R_carla F (CARLA's own get_matrix), and the car's forward vector (CARLA's
    get_forward_vector) mirrored is the child x axis; the quaternion is the same rotation."""
    pitch, yaw, roll = rot
    t = at(roll=roll, pitch=pitch, yaw=yaw)
    r = rotation_matrix(*ros_rpy(t.rotation))
    carla_r = np.array(t.get_matrix())[:3, :3]
    assert np.abs(F @ carla_r @ F - r).max() < 1e-6
    fwd = t.get_forward_vector()
    assert r[:, 0] == pytest.approx(F @ [fwd.x, fwd.y, fwd.z], abs=1e-6)
    assert np.abs(quat_to_matrix(quaternion(*ros_rpy(t.rotation))) - r).max() < 1e-12


@pytest.mark.parametrize("rot", [(10, 90, 5), (-25, 33, 40), (60, 10, -70)])
def test_velocity_comes_back_in_the_child_frame(rot):
    """A velocity known in the vehicle frame (ROS axes), turned into CARLA world coordinates by CARLA's own
    Transform.transform_vector, comes back out of ego_state unchanged."""
    pitch, yaw, roll = rot
    t = at(x=3, y=-4, z=1, roll=roll, pitch=pitch, yaw=yaw)
    body = (4.0, -1.5, 0.25)
    world = t.transform_vector(vec(body[0], -body[1], body[2]))      # ROS body axes -> CARLA local -> world
    s = ego_state(t, world, vec(0, 0, 0))
    assert (s.vx, s.vy, s.vz) == pytest.approx(body, abs=1e-5)
    assert ros_position(t.location) == (3.0, 4.0, 1.0)


def test_depth_decoding_of_a_synthetic_raw_buffer():
    """CARLA's depth camera: (R + G*256 + B*256^2) / (256^3 - 1) of 1000 m, in a BGRA buffer."""
    metres = np.array([[0.0, 1.0, 2.5, 12.345], [80.0, 333.3, 999.0, 1000.0]])
    n = np.round(metres / 1000.0 * (256 ** 3 - 1)).astype(np.int64)
    bgra = np.stack([(n >> 16) & 255, (n >> 8) & 255, n & 255, np.full_like(n, 255)], axis=-1).astype(np.uint8)
    raw = bgra.tobytes()                                   # what carla.Image.raw_data holds
    depth = depth_metres(cs.bgra_array(raw, 4, 2))
    assert depth.dtype == np.float32 and depth.shape == (2, 4)
    step = 1000.0 / (256 ** 3 - 1)                          # the encoding's resolution: 0.06 mm
    assert np.abs(depth - metres).max() <= step
    assert depth[1, 3] == DEPTH_MAX_M and depth[0, 0] == 0.0
    # One unit of each channel: R is the low byte, B the high one.
    units = np.zeros((1, 3, 4), np.uint8)
    units[0, 0, 2], units[0, 1, 1], units[0, 2, 0] = 1, 1, 1
    assert depth_metres(units)[0] == pytest.approx([step, 256 * step, 65536 * step], rel=1e-6)
    # The same float32 values as the bridge's depth camera computes them (a float64 dot product, then float32).
    bridge_scales = np.array([65536.0, 256.0, 1.0, 0.0]) / (256 ** 3 - 1) * 1000.0
    noise = np.random.default_rng(0).integers(0, 256, (60, 80, 4), dtype=np.uint8)
    assert np.array_equal(depth_metres(noise), np.dot(noise, bridge_scales).astype(np.float32))
    with pytest.raises(ValueError, match="BGRA"):
        depth_metres(np.zeros((2, 4, 3), np.uint8))


def test_ego_state_round_trips_through_a_manifest_row():
    s = ego_state(at(x=1.25, y=-7.5, z=0.1, roll=1, pitch=-2, yaw=33.3), vec(3, 4, 0), vec(0, 0, -5))
    row = s.to_row()
    assert ego_from_row({k: str(v) for k, v in row.items()}) == s        # repr of a float reads back exactly
    assert ego_from_row({}) is None and ego_from_row({"ego_x": "1"}) is None
    pose_only = ego_from_row({k: row[k] for k in ("ego_x", "ego_y", "ego_z", "ego_roll", "ego_pitch", "ego_yaw")})
    assert pose_only == EgoState(s.x, s.y, s.z, s.roll, s.pitch, s.yaw)
    with pytest.raises(ValueError, match="ego_yaw of f1: 'north' is not a number"):
        ego_from_row(dict(row, ego_yaw="north", name="f1"))
    with pytest.raises(ValueError, match="not finite"):
        ego_from_row(dict(row, ego_x="nan"))


def test_depth_camera_attributes_match_the_rgb_camera():
    rgb, depth = cs.camera_attributes(cs.RGB), cs.camera_attributes(cs.DEPTH)
    assert {k: v for k, v in rgb.items() if k != "role_name"} == {k: v for k, v in depth.items() if k != "role_name"}
    assert depth["role_name"] == "depth_front" and cs.ALL_BLUEPRINTS[cs.DEPTH] == "sensor.camera.depth"
    topics = cs.topic_names("hero", depth=True)
    assert (topics["depth"], topics["depth_info"]) == ("/carla/hero/depth_front/image",
                                                       "/carla/hero/depth_front/camera_info")
    assert "depth" not in cs.topic_names("hero") and cs.odometry_topic("hero") == "/carla/hero/odometry"


def test_bridge_publisher_sends_odometry_and_depth_over_dds(monkeypatch):
    """--ros client --depth, for real over Fast DDS: the odometry and the depth camera arrive as the bridge sends
    them, with the tick's stamp on every message."""
    rclpy = pytest.importorskip("rclpy", reason="ROS 2 wheels (extra `ros`) are not installed")
    import os
    import time

    from nav_msgs.msg import Odometry
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image

    from carla_seg_ros.simulator.bridge_publisher import BridgePublisher

    monkeypatch.setenv("ROS_DOMAIN_ID", "43")
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    role = f"odomtest{os.getpid()}"
    rng = np.random.default_rng(7)
    raw = rng.integers(0, 256, (6, 8, 4), dtype=np.uint8)
    ego = ego_state(at(x=10, y=5, z=0.5, yaw=90), vec(0, 8, 0), vec(0, 0, 10))
    pub = BridgePublisher(role, 8, 6, 90.0, "tags29", depth=True)
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=43)
    node = rclpy.create_node("odometry_probe", context=ctx)
    got = {}
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    topics = cs.topic_names(role, depth=True)
    node.create_subscription(Odometry, cs.odometry_topic(role), lambda m: got.setdefault("odometry", m), qos)
    node.create_subscription(Image, topics["depth"], lambda m: got.setdefault("depth", m), qos)
    node.create_subscription(CameraInfo, topics["depth_info"], lambda m: got.setdefault("depth_info", m), qos)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    try:
        deadline = time.monotonic() + 30
        wanted = (pub.odometry, pub.pubs["depth"], pub.pubs["depth_info"])
        while any(p.get_subscription_count() == 0 for p in wanted) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        stamp = 7 * 10**9 + 50_000_000
        pub.publish(stamp, raw.tobytes(), raw.tobytes(), ego, raw.tobytes())
        while len(got) < 3 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
    finally:
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
        pub.close()
    assert set(got) == {"odometry", "depth", "depth_info"}, set(got)
    odom = got["odometry"]
    assert (odom.header.frame_id, odom.child_frame_id) == ("map", role)
    assert (odom.header.stamp.sec, odom.header.stamp.nanosec) == (7, 50_000_000)
    p, q = odom.pose.pose.position, odom.pose.pose.orientation
    assert (p.x, p.y, p.z) == (10.0, -5.0, 0.5)
    assert (q.x, q.y, q.z, q.w) == pytest.approx((0.0, 0.0, -math.sqrt(0.5), math.sqrt(0.5)))
    assert odom.twist.twist.linear.x == pytest.approx(8.0) and odom.twist.twist.angular.z == pytest.approx(
        -math.radians(10))
    depth = got["depth"]
    assert (depth.encoding, depth.width, depth.height, depth.step, depth.is_bigendian) == ("32FC1", 8, 6, 32, 0)
    assert depth.header.frame_id == f"{role}/depth_front" and depth.header.stamp.nanosec == 50_000_000
    decoded = np.frombuffer(bytes(depth.data), "<f4").reshape(6, 8)
    assert np.array_equal(decoded, depth_metres(raw))
    assert got["depth_info"].header.frame_id == f"{role}/depth_front" and got["depth_info"].k[0] == pytest.approx(4.0)
