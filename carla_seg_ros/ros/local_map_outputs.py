"""seg_node's fused outputs: ``~/local_map`` (+ ``~/local_map/<group>``) over every camera and time, and each
camera's ``~/points`` (sensor_msgs/PointCloud2).

``LocalMapOutputs`` owns the ``odometry`` subscription (nav_msgs/Odometry; the launch file remaps it to
``/carla/<role>/odometry``), each camera's optional ``depth`` subscription (32FC1 metres, aligned with the camera)
and ``points`` publisher, the map publishers and their timer, and a /diagnostics status of its own. seg_node calls
``on_frame`` once per camera frame, after the per-camera grids. The map and the point cloud are ROS-free
(runtime/local_map.py, runtime/map_fusion.py, runtime/point_cloud.py); docs/concepts/local_map.md has the model.

Work happens only while someone listens: frames are fused while ``~/local_map`` or a group map has a subscriber,
a camera's points are built while its ``points`` topic has one. Without odometry the per-camera grids go on as
before and the status says why there is no map.
"""
from __future__ import annotations

import array
import collections
import threading
import time

import numpy as np

from carla_seg_ros import image_codec
from carla_seg_ros.runtime.local_map import FilterParams, LocalMap, MapSpec
from carla_seg_ros.runtime.map_fusion import DEFAULT_RANGE, CameraEvidence, MapFuser
from carla_seg_ros.runtime.odometry_buffer import OdometryBuffer, PlanarPose, yaw_of_quaternion
from carla_seg_ros.runtime.point_cloud import PointCloudBuilder, fields

DEPTH_STAMP_TOLERANCE = 1e-3      # s: the bridge stamps a depth camera and its RGB twin with the same sim time
DEPTH_KEPT = 10                   # depth images kept per camera to pair with the frame inference takes
DEPTH_WAIT = 0.03                 # s the point cloud waits for a frame's depth image that is late (less than a frame)
PARAMETER_SPECS = (
    dict(name="map_frame", default="map", description="frame_id of ~/local_map: the frame of the odometry's poses "
         "(the CARLA bridge's odometry is in `map`)", constraints="a TF frame name"),
    dict(name="map_resolution", default=0.2, description="~/local_map cell size, metres", low=0.05, high=5.0),
    dict(name="map_size", default=60.0, description="~/local_map side, metres (a square centred on the ego)",
         low=2.0, high=1000.0),
    dict(name="map_publish_rate", default=5.0, description="~/local_map publications per second (while "
         "subscribed; steady clock)", low=0.1, high=100.0),
    dict(name="map_decay_time", default=2.0, description="Seconds (stamp time) within which the evidence of a "
         "dynamic group (map_dynamic_groups) fades when nothing renews it: a passing car leaves no trail",
         low=0.05, high=3600.0),
    dict(name="map_dynamic_groups", default="vehicles,pedestrians", description="Groups of occupancy_config whose "
         "evidence decays (things that move); the others persist", constraints="comma-separated group names, or "
         "empty"),
    dict(name="map_max_range", default=DEFAULT_RANGE, description="Cells farther than this from a camera give the "
         "map no evidence (one mask row spans metres of ground far out)", low=1.0, high=500.0),
    dict(name="odometry_tolerance", default=0.1, description="A frame is placed with the odometry within this many "
         "seconds of its stamp (interpolated between the samples around it)", low=0.001, high=10.0),
    dict(name="odometry_jump_distance", default=5.0, description="Odometry moving farther than this between two "
         "samples, and faster than any vehicle, is a jump (teleport, respawn, new episode): the map is reset",
         low=0.1, high=100000.0),
    dict(name="points_stride", default=4, description="~/points takes every this-many-th pixel of every this-many-th "
         "row", low=1, high=64),
    dict(name="points_max_range", default=50.0, description="~/points leaves out pixels farther than this, metres "
         "(the sky is 1000 m in CARLA's depth)", low=1.0, high=10000.0),
)


def check_parameters(p: dict, group_names) -> tuple[MapSpec, FilterParams, tuple[str, ...]]:
    """The map's spec, filter and dynamic groups from seg_node's parameters; ValueError naming the parameter."""
    try:
        spec = MapSpec(p["map_resolution"], p["map_size"]).check()
    except ValueError as exc:
        raise ValueError(f"parameters map_resolution/map_size: {exc}") from exc
    dynamic = tuple(g.strip() for g in p["map_dynamic_groups"].split(",") if g.strip())
    unknown = [g for g in dynamic if g not in group_names]
    if unknown:
        raise ValueError(f"parameter map_dynamic_groups: {', '.join(unknown)} not among the occupancy groups "
                         f"({', '.join(group_names)})")
    return spec, FilterParams(decay_time=p["map_decay_time"]).check(), dynamic


def stamp_seconds(stamp) -> float:
    return stamp.sec + 1e-9 * stamp.nanosec


def depth_array(msg) -> np.ndarray:
    """sensor_msgs/Image 32FC1 -> (H, W) float32 view; ValueError naming what is wrong."""
    if msg.encoding.upper() != "32FC1":
        raise ValueError(f"depth encoding {msg.encoding!r}; expected 32FC1 (metres)")
    if msg.is_bigendian:
        raise ValueError("big-endian depth image")
    if msg.width == 0 or msg.height == 0 or msg.step < 4 * msg.width or len(msg.data) < msg.step * msg.height:
        raise ValueError(f"depth buffer of {len(msg.data)} bytes does not hold {msg.height} rows of step {msg.step}")
    rows = np.frombuffer(msg.data, np.uint8, msg.step * msg.height).reshape(msg.height, msg.step)
    return rows[:, :4 * msg.width].view(np.float32)


class _CameraMap:
    """One camera's depth subscription, points publisher and cached evidence / point builders."""

    def __init__(self, node, camera, qos):
        from sensor_msgs.msg import Image, PointCloud2

        self.camera = camera
        prefix = f"{camera.name}/" if camera.name else ""
        self.points_pub = node.create_publisher(PointCloud2, f"~/{prefix}points", 5)
        self.depth_sub = node.create_subscription(Image, f"{prefix}depth", self.on_depth, qos)
        self.lock = threading.Condition()
        # The newest few depth images: a frame reaches the inference thread after newer depth images arrived
        # (frames are dropped while inference is busy, depth images are not), so one slot would rarely match.
        self.depth = collections.deque(maxlen=DEPTH_KEPT)    # (stamp seconds, (H, W) float32)
        self.last_depth = 0.0
        self.evidence_key, self.evidence = None, None
        self.builders = {}                 # key -> PointCloudBuilder
        self.counts = collections.Counter()
        self.problem = None

    def on_depth(self, msg) -> None:
        try:
            depth = depth_array(msg)
        except ValueError as exc:
            with self.lock:
                self.counts["depth_rejected"] += 1
                self.problem = f"depth rejected: {exc}"
            return
        with self.lock:
            self.counts["depth_received"] += 1
            self.depth.append((stamp_seconds(msg.header.stamp), depth))
            self.last_depth = time.monotonic()
            self.lock.notify_all()

    def depth_at(self, stamp: float):
        """The depth image of ``stamp``, or None. A depth camera's image and its RGB twin's travel on separate
        topics, so the depth may land just after the frame: while a depth stream is live and has nothing as new
        as the frame yet, wait for it up to DEPTH_WAIT seconds (then the ground rule stands in)."""
        deadline = time.monotonic() + DEPTH_WAIT
        with self.lock:
            while True:
                for depth_stamp, depth in reversed(self.depth):
                    if abs(depth_stamp - stamp) <= DEPTH_STAMP_TOLERANCE:
                        return depth
                live = self.depth and self.depth[-1][0] < stamp and time.monotonic() - self.last_depth < 1.0
                left = deadline - time.monotonic()
                if not live or left <= 0:
                    if self.depth:
                        self.counts["points_depth_missing"] += 1
                    return None
                self.lock.wait(left)


class LocalMapOutputs:
    """The node-wide map, its odometry, its publishers, and every camera's points."""

    def __init__(self, node, params, cameras, classes, qos):
        from nav_msgs.msg import OccupancyGrid, Odometry
        from rclpy.clock import Clock, ClockType
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

        self._node, self._params, self.classes = node, params, classes
        spec, filter_params, dynamic = check_parameters(params, list(classes.groups))
        self._lock = threading.Lock()        # the fuser: inference thread (frames) vs executor (odometry, timer)
        odometry = OdometryBuffer(params["odometry_tolerance"], jump_distance=params["odometry_jump_distance"])
        self.fuser = MapFuser(LocalMap(spec, classes, dynamic, filter_params), odometry)
        self._stamps = collections.OrderedDict()     # fused stamp (s) -> its header stamp, to publish it exactly
        self._pose_z = 0.0
        self._msg_type = OccupancyGrid
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                             reliability=ReliabilityPolicy.RELIABLE)
        self.map_pub = node.create_publisher(OccupancyGrid, "~/local_map", latched)
        self.group_pubs = {g: node.create_publisher(OccupancyGrid, f"~/local_map/{g}", latched) for g in classes.groups}
        self.odom_sub = node.create_subscription(Odometry, "odometry", self.on_odometry, 50)
        self.cameras = {c.name: _CameraMap(node, c, qos) for c in cameras}
        self.counts = collections.Counter()
        self._times = {k: collections.deque(maxlen=200) for k in ("fuse", "points", "publish")}
        self._frame_mismatch = None
        self._timer = node.create_timer(1.0 / params["map_publish_rate"], self.publish_map,
                                        clock=Clock(clock_type=ClockType.STEADY_TIME))

    def tables_for(self, classes):
        """runtime/local_map.LocalMap.tables_for: ValueError when another model's classes do not fit the map."""
        return self.fuser.map.tables_for(classes)

    def use_classes(self, classes, tables) -> None:
        """A live model swap: the next frames are fused and turned into points with ``classes``."""
        with self._lock:
            self.fuser.map.use_tables(tables)
            self.classes = classes

    def destroy(self, node) -> None:
        node.destroy_timer(self._timer)
        node.destroy_subscription(self.odom_sub)
        for pub in (self.map_pub, *self.group_pubs.values()):
            node.destroy_publisher(pub)
        for cam in self.cameras.values():
            node.destroy_subscription(cam.depth_sub)
            node.destroy_publisher(cam.points_pub)

    # ---------------------------------------------------------------- odometry (executor thread)
    def on_odometry(self, msg) -> None:
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        pose = PlanarPose(p.x, p.y, p.z, yaw_of_quaternion(q.x, q.y, q.z, q.w))
        frame = msg.header.frame_id.strip("/")
        if frame and frame != self._params["map_frame"]:
            self._frame_mismatch = frame
        with self._lock:
            self.fuser.add_odometry(stamp_seconds(msg.header.stamp), pose)
            self._pose_z = p.z

    # ---------------------------------------------------------------- frames (inference thread)
    def map_wanted(self) -> bool:
        return self.map_pub.get_subscription_count() > 0 or any(p.get_subscription_count()
                                                                for p in self.group_pubs.values())

    def on_frame(self, camera, ids: np.ndarray, conf: np.ndarray, header, image_size, native, encoding) -> None:
        cam_map = self.cameras[camera.name]
        want_map, want_points = self.map_wanted(), cam_map.points_pub.get_subscription_count() > 0
        if not (want_map or want_points):
            return
        known = camera.occupancy.intrinsics(image_size)        # (serial, Pinhole at the image size) or None
        if known is None:
            self.counts["frames_without_camera_info"] += 1
            return
        serial, cam = known
        hood_row = int(round(self._params["ignore_rows_from"] * ids.shape[0]))
        stamp = stamp_seconds(header.stamp)
        if want_map:
            start = time.thread_time()
            key = (serial, tuple(image_size), ids.shape, hood_row)
            if cam_map.evidence_key != key:
                mask_cam = cam.scaled(ids.shape[1], ids.shape[0])
                cam_map.evidence = CameraEvidence(mask_cam, camera.occupancy.mount, self._params["ground_z"],
                                                  self.fuser.map.spec.size, self.fuser.map.spec.resolution,
                                                  self.classes, hood_row, self._params["map_max_range"])
                cam_map.evidence_key = key
            cells = cam_map.evidence.cells(ids, conf)
            with self._lock:
                self._stamps[stamp] = (header.stamp.sec, header.stamp.nanosec)
                while len(self._stamps) > 256:
                    self._stamps.popitem(last=False)
                self.fuser.add_frame(stamp, *cells)
            self._times["fuse"].append(time.thread_time() - start)
        if want_points:
            start = time.thread_time()
            self._publish_points(cam_map, camera, serial, cam, ids, conf, header, hood_row, native, encoding)
            self._times["points"].append(time.thread_time() - start)

    def _publish_points(self, cam_map, camera, serial, cam, ids, conf, header, hood_row, native, encoding) -> None:
        depth = cam_map.depth_at(stamp_seconds(header.stamp))
        size = (depth.shape[1], depth.shape[0]) if depth is not None else (cam.width, cam.height)
        key = (serial, size, ids.shape, hood_row)
        builder = cam_map.builders.get(key)
        if builder is None:
            cam_map.builders.clear()
            builder = cam_map.builders[key] = PointCloudBuilder(
                cam.for_image(*size), camera.occupancy.mount, self._params["ground_z"], ids.shape,
                self._params["points_stride"], self._params["points_max_range"], hood_row / ids.shape[0])
        rgb = image_codec.to_rgb(native, encoding) if native.shape[:2] == (size[1], size[0]) else None
        if depth is not None:
            points = builder.from_depth(depth, ids, conf, rgb)
            cam_map.counts["points_from_depth"] += 1
        else:
            points = builder.from_ground(ids, self.classes.ground, conf, rgb)
            cam_map.counts["points_from_ground"] += 1
        cam_map.points_pub.publish(self._cloud(points, header, rgb is not None))

    def _cloud(self, points: np.ndarray, header, with_rgb: bool):
        from sensor_msgs.msg import PointCloud2, PointField

        msg = PointCloud2()
        msg.header = header                               # the camera's optical frame and the frame's stamp
        msg.height, msg.width = 1, len(points)
        msg.fields = [PointField(name=n, offset=o, datatype=d, count=1) for n, o, d in fields(with_rgb)]
        msg.is_bigendian = False
        msg.point_step = points.dtype.itemsize
        msg.row_step = msg.point_step * len(points)
        msg.is_dense = True
        msg.data = array.array("B", points.tobytes())
        return msg

    # ---------------------------------------------------------------- map publication (executor thread, timer)
    def publish_map(self) -> None:
        if not self.map_wanted():
            return
        start = time.thread_time()
        with self._lock:
            m = self.fuser.map
            if m.stamp is None:
                return
            stamp = self._stamps.get(m.stamp)
            grids = {"": m.occupancy() if self.map_pub.get_subscription_count() else None}
            for g, pub in self.group_pubs.items():
                grids[g] = m.group(g) if pub.get_subscription_count() else None
            origin, z = m.origin, self._pose_z + self._params["ground_z"]
        if stamp is None:
            sec = int(m.stamp)
            stamp = (sec, int(round((m.stamp - sec) * 1e9)))
        for name, cells in grids.items():
            if cells is not None:
                pub = self.map_pub if not name else self.group_pubs[name]
                pub.publish(self._grid(cells, stamp, origin, z))
        self.counts["maps_published"] += 1
        self._times["publish"].append(time.thread_time() - start)

    def _grid(self, cells: np.ndarray, stamp, origin, z):
        msg = self._msg_type()
        msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
        msg.header.frame_id = self._params["map_frame"]
        msg.info.map_load_time = msg.header.stamp
        spec = self.fuser.map.spec
        msg.info.resolution = float(spec.resolution)
        msg.info.width = msg.info.height = spec.cells
        msg.info.origin.position.x, msg.info.origin.position.y = float(origin[0]), float(origin[1])
        msg.info.origin.position.z = float(z)
        msg.info.origin.orientation.w = 1.0
        msg.data = array.array("b", cells.tobytes())
        return msg

    # ---------------------------------------------------------------- diagnostics
    def diagnostic_status(self, fqn: str):
        from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

        with self._lock:
            state, counts = self.fuser.state, dict(self.fuser.counts)
            m = self.fuser.map
            resets, stamp = m.resets, m.stamp
        level, message = DiagnosticStatus.OK, f"local map: {state}"
        if not self.fuser.odometry.stamps and not counts.get("odometry_accepted"):
            message = (f"no local map: no odometry received on {self.odom_sub.topic_name} (the per-camera "
                       f"~/occupancy grids are published as before)")
            level = DiagnosticStatus.WARN if self.map_wanted() else DiagnosticStatus.OK
        elif state != "ok" and self.map_wanted():
            level = DiagnosticStatus.WARN
        if self._frame_mismatch:
            level = DiagnosticStatus.WARN
            message += (f"; odometry is in frame {self._frame_mismatch!r} but map_frame is "
                        f"{self._params['map_frame']!r}")

        def p50(key):
            values = self._times[key]
            return f"{np.percentile(np.array(values) * 1000.0, 50):.2f}" if values else "n/a"

        values = {"map_frame": self._params["map_frame"], "odometry_topic": self.odom_sub.topic_name,
                  "map_topic": self.map_pub.topic_name,
                  "map_grid": f"{m.spec.cells}x{m.spec.cells} cells of {m.spec.resolution:g} m",
                  "map_resets": resets, "map_stamp": f"{stamp:.3f}" if stamp is not None else "n/a",
                  "maps_published": self.counts["maps_published"],
                  "map_fuse_cpu_p50_ms": p50("fuse"), "points_cpu_p50_ms": p50("points"),
                  "map_publish_cpu_p50_ms": p50("publish"),
                  "frames_without_camera_info": self.counts["frames_without_camera_info"], **counts}
        for name, cam in self.cameras.items():
            tag = f"{name}_" if name else ""
            for key, value in cam.counts.items():
                values[tag + key] = value
            if cam.problem:
                values[tag + "depth_problem"] = cam.problem
        # "<node>/local_map: local map": the cameras' statuses keep the "<node>: ..." names that tools look for.
        return DiagnosticStatus(level=level, name=f"{fqn}/local_map: local map", message=message,
                                hardware_id="local_map",
                                values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
