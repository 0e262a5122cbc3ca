"""The matching camera pair for `carla-seg carla`, and CARLA's raw image buffers as the bridge's ROS messages.

No ``import carla`` here: everything is plain data and numpy, so it is tested without a server.

* The RGB camera and the semantic camera share one mount (the bridge's ``rgb_front``: x=2.0, z=2.0 on the ego
  vehicle), size (800x600) and FOV (90), so the ground truth lines up with the segmented image pixel for pixel
  (config/carla_objects.json holds the same pair for the bridge's carla_spawn_objects).
* CARLA delivers every camera image as a BGRA buffer (``carla.Image.raw_data``); the semantic camera puts the tag
  id in the red channel (index 2). Publishing like the ROS bridge means: ``bgra8`` images, the semantic one
  converted to the CityScapes palette of the server's coding (tags29 for 0.9.14+), a CameraInfo from the FOV,
  frame ids ``<role>/<sensor>`` and sim-time stamps, plus /clock.
* ``--depth`` adds the bridge's depth camera (``depth_front``) at the same mount, size and FOV; its image goes out
  as 32FC1 metres (carla_frames.depth_metres). The ego vehicle's odometry goes out like the bridge's
  ``sensor.pseudo.odom``: nav_msgs/Odometry on ``/carla/<role>/odometry``, frame ``map``, child ``<role>``.
"""
from __future__ import annotations

import numpy as np

from carla_seg_ros.classes import load_coding
from carla_seg_ros.evaluation.bag_make import intrinsics

RGB = "rgb_front"
SEMANTIC = "semantic_segmentation_front"
BLUEPRINTS = {RGB: "sensor.camera.rgb", SEMANTIC: "sensor.camera.semantic_segmentation"}
DEPTH = "depth_front"                 # the bridge's name for the depth camera at the rgb_front mount
DEPTH_BLUEPRINT = "sensor.camera.depth"
ALL_BLUEPRINTS = {**BLUEPRINTS, DEPTH: DEPTH_BLUEPRINT}
MOUNT = {"x": 2.0, "y": 0.0, "z": 2.0, "roll": 0.0, "pitch": 0.0, "yaw": 0.0}   # the bridge's rgb_front
WIDTH, HEIGHT, FOV = 800, 600, 90.0


def camera_attributes(sensor: str, width: int = WIDTH, height: int = HEIGHT, fov: float = FOV,
                      native_ros: bool = False) -> dict[str, str]:
    """Blueprint attributes for one of the cameras (strings, as ``ActorBlueprint.set_attribute`` takes them).

    ``sensor_tick`` 0 = one image per simulation step. With ``native_ros`` the ``ros_name`` makes CARLA 0.9.16
    publish it on ``/carla/<vehicle ros_name>/<sensor>/image``, the topic our launch file expects.
    """
    if sensor not in ALL_BLUEPRINTS:
        raise ValueError(f"unknown camera {sensor!r}; known: {', '.join(ALL_BLUEPRINTS)}")
    attrs = {"image_size_x": str(int(width)), "image_size_y": str(int(height)), "fov": f"{float(fov):g}",
             "sensor_tick": "0.0", "role_name": sensor}
    if native_ros:
        attrs["ros_name"] = sensor
    return attrs


def vehicle_attributes(role: str, native_ros: bool = False) -> dict[str, str]:
    attrs = {"role_name": role}
    if native_ros:
        attrs["ros_name"] = role    # the native publisher names a parented sensor's topic after its parent's ros_name
    return attrs


def topic_names(role: str, depth: bool = False) -> dict[str, str]:
    """The bridge's topics for the pair, and the depth camera with ``depth`` (CARLA 0.9.16's native publisher uses
    the same with the ros_names above)."""
    topics = {"rgb": f"/carla/{role}/{RGB}/image", "rgb_info": f"/carla/{role}/{RGB}/camera_info",
              "semantic": f"/carla/{role}/{SEMANTIC}/image",
              "semantic_info": f"/carla/{role}/{SEMANTIC}/camera_info", "clock": "/clock"}
    if depth:
        topics.update(depth=f"/carla/{role}/{DEPTH}/image", depth_info=f"/carla/{role}/{DEPTH}/camera_info")
    return topics


def odometry_topic(role: str) -> str:
    """The bridge's odometry pseudo-sensor topic (``sensor.pseudo.odom`` with id ``odometry``)."""
    return f"/carla/{role}/odometry"


def bgra_array(raw, width: int, height: int) -> np.ndarray:
    """CARLA's raw BGRA bytes -> (H, W, 4) uint8 view; ValueError if the size does not match."""
    buf = np.frombuffer(raw, np.uint8)
    if buf.size != width * height * 4:
        raise ValueError(f"CARLA image buffer has {buf.size} bytes, {width}x{height} BGRA needs {width * height * 4}")
    return buf.reshape(height, width, 4)


def semantic_to_palette(bgra: np.ndarray, coding: str = "tags29") -> np.ndarray:
    """Raw semantic image (tag id in the red channel) -> CityScapes palette colours in BGRA, as the bridge sends.

    Ids outside the coding's table become black (Unlabeled's colour), which the evaluator then counts as Unlabeled;
    the bridge's own converter does the same with the server's table.
    """
    palette = load_coding(coding).palette_lut()            # (256, 3) RGB
    out = np.empty_like(bgra)
    out[..., 2::-1] = palette[bgra[..., 2]]
    out[..., 3] = 255
    return out


def stamp_ns(elapsed_seconds: float) -> int:
    """A snapshot's simulation time (``WorldSnapshot.timestamp.elapsed_seconds``) in integer nanoseconds."""
    return int(round(float(elapsed_seconds) * 1e9))


def image_msg(bgra: np.ndarray, stamp: int, frame_id: str):
    from carla_seg_ros.image_codec import to_image
    msg = to_image(np.ascontiguousarray(bgra), "bgra8")
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp), 10**9)
    msg.header.frame_id = frame_id
    return msg


def camera_info_msg(width: int, height: int, fov: float, stamp: int, frame_id: str):
    """sensor_msgs/CameraInfo of CARLA's pinhole camera, as the bridge fills it (plumb_bob, no distortion)."""
    from sensor_msgs.msg import CameraInfo
    fx, cx, cy = intrinsics(width, height, fov)
    msg = CameraInfo()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp), 10**9)
    msg.header.frame_id = frame_id
    msg.width, msg.height, msg.distortion_model = int(width), int(height), "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = [fx, 0.0, cx, 0.0, fx, cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [fx, 0.0, cx, 0.0, 0.0, fx, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


def weather_presets(weather_parameters, names: list[str]) -> list[tuple[str, object]]:
    """[(name, carla.WeatherParameters preset)] for ``names``; ValueError naming the unknown ones and the valid ones.

    ``weather_parameters`` is ``carla.WeatherParameters``: its presets are class attributes of that type."""
    valid = sorted(n for n in dir(weather_parameters)
                   if not n.startswith("_") and isinstance(getattr(weather_parameters, n), weather_parameters))
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ValueError(f"unknown weather preset {', '.join(map(repr, unknown))}; CARLA's presets: "
                         f"{', '.join(valid)}")
    return [(n, getattr(weather_parameters, n)) for n in names]


def map_name(path: str) -> str:
    """'/Game/Carla/Maps/Town01' or 'Town01' -> 'Town01' (what --towns takes and file names use)."""
    return str(path).rstrip("/").rsplit("/", 1)[-1]


def plan_segments(towns: list[str], weathers: list[str], frames_per_town: int) -> list[tuple[str | None, str | None,
                                                                                               int]]:
    """(town, weather, ticks) in order: each town in turn for ``frames_per_town`` ticks, split evenly over the
    weathers (the first ones get the remainder), so every town is seen in every weather. None = keep as it is."""
    out = []
    weathers = weathers or [None]
    for town in towns or [None]:
        base, extra = divmod(frames_per_town, len(weathers))
        for k, weather in enumerate(weathers):
            ticks = base + (k < extra)
            if ticks:
                out.append((town, weather, ticks))
    return out


def record_sample(rgb_raw, semantic_raw, width: int, height: int, stamp: int, coding: str, meta: dict,
                  tag: str = "", ego=None, depth_raw=None):
    """One tick of CARLA's raw buffers -> a dataset_writer.Sample: the RGB camera's BGRA as RGB, the semantic
    camera's red channel as the raw tag ids of ``coding`` (0.9.16: tags29), copied (CARLA reuses its buffers);
    the ego vehicle's EgoState and the depth camera's image in metres where given."""
    from carla_seg_ros.capture.dataset_writer import Sample
    from carla_seg_ros.simulator.carla_frames import depth_metres
    rgb = np.ascontiguousarray(bgra_array(rgb_raw, width, height)[..., 2::-1])
    tags = np.array(bgra_array(semantic_raw, width, height)[..., 2])
    depth = None
    if depth_raw is not None:     # decoded on the writer thread, from a copy
        depth_bgra = np.array(bgra_array(depth_raw, width, height))
        depth = lambda: depth_metres(depth_bgra)      # noqa: E731
    return Sample(stamp, rgb, lambda: (tags, coding), dict(meta), tag, ego=ego, depth=depth)
