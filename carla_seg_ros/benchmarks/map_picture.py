"""The picture of docs/concepts/local_map.md: the synthetic street, the last frame's per-camera grids, and the fused
local map, side by side in the odometry frame (`carla-seg bench map --picture PATH`).

Each panel is the 60 x 60 m square around the ego at the end of the drive. Grids: light = free, dark = occupied,
grey = unknown, red = vehicles, blue = pedestrians (group value > 50).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from carla_seg_ros.classes import colors_for
from carla_seg_ros.evaluation import synthetic_world as sw
from carla_seg_ros.runtime.ground_projection import GridSpec, build_lookup
from carla_seg_ros.runtime.local_map import LocalMap
from carla_seg_ros.runtime.occupancy_grid import project

FREE, OCCUPIED, UNKNOWN = (235, 235, 235), (40, 40, 40), (150, 150, 150)
VEHICLE, PEDESTRIAN = (220, 40, 40), (40, 90, 230)


def _paint(occupancy: np.ndarray, vehicles: np.ndarray, pedestrians: np.ndarray) -> np.ndarray:
    out = np.empty(occupancy.shape + (3,), np.uint8)
    out[:] = UNKNOWN
    out[occupancy == 0] = FREE
    out[occupancy == 100] = OCCUPIED
    out[vehicles > 50] = VEHICLE
    out[pedestrians > 50] = PEDESTRIAN
    return out


def per_frame_panel(local_map: LocalMap, labels: dict, mounts: dict, cam, classes, pose) -> np.ndarray:
    """The last frame's per-camera grids (front: 0-40 m ahead; rear: 0-40 m behind; +-20 m), in the map's cells."""
    n, res = local_map.spec.cells, local_map.spec.resolution
    panel = np.empty((n, n, 3), np.uint8)
    panel[:] = UNKNOWN
    xs = local_map.origin[0] + (np.arange(n) + 0.5) * res
    ys = local_map.origin[1] + (np.arange(n) + 0.5) * res
    wx, wy = np.meshgrid(xs, ys)
    c, s = np.cos(pose.yaw), np.sin(pose.yaw)
    vx, vy = c * (wx - pose.x) + s * (wy - pose.y), -s * (wx - pose.x) + c * (wy - pose.y)
    for name, mount in mounts.items():
        grid = GridSpec(0.0, 40.0, -20.0, 20.0) if mount.yaw == 0 else GridSpec(-40.0, 0.0, -20.0, 20.0) \
            if abs(mount.yaw) == 180 else GridSpec(-20.0, 20.0, 0.0, 40.0)
        frame = project(build_lookup(cam, mount, 0.0, grid), labels[name], classes)
        painted = _paint(frame.occupancy(classes), frame.group(classes, "vehicles"),
                         frame.group(classes, "pedestrians"))
        row, col = grid.cell_of(vx, vy)
        inside = (row >= 0) & (row < grid.height) & (col >= 0) & (col < grid.width)
        seen = inside.copy()
        seen[inside] = frame.occupancy(classes)[row[inside], col[inside]] >= 0
        panel[seen] = painted[row[seen], col[seen]]
    return panel


def write_picture(path: Path, world, local_map: LocalMap, labels: dict, mounts: dict, cam, classes, pose,
                  t: float) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, res = local_map.spec.cells, local_map.spec.resolution
    xs = local_map.origin[0] + (np.arange(n) + 0.5) * res
    ys = local_map.origin[1] + (np.arange(n) + 0.5) * res
    wx, wy = np.meshgrid(xs, ys)
    truth = colors_for()[world.ground_truth(wx, wy, t)]
    fused = _paint(local_map.occupancy(), local_map.group("vehicles"), local_map.group("pedestrians"))
    panels = [(truth, "the street (ground truth)"),
              (per_frame_panel(local_map, labels, mounts, cam, classes, pose), "last frame: per-camera grids"),
              (fused, "~/local_map: fused over 3 s")]
    extent = (xs[0] - res / 2, xs[-1] + res / 2, ys[0] - res / 2, ys[-1] + res / 2)
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.8), dpi=80)
    for ax, (image, title) in zip(axes, panels):
        ax.imshow(image, origin="lower", extent=extent, interpolation="nearest")
        ax.plot([pose.x], [pose.y], marker=(3, 0, np.degrees(pose.yaw) - 90), color="orange", markersize=9)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("x (m, odometry frame)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("y (m)", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
