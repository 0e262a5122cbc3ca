"""A known top-down world and exact camera renderings of it, to test and measure the local map without a model.

The world lies in the odometry frame (x, y on the ground z = 0): a straight road along x (``road_half_width`` each
side of y = 0), sidewalks beyond it, rows of buildings beyond the sidewalks, parked cars at the road's edges, a
pedestrians on the sidewalks, and cars that drive along the road at constant velocity. Every object is an axis-aligned
box standing on the ground.

``render`` traces one ray per pixel of a pinhole camera mounted on the ego (runtime/ground_projection.py's Mount
and Pinhole conventions) at a planar pose: the label is the class of the nearest box the ray meets, else the
ground's class where it meets the ground, else the sky (Unlabeled); the depth is the distance along the optical
axis (32FC1 metres, as CARLA's depth camera gives it; 1000 m for the sky). ``ground_truth`` rasterises the same
world onto a grid of cell centres. Pure numpy; used by the tests, ``carla-seg bench map`` and the doc picture.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from carla_seg_ros.classes import class_names
from carla_seg_ros.runtime.ground_projection import Mount, Pinhole
from carla_seg_ros.runtime.odometry_buffer import PlanarPose

NAMES = class_names()
SKY, BUILDING, PEDESTRIAN, ROAD, SIDEWALK, CAR = (NAMES.index(n) for n in (
    "Unlabeled", "Building", "Pedestrian", "Road", "Sidewalk", "Car"))
SKY_DEPTH = 1000.0


@dataclass(frozen=True)
class Box:
    """An axis-aligned box on the ground: x/y extent at time 0 (m), height, class id, velocity (m/s along x, y)."""
    x0: float
    x1: float
    y0: float
    y1: float
    height: float
    label: int
    vx: float = 0.0
    vy: float = 0.0

    def at(self, t: float) -> tuple[float, float, float, float]:
        dx, dy = self.vx * t, self.vy * t
        return self.x0 + dx, self.x1 + dx, self.y0 + dy, self.y1 + dy

    @property
    def moving(self) -> bool:
        return self.vx != 0.0 or self.vy != 0.0


@dataclass
class World:
    road_half_width: float = 5.0
    boxes: list[Box] = field(default_factory=list)

    def ground_label(self, y: np.ndarray) -> np.ndarray:
        return np.where(np.abs(y) <= self.road_half_width, ROAD, SIDEWALK).astype(np.uint8)

    def ground_truth(self, xs: np.ndarray, ys: np.ndarray, t: float) -> np.ndarray:
        """Class id at ground points (xs, ys) at time t: the box standing there, else the ground."""
        out = self.ground_label(ys)
        for box in self.boxes:
            x0, x1, y0, y1 = box.at(t)
            out[(xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)] = box.label
        return out


def town(length: float = 200.0, seed: int = 0, moving: bool = True) -> World:
    """The default world: road 10 m wide along x from -50 m to ``length``, 3 m sidewalks, buildings from 9 m out
    with gaps, parked cars at both kerbs, two pedestrians, and (``moving``) one car overtaking the ego at 12 m/s."""
    rng = np.random.default_rng(seed)
    world = World()
    for side in (-1, 1):
        x = -50.0
        while x < length:
            depth = float(rng.uniform(12, 25))
            y0, y1 = (9.0, 15.0) if side > 0 else (-15.0, -9.0)
            world.boxes.append(Box(x, x + depth, y0, y1, float(rng.uniform(6, 15)), BUILDING))
            x += depth + float(rng.uniform(3, 8))          # a gap: the ground between the buildings is sidewalk
        x = -40.0 + float(rng.uniform(0, 10))
        while x < length:
            y0, y1 = (3.0, 4.8) if side > 0 else (-4.8, -3.0)
            world.boxes.append(Box(x, x + 4.4, y0, y1, 1.5, CAR))
            x += 4.4 + float(rng.uniform(8, 25))
    world.boxes.append(Box(44.0, 44.6, -7.0, -6.4, 1.8, PEDESTRIAN))
    world.boxes.append(Box(20.0, 20.6, 6.4, 7.0, 1.8, PEDESTRIAN))
    if moving:
        world.boxes.append(Box(-6.0, -1.6, 0.3, 2.1, 1.5, CAR, vx=12.0))   # left lane, overtakes the ego
    return world


def ego_pose(t: float, speed: float = 8.0) -> PlanarPose:
    """The ego's path: along the right lane at ``speed`` with a gentle weave (yaw up to about 4 degrees)."""
    x = speed * t
    y = -2.0 + 0.6 * math.sin(0.9 * t)
    yaw = math.atan2(0.6 * 0.9 * math.cos(0.9 * t), speed)
    return PlanarPose(x, y, 0.0, yaw)


def bridge_camera(width: int = 400, height: int = 300, fov_deg: float = 90.0) -> Pinhole:
    """Intrinsics as the CARLA bridge publishes them: f = W / (2 tan(FOV/2)), principal point at the centre."""
    f = width / (2.0 * math.tan(math.radians(fov_deg) / 2.0))
    return Pinhole(f, f, width / 2.0, height / 2.0, width, height)


FRONT = Mount(2.0, 0.0, 2.0, 0.0, 0.0, 0.0)
REAR = Mount(-2.0, 0.0, 2.0, 0.0, 0.0, 180.0)
LEFT = Mount(0.0, 0.9, 2.0, 0.0, 0.0, 90.0)


def render(world: World, cam: Pinhole, mount: Mount, pose: PlanarPose, t: float, reach: float = 80.0) \
        -> tuple[np.ndarray, np.ndarray]:
    """(labels uint8 (H, W), depth float32 (H, W)) of the camera at ``pose`` and time ``t``; boxes farther than
    ``reach`` metres are left out (they would change only pixels beyond the map)."""
    u, v = np.meshgrid(np.arange(cam.width, dtype=np.float64), np.arange(cam.height, dtype=np.float64))
    rays = np.stack([(u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, np.ones_like(u)], -1)   # optical z = 1
    vehicle_from_optical = mount.vehicle_from_optical()
    vehicle = rays @ vehicle_from_optical.T
    c, s = math.cos(pose.yaw), math.sin(pose.yaw)
    dx = c * vehicle[..., 0] - s * vehicle[..., 1]
    dy = s * vehicle[..., 0] + c * vehicle[..., 1]
    dz = vehicle[..., 2]
    ox, oy = pose.to_world(np.float64(mount.x), np.float64(mount.y))
    oz = pose.z + mount.z
    # ray parameter = depth along the optical axis, since the optical z of every ray is 1
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ground = np.where(dz < 0, -oz / dz, np.inf)
    depth = t_ground.copy()
    on_ground = np.isfinite(t_ground)
    gy = oy + np.where(on_ground, t_ground, 0.0) * dy
    labels = np.where(on_ground, world.ground_label(gy), SKY).astype(np.uint8)
    world_from_optical = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ vehicle_from_optical
    for box in world.boxes:
        x0, x1, y0, y1 = box.at(t)
        if max(x0 - ox, ox - x1, y0 - oy, oy - y1) > reach:
            continue
        window = _image_window(cam, world_from_optical, (ox, oy, oz), (x0, x1, y0, y1, box.height))
        if window is None:
            continue
        rows, cols = window
        bdx, bdy, bdz, bdepth = dx[rows, cols], dy[rows, cols], dz[rows, cols], depth[rows, cols]
        near, far = np.zeros_like(bdx), np.full_like(bdx, np.inf)
        for o, d, lo, hi in ((ox, bdx, x0, x1), (oy, bdy, y0, y1), (oz, bdz, 0.0, box.height)):
            with np.errstate(divide="ignore", invalid="ignore"):
                a, b = (lo - o) / d, (hi - o) / d
            parallel = d == 0
            inside = (o >= lo) & (o <= hi)
            # a ray parallel to a slab: no constraint inside it, no hit outside it
            a = np.where(parallel, np.where(inside, -np.inf, np.inf), a)
            b = np.where(parallel, np.inf, b)
            near = np.maximum(near, np.minimum(a, b))
            far = np.minimum(far, np.maximum(a, b))
        hit = (near <= far) & (near < bdepth) & (far > 0)
        depth[rows, cols] = np.where(hit, near, bdepth)
        labels[rows, cols][hit] = box.label
    depth = np.where(np.isfinite(depth), depth, SKY_DEPTH).astype(np.float32)
    return labels, depth


def _image_window(cam: Pinhole, world_from_optical: np.ndarray, origin, box) -> tuple[slice, slice] | None:
    """The pixel rectangle that holds a box's image (its corners' bounding box, a pixel of margin), the whole
    image when a corner is behind the camera, None when the box is entirely behind it or outside the image."""
    x0, x1, y0, y1, h = box
    corners = np.array([[x, y, z] for x in (x0, x1) for y in (y0, y1) for z in (0.0, h)]) - np.asarray(origin)
    optical = corners @ world_from_optical          # row vectors: R^T p
    z = optical[:, 2]
    if (z <= 1e-6).all():
        return None
    if (z <= 1e-6).any():
        return slice(0, cam.height), slice(0, cam.width)
    u = cam.fx * optical[:, 0] / z + cam.cx
    v = cam.fy * optical[:, 1] / z + cam.cy
    c0, c1 = max(int(math.floor(u.min())) - 1, 0), min(int(math.ceil(u.max())) + 2, cam.width)
    r0, r1 = max(int(math.floor(v.min())) - 1, 0), min(int(math.ceil(v.max())) + 2, cam.height)
    if c0 >= c1 or r0 >= r1:
        return None
    return slice(r0, r1), slice(c0, c1)


def add_label_noise(labels: np.ndarray, fraction: float, rng: np.random.Generator,
                    choices=(BUILDING, ROAD, SIDEWALK, CAR, PEDESTRIAN)) -> np.ndarray:
    """A copy with ``fraction`` of the pixels replaced by a random class of ``choices`` (per-pixel noise)."""
    out = labels.copy()
    flip = rng.random(labels.shape) < fraction
    out[flip] = rng.choice(np.array(choices, np.uint8), int(flip.sum()))
    return out
