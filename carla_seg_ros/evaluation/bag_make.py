"""`carla-seg make-bag`: an image/label folder -> a rosbag2 laid out like a carla-ros-bridge recording.

Example:
    carla-seg make-bag --data ../shared/data/carla_seg --split test --out runs/bags/test_mcap
    carla-seg make-bag --data ../shared/data/carla_seg_modern --coding tags23 --out runs/bags/modern23

Topics (ROS 2 carla-ros-bridge conventions, role name ``ego_vehicle`` by default):
* ``/carla/<role>/rgb_front/image``                  sensor_msgs/Image, bgra8 (the bridge's RGB camera encoding)
* ``/carla/<role>/rgb_front/camera_info``            sensor_msgs/CameraInfo: image size, plumb_bob, K from the FOV
* ``/carla/<role>/semantic_segmentation_front/image`` sensor_msgs/Image, bgra8 CityScapes palette colours of the
  label's CARLA coding, as the bridge publishes it; ``--raw-ids`` stores the raw tag ids as mono8 instead
* ``/clock``                                         rosgraph_msgs/Clock, one tick per frame
* ``/carla/<role>/odometry``                         nav_msgs/Odometry (frame ``map``, child ``<role>``) of every
  frame whose manifest row has the ego pose (``carla-seg carla --record``; ``--no-odometry`` leaves it out)
* ``/carla/<role>/depth_front/image``                sensor_msgs/Image 32FC1 metres, and ``.../camera_info``, of every
  frame with ``depth/NAME.npy`` (``carla --record --depth``; ``--no-depth`` leaves them out)
Header stamps are simulation time (``--start-time`` + i / ``--rate``), frame ids ``<role>/rgb_front`` and
``<role>/semantic_segmentation_front`` (and ``<role>/depth_front``) as the bridge sets them; the odometry and depth
of a frame carry its images' stamp; the bag's log time equals the stamp. Folders without poses or depth give the
same bag as before.
The CARLA coding of the ground truth is stored in the bag's metadata (custom_data ``carla_seg.coding``), which
`carla-seg bag-eval --coding auto` reads.
"""
from __future__ import annotations

import argparse
import math
import shutil
import sys
from pathlib import Path

import numpy as np

from carla_seg_ros.classes import CODINGS, load_coding
from carla_seg_ros.datasets import find_pairs, read_manifest, read_rgb, read_tag_ids
from carla_seg_ros.evaluation.ego_motion import EgoState, depth_path, ego_from_row, read_depth
from carla_seg_ros.paths import default_data_dir
from carla_seg_ros.image_codec import from_rgb

# The ROS 2 release this package targets; Image, CameraInfo and Clock are laid out the same since Humble.
TYPESTORE_NAME = "ROS2_KILTED"
CODING_METADATA_KEY = "carla_seg.coding"
GT_FORMAT_METADATA_KEY = "carla_seg.gt_format"


def typestore():
    from rosbags.typesys import Stores, get_typestore
    return get_typestore(getattr(Stores, TYPESTORE_NAME))


def topics(role: str) -> dict[str, str]:
    return {"image": f"/carla/{role}/rgb_front/image", "camera_info": f"/carla/{role}/rgb_front/camera_info",
            "semantic": f"/carla/{role}/semantic_segmentation_front/image", "clock": "/clock"}


def frame_ids(role: str) -> dict[str, str]:
    return {"image": f"{role}/rgb_front", "semantic": f"{role}/semantic_segmentation_front"}


def motion_topics(role: str) -> dict[str, str]:
    """The bridge's odometry pseudo-sensor and depth camera (``depth_front``, at the rgb_front mount)."""
    return {"odometry": f"/carla/{role}/odometry", "depth": f"/carla/{role}/depth_front/image",
            "depth_info": f"/carla/{role}/depth_front/camera_info"}


def motion_frame_ids(role: str) -> dict[str, str]:
    return {"odometry": "map", "odometry_child": role, "depth": f"{role}/depth_front"}


def intrinsics(width: int, height: int, fov_deg: float) -> tuple[float, float, float]:
    """(fx, cx, cy) of CARLA's pinhole camera, as the bridge computes them (fy = fx, square pixels)."""
    fx = width / (2.0 * math.tan(fov_deg * math.pi / 360.0))
    return fx, width / 2.0, height / 2.0


def stamp_ns(index: int, rate: float, start_s: float) -> int:
    # Integer nanoseconds from one rounding, so stamps never drift and pair exactly across topics.
    return int(round((start_s + index / rate) * 1e9))


class MessageFactory:
    """Builds the rosbags message objects of one frame and serialises them to CDR."""

    def __init__(self, store):
        self.store = store
        t = store.types
        self.Time, self.Header, self.Image = (t["builtin_interfaces/msg/Time"], t["std_msgs/msg/Header"],
                                              t["sensor_msgs/msg/Image"])
        self.CameraInfo, self.Roi, self.Clock = (t["sensor_msgs/msg/CameraInfo"],
                                                 t["sensor_msgs/msg/RegionOfInterest"], t["rosgraph_msgs/msg/Clock"])
        self.geometry = {name.rsplit("/", 1)[-1]: t[name] for name in (
            "nav_msgs/msg/Odometry", "geometry_msgs/msg/PoseWithCovariance", "geometry_msgs/msg/Pose",
            "geometry_msgs/msg/Point", "geometry_msgs/msg/Quaternion", "geometry_msgs/msg/TwistWithCovariance",
            "geometry_msgs/msg/Twist", "geometry_msgs/msg/Vector3")}

    def time(self, ns: int):
        return self.Time(sec=ns // 10**9, nanosec=ns % 10**9)

    def header(self, ns: int, frame_id: str):
        return self.Header(stamp=self.time(ns), frame_id=frame_id)

    def image(self, pixels: np.ndarray, encoding: str, header):
        pixels = np.ascontiguousarray(pixels, np.uint8)
        h, w = pixels.shape[:2]
        return self.Image(header=header, height=h, width=w, encoding=encoding, is_bigendian=0,
                          step=pixels.size // h, data=pixels.reshape(-1))

    def camera_info(self, width: int, height: int, fov_deg: float, header):
        fx, cx, cy = intrinsics(width, height, fov_deg)
        return self.CameraInfo(
            header=header, height=height, width=width, distortion_model="plumb_bob",
            d=np.zeros(5, np.float64), k=np.array([fx, 0, cx, 0, fx, cy, 0, 0, 1], np.float64),
            r=np.eye(3, dtype=np.float64).reshape(-1),
            p=np.array([fx, 0, cx, 0, 0, fx, cy, 0, 0, 0, 1, 0], np.float64),
            binning_x=0, binning_y=0, roi=self.Roi(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))

    def depth_image(self, depth: np.ndarray, header):
        """32FC1 metres, little-endian, as the bridge's depth camera."""
        depth = np.ascontiguousarray(depth, "<f4")
        h, w = depth.shape
        return self.Image(header=header, height=h, width=w, encoding="32FC1", is_bigendian=0, step=w * 4,
                          data=depth.view(np.uint8).reshape(-1))

    def odometry(self, state: EgoState, header, child_frame_id: str):
        """nav_msgs/Odometry like the bridge's odometry pseudo-sensor (covariances zero, as it sends them)."""
        g = self.geometry
        qx, qy, qz, qw = state.quaternion
        pose = g["Pose"](position=g["Point"](x=state.x, y=state.y, z=state.z),
                         orientation=g["Quaternion"](x=qx, y=qy, z=qz, w=qw))
        twist = g["Twist"](linear=g["Vector3"](x=state.vx, y=state.vy, z=state.vz),
                           angular=g["Vector3"](x=state.wx, y=state.wy, z=state.wz))
        return g["Odometry"](header=header, child_frame_id=child_frame_id,
                             pose=g["PoseWithCovariance"](pose=pose, covariance=np.zeros(36, np.float64)),
                             twist=g["TwistWithCovariance"](twist=twist, covariance=np.zeros(36, np.float64)))

    def clock(self, ns: int):
        return self.Clock(clock=self.time(ns))

    def serialize(self, msg) -> bytes:
        return self.store.serialize_cdr(msg, msg.__msgtype__)


def open_writer(out: Path, storage: str):
    """A rosbags Writer for a new bag folder; refuses to overwrite (a half-replaced bag loses data)."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    if out.exists():
        raise FileExistsError(f"{out} exists already; choose another --out or delete it first")
    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
    return Writer(out, version=Writer.VERSION_LATEST, storage_plugin=plugin)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="carla-seg make-bag", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=default_data_dir(),
                   help="image/label folder: prepared, flat (modern set) or Kaggle layout (default: %(default)s)")
    p.add_argument("--split", default="test", help="split or Kaggle sub-folder (default: %(default)s)")
    p.add_argument("--out", type=Path, required=True, help="bag folder to create (must not exist)")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="rosbag2 storage plugin")
    p.add_argument("--rate", type=float, default=20.0, help="frames per second of simulation time (default: 20)")
    p.add_argument("--start-time", type=float, default=1.0, help="simulation time of the first frame, seconds")
    p.add_argument("--raw-ids", action="store_true",
                   help="store the raw CARLA tag ids (mono8) instead of the bridge's palette colours (bgra8)")
    p.add_argument("--fov", type=float, default=90.0, help="camera horizontal field of view for camera_info")
    p.add_argument("--role", default="ego_vehicle", help="vehicle role name in topics and frame ids")
    p.add_argument("--coding", choices=CODINGS,
                   help="use only frames of this CARLA coding (needed when the folder mixes codings)")
    p.add_argument("--limit", type=int, help="only the first N frames")
    p.add_argument("--no-odometry", action="store_true",
                   help="leave out /carla/<role>/odometry even where the manifest has the ego poses")
    p.add_argument("--no-depth", action="store_true",
                   help="leave out the depth camera even where the folder has depth/NAME.npy")
    return p


def frame_motion(pairs, odometry: bool, depth: bool) -> tuple[list, list]:
    """Per pair: its EgoState from its folder's manifest (None without one) and its depth file (None without one).

    ValueError for a damaged pose, naming the manifest."""
    manifests: dict = {}
    states, depths = [], []
    for pair in pairs:
        folder = pair.rgb.parent.parent
        state = None
        if odometry:
            if folder not in manifests:
                manifests[folder] = read_manifest(folder)
            try:
                state = ego_from_row(manifests[folder].get(pair.name) or {})
            except ValueError as exc:
                raise ValueError(f"{folder}/manifest.csv: {exc}") from None
        states.append(state)
        path = depth_path(folder, pair.name) if depth else None
        depths.append(path if path is not None and path.is_file() else None)
    return states, depths


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from tqdm import tqdm

    if args.data is None:
        print("carla-seg make-bag: no dataset found; pass --data DIR or set CARLA_SEG_DATA", file=sys.stderr)
        return 2
    if args.rate <= 0 or not 0 < args.fov < 180:
        print("carla-seg make-bag: --rate must be > 0 and --fov in (0, 180)", file=sys.stderr)
        return 2
    try:
        pairs = find_pairs(args.data, args.split)
    except FileNotFoundError as exc:
        print(f"carla-seg make-bag: {exc}", file=sys.stderr)
        return 2
    if args.coding:
        pairs = [p for p in pairs if p.coding == args.coding]
    pairs = pairs[:args.limit]
    codings = sorted({p.coding for p in pairs})
    if not pairs:
        print(f"carla-seg make-bag: no frames of coding {args.coding} in {args.data}", file=sys.stderr)
        return 2
    if len(codings) > 1:
        counts = ", ".join(f"{c}: {sum(p.coding == c for p in pairs)}" for c in codings)
        print(f"carla-seg make-bag: {args.data} mixes CARLA codings ({counts}); a bag holds one semantic camera, "
              "so pick one with --coding", file=sys.stderr)
        return 2
    coding = load_coding(codings[0])
    try:
        states, depths = frame_motion(pairs, not args.no_odometry, not args.no_depth)
    except ValueError as exc:
        print(f"carla-seg make-bag: {exc}", file=sys.stderr)
        return 2
    try:
        writer = open_writer(args.out, args.storage)
    except FileExistsError as exc:
        print(f"carla-seg make-bag: {exc}", file=sys.stderr)
        return 2

    store = typestore()
    make = MessageFactory(store)
    names, ids = topics(args.role), frame_ids(args.role)
    extra, extra_ids = motion_topics(args.role), motion_frame_ids(args.role)
    kinds = ((["odometry"] if any(s is not None for s in states) else [])
             + (["depth", "depth_info"] if any(d is not None for d in depths) else []))
    gt_format = "ids" if args.raw_ids else "palette"
    writer.set_custom_data(CODING_METADATA_KEY, coding.name)
    writer.set_custom_data(GT_FORMAT_METADATA_KEY, gt_format)
    palette = coding.palette_lut()
    known = np.zeros(256, bool)
    known[list(coding.ids)] = True
    unknown_pixels = 0
    failure = ""
    with writer:
        conn = {key: writer.add_connection(names[key], msgtype, typestore=store) for key, msgtype in (
            ("clock", "rosgraph_msgs/msg/Clock"), ("camera_info", "sensor_msgs/msg/CameraInfo"),
            ("image", "sensor_msgs/msg/Image"), ("semantic", "sensor_msgs/msg/Image"))}
        msgtypes = {"odometry": "nav_msgs/msg/Odometry", "depth": "sensor_msgs/msg/Image",
                    "depth_info": "sensor_msgs/msg/CameraInfo"}
        conn.update({key: writer.add_connection(extra[key], msgtypes[key], typestore=store) for key in kinds})
        for i, pair in enumerate(tqdm(pairs, desc=f"make-bag {args.out.name}", unit="frame")):
            ns = stamp_ns(i, args.rate, args.start_time)
            rgb = read_rgb(pair.rgb)
            tags = read_tag_ids(pair.label)
            unknown_pixels += int((~known[tags]).sum())
            h, w = rgb.shape[:2]
            cam_header, sem_header = make.header(ns, ids["image"]), make.header(ns, ids["semantic"])
            semantic = (make.image(tags, "mono8", sem_header) if args.raw_ids
                        else make.image(from_rgb(palette[tags], "bgra8"), "bgra8", sem_header))
            # The pose goes first, so a node replaying the bag has it when the frame's images arrive.
            odometry = (() if states[i] is None else (("odometry", make.odometry(
                states[i], make.header(ns, extra_ids["odometry"]), extra_ids["odometry_child"])),))
            for key, msg in (("clock", make.clock(ns)), *odometry,
                             ("camera_info", make.camera_info(w, h, args.fov, cam_header)),
                             ("image", make.image(from_rgb(rgb, "bgra8"), "bgra8", cam_header)),
                             ("semantic", semantic)):
                writer.write(conn[key], ns, make.serialize(msg))
            try:
                if depths[i] is not None:
                    write_depth(writer, conn, make, ns, depths[i], (h, w), args.fov, extra_ids["depth"])
            except ValueError as exc:
                failure = str(exc)
                break
    if failure:      # a half-written bag would play as if complete: remove it
        shutil.rmtree(args.out, ignore_errors=True)
        print(f"carla-seg make-bag: {failure}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({args.storage}): {len(pairs)} frames at {args.rate:g} Hz, ground truth "
          f"{'raw ' + coding.name + ' ids (mono8)' if args.raw_ids else coding.name + ' palette colours (bgra8)'}; "
          f"topics {', '.join([*names.values(), *(extra[k] for k in kinds)])}"
          + (f"; odometry for {sum(s is not None for s in states)} frames" if "odometry" in kinds else "")
          + (f", depth for {sum(d is not None for d in depths)} frames" if "depth" in kinds else ""))
    if unknown_pixels:
        print(f"warning: {unknown_pixels} label pixels had tag ids outside the {coding.name} table"
              + ("" if args.raw_ids else " and were stored as black (Unlabeled)"), file=sys.stderr)
    return 0


def write_depth(writer, conn, make: MessageFactory, ns: int, depth_file: Path, size, fov: float,
                frame_id: str) -> None:
    """A frame's depth image and its camera_info, stamped like its images; ValueError for a file that does not fit."""
    depth = read_depth(depth_file)
    if depth.shape != tuple(size):
        raise ValueError(f"depth image {depth_file} is {depth.shape[1]}x{depth.shape[0]}, its camera image "
                         f"{size[1]}x{size[0]}")
    header = make.header(ns, frame_id)
    writer.write(conn["depth_info"], ns, make.serialize(make.camera_info(size[1], size[0], fov, header)))
    writer.write(conn["depth"], ns, make.serialize(make.depth_image(depth, header)))


if __name__ == "__main__":
    raise SystemExit(main())
