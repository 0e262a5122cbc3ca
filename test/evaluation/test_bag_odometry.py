"""make-bag with the ego odometry and the depth camera: real rosbag2 files (mcap and sqlite3) written by make-bag from
folders of the dataset writer, read back with the package's bag reader (open_bag) and deserialised by rclpy, as a
node replaying the bag would receive them."""
from __future__ import annotations

import math
from dataclasses import astuple

import numpy as np
import pytest

from carla_seg_ros.capture.dataset_writer import DatasetWriter, Sample
from carla_seg_ros.datasets import find_pairs
from carla_seg_ros.evaluation.bag_make import main as make_bag_main, motion_topics, topics
from carla_seg_ros.evaluation.bag_reading import header_stamp_ns, open_bag
from carla_seg_ros.evaluation.ego_motion import EgoState, depth_path

FRAMES = 5
ROLE = "hero"
T, M = topics(ROLE), motion_topics(ROLE)


def ego(k: int) -> EgoState:
    """Driving towards ROS -y (CARLA yaw 90) with a little roll and pitch, 1 m per frame."""
    return EgoState(10.0, -5.0 - k, 0.5, 0.02, -0.05, -math.pi / 2 + 0.01 * k, 20.0, 0.0, 0.1, 0.0, 0.0, 0.2)


def write_folder(out, with_ego: bool, depth_frames=()) -> dict:
    writer = DatasetWriter(out, block=True)
    depths = {}
    for k in range(FRAMES):
        rng = np.random.default_rng(k)
        rgb = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        tags = rng.integers(0, 29, (6, 8), dtype=np.uint8)
        depth = rng.uniform(0, 1000, (6, 8)).astype(np.float32) if k in depth_frames else None
        depths[k] = depth
        writer.offer(Sample(10**9 + k * 50_000_000, rgb, lambda tags=tags: (tags, "tags29"), {},
                            ego=ego(k) if with_ego else None, depth=depth))
    writer.close()
    return depths


def read(bag) -> dict:
    """{topic: [(log_ns, rclpy message), ...]} through the package's own reader."""
    from rclpy.serialization import deserialize_message
    from nav_msgs.msg import Odometry
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CameraInfo, Image
    classes = {"nav_msgs/msg/Odometry": Odometry, "sensor_msgs/msg/Image": Image,
               "sensor_msgs/msg/CameraInfo": CameraInfo, "rosgraph_msgs/msg/Clock": Clock}
    out = {}
    reader = open_bag(bag)
    try:
        for conn, log_ns, raw in reader.messages():
            out.setdefault(conn.topic, []).append((log_ns, deserialize_message(bytes(raw), classes[conn.msgtype])))
    finally:
        reader.close()
    return out


def raw_messages(bag) -> dict:
    reader = open_bag(bag)
    try:
        return {(c.topic, c.msgtype): [bytes(r) for _, _, r in reader.messages(connections=[c])]
                for c in reader.connections}
    finally:
        reader.close()


@pytest.fixture(scope="module")
def rclpy_messages():
    return pytest.importorskip("nav_msgs.msg", reason="ROS 2 wheels (extra `ros`) are not installed")


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_odometry_and_depth_play_like_the_bridge(tmp_path, storage, rclpy_messages, capsys):
    depths = write_folder(tmp_path / "ds", with_ego=True, depth_frames=(0, 2, 3))
    bag = tmp_path / "bag"
    assert make_bag_main(["--data", str(tmp_path / "ds"), "--split", "all", "--out", str(bag), "--role", ROLE,
                          "--storage", storage, "--rate", "10"]) == 0
    assert "odometry for 5 frames, depth for 3 frames" in capsys.readouterr().out
    got = read(bag)
    assert set(got) == {*T.values(), M["odometry"], M["depth"], M["depth_info"]}
    image_stamps = [header_stamp_ns(m) for _, m in got[T["image"]]]
    assert image_stamps == [10**9 + k * 100_000_000 for k in range(FRAMES)]      # --start-time 1, --rate 10
    odometry = got[M["odometry"]]
    assert [header_stamp_ns(m) for _, m in odometry] == image_stamps == [log for log, _ in odometry]
    for k, (_, msg) in enumerate(odometry):
        s = ego(k)
        assert (msg.header.frame_id, msg.child_frame_id) == ("map", ROLE)
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        assert (p.x, p.y, p.z) == (s.x, s.y, s.z)
        assert (q.x, q.y, q.z, q.w) == pytest.approx(s.quaternion, abs=1e-15)
        lin, ang = msg.twist.twist.linear, msg.twist.twist.angular
        assert (lin.x, lin.y, lin.z, ang.x, ang.y, ang.z) == (s.vx, s.vy, s.vz, s.wx, s.wy, s.wz)
        # The quaternion really is the recorded yaw: atan2 of the rotated x axis.
        yaw = math.atan2(2 * (q.w * q.z + q.x * q.y), 1 - 2 * (q.y * q.y + q.z * q.z))
        assert yaw == pytest.approx(s.yaw)
    # The depth topics: only the frames that have a depth file, each with its frame's image stamp.
    depth_msgs, infos = got[M["depth"]], got[M["depth_info"]]
    assert [header_stamp_ns(m) for _, m in depth_msgs] == [image_stamps[k] for k in (0, 2, 3)]
    assert [header_stamp_ns(m) for _, m in infos] == [image_stamps[k] for k in (0, 2, 3)]
    for k, (_, msg) in zip((0, 2, 3), depth_msgs):
        assert (msg.encoding, msg.width, msg.height, msg.step, msg.is_bigendian) == ("32FC1", 8, 6, 32, 0)
        assert msg.header.frame_id == f"{ROLE}/depth_front"
        assert np.array_equal(np.frombuffer(bytes(msg.data), "<f4").reshape(6, 8), depths[k])
    info = infos[0][1]
    assert info.header.frame_id == f"{ROLE}/depth_front" and (info.width, info.height) == (8, 6)
    assert info.k[0] == pytest.approx(4.0)                                     # FOV 90 at 8 px wide


def test_folders_without_poses_make_the_same_bag_as_before(tmp_path, rclpy_messages, capsys):
    """An old folder (no ego columns, no depth/) gives only the four bridge topics; a new folder gives the very same
    messages on them, and with --no-odometry --no-depth the very same bag."""
    write_folder(tmp_path / "old", with_ego=False)
    write_folder(tmp_path / "new", with_ego=True, depth_frames=(1,))
    said = {}
    for name, extra in (("old", []), ("new", []), ("new_plain", ["--no-odometry", "--no-depth"])):
        folder = tmp_path / name.split("_")[0]
        assert make_bag_main(["--data", str(folder), "--split", "all", "--out", str(tmp_path / f"bag_{name}"),
                              "--role", ROLE, *extra]) == 0
        said[name] = capsys.readouterr().out
    assert "odometry" not in said["old"] and "odometry" not in said["new_plain"] and "odometry" in said["new"]
    old, new, plain = (raw_messages(tmp_path / f"bag_{n}") for n in ("old", "new", "new_plain"))
    assert {t for t, _ in old} == set(T.values())
    assert plain == old
    assert {k: v for k, v in new.items() if k[0] in T.values()} == old
    assert len(new[(M["odometry"], "nav_msgs/msg/Odometry")]) == FRAMES and len(new[(M["depth"],
                                                                                     "sensor_msgs/msg/Image")]) == 1


def test_damaged_pose_or_depth_is_one_line_and_no_bag(tmp_path, capsys):
    write_folder(tmp_path / "ds", with_ego=True, depth_frames=(0,))
    manifest = tmp_path / "ds" / "manifest.csv"
    good = manifest.read_text()
    manifest.write_text(good.replace(repr(ego(2).y), "oops", 1))
    assert make_bag_main(["--data", str(tmp_path / "ds"), "--split", "all", "--out", str(tmp_path / "b1")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "manifest.csv" in err[0] and "ego_y" in err[0] and "'oops'" in err[0], err
    assert not (tmp_path / "b1").exists()
    manifest.write_text(good)
    (pair,) = [p for p in find_pairs(tmp_path / "ds", "all") if depth_path(tmp_path / "ds", p.name).is_file()]
    np.save(depth_path(tmp_path / "ds", pair.name), np.zeros((3, 3), np.float32))
    assert make_bag_main(["--data", str(tmp_path / "ds"), "--split", "all", "--out", str(tmp_path / "b2")]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "frame/s" not in line]   # not tqdm's
    assert len(err) == 1 and "is 3x3, its camera image 8x6" in err[0], err
    assert not (tmp_path / "b2").exists()


def test_bag_to_dataset_keeps_the_poses(tmp_path, capsys):
    """folder -> make-bag -> bag-to-dataset -> folder: every pair gets its pose back from the bag's odometry (the
    quaternion's roll/pitch/yaw to rounding), so make-bag can replay it again; without odometry, no pose."""
    from carla_seg_ros.capture.bag_to_dataset import main as bag_to_dataset_main
    from carla_seg_ros.datasets import read_manifest
    from carla_seg_ros.evaluation.ego_motion import ego_from_row
    write_folder(tmp_path / "ds", with_ego=True)
    assert make_bag_main(["--data", str(tmp_path / "ds"), "--split", "all", "--out", str(tmp_path / "bag"),
                          "--role", ROLE]) == 0
    assert bag_to_dataset_main([str(tmp_path / "bag"), "--out", str(tmp_path / "back"), "--role", ROLE]) == 0
    assert "written 5, ego pose for 5" in capsys.readouterr().out
    rows = read_manifest(tmp_path / "back")
    stamps = sorted(int(r["stamp_ns"]) for r in rows.values())
    assert stamps == [10**9 + k * 50_000_000 for k in range(FRAMES)]         # make-bag's stamps at 20 Hz
    by_stamp = {int(r["stamp_ns"]): ego_from_row(r) for r in rows.values()}
    for k, stamp in enumerate(stamps):
        assert astuple(by_stamp[stamp]) == pytest.approx(astuple(ego(k)), abs=1e-12), k
    assert bag_to_dataset_main([str(tmp_path / "bag"), "--out", str(tmp_path / "none"), "--role", ROLE,
                                "--odometry-topic", ""]) == 0
    assert "ego pose" not in capsys.readouterr().out
    assert all(ego_from_row(r) is None for r in read_manifest(tmp_path / "none").values())


def test_the_bag_player_replays_the_odometry(tmp_path, capsys):
    """Playback (demo, benchmarks, bag-eval's node runs) reads the odometry topic like the images."""
    from carla_seg_ros.ros.playback.bag_player import read_bag
    write_folder(tmp_path / "ds", with_ego=True)
    bag = tmp_path / "bag"
    assert make_bag_main(["--data", str(tmp_path / "ds"), "--split", "all", "--out", str(bag), "--role", ROLE]) == 0
    played = read_bag(bag, [M["odometry"], T["image"]])
    assert len(played[M["odometry"]]) == len(played[T["image"]]) == FRAMES
    assert type(played[M["odometry"]][0]).__name__ == "Odometry"
    assert [m.header.stamp for m in played[M["odometry"]]] == [m.header.stamp for m in played[T["image"]]]
