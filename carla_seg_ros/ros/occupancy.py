"""seg_node's bird's-eye-view outputs: ``~/occupancy`` and ``~/occupancy/<group>`` (nav_msgs/OccupancyGrid).

``OccupancyOutputs`` owns the publishers, the ``camera_info`` subscription and its state, the cached cell -> pixel
lookup and its own diagnostics, so seg_node only calls ``publish(...)`` per frame and merges ``diagnostics()``.
The geometry and the free-space rule are ROS-free (runtime/ground_projection.py, runtime/occupancy_grid.py).

The lookup is rebuilt only when what it depends on changes: the intrinsics (each CameraInfo is compared by value,
and the bridge sends the same one with every frame), the image and mask sizes, or the hood row
(``ignore_rows_from``, the only one of its parameters that can change at run time).
"""
from __future__ import annotations

import array
import collections
import threading
import time
from pathlib import Path

import numpy as np

from carla_seg_ros.ros.node_stats import KeyedThrottle
from carla_seg_ros.runtime.ground_projection import GridSpec, InvalidCameraInfo, Mount, Pinhole, build_lookup
from carla_seg_ros.runtime.occupancy_grid import load_occupancy_config, project

WAITING = "waiting for camera_info"
# seg_node.Param keyword arguments: seg_node appends these to its PARAMETERS table, so they are declared,
# described, range-checked and listed in config/seg.yaml like every other parameter.
PARAMETER_SPECS = (
    dict(name="occupancy_config", default="", description="Class groups of the occupancy grids (YAML); empty = "
         "the package's config/occupancy.yaml", constraints="a readable YAML file like config/occupancy.yaml"),
    dict(name="occupancy_frame_id", default="", description="frame_id of the grids (the vehicle frame); empty = "
         "the parent of the camera frame (ego_vehicle for ego_vehicle/rgb_front, base_link if it has no parent)",
         constraints="a TF frame name, or empty"),
    dict(name="camera_x", default=2.0, description="Camera position in the vehicle frame, metres forward "
         "(default: the CARLA bridge's rgb_front)", low=-100.0, high=100.0),
    dict(name="camera_y", default=0.0, description="Camera position in the vehicle frame, metres left",
         low=-100.0, high=100.0),
    dict(name="camera_z", default=2.0, description="Camera position in the vehicle frame, metres up (above the "
         "vehicle origin: for CARLA, the ground under the vehicle)", low=-100.0, high=100.0),
    dict(name="camera_roll", default=0.0, description="Camera roll in the vehicle frame, degrees (REP-103)",
         low=-180.0, high=180.0),
    dict(name="camera_pitch", default=0.0, description="Camera pitch in the vehicle frame, degrees (REP-103: "
         "positive looks down)", low=-90.0, high=90.0),
    dict(name="camera_yaw", default=0.0, description="Camera yaw in the vehicle frame, degrees (positive looks "
         "left)", low=-180.0, high=180.0),
    dict(name="ground_z", default=0.0, description="Height of the (flat) ground plane in the vehicle frame, "
         "metres; must be below camera_z", low=-100.0, high=100.0),
    dict(name="occupancy_x_min", default=0.0, description="Grid extent: nearest edge, metres ahead of the "
         "vehicle origin", low=-1000.0, high=1000.0),
    dict(name="occupancy_x_max", default=40.0, description="Grid extent: farthest edge, metres ahead",
         low=-1000.0, high=1000.0),
    dict(name="occupancy_y_min", default=-20.0, description="Grid extent: right edge, metres (negative = right)",
         low=-1000.0, high=1000.0),
    dict(name="occupancy_y_max", default=20.0, description="Grid extent: left edge, metres", low=-1000.0,
         high=1000.0),
    dict(name="occupancy_resolution", default=0.2, description="Grid cell size, metres", low=0.01, high=10.0),
)


def check_parameters(p: dict) -> tuple[GridSpec, Mount]:
    """The grid and the mount from seg_node's parameters; ValueError naming the parameter when inconsistent."""
    try:
        grid = GridSpec(p["occupancy_x_min"], p["occupancy_x_max"], p["occupancy_y_min"], p["occupancy_y_max"],
                        p["occupancy_resolution"]).check()
    except ValueError as exc:
        raise ValueError(f"parameters occupancy_x_min/x_max/y_min/y_max/resolution: {exc}") from exc
    if not p["camera_z"] > p["ground_z"]:
        raise ValueError(f"parameter ground_z: {p['ground_z']} must be below camera_z ({p['camera_z']})")
    mount = Mount(p["camera_x"], p["camera_y"], p["camera_z"], p["camera_roll"], p["camera_pitch"], p["camera_yaw"])
    return grid, mount


def load_classes(p: dict, info):
    """The class groups of ``occupancy_config`` (empty: the package's config/occupancy.yaml) for the class table of
    the model ``info`` (runtime/model_info.py) describes; ValueError naming the problem."""
    names = [str(c["name"]) for c in sorted(info.classes, key=lambda c: int(c["id"]))]
    return load_occupancy_config(Path(p["occupancy_config"]) if p["occupancy_config"] else None, names)


def camera_info_topic(image_topic: str) -> str:
    """The CameraInfo beside an image topic, as the bridge and image_transport name them: .../image -> .../camera_info
    (``image`` -> ``camera_info``)."""
    base = image_topic[:-len("image")] if image_topic.endswith("image") else image_topic.rstrip("/") + "/"
    return base + "camera_info"


def pinhole_of(msg) -> Pinhole:
    """sensor_msgs/CameraInfo -> Pinhole (K is row-major: fx 0 cx / 0 fy cy / 0 0 1); InvalidCameraInfo if unusable."""
    k = [float(v) for v in msg.k]
    return Pinhole(k[0], k[4], k[2], k[5], int(msg.width), int(msg.height)).check()


class OccupancyOutputs:
    """The occupancy publishers of one camera, its camera_info subscription, the lookup cache and the counters."""

    def __init__(self, node, params, qos, classes, throttle: KeyedThrottle, prefix: str = "~/",
                 camera_info_topic: str = "camera_info", label: str = ""):
        from nav_msgs.msg import OccupancyGrid
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo

        self._params = params                     # seg_node's dict (or a per-camera view): ignore_rows_from is live
        self.grid, self.mount = check_parameters(params)
        self.classes = classes                    # load_classes(...), once per node
        self._label = f"camera {label}: " if label else ""
        self._log = node.get_logger()
        self._throttle = throttle
        self._msg_type = OccupancyGrid
        # Transient local, depth 1: RViz's Map display and Nav2's costmap layers subscribe transient local by
        # default, and a volatile publisher would not match them; a late subscriber just gets the last grid.
        grid_qos = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                              reliability=ReliabilityPolicy.RELIABLE)
        self.pub = node.create_publisher(OccupancyGrid, f"{prefix}occupancy", grid_qos)
        self.group_pubs = {name: node.create_publisher(OccupancyGrid, f"{prefix}occupancy/{name}", grid_qos)
                           for name in self.classes.groups}
        self._lock = threading.Lock()
        self._info: Pinhole | None = None
        self._info_serial = 0                     # bumps on every accepted CameraInfo that differs
        self._mismatch_counted = -1               # serial of the info last counted as not fitting the image
        self._state = WAITING
        self._lookup_key = None
        self._lookup = None
        self.counts = collections.Counter()
        self._times = collections.deque(maxlen=500)
        self._messages = {}                       # topic -> reused OccupancyGrid (inference thread only)
        self.sub = node.create_subscription(CameraInfo, camera_info_topic, self.on_camera_info, qos)

    def destroy(self, node) -> None:
        """Remove the subscription and publishers from ``node`` (a lifecycle deactivate, or shutdown)."""
        node.destroy_subscription(self.sub)
        for pub in (self.pub, *self.group_pubs.values()):
            node.destroy_publisher(pub)

    # ---------------------------------------------------------------- camera_info (executor thread)
    def on_camera_info(self, msg) -> None:
        try:
            info = pinhole_of(msg)
        except (InvalidCameraInfo, IndexError, ValueError) as exc:
            with self._lock:
                self.counts["camera_info_rejected"] += 1
                self._info = None
                self._state = f"invalid camera_info: {exc}"
            self._warn("camera_info", f"rejected camera_info from {msg.header.frame_id or '?'}: {exc}; no "
                                      "occupancy grid until a valid one arrives")
            return
        with self._lock:
            self.counts["camera_info_received"] += 1
            if info != self._info:      # the bridge repeats one CameraInfo per frame: only a change counts
                self._info = info
                self._info_serial += 1
                self._state = "camera_info ok, no frame yet"

    # ---------------------------------------------------------------- frames (inference thread)
    def intrinsics(self, image_size: tuple[int, int]):
        """(serial, Pinhole fitted to a received image of ``image_size``) for the local map and the point cloud,
        or None without a usable CameraInfo (the state in /diagnostics says why). The serial changes with the
        CameraInfo, so callers can cache what they build on it."""
        with self._lock:
            info, serial = self._info, self._info_serial
        if info is None:
            return None
        try:
            return serial, info.for_image(*image_size)
        except InvalidCameraInfo:
            return None

    def wanted(self) -> bool:
        return self.pub.get_subscription_count() > 0 or any(p.get_subscription_count() for p in
                                                            self.group_pubs.values())

    def publish(self, class_ids: np.ndarray, confidence: np.ndarray, header, image_size: tuple[int, int]) -> bool:
        """Project one frame's model-size mask and publish the grids that have subscribers; False if skipped.

        ``image_size`` is the received image's (width, height): the CameraInfo must describe it or an image it
        was resized from/to with the same aspect ratio.
        """
        if not self.wanted():
            return False
        start, cpu_start = time.perf_counter(), time.thread_time()
        lookup = self._current_lookup(class_ids.shape, image_size)
        if lookup is None:
            self.counts["frames_skipped"] += 1
            return False
        frame = project(lookup, class_ids, self.classes, confidence)
        frame_id = self._params["occupancy_frame_id"] or vehicle_frame(header.frame_id)
        if self.pub.get_subscription_count():
            self.pub.publish(self._message("", frame.occupancy(self.classes), header, frame_id))
        for name, pub in self.group_pubs.items():
            if pub.get_subscription_count():
                pub.publish(self._message(name, frame.group(self.classes, name), header, frame_id))
        self.counts["frames_published"] += 1
        # Wall time (what processing_p50_ms includes) and this thread's CPU time (the same without the waits for a
        # core or the GIL that a busy machine adds).
        self._times.append((time.perf_counter() - start, time.thread_time() - cpu_start))
        return True

    def _current_lookup(self, mask_shape: tuple[int, int], image_size: tuple[int, int]):
        with self._lock:
            info, serial = self._info, self._info_serial
            if info is None:
                state = self._state
        if info is None:
            self._warn("no_camera_info", f"no occupancy grid: {state}")
            return None
        hood_row = int(round(self._params["ignore_rows_from"] * mask_shape[0]))
        key = (serial, tuple(image_size), tuple(mask_shape), hood_row)
        if key != self._lookup_key and not self._rebuild(key, info, mask_shape, image_size, hood_row):
            return None
        with self._lock:
            if self._info_serial == serial:     # (a newer CameraInfo may have come meanwhile: judged next frame)
                self._state = "ok"
        return self._lookup

    def _rebuild(self, key, info: Pinhole, mask_shape, image_size, hood_row) -> bool:
        serial = key[0]
        try:
            fitted = info.for_image(*image_size)
        except InvalidCameraInfo as exc:
            with self._lock:
                self._state = f"invalid camera_info: {exc}"
                if self._mismatch_counted != serial:      # one count per CameraInfo, not per frame
                    self._mismatch_counted = serial
                    self.counts["camera_info_rejected"] += 1
            self._warn("camera_info_size", f"no occupancy grid: {exc}")
            return False
        cam = fitted.scaled(mask_shape[1], mask_shape[0])     # the model's mask is a plain resize of the image
        self._lookup = build_lookup(cam, self.mount, self._params["ground_z"], self.grid, hood_row)
        self._lookup_key = key
        self.counts["lookup_builds"] += 1
        return True

    def _message(self, topic: str, cells: np.ndarray, header, frame_id: str):
        # One message object per topic, reused: rclpy serialises at publish(), and building a fresh nested
        # OccupancyGrid costs as much as the projection of a whole grid.
        msg = self._messages.get(topic)
        if msg is None:
            msg = self._messages[topic] = self._msg_type()
            info = msg.info
            info.resolution = float(self.grid.resolution)
            info.width, info.height = self.grid.width, self.grid.height
            info.origin.position.x = float(self.grid.x_min)
            info.origin.position.y = float(self.grid.y_min)
            info.origin.position.z = float(self._params["ground_z"])
        msg.header.stamp = header.stamp
        msg.header.frame_id = frame_id
        msg.info.map_load_time = header.stamp
        msg.data = array.array("b", cells.tobytes())           # a buffer copy, not a 40 000-element list
        return msg

    def _warn(self, key: str, text: str) -> None:
        suppressed = self._throttle.ready(f"occupancy_{key}", time.monotonic())
        if suppressed is not None:
            more = f" ({suppressed} more since the last warning)" if suppressed else ""
            self._log.warning(self._label + text + more)

    # ---------------------------------------------------------------- diagnostics
    def problem(self) -> str | None:
        """'occupancy: <state>' while someone wants grids that cannot be made, else None."""
        with self._lock:
            state = self._state
        return None if state == "ok" or not self.wanted() else f"occupancy: {state}"

    def diagnostics(self) -> dict:
        with self._lock:
            state = self._state
        times = np.array(self._times).reshape(-1, 2) * 1000.0 if self._times else None
        return {"occupancy": state, "occupancy_topic": self.pub.topic_name,
                "camera_info_topic": self.sub.topic_name,
                "occupancy_grid": f"{self.grid.width}x{self.grid.height} cells of {self.grid.resolution:g} m",
                "camera_info_received": self.counts["camera_info_received"],
                "camera_info_rejected": self.counts["camera_info_rejected"],
                "occupancy_frames_published": self.counts["frames_published"],
                "occupancy_frames_skipped": self.counts["frames_skipped"],
                "occupancy_lookup_builds": self.counts["lookup_builds"],
                "occupancy_p50_ms": float(np.percentile(times[:, 0], 50)) if times is not None else None,
                "occupancy_cpu_p50_ms": float(np.percentile(times[:, 1], 50)) if times is not None else None}


def vehicle_frame(camera_frame: str) -> str:
    """The parent of a bridge-style sensor frame: ``ego_vehicle/rgb_front`` -> ``ego_vehicle``."""
    parent = camera_frame.rsplit("/", 1)[0] if "/" in camera_frame.strip("/") else ""
    return parent.strip("/") or "base_link"

