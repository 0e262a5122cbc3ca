"""`carla-seg carla` without a CARLA server: everything that can run here runs for real.

Real: argument parsing and --help, the sensor attributes the client requests, carla.Transform objects built by the
installed CARLA 0.9.16 client library, the conversion of CARLA's raw BGRA buffers into sensor_msgs/Image and
CameraInfo (decoded back with the evaluator's own decoder), and the connection error against a port on 127.0.0.1
where nothing listens (the real carla.Client, with a short timeout).

Fakes, only where a server would have to exist: the version-mismatch check (a fake client that reports server
0.9.13) and the cleanup path (a fake world and fake actors that record what was called, including a Ctrl-C during a
tick). No CARLA server can run on this machine; nothing here talks to one.
"""
from __future__ import annotations

import math
import socket
import types

import numpy as np
import pytest

from carla_seg_ros import image_codec
from carla_seg_ros.classes import load_coding
from carla_seg_ros.evaluation.bag_make import intrinsics
from carla_seg_ros.evaluation.bag_reading import Counters, decode_ground_truth
from carla_seg_ros.simulator import carla_client as cc
from carla_seg_ros.simulator import carla_sensors as cs


def test_help_and_defaults(capsys):
    with pytest.raises(SystemExit) as exc:
        cc.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for option in ("--host", "--port", "--timeout", "--town", "--attach", "--step", "--ros"):
        assert option in out
    args = cc.build_parser().parse_args([])
    assert (args.host, args.port, args.step, args.role, args.ros) == ("127.0.0.1", 2000, 0.05, "ego_vehicle",
                                                                       "client")
    assert (args.width, args.height, args.fov) == (800, 600, 90.0)


@pytest.mark.parametrize("argv, needle", [(["--step", "0"], "--step"), (["--fov", "200"], "--fov"),
                                          (["--port", "70000"], "--port")])
def test_bad_arguments_are_one_line(argv, needle, capsys):
    assert cc.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


def test_the_two_cameras_request_the_same_geometry():
    rgb, sem = (cs.camera_attributes(name) for name in (cs.RGB, cs.SEMANTIC))
    assert {k: v for k, v in rgb.items() if k != "role_name"} == {k: v for k, v in sem.items() if k != "role_name"}
    assert (rgb["image_size_x"], rgb["image_size_y"], rgb["fov"]) == ("800", "600", "90")
    assert "ros_name" not in rgb
    native = cs.camera_attributes(cs.SEMANTIC, native_ros=True)
    assert native["ros_name"] == cs.SEMANTIC == native["role_name"]
    assert cs.vehicle_attributes("hero", native_ros=True) == {"role_name": "hero", "ros_name": "hero"}
    topics = cs.topic_names("hero")
    assert topics["rgb"] == "/carla/hero/rgb_front/image"
    assert topics["semantic"] == "/carla/hero/semantic_segmentation_front/image"
    with pytest.raises(ValueError, match="unknown camera"):
        cs.camera_attributes("lidar")


def test_mount_builds_a_real_carla_transform():
    carla = pytest.importorskip("carla", reason="the CARLA client wheel (extra `carla`) is not installed")
    t = cc.transform(carla, cs.MOUNT)
    assert isinstance(t, carla.Transform)
    assert (t.location.x, t.location.y, t.location.z) == (2.0, 0.0, 2.0)
    assert (t.rotation.pitch, t.rotation.yaw, t.rotation.roll) == (0.0, 0.0, 0.0)


def carla_buffers(rng, width=8, height=6):
    """What carla.Image.raw_data holds: BGRA bytes; the semantic camera's tag ids in the red channel."""
    rgb = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    tags = rng.integers(0, 29, (height, width), dtype=np.uint8)
    sem = np.zeros((height, width, 4), np.uint8)
    sem[..., 2] = tags
    return rgb.tobytes(), sem.tobytes(), rgb, tags


def test_raw_buffers_become_bridge_messages():
    pytest.importorskip("sensor_msgs", reason="ROS 2 wheels (extra `ros`) are not installed")
    raw_rgb, raw_sem, rgb, tags = carla_buffers(np.random.default_rng(0))
    stamp = 12 * 10**9 + 345_000_000
    msg = cs.image_msg(cs.bgra_array(raw_rgb, 8, 6), stamp, "ego_vehicle/rgb_front")
    assert (msg.encoding, msg.width, msg.height, msg.step, msg.is_bigendian) == ("bgra8", 8, 6, 32, 0)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (12, 345_000_000,
                                                                                       "ego_vehicle/rgb_front")
    assert np.array_equal(image_codec.pixels(msg), rgb)
    # The semantic camera goes out as the bridge's palette colours, and the evaluator decodes the exact tags back.
    sem_msg = cs.image_msg(cs.semantic_to_palette(cs.bgra_array(raw_sem, 8, 6), "tags29"), stamp, "x")
    counters = Counters()
    decoded = decode_ground_truth(sem_msg, "palette", load_coding("tags29"), counters)
    assert np.array_equal(decoded, tags) and counters.unknown_color_pixels == 0
    info = cs.camera_info_msg(800, 600, 90.0, stamp, "ego_vehicle/rgb_front")
    fx, cx, cy = intrinsics(800, 600, 90.0)
    assert (info.width, info.height, info.distortion_model) == (800, 600, "plumb_bob")
    assert list(info.k) == [fx, 0.0, cx, 0.0, fx, cy, 0.0, 0.0, 1.0] and fx == pytest.approx(400.0)
    assert info.header.frame_id == "ego_vehicle/rgb_front" and info.header.stamp.sec == 12
    with pytest.raises(ValueError, match="needs 192"):
        cs.bgra_array(raw_rgb[:-4], 8, 6)
    assert cs.stamp_ns(12.345) == stamp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]     # closed on exit: nothing listens there any more


def test_no_server_is_one_clear_line(capsys):
    pytest.importorskip("carla", reason="the CARLA client wheel (extra `carla`) is not installed")
    port = free_port()
    assert cc.main(["--port", str(port), "--timeout", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert f"no CARLA server answered at 127.0.0.1:{port} within 1 s" in err[0]


class FakeClientLib:
    """Stands in for the carla module where a real server would be needed (see the module docstring)."""

    def __init__(self, server_version, world=None):
        lib = self

        class Client:
            def __init__(self, host, port):
                self.host, self.port = host, port

            def set_timeout(self, t):
                self.timeout = t

            def get_server_version(self):
                return server_version

            def get_client_version(self):
                return "0.9.16"

            def get_world(self):
                return lib.world

            def get_trafficmanager(self, port):
                return lib.tm

        self.Client = Client
        self.world = world
        self.tm = types.SimpleNamespace(calls=[], set_synchronous_mode=lambda v: self.tm.calls.append(("sync", v)),
                                        set_random_device_seed=lambda s: None)
        self.Transform = self.Location = self.Rotation = lambda *a, **k: (a, k)


def test_version_mismatch_is_one_clear_line():
    with pytest.raises(cc.CarlaError, match=r"client 0\.9\.16 cannot drive server 0\.9\.13.*carla==0\.9\.13"):
        cc.connect(FakeClientLib("0.9.13"), "127.0.0.1", 2000, 1.0)
    assert cc.connect(FakeClientLib("0.9.16"), "127.0.0.1", 2000, 1.0).timeout == 1.0


class FakeActor:
    def __init__(self, log, name, fail_destroy=False):
        self.log, self.id, self.type_id, self.fail = log, name, name, fail_destroy
        self.attributes = {"role_name": name}

    def stop(self):
        self.log.append(("stop", self.id))

    def destroy(self):
        self.log.append(("destroy", self.id))
        if self.fail:
            raise RuntimeError("actor already gone")

    def listen(self, cb):
        self.log.append(("listen", self.id))

    def enable_for_ros(self):
        self.log.append(("enable_for_ros", self.id))

    def set_autopilot(self, on, port):
        self.log.append(("autopilot", on, port))


class FakeWorld:
    """Records settings and actors; its third tick raises KeyboardInterrupt, as Ctrl-C would."""

    def __init__(self):
        self.log, self.settings, self.ticks = [], types.SimpleNamespace(synchronous_mode=False,
                                                                        fixed_delta_seconds=None), 0
        self.attrs = {}
        world = self

        class Blueprint:
            def __init__(self, bp_id):
                self.id = bp_id

            def has_attribute(self, key):
                return True

            def set_attribute(self, key, value):
                world.attrs.setdefault(self.id, {})[key] = value

        class Library:
            def filter(self, pattern):
                return [Blueprint(pattern)]

            def find(self, bp_id):
                return Blueprint(bp_id)

        self.library = Library()

    def get_settings(self):
        return types.SimpleNamespace(**vars(self.settings))

    def apply_settings(self, s):
        self.settings = types.SimpleNamespace(**vars(s))
        self.log.append(("settings", s.synchronous_mode, s.fixed_delta_seconds))

    def get_blueprint_library(self):
        return self.library

    def get_map(self):
        return types.SimpleNamespace(get_spawn_points=lambda: ["p0", "p1"])

    def try_spawn_actor(self, bp, point):
        return FakeActor(self.log, "vehicle")

    def spawn_actor(self, bp, transform, attach_to=None):
        return FakeActor(self.log, bp.id.split(".")[-1], fail_destroy=bp.id.endswith("semantic_segmentation"))

    def tick(self):
        self.ticks += 1
        if self.ticks == 3:
            raise KeyboardInterrupt
        return self.ticks


def test_ctrl_c_restores_settings_and_destroys_what_was_spawned(monkeypatch, capsys):
    world = FakeWorld()
    lib = FakeClientLib("0.9.16", world)
    monkeypatch.setattr(cc, "import_carla", lambda: lib)
    assert cc.main(["--ros", "native", "--step", "0.1"]) == 0
    log = world.log
    assert log[0] == ("settings", True, 0.1)                        # synchronous, fixed step
    assert log[-1] == ("settings", False, None)                     # the original settings, restored last
    assert ("enable_for_ros", "rgb") in log and ("enable_for_ros", "semantic_segmentation") in log
    assert ("autopilot", True, 8000) in log and world.ticks == 3
    for actor in ("rgb", "semantic_segmentation"):
        assert log.index(("stop", actor)) < log.index(("destroy", actor))
    assert log.index(("destroy", "semantic_segmentation")) < log.index(("destroy", "vehicle"))
    assert ("sync", False) in lib.tm.calls
    # Attributes requested from the blueprints: the matching geometry, ros_name for the native publisher.
    assert world.attrs["vehicle.lincoln.mkz_2020"] == {"role_name": "ego_vehicle", "ros_name": "ego_vehicle"}
    cam = world.attrs["sensor.camera.semantic_segmentation"]
    assert (cam["image_size_x"], cam["image_size_y"], cam["fov"], cam["ros_name"]) == ("800", "600", "90",
                                                                                       cs.SEMANTIC)
    # A failing destroy is reported, and the rest of the cleanup still ran.
    assert "cleanup: sensor semantic_segmentation destroy: actor already gone" in capsys.readouterr().err


def test_attach_never_destroys_the_users_vehicle(monkeypatch):
    world = FakeWorld()
    theirs = FakeActor(world.log, "hero")
    world.get_actors = lambda: types.SimpleNamespace(filter=lambda pattern: [theirs])
    monkeypatch.setattr(cc, "import_carla", lambda: FakeClientLib("0.9.16", world))
    assert cc.main(["--ros", "native", "--attach", "--role", "hero", "--no-autopilot"]) == 0
    assert ("destroy", "hero") not in world.log and ("destroy", "rgb") in world.log
    session = cc.Session(world)
    assert session.close() == [] and session.close() == []         # closing twice is harmless


def test_bridge_publisher_sends_the_bridge_topics_over_dds(monkeypatch):
    """--ros client's publisher, for real over Fast DDS: one tick of CARLA buffers arrives as the bridge sends it."""
    rclpy = pytest.importorskip("rclpy", reason="ROS 2 wheels (extra `ros`) are not installed")
    import os
    import time

    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CameraInfo, Image

    monkeypatch.setenv("ROS_DOMAIN_ID", "43")
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    role = f"clienttest{os.getpid()}"          # unique topics: other tests share the domain
    raw_rgb, raw_sem, rgb, tags = carla_buffers(np.random.default_rng(3))
    pub = cc.BridgePublisher(role, 8, 6, 90.0, "tags29")
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=43)
    node = rclpy.create_node("bridge_publisher_probe", context=ctx)
    got = {}
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    for key, topic in cs.topic_names(role).items():
        if key != "clock":
            node.create_subscription(CameraInfo if key.endswith("_info") else Image, topic,
                                     lambda msg, key=key: got.setdefault(key, msg), qos)
    node.create_subscription(Clock, "/clock", lambda msg: got.setdefault("clock", msg), 10)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    try:
        deadline = time.monotonic() + 30
        while any(p.get_subscription_count() == 0 for p in pub.pubs.values()) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        stamp = 7 * 10**9 + 50_000_000
        pub.publish(stamp, raw_rgb, raw_sem)
        while len(got) < 5 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
    finally:
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
        pub.close()
    assert set(got) == {"rgb", "rgb_info", "semantic", "semantic_info", "clock"}, set(got)
    assert got["rgb"].header.frame_id == f"{role}/rgb_front" and got["rgb"].encoding == "bgra8"
    assert got["semantic"].header.frame_id == f"{role}/semantic_segmentation_front"
    assert (got["semantic"].header.stamp.sec, got["semantic"].header.stamp.nanosec) == (7, 50_000_000)
    assert np.array_equal(image_codec.pixels(got["rgb"]), rgb)
    decoded = decode_ground_truth(got["semantic"], "palette", load_coding("tags29"), Counters())
    assert np.array_equal(decoded, tags)
    assert got["rgb_info"].width == 8 and got["rgb_info"].k[0] == pytest.approx(4.0)


# ---------------------------------------------------------------------------------------------------------------
# --record: the dataset writer fed straight from the synchronous sensors
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, needle", [
    (["--towns", "Town01"], "--frames-per-town"), (["--weathers", "ClearNoon"], "--frames-per-town"),
    (["--towns", "Town01", "--frames-per-town", "5", "--attach"], "--attach"),
    (["--record", "x", "--coding", "tags99"], "--coding 'tags99'"), (["--every", "0"], "--every")])
def test_record_bad_arguments_are_one_line(argv, needle, capsys):
    assert cc.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


def test_weather_names_are_checked_against_the_real_presets(tmp_path, capsys):
    carla = pytest.importorskip("carla", reason="the CARLA client wheel (extra `carla`) is not installed")
    presets = cs.weather_presets(carla.WeatherParameters, ["ClearNoon", "WetSunset", "HardRainNoon", "ClearNight"])
    assert [n for n, _ in presets] == ["ClearNoon", "WetSunset", "HardRainNoon", "ClearNight"]
    assert all(isinstance(p, carla.WeatherParameters) for _, p in presets)
    assert presets[0][1] == carla.WeatherParameters.ClearNoon
    # A typo is refused before anything connects (the port is closed) or any folder is made.
    argv = ["--weathers", "ClearNoon,SunnyNoon", "--frames-per-town", "8", "--port", str(free_port()),
            "--record", str(tmp_path / "ds")]
    assert cc.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown weather preset 'SunnyNoon'" in err[0] and "WetSunset" in err[0], err
    assert not (tmp_path / "ds").exists()


def test_record_without_server_and_into_an_unwritable_folder(tmp_path, capsys):
    pytest.importorskip("carla", reason="the CARLA client wheel (extra `carla`) is not installed")
    port = free_port()
    assert cc.main(["--record", str(tmp_path / "ds"), "--port", str(port), "--timeout", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"no CARLA server answered at 127.0.0.1:{port}" in err[0], err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cc.main(["--record", str(blocker / "ds"), "--port", str(port), "--timeout", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write to output folder" in err[0] and str(blocker / "ds") in err[0], err


def test_plan_segments_cover_every_town_in_every_weather():
    plan = cs.plan_segments(["Town01", "Town03"], ["ClearNoon", "WetSunset", "ClearNight"], 10)
    assert plan == [("Town01", "ClearNoon", 4), ("Town01", "WetSunset", 3), ("Town01", "ClearNight", 3),
                    ("Town03", "ClearNoon", 4), ("Town03", "WetSunset", 3), ("Town03", "ClearNight", 3)]
    assert cs.plan_segments([], ["ClearNoon"], 5) == [(None, "ClearNoon", 5)]
    assert cs.map_name("/Game/Carla/Maps/Town10HD_Opt") == "Town10HD_Opt"


def test_carla_buffers_into_the_dataset_writer(tmp_path):
    from carla_seg_ros.datasets import find_pairs, read_rgb, read_tag_ids
    from carla_seg_ros.capture.dataset_writer import DatasetWriter
    raw_rgb, raw_sem, bgra, tags = carla_buffers(np.random.default_rng(5))
    writer = DatasetWriter(tmp_path / "ds", block=True)
    sample = cs.record_sample(raw_rgb, raw_sem, 8, 6, 3 * 10**9 + 50_000_000, "tags29", {"fx": 4.0},
                              "Town01_WetNoon")
    assert writer.offer(sample) == "queued"
    writer.close()
    (pair,) = find_pairs(tmp_path / "ds", "all")
    assert pair.name == "t29_Town01_WetNoon_0000000003_050000000" and pair.coding == "tags29"
    assert np.array_equal(read_rgb(pair.rgb), bgra[..., 2::-1]) and np.array_equal(read_tag_ids(pair.label), tags)


class FakeRecordingWorld(FakeWorld):
    """A world whose cameras deliver CARLA-style images on every tick (BGRA bytes, tag ids in the red channel)."""

    def __init__(self, town, log_weather):
        super().__init__()
        self.town, self.listeners, self.weather_log, self.delivered = town, {}, log_weather, []
        self.delivered_rgb = []

    def spawn_actor(self, bp, transform, attach_to=None):
        actor = super().spawn_actor(bp, transform, attach_to)
        actor.listen = lambda cb, name=bp.id: self.listeners.__setitem__(name, cb)
        return actor

    def tick(self):
        self.ticks += 1
        rng = np.random.default_rng(hash((self.town, self.ticks)) % 2**32)
        raw_rgb, raw_sem, bgra, tags = carla_buffers(rng)
        self.delivered.append((bgra, tags))
        self.delivered_rgb.append(bgra)      # the fake depth camera delivers the RGB buffer
        for name, cb in self.listeners.items():
            cb(types.SimpleNamespace(frame=self.ticks, raw_data=raw_sem if "semantic" in name else raw_rgb))
        return self.ticks

    def get_snapshot(self):
        """The vehicle drives along CARLA +y (yaw 90) at 20 m/s: 1 m per tick."""
        import carla
        vehicle = types.SimpleNamespace(
            get_transform=lambda: carla.Transform(carla.Location(x=5.0, y=float(self.ticks), z=0.5),
                                                  carla.Rotation(yaw=90.0)),
            get_velocity=lambda: carla.Vector3D(x=0.0, y=20.0, z=0.0),
            get_angular_velocity=lambda: carla.Vector3D(x=0.0, y=0.0, z=0.0))
        return types.SimpleNamespace(timestamp=types.SimpleNamespace(elapsed_seconds=self.ticks * 0.05),
                                     find=lambda actor_id: vehicle if actor_id == "vehicle" else None)

    def set_weather(self, preset):
        self.weather_log.append((self.town, preset))


def test_record_cycles_towns_and_weathers_against_a_fake_world(monkeypatch, tmp_path, capsys):
    """The loop of `carla-seg carla --record` where a server would be needed: fake worlds, the real writer."""
    carla = pytest.importorskip("carla", reason="the CARLA client wheel (extra `carla`) is not installed")
    import csv
    import json

    from carla_seg_ros.datasets import find_pairs, read_rgb, read_tag_ids
    weather_log, worlds = [], {}
    lib = FakeClientLib("0.9.16")
    lib.WeatherParameters = carla.WeatherParameters

    def load_world(self, town):
        worlds[town] = FakeRecordingWorld(town, weather_log)
        return worlds[town]
    lib.Client.load_world = load_world
    monkeypatch.setattr(cc, "import_carla", lambda: lib)
    out = tmp_path / "ds"
    assert cc.main(["--ros", "native", "--record", str(out), "--towns", "Town01,Town03", "--weathers",
                    "ClearNoon,HardRainNoon", "--frames-per-town", "4", "--width", "8", "--height", "6",
                    "--depth"]) == 0
    assert list(worlds) == ["Town01", "Town03"]
    presets = carla.WeatherParameters
    assert weather_log == [("Town01", presets.ClearNoon), ("Town01", presets.HardRainNoon),
                           ("Town03", presets.ClearNoon), ("Town03", presets.HardRainNoon)]
    for world in worlds.values():        # each town's world restored and its actors destroyed before the next
        assert world.log[-1] == ("settings", False, None) and ("destroy", "vehicle") in world.log
    pairs = find_pairs(out, "all")
    assert [p.name for p in pairs] == sorted(
        f"t29_{town}_{weather}_0000000000_{k * 50_000_000:09d}"
        for town in ("Town01", "Town03") for weather, ks in (("ClearNoon", (1, 2)), ("HardRainNoon", (3, 4)))
        for k in ks)
    by_name = {p.name: p for p in pairs}
    for town, world in worlds.items():
        for k, (bgra, tags) in enumerate(world.delivered, start=1):
            weather = "ClearNoon" if k <= 2 else "HardRainNoon"
            pair = by_name[f"t29_{town}_{weather}_0000000000_{k * 50_000_000:09d}"]
            assert np.array_equal(read_rgb(pair.rgb), bgra[..., 2::-1])
            assert np.array_equal(read_tag_ids(pair.label), tags)
    rows = list(csv.DictReader(open(out / "manifest.csv")))
    assert len(rows) == 8 and {r["coding"] for r in rows} == {"tags29"} and float(rows[0]["fx"]) == pytest.approx(4.0)
    # Every row holds the ego pose of its own tick in the ROS map frame (CARLA y negated, yaw 90 -> -pi/2) and the
    # twist in the vehicle frame; --depth wrote the depth camera's image of that tick in metres.
    from carla_seg_ros.evaluation.ego_motion import depth_path, ego_from_row, read_depth
    from carla_seg_ros.simulator.carla_frames import depth_metres
    for row in rows:
        k = int(row["stamp_ns"]) // 50_000_000
        ego = ego_from_row(row)
        assert (ego.x, ego.y, ego.z, ego.vx) == (5.0, -float(k), 0.5, pytest.approx(20.0))
        assert ego.yaw == pytest.approx(-math.pi / 2)
        town = row["name"].split("_")[1]
        depth = read_depth(depth_path(out, row["name"]))
        assert np.array_equal(depth, depth_metres(worlds[town].delivered_rgb[k - 1]))
    summary = json.loads((out / "record_summary.json").read_text())
    assert summary["written"] == 8 and summary["dropped_writer"] == 0
    assert "written 8" in capsys.readouterr().err
