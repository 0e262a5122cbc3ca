"""seg_node's ~/local_map and ~/points over real DDS: two cameras (front with an aligned depth camera, rear
without), bridge-like odometry, CameraInfo and frames rendered from the synthetic street (evaluation/
synthetic_world.py) along a drive. The model's labels on these renders are whatever it makes of them, so the checks
are about geometry and plumbing: the map's frame, size and place around the ego, and points that lie on the
rendered surfaces (depth) or on the ground (no depth). First, without odometry, the node keeps its per-camera grids
and says in /diagnostics why there is no map.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 wheels (extra `ros`) are not installed")
pytest.importorskip("nav_msgs", reason="nav_msgs wheels (extra `ros`) are not installed")
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from nav_msgs.msg import OccupancyGrid, Odometry  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402

from carla_seg_ros import image_codec  # noqa: E402
from carla_seg_ros.classes import colors_for  # noqa: E402
from carla_seg_ros.evaluation import synthetic_world as sw  # noqa: E402
from carla_seg_ros.ros.playback import camera_info_message, set_stamp, stamp_key  # noqa: E402
from carla_seg_ros.runtime.point_cloud import CONTACT_HEIGHTS  # noqa: E402
from seg_probe import BRIDGE_QOS, Probe, start_node, stop_node, wait_for  # noqa: E402

NS, NODE = "/lm_test", "/lm_test/seg_node"
CAM = sw.bridge_camera(320, 240)
MOUNTS = {"front": sw.FRONT, "rear": sw.REAR}
STRIDE, MAX_RANGE = 8, 50.0
SURFACE_TOLERANCE = 0.01          # m: float32 points from float32 depth on exact planes and boxes
BASE_NS = 1_000_000_000_000       # sim time 1000 s


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    log = tmp_path_factory.mktemp("local_map") / "node.log"
    probe = Probe("local_map_probe")
    got = {"map": {}, "front": {}, "rear": {}, "occupancy": 0, "diag": []}
    lock = threading.Lock()

    def keep(key):
        def cb(msg):
            with lock:
                got[key][stamp_key(msg.header.stamp)] = msg
        return cb

    def count_occupancy(_msg):
        with lock:
            got["occupancy"] += 1

    def diag(msg):
        for s in msg.status:
            if s.name == f"{NODE}/local_map: local map":
                with lock:
                    got["diag"].append((int.from_bytes(s.level, "little"), s.message,
                                        {kv.key: kv.value for kv in s.values}))

    n = probe.node
    n.create_subscription(OccupancyGrid, f"{NODE}/local_map", keep("map"), BRIDGE_QOS)
    for name in MOUNTS:
        n.create_subscription(PointCloud2, f"{NODE}/{name}/points", keep(name), BRIDGE_QOS)
    n.create_subscription(OccupancyGrid, f"{NODE}/front/occupancy", count_occupancy, BRIDGE_QOS)
    n.create_subscription(DiagnosticArray, "/diagnostics", diag, 10)
    pubs = {"odometry": n.create_publisher(Odometry, f"{NS}/odometry", BRIDGE_QOS)}
    for name in MOUNTS:
        pubs[f"{name}/image"] = probe.camera(f"{NS}/{name}/image")
        pubs[f"{name}/camera_info"] = n.create_publisher(CameraInfo, f"{NS}/{name}/camera_info", BRIDGE_QOS)
        pubs[f"{name}/depth"] = n.create_publisher(Image, f"{NS}/{name}/depth", BRIDGE_QOS)
    proc = start_node(log, "-r", f"__ns:={NS}", "-p", "cameras:=[front, rear]", "-p", "diagnostics_period:=0.3",
                      "-p", "rear.camera_x:=-2.0", "-p", "rear.camera_yaw:=180.0", "-p", "map_publish_rate:=10.0",
                      "-p", f"points_stride:={STRIDE}", "-p", f"points_max_range:={MAX_RANGE}")
    try:
        wait_for(lambda: pubs["front/image"].get_subscription_count() and pubs["odometry"].get_subscription_count()
                 and pubs["front/depth"].get_subscription_count(), 120, "seg_node's subscriptions", proc, log)
        wait_for(lambda: n.count_publishers(f"{NODE}/local_map") and n.count_publishers(f"{NODE}/rear/points"), 30,
                 "seg_node's map and points publishers", proc, log)
        yield probe, proc, log, pubs, got, lock
    finally:
        rc = stop_node(proc)
        probe.close()
        assert rc == 0, log.read_text()[-3000:]


class Street:
    """The drive: per step, odometry, then per camera CameraInfo, depth (front only) and the frame."""

    def __init__(self, pubs):
        self.world, self.pubs = sw.town(), pubs
        self.palette = colors_for()
        self.sent = {}                        # stamp ns -> (t, pose, {camera: depth})

    def step(self, i: int, odometry: bool = True) -> int:
        t = i * 0.1
        stamp = BASE_NS + int(round(t * 1e9))
        pose = sw.ego_pose(t)
        if odometry:
            odom = Odometry()
            set_stamp(odom.header.stamp, stamp)
            odom.header.frame_id, odom.child_frame_id = "map", "hero"
            odom.pose.pose.position.x, odom.pose.pose.position.y = pose.x, pose.y
            odom.pose.pose.orientation.z, odom.pose.pose.orientation.w = np.sin(pose.yaw / 2), np.cos(pose.yaw / 2)
            self.pubs["odometry"].publish(odom)
        depths = {}
        for name, mount in MOUNTS.items():
            labels, depth = sw.render(self.world, CAM, mount, pose, t)
            info = camera_info_message(CAM.width, CAM.height, 90.0, f"hero/{name}")
            set_stamp(info.header.stamp, stamp)
            self.pubs[f"{name}/camera_info"].publish(info)
            if name == "front":
                msg = Image(height=CAM.height, width=CAM.width, encoding="32FC1", step=4 * CAM.width)
                msg.data = depth.astype("<f4").tobytes()
                msg.header.frame_id = f"hero/{name}"
                set_stamp(msg.header.stamp, stamp)
                self.pubs[f"{name}/depth"].publish(msg)
                depths[name] = depth
            frame = image_codec.to_image(image_codec.from_rgb(self.palette[labels], "bgra8"), "bgra8")
            frame.header.frame_id = f"hero/{name}"
            set_stamp(frame.header.stamp, stamp)
            self.pubs[f"{name}/image"].publish(frame)
        self.sent[stamp] = (t, pose, depths)
        return stamp


def to_world(points: np.ndarray, mount, pose) -> np.ndarray:
    optical = np.stack([points["x"], points["y"], points["z"]], -1).astype(np.float64)
    vehicle = optical @ mount.vehicle_from_optical().T + mount.position
    wx, wy = pose.to_world(vehicle[:, 0], vehicle[:, 1])
    return np.stack([wx, wy, vehicle[:, 2]], -1)


def cloud_array(msg: PointCloud2) -> np.ndarray:
    names = [f.name for f in msg.fields]
    formats = ["u1" if f.datatype == 2 else "<f4" for f in msg.fields]
    dtype = np.dtype({"names": names, "formats": formats, "offsets": [f.offset for f in msg.fields],
                      "itemsize": msg.point_step})
    return np.frombuffer(bytes(msg.data), dtype, msg.width * msg.height)


def test_without_odometry_the_grids_go_on_and_diagnostics_say_why(setup):
    probe, proc, log, pubs, got, lock = setup
    street = Street(pubs)
    for i in range(6):
        street.step(i, odometry=False)
        time.sleep(0.15)
    wait_for(lambda: got["occupancy"] > 0, 60, "the front camera's ~/occupancy", proc, log)
    wait_for(lambda: any("no odometry" in m for _, m, _ in got["diag"][-3:]), 30, "the map's status", proc, log)
    level, message, values = got["diag"][-1]
    assert level == 1 and f"{NS}/odometry" in message, message        # WARN while ~/local_map is subscribed
    assert not got["map"]


def test_the_map_is_in_the_odometry_frame_and_moves_with_the_ego(setup):
    probe, proc, log, pubs, got, lock = setup
    street = Street(pubs)
    with lock:
        got["map"].clear()
    for i in range(10, 40):                     # 3 s of drive at 10 Hz, 24 m
        street.step(i)
        time.sleep(0.12)
    last = max(street.sent)
    wait_for(lambda: any(k >= last - 300_000_000 for k in got["map"]), 60, "a map of the last frames", proc, log)
    with lock:
        maps = dict(got["map"])
    assert maps
    for stamp, msg in maps.items():
        assert stamp in street.sent, stamp                      # the stamp of a fused frame
        assert msg.header.frame_id == "map"
        assert msg.info.width == msg.info.height == 300 and abs(msg.info.resolution - 0.2) < 1e-6
        _, pose, _ = street.sent[stamp]
        cx, cy = msg.info.origin.position.x + 30.0, msg.info.origin.position.y + 30.0
        assert abs(cx - pose.x) <= 1.2 and abs(cy - pose.y) <= 1.2, (cx, cy, pose)   # recentred within 1 m
        assert (np.frombuffer(bytes(msg.data), np.int8) >= 0).sum() > 1000          # it holds what was seen
    first, newest = maps[min(maps)], maps[max(maps)]
    assert newest.info.origin.position.x - first.info.origin.position.x >= 10.0      # it drove along
    level, message, values = got["diag"][-1]
    assert int(values["frames_fused"]) >= 10 and values["map_frame"] == "map", (message, values)


def test_points_lie_on_the_rendered_geometry(setup):
    probe, proc, log, pubs, got, lock = setup
    street = Street(pubs)
    for i in range(40, 50):
        street.step(i)
        time.sleep(0.15)
    last = max(street.sent)
    wait_for(lambda: last in got["front"] and last in got["rear"], 60, "the last frame's points", proc, log)
    with lock:
        clouds = {name: {k: v for k, v in got[name].items() if k in street.sent} for name in MOUNTS}
    from_depth = 0
    for name, mount in MOUNTS.items():
        assert clouds[name], name
        for stamp, msg in clouds[name].items():
            assert msg.header.frame_id == f"hero/{name}"
            assert [f.name for f in msg.fields] == ["x", "y", "z", "confidence", "label", "rgb"]
            points = cloud_array(msg)
            t, pose, depths = street.sent[stamp]
            p = to_world(points, mount, pose)
            expected = None
            if name == "front":
                sampled = depths["front"][STRIDE // 2::STRIDE, STRIDE // 2::STRIDE]
                expected = int((sampled <= MAX_RANGE).sum())
            if len(points) == expected:       # from depth: every point on the ground or on a box's surface
                from_depth += 1
                off = np.abs(p[:, 2])
                for box in street.world.boxes:
                    x0, x1, y0, y1 = box.at(t)
                    lo, hi = np.array([x0, y0, 0.0]), np.array([x1, y1, box.height])
                    off = np.minimum(off, np.linalg.norm(np.maximum(np.maximum(lo - p, p - hi), 0.0), axis=1))
                assert off.max() <= SURFACE_TOLERANCE, off.max()
            else:       # no depth (the rear camera; a front depth image later than DEPTH_WAIT): the ground rule,
                # ground points up to each column's contact and a short column on each contact
                heights = np.array(CONTACT_HEIGHTS)
                assert len(points) > 100
                assert np.abs(p[:, 2][:, None] - heights[None, :]).min(axis=1).max() <= SURFACE_TOLERANCE
    assert from_depth >= max(1, len(clouds["front"]) // 2), (from_depth, len(clouds["front"]))
    values = got["diag"][-1][2]
    assert int(values["front_points_from_depth"]) >= 1 and int(values["rear_points_from_ground"]) >= 1, values
