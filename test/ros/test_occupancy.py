"""seg_node's occupancy grids end to end: a real seg_node subprocess over DDS on loopback, bridge-style CameraInfo.

One node runs for the module (ignore_rows_from 0.825: the CARLA 0.8 ego hood of the fullres frames). The probe
publishes frames and CameraInfo like the CARLA ROS bridge (same header on both, camera_info first), subscribes
every grid, and checks stamps, frames, sizes, the free space ahead in a real CARLA frame, and that malformed
CameraInfo stops the grids (not the masks) with the reason in /diagnostics. The tests run in file order: the first
one needs the node to have seen no CameraInfo yet. The last test starts a second, two-camera node for per-camera grids.
"""
from __future__ import annotations

import os
import subprocess
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="ROS 2 wheels (extra `ros`) are not installed")
pytest.importorskip("nav_msgs", reason="nav_msgs wheels (extra `ros`) are not installed")
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from nav_msgs.msg import OccupancyGrid  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from carla_seg_ros import image_codec  # noqa: E402
from carla_seg_ros.datasets import find_pairs, read_rgb  # noqa: E402
from carla_seg_ros.ros.playback import NodeProcess, camera_info_message, node_argv, set_stamp, stamp_key  # noqa: E402

DOMAIN_ID = 41
IMAGE_TOPIC = "/carla/ego_vehicle/rgb_front/image"
INFO_TOPIC = "/carla/ego_vehicle/rgb_front/camera_info"
FRAME_ID = "ego_vehicle/rgb_front"
NODE = "/seg_node"
GROUPS = ("drivable", "vehicles", "pedestrians", "static_obstacles")
GRID_TOPICS = ("occupancy", *(f"occupancy/{g}" for g in GROUPS))
# A grid other than the default (0-30 m ahead, +-10 m, 0.25 m cells: 120 x 80 cells), so a width/height or
# parameter mix-up shows.
NODE_PARAMS = {"ignore_rows_from": 0.825, "warn_throttle": 0.0, "diagnostics_period": 0.5, "occupancy_x_max": 30.0,
               "occupancy_y_min": -10.0, "occupancy_y_max": 10.0, "occupancy_resolution": 0.25}
GRID_W, GRID_H = 120, 80


def env() -> dict:
    out = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID), PYTHONUNBUFFERED="1")
    out.setdefault("OMP_NUM_THREADS", "2")
    return out


def wait_for(predicate, timeout: float, what: str, proc: NodeProcess | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None:
            proc.check()
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}"
                         + (f"\nnode log:\n{proc.tail()}" if proc is not None else ""))


class Probe:
    """Bridge-like camera + camera_info publishers, and recorders of masks, grids and seg_node's diagnostics."""

    def __init__(self):
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=DOMAIN_ID)
        self.node = rclpy.create_node("occupancy_test_probe", context=self.context)
        bridge = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.camera = self.node.create_publisher(Image, IMAGE_TOPIC, bridge)
        self.info = self.node.create_publisher(CameraInfo, INFO_TOPIC, bridge)
        self.lock = threading.Lock()
        self.masks: set[int] = set()
        self.grids: dict[str, dict[int, OccupancyGrid]] = {t: {} for t in GRID_TOPICS}
        self.diagnostics: list[dict] = []
        self.node.create_subscription(Image, f"{NODE}/mask", self._mask_cb, 10)
        for topic in GRID_TOPICS:   # volatile: matches the node's transient-local publishers
            self.node.create_subscription(OccupancyGrid, f"{NODE}/{topic}", self._grid_cb(topic), bridge)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._diag_cb, 10)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()
        self._key = time.time_ns()

    def _spin(self):
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - the context is shut down at teardown
            pass

    def _mask_cb(self, msg):
        with self.lock:
            self.masks.add(stamp_key(msg.header.stamp))

    def _grid_cb(self, topic):
        def cb(msg):
            with self.lock:
                self.grids[topic][stamp_key(msg.header.stamp)] = msg
        return cb

    def _diag_cb(self, msg):
        for status in msg.status:
            if status.name.startswith(f"{NODE}:"):
                values = {kv.key: kv.value for kv in status.values}
                values["_level"] = int.from_bytes(status.level, "little")
                values["_message"] = status.message
                with self.lock:
                    self.diagnostics.append(values)

    def send(self, rgb: np.ndarray, info: CameraInfo | None) -> int:
        """camera_info (if any) then the bgra8 frame, both stamped alike as the bridge does; returns the stamp."""
        self._key += 10_000_000
        if info is not None:
            set_stamp(info.header.stamp, self._key)
            info.header.frame_id = FRAME_ID
            self.info.publish(info)
        msg = image_codec.to_image(image_codec.from_rgb(rgb, "bgra8"), "bgra8")
        msg.header.frame_id = FRAME_ID
        set_stamp(msg.header.stamp, self._key)
        self.camera.publish(msg)
        return self._key

    def send_info(self, info: CameraInfo, proc) -> dict:
        """camera_info alone; returns once the node's diagnostics count it (received or rejected).

        The node applies the newest CameraInfo to the next frame it processes, and camera_info and the image are
        separate topics: a frame sent right behind its CameraInfo may be processed before the node has taken the
        CameraInfo (more often the more loaded the machine is), so tests that depend on which CameraInfo a frame
        met wait for this acknowledgement first.
        """
        def taken(d):
            return int(d["camera_info_received"]) + int(d["camera_info_rejected"])
        before = taken(self.next_diagnostics(proc))
        self._key += 10_000_000
        set_stamp(info.header.stamp, self._key)
        info.header.frame_id = FRAME_ID
        self.info.publish(info)
        return self.wait_diagnostics(lambda d: taken(d) > before, proc, "the node to take the camera_info")

    def wait_diagnostics(self, predicate, proc, what: str, timeout: float = 60.0) -> dict:
        """The first /diagnostics status from now on that satisfies ``predicate``."""
        with self.lock:
            n = len(self.diagnostics)

        def found():
            with self.lock:
                return next((d for d in self.diagnostics[n:] if predicate(d)), None)
        return wait_for(found, timeout, what, proc)

    def next_diagnostics(self, proc) -> dict:
        with self.lock:
            n = len(self.diagnostics)
        wait_for(lambda: len(self.diagnostics) > n, 30.0, "a /diagnostics message", proc)
        with self.lock:
            return self.diagnostics[-1]

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.fixture(scope="module")
def probe():
    p = Probe()
    yield p
    p.close()


@pytest.fixture(scope="module")
def node(probe, tmp_path_factory):
    argv = node_argv("carla_seg_ros.ros.seg_node", "seg_node", NODE_PARAMS,
                     {"image": IMAGE_TOPIC, "camera_info": INFO_TOPIC})
    proc = NodeProcess("seg_node", argv, tmp_path_factory.mktemp("occupancy") / "seg_node.log", env())
    with proc:
        wait_for(lambda: probe.camera.get_subscription_count() and probe.info.get_subscription_count(), 120.0,
                 "seg_node's image and camera_info subscriptions", proc)
        wait_for(lambda: all(s.get_publisher_count() for s in probe.node.subscriptions
                             if s.topic_name.startswith(NODE)), 30.0, "seg_node's publishers", proc)
        time.sleep(0.5)
        yield proc


def send_and_wait(probe, proc, rgb, info) -> int:
    """The frame with its CameraInfo as the bridge sends them, once the node has taken that CameraInfo (send_info):
    otherwise the frame may be processed before the CameraInfo, and meet the previous one or none."""
    if info is not None:
        probe.send_info(info, proc)
    key = probe.send(rgb, info)
    wait_for(lambda: key in probe.masks, 30.0, f"the mask of frame {key}", proc)
    return key


def assert_no_grid(probe, key):
    time.sleep(0.5)     # the grids are published right after the mask, so they would be here by now
    with probe.lock:
        assert not any(key in probe.grids[t] for t in GRID_TOPICS)


@pytest.fixture(scope="module")
def carla_frame(data_dir):
    try:
        pair = find_pairs(data_dir, "fullres")[0]
    except (FileNotFoundError, IndexError) as exc:
        pytest.skip(f"no fullres split: {exc}")
    return read_rgb(pair.rgb)


def noise(width=800, height=600, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)


def test_no_camera_info_yet_no_grid_masks_flow_and_diagnostics_say_so(probe, node):
    key = send_and_wait(probe, node, noise(), None)
    assert_no_grid(probe, key)
    diag = probe.wait_diagnostics(lambda d: int(d["frames_processed"]) >= 1, node, "diagnostics after the frame")
    assert diag["occupancy"] == "waiting for camera_info"
    assert diag["_level"] == 1 and diag["_message"] == "occupancy: waiting for camera_info"
    assert int(diag["occupancy_frames_skipped"]) >= 1
    assert "no occupancy grid: waiting for camera_info" in node.tail(20000)


def test_grids_carry_the_image_stamp_the_vehicle_frame_and_the_configured_size(probe, node, carla_frame):
    key = send_and_wait(probe, node, carla_frame, camera_info_message(800, 600))
    wait_for(lambda: all(key in probe.grids[t] for t in GRID_TOPICS), 30.0, "every grid of the frame", node)
    for topic in GRID_TOPICS:
        grid = probe.grids[topic][key]                      # found by the image's stamp
        assert grid.header.frame_id == "ego_vehicle", topic   # the parent of ego_vehicle/rgb_front
        info = grid.info
        assert (info.width, info.height) == (GRID_W, GRID_H) and info.resolution == pytest.approx(0.25)
        assert (info.origin.position.x, info.origin.position.y) == pytest.approx((0.0, -10.0))
        assert len(grid.data) == GRID_W * GRID_H
    cells = np.array(probe.grids["occupancy"][key].data, np.int8).reshape(GRID_H, GRID_W)   # [y cell, x cell]
    assert set(np.unique(cells)) <= {-1, 0, 100}
    # A real CARLA frame: the road ahead of the car (|y| < 2 m, 6-12 m ahead) is drivable free space.
    ahead = cells[32:48, 24:48]
    print(f"cells 6-12 m ahead, |y| < 2 m: {np.mean(ahead == 0):.0%} free, {np.mean(ahead == 100):.0%} occupied")
    assert np.mean(ahead == 0) > 0.5
    drivable = np.array(probe.grids["occupancy/drivable"][key].data, np.int8).reshape(GRID_H, GRID_W)
    assert (drivable[cells == 0] > 50).mean() > 0.9        # free cells are where the model is sure of road
    assert (drivable[cells == -1] == -1).all()
    diag = probe.next_diagnostics(node)
    assert diag["occupancy"] == "ok" and int(diag["camera_info_received"]) >= 1
    # The same CameraInfo again (the bridge sends one per frame): the cell -> pixel lookup is reused, not rebuilt.
    builds = int(diag["occupancy_lookup_builds"])
    key = send_and_wait(probe, node, carla_frame, camera_info_message(800, 600))
    wait_for(lambda: key in probe.grids["occupancy"], 30.0, "the grid of the second frame", node)
    assert int(probe.next_diagnostics(node)["occupancy_lookup_builds"]) == builds


def test_camera_info_of_a_larger_image_is_scaled_to_the_frame(probe, node):
    road = noise(400, 300, seed=2)
    key = send_and_wait(probe, node, road, camera_info_message(800, 600))
    wait_for(lambda: key in probe.grids["occupancy"], 30.0, "the grid of a 400x300 frame", node)


@pytest.mark.parametrize("case", ["zero_fx", "nan_fy", "aspect_ratio"])
def test_malformed_camera_info_stops_the_grids_not_the_node(probe, node, case):
    info = camera_info_message(800, 600)
    width, height = 800, 600
    if case == "zero_fx":
        info.k = [0.0, 0.0, 400.0, 0.0, 400.0, 300.0, 0.0, 0.0, 1.0]
        expected = "invalid camera_info: fx = 0.0"
    elif case == "nan_fy":
        info.k = [400.0, 0.0, 400.0, 0.0, float("nan"), 300.0, 0.0, 0.0, 1.0]
        expected = "invalid camera_info: fy = nan"
    else:
        width, height = 640, 360
        expected = "invalid camera_info: camera_info is 800x600 but the image is 640x360"
    before = probe.next_diagnostics(node)
    probe.send_info(info, node)                                        # taken before the frame comes
    key = send_and_wait(probe, node, noise(width, height), None)      # the mask still comes
    assert_no_grid(probe, key)
    diag = probe.wait_diagnostics(lambda d: int(d["frames_processed"]) > int(before["frames_processed"]), node,
                                  "diagnostics after the frame")
    assert diag["occupancy"].startswith(expected), diag["occupancy"]
    assert diag["_level"] >= 1 and diag["_message"].startswith("occupancy: invalid camera_info")
    assert int(diag["camera_info_rejected"]) == int(before["camera_info_rejected"]) + 1
    assert expected.split(": ", 1)[1] in node.tail(20000)          # the warning names the problem
    assert node.alive
    # A valid CameraInfo brings the grids back.
    probe.send_info(camera_info_message(800, 600), node)
    key = send_and_wait(probe, node, noise(), None)
    wait_for(lambda: key in probe.grids["occupancy"], 30.0, "the grid after a valid camera_info", node)
    assert probe.wait_diagnostics(lambda d: int(d["frames_processed"]) > int(diag["frames_processed"]), node,
                                  "diagnostics after the valid frame")["occupancy"] == "ok"


def test_inconsistent_occupancy_parameters_stop_startup_with_a_message():
    argv = node_argv("carla_seg_ros.ros.seg_node", "seg_node",
                     {"occupancy_x_min": 50.0}) + ["-r", "__ns:=/occupancy_startup_check"]
    result = subprocess.run(argv, env=env(), capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "startup failed: parameters occupancy_x_min" in output and "max must exceed min" in output, output


def test_each_camera_of_a_multi_camera_node_has_its_own_grids_and_mount(probe, carla_frame, tmp_path):
    """cameras: [front, left], left turned 90 degrees (`left.camera_yaw`): each camera's grids come from its own
    camera_info (the image topic's sibling) and mount, on ~/<camera>/occupancy."""
    cams = {"front": "/occ_multi/front", "left": "/occ_multi/left"}
    argv = node_argv("carla_seg_ros.ros.seg_node", "seg_node_multi",
                     {"cameras": "[" + ", ".join(f"{t}/image" for t in cams.values()) + "]",
                      "left.camera_yaw": 90.0, "ignore_rows_from": 0.825})
    bridge = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
    images = {c: probe.node.create_publisher(Image, f"{t}/image", bridge) for c, t in cams.items()}
    infos = {c: probe.node.create_publisher(CameraInfo, f"{t}/camera_info", bridge) for c, t in cams.items()}
    grids: dict[str, dict[int, OccupancyGrid]] = {c: {} for c in cams}
    for c in cams:
        probe.node.create_subscription(OccupancyGrid, f"/seg_node_multi/{c}/occupancy",
                                       lambda m, c=c: grids[c].__setitem__(stamp_key(m.header.stamp), m), bridge)
    with NodeProcess("seg_node_multi", argv, tmp_path / "multi.log", env()) as proc:
        wait_for(lambda: all(p.get_subscription_count() for p in [*images.values(), *infos.values()]), 120.0,
                 "the multi-camera node's subscriptions", proc)
        key = time.time_ns()

        def send_both():
            for c in cams:
                info = camera_info_message(800, 600, frame_id=f"ego_vehicle/{c}")
                set_stamp(info.header.stamp, key)
                infos[c].publish(info)
                msg = image_codec.to_image(image_codec.from_rgb(carla_frame, "bgra8"), "bgra8")
                msg.header.frame_id = f"ego_vehicle/{c}"
                set_stamp(msg.header.stamp, key)
                images[c].publish(msg)

        deadline = time.monotonic() + 60.0   # the grid publishers match late: resend until both grids come back
        while not all(key in grids[c] for c in cams):
            assert time.monotonic() < deadline, f"grids of both cameras: got {[c for c in cams if key in grids[c]]}" \
                                                f"\n{proc.tail()}"
            send_both()
            time.sleep(1.0)
            proc.check()
    ys = {}
    for c in cams:
        grid = grids[c][key]
        assert grid.header.frame_id == "ego_vehicle" and (grid.info.width, grid.info.height) == (200, 200)
        cells = np.array(grid.data, np.int8).reshape(200, 200)
        rows = np.nonzero(cells != -1)[0]
        ys[c] = -20.0 + (rows + 0.5) * 0.2                      # y of every seen cell
    assert abs(ys["front"].mean()) < 3.0                         # straight ahead: centred
    assert ys["left"].min() > 0.0 and ys["left"].mean() > 5.0    # turned left: only the left half is seen
