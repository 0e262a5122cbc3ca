"""`carla-seg carla`: drive a CARLA 0.9.16 server for a live segmentation run, with matching RGB + semantic cameras.

Examples:
    carla-seg carla --town Town10HD_Opt                       # spawn ego_vehicle on autopilot, publish like the bridge
    carla-seg carla --ros native                              # server started with --ros2: CARLA publishes itself
    carla-seg carla --attach --role hero --frames 2000        # use a vehicle that is already there

It connects to the server (``--host``, ``--port``, ``--timeout``), optionally loads a town, spawns an ego vehicle
on autopilot (or attaches to the vehicle whose role_name is ``--role``), and attaches two cameras at the bridge's
``rgb_front`` mount, size and FOV: ``rgb_front`` and ``semantic_segmentation_front``, so the ground truth lines up
pixel for pixel. The world runs in synchronous mode with a fixed step (``--step``, 0.05 s), this client ticking.

``--ros client`` (default) publishes each tick as the CARLA ROS bridge would, for users without the bridge:
``/carla/<role>/<camera>/image`` (bgra8; the semantic camera in CityScapes palette colours), ``.../camera_info``,
``/clock``, sim-time stamps and frame ids ``<role>/<camera>``, and the ego vehicle's odometry like the bridge's
odometry pseudo-sensor: nav_msgs/Odometry on ``/carla/<role>/odometry``, frame ``map``, child ``<role>``, pose in
ROS's right-handed frame (simulator/carla_frames.py), twist in the vehicle frame. ``--depth`` adds the bridge's
depth camera at the same mount, size and FOV: ``/carla/<role>/depth_front/image``, 32FC1 metres.

``--ros native`` instead sets each actor's ``ros_name`` and calls ``enable_for_ros()``, so a server started with
``--ros2`` publishes the same topic names itself (its semantic image holds raw tag ids: run seg_eval_node with
``gt_format:=ids coding:=tags29``); this command then publishes no odometry.

``--record DIR`` also writes every tick's camera pair into a training dataset folder (rgb/, label/ with the raw tag
ids, manifest.csv: evaluation/dataset_writer.py, the writer of `carla-seg record`), straight from the synchronous
sensors with no ROS in between; the simulation waits for the writer, so nothing is dropped. Each row of the
manifest also holds the ego vehicle's pose (ROS map frame) and twist (``ego_*`` columns), and with ``--depth``
``depth/NAME.npy`` holds the depth image (float32 metres), so `make-bag` can replay odometry and depth.
``--weathers`` cycles CARLA's weather presets and ``--towns`` the maps, ``--frames-per-town`` ticks per town split
over the weathers:

    carla-seg carla --record runs/rec/mix --towns Town01,Town03,Town10HD_Opt --frames-per-town 3000 \
        --weathers ClearNoon,WetSunset,HardRainNoon,ClearNight --every 5 --min-change 2

On exit (Ctrl-C included) the world's settings are restored and every actor this command spawned is destroyed.
A server that does not answer, or a client/server version mismatch, ends in one line on stderr (exit code 2).
"""
from __future__ import annotations

import argparse
import queue
import sys
from pathlib import Path

from carla_seg_ros.classes import CODINGS
from carla_seg_ros.evaluation.bag_make import intrinsics
from carla_seg_ros.capture.recording import add_selection_options
from carla_seg_ros.simulator import carla_sensors as cs
from carla_seg_ros.simulator.bridge_publisher import BridgePublisher
from carla_seg_ros.simulator.carla_frames import ego_state


class CarlaError(RuntimeError):
    """A CARLA problem a user can act on, reported as one line."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="carla-seg carla", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="CARLA server host (default: %(default)s)")
    p.add_argument("--port", type=int, default=2000, help="CARLA server RPC port (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the server (default: %(default)s)")
    p.add_argument("--town", help="load this map first (e.g. Town10HD_Opt); default: keep the current one")
    p.add_argument("--role", default="ego_vehicle", help="ego vehicle role_name, used in topics (default: %(default)s)")
    p.add_argument("--attach", action="store_true", help="use the existing vehicle with role_name --role")
    p.add_argument("--vehicle", default="vehicle.lincoln.mkz_2020", help="blueprint to spawn (default: %(default)s)")
    p.add_argument("--no-autopilot", action="store_true", help="do not hand the vehicle to the Traffic Manager")
    p.add_argument("--tm-port", type=int, default=8000, help="Traffic Manager port (default: %(default)s)")
    p.add_argument("--step", type=float, default=0.05, help="fixed simulation step in seconds (default: %(default)s)")
    p.add_argument("--width", type=int, default=cs.WIDTH, help="camera width (default: %(default)s)")
    p.add_argument("--height", type=int, default=cs.HEIGHT, help="camera height (default: %(default)s)")
    p.add_argument("--fov", type=float, default=cs.FOV, help="camera horizontal FOV (default: %(default)s)")
    p.add_argument("--ros", choices=("client", "native"), default="client",
                   help="client: this process publishes like the bridge; native: CARLA 0.9.16 --ros2 publishes")
    p.add_argument("--depth", action="store_true",
                   help=f"also spawn the bridge's depth camera ({cs.DEPTH}) at the RGB camera's mount, size and FOV: "
                        "published as 32FC1 metres, recorded as depth/NAME.npy")
    p.add_argument("--coding", default="tags29", help="server's tag coding for the palette (default: %(default)s)")
    p.add_argument("--frames", type=int, default=0, help="stop after this many ticks (default: 0 = until Ctrl-C)")
    p.add_argument("--seed", type=int, default=0, help="spawn point / Traffic Manager seed (default: %(default)s)")
    r = p.add_argument_group("dataset recording (carla-seg record's writer)")
    r.add_argument("--record", type=Path, metavar="DIR", help="write the camera pairs to this dataset folder")
    r.add_argument("--towns", type=_names, default=[], help="maps to record in turn, e.g. Town01,Town03 "
                                                            "(needs --frames-per-town)")
    r.add_argument("--weathers", type=_names, default=[],
                   help="CARLA weather presets to cycle in every town, e.g. ClearNoon,WetSunset,HardRainNoon,"
                        "ClearNight (carla.WeatherParameters; needs --frames-per-town)")
    r.add_argument("--frames-per-town", type=int, default=0,
                   help="ticks per town, split evenly over the weathers")
    add_selection_options(r)
    return p


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def check_args(args) -> None:
    if args.step <= 0 or args.step > 1.0:
        raise CarlaError(f"--step {args.step} must be in (0, 1] seconds")
    if args.timeout <= 0 or not 0 < args.port < 65536:
        raise CarlaError("--timeout must be > 0 and --port in 1..65535")
    if args.width <= 0 or args.height <= 0 or not 0 < args.fov < 180:
        raise CarlaError("--width/--height must be > 0 and --fov in (0, 180)")
    if (args.towns or args.weathers) and args.frames_per_town <= 0:
        raise CarlaError("--towns and --weathers need --frames-per-town N (ticks per town, split over the weathers)")
    if args.frames_per_town < 0 or args.every < 1 or args.min_change < 0 or args.max_frames < 0:
        raise CarlaError("--frames-per-town, --min-change and --max-frames must be >= 0, --every >= 1")
    if args.towns and args.attach:
        raise CarlaError("--attach cannot follow a vehicle into other towns; drop --towns or --attach")
    if args.towns and args.town:
        raise CarlaError("give either --town or --towns")
    if args.record is not None and args.coding not in CODINGS:
        raise CarlaError(f"--coding {args.coding!r} is unknown; one of {', '.join(CODINGS)}")


def import_carla():
    try:
        import carla
    except ImportError as exc:
        raise CarlaError(f"the CARLA Python client is not installed ({exc}); pip install 'carla_seg_ros[carla]' "
                         "(carla==0.9.16) or the wheel that ships with your server") from exc
    return carla


def connect(carla, host: str, port: int, timeout: float):
    """A connected carla.Client; CarlaError if nothing answers or the versions differ."""
    client = carla.Client(host, port)
    client.set_timeout(timeout)
    try:
        server = client.get_server_version()
    except RuntimeError as exc:
        raise CarlaError(f"no CARLA server answered at {host}:{port} within {timeout:g} s "
                         f"(start CarlaUE4.sh / CarlaUnreal.sh, or check --host/--port): {exc}") from exc
    local = client.get_client_version()
    if server.split("-")[0] != local.split("-")[0]:
        raise CarlaError(f"CARLA client {local} cannot drive server {server} at {host}:{port}: install the "
                         f"matching client (pip install carla=={server.split('-')[0]})")
    return client


def transform(carla, mount: dict):
    return carla.Transform(carla.Location(x=mount["x"], y=mount["y"], z=mount["z"]),
                           carla.Rotation(roll=mount["roll"], pitch=mount["pitch"], yaw=mount["yaw"]))


class Session:
    """Everything this command changed in the world, undone by ``close()`` in reverse order, exactly once."""

    def __init__(self, world, traffic_manager=None):
        self.world = world
        self.tm = traffic_manager
        self.original_settings = world.get_settings()
        self.sensors: list = []
        self.spawned: list = []          # actors to destroy (never an attached, pre-existing vehicle)
        self.closed = False

    def synchronous(self, step: float) -> None:
        settings = self.world.get_settings()
        settings.synchronous_mode = True
        settings.fixed_delta_seconds = step
        self.world.apply_settings(settings)
        if self.tm is not None:
            self.tm.set_synchronous_mode(True)

    def close(self) -> list[str]:
        """Stop and destroy the sensors, destroy spawned actors, restore settings; returns what failed."""
        if self.closed:
            return []
        self.closed = True
        problems = []
        for sensor in self.sensors:
            for step in ("stop", "destroy"):
                try:
                    getattr(sensor, step)()
                except RuntimeError as exc:
                    problems.append(f"sensor {getattr(sensor, 'id', '?')} {step}: {exc}")
        for actor in reversed(self.spawned):
            if actor in self.sensors:
                continue
            try:
                actor.destroy()
            except RuntimeError as exc:
                problems.append(f"actor {getattr(actor, 'id', '?')} destroy: {exc}")
        try:
            if self.tm is not None:
                self.tm.set_synchronous_mode(False)
            self.world.apply_settings(self.original_settings)
        except RuntimeError as exc:
            problems.append(f"restoring the world settings: {exc}")
        return problems


def find_vehicle(world, role: str):
    for actor in world.get_actors().filter("vehicle.*"):
        if actor.attributes.get("role_name") == role:
            return actor
    raise CarlaError(f"--attach: no vehicle with role_name {role!r} in the world")


def spawn_vehicle(carla, world, session: Session, args):
    blueprints = world.get_blueprint_library().filter(args.vehicle)
    if not blueprints:
        raise CarlaError(f"no vehicle blueprint matches {args.vehicle!r}")
    bp = blueprints[0]
    for key, value in cs.vehicle_attributes(args.role, args.ros == "native").items():
        if bp.has_attribute(key):
            bp.set_attribute(key, value)
    points = world.get_map().get_spawn_points()
    for k in range(len(points)):
        vehicle = world.try_spawn_actor(bp, points[(args.seed + k) % len(points)])
        if vehicle is not None:
            session.spawned.append(vehicle)
            return vehicle
    raise CarlaError(f"no free spawn point for {bp.id} among {len(points)}")


def spawn_cameras(carla, world, session: Session, vehicle, args) -> dict:
    """The cameras (the pair, and the depth camera with --depth) at the same mount, size and FOV; returns
    {name: (sensor, queue of images)}."""
    library = world.get_blueprint_library()
    out = {}
    wanted = dict(cs.BLUEPRINTS, **({cs.DEPTH: cs.DEPTH_BLUEPRINT} if getattr(args, "depth", False) else {}))
    for name, blueprint in wanted.items():
        bp = library.find(blueprint)
        for key, value in cs.camera_attributes(name, args.width, args.height, args.fov,
                                               args.ros == "native").items():
            bp.set_attribute(key, value)
        sensor = world.spawn_actor(bp, transform(carla, cs.MOUNT), attach_to=vehicle)
        session.spawned.append(sensor)
        session.sensors.append(sensor)
        images: queue.Queue = queue.Queue()
        if args.ros == "native":
            sensor.enable_for_ros()
        if args.ros == "client" or getattr(args, "record", None) is not None:
            sensor.listen(images.put)
        out[name] = (sensor, images)
    return out


def image_for(images: queue.Queue, frame: int, timeout: float):
    """The camera image of simulation frame ``frame`` (older ones are dropped)."""
    while True:
        image = images.get(timeout=timeout)
        if image.frame >= frame:
            return image


def open_writer(args):
    """The dataset writer for --record (before connecting: an unwritable folder fails at once)."""
    from carla_seg_ros.capture.dataset_writer import DatasetWriteError, DatasetWriter
    try:
        return DatasetWriter(args.record, every=args.every, min_change=args.min_change, max_frames=args.max_frames,
                             block=True, png_level=args.png_level, threads=2)
    except DatasetWriteError as exc:
        raise CarlaError(str(exc)) from exc


def record_meta(args) -> dict:
    fx, cx, cy = intrinsics(args.width, args.height, args.fov)
    return {"rgb_topic": f"carla:{args.role}/{cs.RGB}", "gt_topic": f"carla:{args.role}/{cs.SEMANTIC}",
            "rgb_frame_id": f"{args.role}/{cs.RGB}", "gt_frame_id": f"{args.role}/{cs.SEMANTIC}",
            "info_width": args.width, "info_height": args.height, "fx": fx, "fy": fx, "cx": cx, "cy": cy}


def setup_world(carla, client, tm, town, args):
    """Load ``town`` (None: the current map), then synchronous mode, the ego vehicle and both cameras."""
    world = client.load_world(town) if town else client.get_world()
    session = Session(world, tm)
    session.synchronous(args.step)
    vehicle = find_vehicle(world, args.role) if args.attach else spawn_vehicle(carla, world, session, args)
    if not args.no_autopilot:
        tm.set_random_device_seed(args.seed)
        vehicle.set_autopilot(True, args.tm_port)
    cameras = spawn_cameras(carla, world, session, vehicle, args)
    name = cs.map_name(town or getattr(world.get_map(), "name", "") or "world")
    print(f"carla-seg carla: {vehicle.type_id} as {args.role!r} in {name}, cameras {', '.join(cameras)} "
          f"{args.width}x{args.height} FOV {args.fov:g}, step {args.step:g} s, ROS {args.ros}"
          f"{', recording to ' + str(args.record) if args.record else ''}; Ctrl-C stops", file=sys.stderr)
    return world, session, cameras, name, vehicle


def run(args) -> int:
    carla = import_carla()
    try:
        presets = dict(cs.weather_presets(carla.WeatherParameters, args.weathers)) if args.weathers else {}
    except ValueError as exc:
        raise CarlaError(f"--weathers: {exc}") from exc
    writer = open_writer(args) if args.record is not None else None
    try:
        client = connect(carla, args.host, args.port, args.timeout)
    except BaseException:
        if writer is not None:
            writer.close()
        raise
    if args.towns or args.weathers:
        segments = cs.plan_segments(args.towns or [args.town], args.weathers, args.frames_per_town)
    else:
        segments = [(args.town, None, args.frames)]
    publisher = session = None
    meta = record_meta(args)
    try:
        tm = client.get_trafficmanager(args.tm_port)
        world = cameras = name = vehicle = None
        loaded = object()
        for town, weather, ticks in segments:
            if town != loaded:
                if session is not None:
                    report_cleanup(session.close())
                world, session, cameras, name, vehicle = setup_world(carla, client, tm, town, args)
                loaded = town
            if publisher is None and args.ros == "client":
                publisher = BridgePublisher(args.role, args.width, args.height, args.fov, args.coding, args.depth)
            if weather is not None:
                world.set_weather(presets[weather])
                print(f"carla-seg carla: {name}, weather {weather}, {ticks} ticks", file=sys.stderr)
            tag = f"{name}_{weather}" if weather else name
            if not run_ticks(world, vehicle, cameras, publisher, writer, ticks, args, meta, tag):
                break
    except KeyboardInterrupt:
        pass
    except queue.Empty as exc:
        raise CarlaError(f"a camera delivered no image within {args.timeout:g} s of its tick") from exc
    finally:
        if publisher is not None:
            publisher.close()
        if session is not None:
            report_cleanup(session.close())
        if writer is not None:
            from carla_seg_ros.capture.dataset_writer import format_counts
            writer.close()
            summary = writer.write_summary(source="carla-seg carla", segments=[list(s) for s in segments])
            print(f"carla-seg carla: {format_counts(summary)}; {args.record}/record_summary.json", file=sys.stderr)
    if writer is not None and writer.error:
        raise CarlaError(writer.error)
    return 0


def report_cleanup(problems: list[str]) -> None:
    for problem in problems:
        print(f"carla-seg carla: cleanup: {problem}", file=sys.stderr)


def vehicle_state(snapshot, vehicle):
    """The vehicle's EgoState in the tick's world snapshot (pose and velocities of that very frame); None when the
    actor is not in it (destroyed by someone else)."""
    actor = snapshot.find(vehicle.id)
    if actor is None:
        return None
    return ego_state(actor.get_transform(), actor.get_velocity(), actor.get_angular_velocity())


def run_ticks(world, vehicle, cameras, publisher, writer, ticks: int, args, meta: dict, tag: str) -> bool:
    """Tick the world ``ticks`` times (0 = until Ctrl-C); False once the writer is full or failed."""
    done = 0
    while not ticks or done < ticks:
        frame = world.tick()
        done += 1
        if publisher is None and writer is None:
            continue
        snapshot = world.get_snapshot()
        stamp = cs.stamp_ns(snapshot.timestamp.elapsed_seconds)
        ego = vehicle_state(snapshot, vehicle)
        rgb = image_for(cameras[cs.RGB][1], frame, args.timeout)
        sem = image_for(cameras[cs.SEMANTIC][1], frame, args.timeout)
        depth = image_for(cameras[cs.DEPTH][1], frame, args.timeout).raw_data if cs.DEPTH in cameras else None
        if publisher is not None:
            publisher.publish(stamp, rgb.raw_data, sem.raw_data, ego, depth)
        if writer is not None:
            writer.offer(cs.record_sample(rgb.raw_data, sem.raw_data, args.width, args.height, stamp, args.coding,
                                          meta, tag, ego, depth))
            if writer.error or writer.full:
                return False
    return True


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
        return run(args)
    except CarlaError as exc:
        print(f"carla-seg carla: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:   # what LibCarla raises for a lost connection, a failed spawn or map load
        print(f"carla-seg carla: CARLA error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
