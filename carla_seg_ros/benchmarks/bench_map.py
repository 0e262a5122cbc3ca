"""`carla-seg bench map`: the local map's cost per camera frame beside today's per-frame grid, in the same run.

Frames come from the synthetic street (evaluation/synthetic_world.py): exact label images at the model's mask size
(default 384x288, the committed model's) and depth at the camera's size (default 800x600), for ``--cameras``
cameras (front, rear, left) along a drive at 20 Hz with exact odometry. Per camera frame it times, with the
wall clock and the thread's CPU time:

* baseline: the per-frame grid as seg_node makes it today (runtime/occupancy_grid.project, ~/occupancy and the
  four group grids; default 0-40 m ahead, +-20 m, 0.2 m cells);
* map evidence: the per-frame rule over the camera's vehicle-frame evidence grid (runtime/map_fusion.py);
* map fuse: odometry pose, transform into the map, log-odds update, decay and recentring (runtime/local_map.py);
* points: the point cloud from the depth image, and from the ground rule (runtime/point_cloud.py);
* and, per publish (not per frame): ~/local_map and its group grids.

The target is fusion + points <= 2 ms per camera frame at the default 0.2 m, 60 x 60 m map. Depth images are
rendered for the first ``--depth-frames`` steps and reused after that (the cost does not depend on the content).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from carla_seg_ros.evaluation import synthetic_world as sw
from carla_seg_ros.runtime.cpu_info import add_cpu_option, apply_cpu_option
from carla_seg_ros.runtime.ground_projection import GridSpec, build_lookup
from carla_seg_ros.runtime.local_map import LocalMap, MapSpec
from carla_seg_ros.runtime.map_fusion import CameraEvidence, MapFuser
from carla_seg_ros.runtime.occupancy_grid import load_occupancy_config, project
from carla_seg_ros.runtime.odometry_buffer import OdometryBuffer
from carla_seg_ros.runtime.point_cloud import PointCloudBuilder

MOUNTS = {"front": sw.FRONT, "rear": sw.REAR, "left": sw.LEFT}
TARGET_MS = 2.0


def parse_size(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    return w, h


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="carla-seg bench map", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resolution", type=float, default=0.2, help="map cell size, metres (default 0.2)")
    p.add_argument("--size", type=float, default=60.0, help="map side, metres (default 60)")
    p.add_argument("--cameras", type=int, default=2, choices=(1, 2, 3), help="front, +rear, +left (default 2)")
    p.add_argument("--steps", type=int, default=60, help="drive steps at 20 Hz, each one frame per camera")
    p.add_argument("--repeats", type=int, default=3, help="drives timed, each on a fresh map (default 3)")
    p.add_argument("--mask", default="384x288", help="model mask size WxH (default 384x288)")
    p.add_argument("--image", default="800x600", help="camera image and depth size WxH (default 800x600)")
    p.add_argument("--stride", type=int, default=4, help="point cloud stride in image pixels (default 4)")
    p.add_argument("--depth-frames", type=int, default=6, help="steps with their own rendered depth (default 6)")
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    p.add_argument("--picture", type=Path, help="also write the street, the last per-camera grids and the fused map "
                   "side by side to this PNG (docs/images/local_map.png)")
    add_cpu_option(p)
    return p


def timed(fn, out: list):
    wall, cpu = time.perf_counter(), time.thread_time()
    result = fn()
    out.append(((time.perf_counter() - wall) * 1000.0, (time.thread_time() - cpu) * 1000.0))
    return result


def render_drive(args, mounts, mask_wh, image_wh):
    from tqdm import tqdm

    world = sw.town()
    mask_cam, image_cam = sw.bridge_camera(*mask_wh), sw.bridge_camera(*image_wh)
    steps = []
    for i in tqdm(range(args.steps), desc="rendering the street", unit="step", leave=False):
        t = i / 20.0
        pose = sw.ego_pose(t)
        labels = {n: sw.render(world, mask_cam, m, pose, t)[0] for n, m in mounts.items()}
        depth = ({n: sw.render(world, image_cam, m, pose, t)[1] for n, m in mounts.items()}
                 if i < args.depth_frames else steps[i % args.depth_frames][3])
        steps.append((t, pose, labels, depth))
    return world, mask_cam, image_cam, steps


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cpu = apply_cpu_option(args)
    mask_wh, image_wh = parse_size(args.mask), parse_size(args.image)
    mounts = dict(list(MOUNTS.items())[:args.cameras])
    classes = load_occupancy_config()
    world, mask_cam, image_cam, steps = render_drive(args, mounts, mask_wh, image_wh)
    spec = MapSpec(args.resolution, args.size).check()
    evidence = {n: CameraEvidence(mask_cam, m, 0.0, spec.size, spec.resolution, classes) for n, m in mounts.items()}
    grids = {n: build_lookup(mask_cam, m, 0.0, GridSpec()) for n, m in mounts.items()}
    points = {n: PointCloudBuilder(image_cam, m, 0.0, (mask_wh[1], mask_wh[0]), args.stride)
              for n, m in mounts.items()}
    t = {k: [] for k in ("grid", "evidence", "fuse", "points_depth", "points_ground", "publish")}
    n_points = {"depth": [], "ground": []}
    confidence = np.full((mask_wh[1], mask_wh[0]), 230, np.uint8)
    for _ in range(args.repeats):
        fuser = MapFuser(LocalMap(spec, classes), OdometryBuffer(tolerance=0.05))
        for i, (stamp, pose, labels, depth) in enumerate(steps):
            fuser.add_odometry(stamp, pose)
            for name, mask in labels.items():
                frame = timed(lambda: project(grids[name], mask, classes, confidence), t["grid"])
                timed(lambda: [frame.occupancy(classes)] + [frame.group(classes, g) for g in classes.groups],
                      t["grid"])
                t["grid"][-2:] = [tuple(a + b for a, b in zip(t["grid"][-2], t["grid"][-1]))]
                cells = timed(lambda: evidence[name].cells(mask, confidence), t["evidence"])
                timed(lambda: fuser.add_frame(stamp, *cells), t["fuse"])
                pd = timed(lambda: points[name].from_depth(depth[name], mask, confidence), t["points_depth"])
                pg = timed(lambda: points[name].from_ground(mask, classes.ground, confidence), t["points_ground"])
                n_points["depth"].append(len(pd))
                n_points["ground"].append(len(pg))
            if i % 4 == 3:            # 5 Hz publishing at 20 Hz frames
                m = fuser.map
                timed(lambda: [m.occupancy()] + [m.group(g) for g in m.groups], t["publish"])
    stats = {k: {"wall_p50_ms": float(np.percentile([w for w, _ in v], 50)),
                 "wall_p90_ms": float(np.percentile([w for w, _ in v], 90)),
                 "cpu_p50_ms": float(np.percentile([c for _, c in v], 50)), "samples": len(v)}
             for k, v in t.items()}
    total = [a[0] + b[0] + c[0] for a, b, c in zip(t["evidence"], t["fuse"], t["points_depth"])]
    total_cpu = [a[1] + b[1] + c[1] for a, b, c in zip(t["evidence"], t["fuse"], t["points_depth"])]
    stats["fusion_plus_points"] = {"wall_p50_ms": float(np.percentile(total, 50)),
                                   "wall_p90_ms": float(np.percentile(total, 90)),
                                   "cpu_p50_ms": float(np.percentile(total_cpu, 50)), "samples": len(total)}
    ground_total = [a[1] + b[1] + c[1] for a, b, c in zip(t["evidence"], t["fuse"], t["points_ground"])]
    stats["fusion_plus_ground_points"] = {"cpu_p50_ms": float(np.percentile(ground_total, 50)),
                                          "wall_p50_ms": float("nan"), "wall_p90_ms": float("nan"),
                                          "samples": len(ground_total)}
    cells = spec.cells
    print(f"map {cells}x{cells} cells of {spec.resolution:g} m ({spec.size:g} x {spec.size:g} m), "
          f"{len(mounts)} cameras ({', '.join(mounts)}), mask {args.mask}, image/depth {args.image}, point stride "
          f"{args.stride}; {args.repeats} drives of {args.steps} steps = {len(t['fuse'])} camera frames")
    rows = [("baseline: per-frame grid (~/occupancy + 4 groups)", "grid"),
            ("map evidence (per-frame rule, vehicle frame)", "evidence"),
            ("map fuse (pose, transform, log-odds, decay, shift)", "fuse"),
            ("points from depth", "points_depth"), ("points from the ground rule", "points_ground"),
            ("fusion + points (evidence + fuse + depth points)", "fusion_plus_points"),
            ("fusion + points without depth (ground points)", "fusion_plus_ground_points"),
            ("map outputs per publish (~/local_map + 4 groups)", "publish")]
    print(f"{'per camera frame':<52} {'wall p50':>9} {'wall p90':>9} {'cpu p50':>9}")
    for label, key in rows:
        s = stats[key]
        wall = (f"{s['wall_p50_ms']:>7.2f}ms {s['wall_p90_ms']:>7.2f}ms" if s["wall_p50_ms"] == s["wall_p50_ms"]
                else f"{'-':>9} {'-':>9}")
        print(f"{label:<52} {wall} {s['cpu_p50_ms']:>7.2f}ms")
    print(f"points per frame: {np.median(n_points['depth']):.0f} from depth, {np.median(n_points['ground']):.0f} "
          f"from the ground rule")
    met = max(stats["fusion_plus_points"]["cpu_p50_ms"], stats["fusion_plus_ground_points"]["cpu_p50_ms"]) <= TARGET_MS
    print(f"target fusion + points <= {TARGET_MS:g} ms per camera frame (CPU p50): "
          f"{'met' if met else 'NOT met'} ({stats['fusion_plus_points']['cpu_p50_ms']:.2f} ms with depth, "
          f"{stats['fusion_plus_ground_points']['cpu_p50_ms']:.2f} ms without; the per-frame grid "
          f"{stats['grid']['cpu_p50_ms']:.2f} ms)")
    if args.picture:
        from carla_seg_ros.benchmarks.map_picture import write_picture

        stamp, pose, labels, _ = steps[-1]
        write_picture(args.picture, world, fuser.map, labels, mounts, mask_cam, classes, pose, stamp)
        print(f"picture: {args.picture}")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu, "args": {k: str(v) for k, v in vars(args).items()},
                                         "stats": stats}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
