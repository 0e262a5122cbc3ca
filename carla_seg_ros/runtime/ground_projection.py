"""Flat-ground geometry of a pinhole camera on a vehicle: pixel <-> ground point, and the cell -> pixel lookup.

Frames (docs/concepts/occupancy.md; a diagram in docs/history/occupancy.md):

* vehicle frame: ROS REP-103, x forward, y left, z up (the CARLA ROS bridge's ``ego_vehicle`` frame);
* camera body: the mount pose in the vehicle frame, x along the optical axis, y left, z up (what the bridge's
  ``objects.json`` spawn point and a ROS Pose describe: positive pitch looks down);
* optical frame: x right, y down, z forward (the frame of the image and of CameraInfo's K).

The ground is the plane z = ``ground_z`` of the vehicle frame. Pixel coordinates follow OpenCV and CameraInfo:
integer (u, v) is the centre of pixel column u, row v.

ROS-free and numpy-only, so it is tested against hand-computed values without a ROS graph.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Optical axes expressed in the camera body frame (columns): x_opt = -y_body, y_opt = -z_body, z_opt = x_body.
BODY_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
ASPECT_TOLERANCE = 0.01     # image vs CameraInfo size: same aspect ratio within 1 % (rounded resizes)
MAX_GRID_CELLS = 4_000_000


class InvalidCameraInfo(ValueError):
    """Intrinsics that cannot be used; the message says why (for logs and /diagnostics)."""


@dataclass(frozen=True)
class Pinhole:
    """Intrinsics of an undistorted pinhole camera for images of ``width`` x ``height`` pixels."""
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def check(self) -> "Pinhole":
        """Raise InvalidCameraInfo naming the first unusable value; return self when usable."""
        for name in ("fx", "fy"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0.0:
                raise InvalidCameraInfo(f"{name} = {value} (focal lengths must be finite and > 0)")
        for name in ("cx", "cy"):
            if not math.isfinite(getattr(self, name)):
                raise InvalidCameraInfo(f"{name} = {getattr(self, name)} (must be finite)")
        if self.width <= 0 or self.height <= 0:
            raise InvalidCameraInfo(f"size {self.width}x{self.height} (width and height must be > 0)")
        return self

    def scaled(self, width: int, height: int) -> "Pinhole":
        """The same camera for the image resized to ``width`` x ``height`` (each axis scaled on its own)."""
        sx, sy = width / self.width, height / self.height
        # Pixel centres: u' + 0.5 = (u + 0.5) * s, so the principal point moves by half a pixel's change.
        return Pinhole(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5,
                       int(width), int(height))

    def for_image(self, width: int, height: int) -> "Pinhole":
        """These intrinsics for a received image: as they are, or scaled to a resized image of the same aspect.

        Raises InvalidCameraInfo when the image cannot be a resize of the calibrated one (other aspect ratio).
        """
        if (width, height) == (self.width, self.height):
            return self
        sx, sy = width / self.width, height / self.height
        if abs(sx / sy - 1.0) > ASPECT_TOLERANCE:
            raise InvalidCameraInfo(f"camera_info is {self.width}x{self.height} but the image is {width}x{height} "
                                    f"(a different aspect ratio, so not a resize of the calibrated image)")
        return self.scaled(width, height)


@dataclass(frozen=True)
class Mount:
    """Camera pose in the vehicle frame: position (m) and roll/pitch/yaw (degrees, ROS fixed-axis RPY)."""
    x: float = 2.0            # defaults: the CARLA ROS bridge's rgb_front on ego_vehicle
    y: float = 0.0
    z: float = 2.0
    roll: float = 0.0
    pitch: float = 0.0
    yaw: float = 0.0

    @property
    def position(self) -> np.ndarray:
        return np.array([self.x, self.y, self.z])

    def vehicle_from_optical(self) -> np.ndarray:
        """3x3 rotation taking optical-frame directions to the vehicle frame."""
        r, p, y = (math.radians(a) for a in (self.roll, self.pitch, self.yaw))
        rx = np.array([[1, 0, 0], [0, math.cos(r), -math.sin(r)], [0, math.sin(r), math.cos(r)]])
        ry = np.array([[math.cos(p), 0, math.sin(p)], [0, 1, 0], [-math.sin(p), 0, math.cos(p)]])
        rz = np.array([[math.cos(y), -math.sin(y), 0], [math.sin(y), math.cos(y), 0], [0, 0, 1]])
        return rz @ ry @ rx @ BODY_FROM_OPTICAL


@dataclass(frozen=True)
class GridSpec:
    """A ground grid in the vehicle frame: cells of ``resolution`` metres over [x_min, x_max] x [y_min, y_max].

    Laid out as nav_msgs/OccupancyGrid: ``width`` cells along x (forward), ``height`` cells along y (left), row
    major from the cell at (x_min, y_min); the extent is rounded to whole cells.
    """
    x_min: float = 0.0
    x_max: float = 40.0
    y_min: float = -20.0
    y_max: float = 20.0
    resolution: float = 0.2

    def check(self) -> "GridSpec":
        if not self.x_max > self.x_min or not self.y_max > self.y_min:
            raise ValueError(f"empty grid extent x [{self.x_min}, {self.x_max}], y [{self.y_min}, {self.y_max}] "
                             "(max must exceed min)")
        if not self.resolution > 0:
            raise ValueError(f"grid resolution {self.resolution} must be > 0")
        if self.width * self.height > MAX_GRID_CELLS:
            raise ValueError(f"grid of {self.width}x{self.height} cells exceeds {MAX_GRID_CELLS} cells "
                             "(coarser resolution or a smaller extent)")
        return self

    @property
    def width(self) -> int:
        return max(1, int(round((self.x_max - self.x_min) / self.resolution)))

    @property
    def height(self) -> int:
        return max(1, int(round((self.y_max - self.y_min) / self.resolution)))

    def cell_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """(X, Y), each (height, width): the vehicle-frame coordinates of every cell centre."""
        xs = self.x_min + (np.arange(self.width) + 0.5) * self.resolution
        ys = self.y_min + (np.arange(self.height) + 0.5) * self.resolution
        return np.meshgrid(xs, ys)

    def cell_of(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """(row, col) indices of the cells holding vehicle-frame points (may fall outside the grid)."""
        col = np.floor((np.asarray(x) - self.x_min) / self.resolution).astype(np.int64)
        row = np.floor((np.asarray(y) - self.y_min) / self.resolution).astype(np.int64)
        return row, col


def pixel_to_ground(cam: Pinhole, mount: Mount, ground_z: float, u, v) -> tuple[np.ndarray, np.ndarray]:
    """Where the rays of pixels (u, v) meet the ground: (x, y) in the vehicle frame, NaN for rays that never do
    (at or above the horizon)."""
    u, v = np.broadcast_arrays(np.asarray(u, np.float64), np.asarray(v, np.float64))
    rays = np.stack([(u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, np.ones_like(u)], -1) @ \
        mount.vehicle_from_optical().T
    height = mount.z - ground_z
    with np.errstate(divide="ignore", invalid="ignore"):
        t = -height / rays[..., 2]
    hits = (rays[..., 2] < 0) & (t > 0) if height > 0 else np.zeros(u.shape, bool)
    t = np.where(hits, t, np.nan)
    return mount.x + t * rays[..., 0], mount.y + t * rays[..., 1]


def ground_to_pixel(cam: Pinhole, mount: Mount, ground_z: float, x, y) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Continuous pixel coordinates (u, v) of ground points, and whether each lies in front of the camera."""
    x, y = np.broadcast_arrays(np.asarray(x, np.float64), np.asarray(y, np.float64))
    points = np.stack([x, y, np.full_like(x, ground_z)], -1) - mount.position
    optical = points @ mount.vehicle_from_optical()          # row vectors: R^T p for each point
    z = optical[..., 2]
    in_front = z > 1e-6
    safe = np.where(in_front, z, 1.0)
    return cam.fx * optical[..., 0] / safe + cam.cx, cam.fy * optical[..., 1] / safe + cam.cy, in_front


@dataclass(frozen=True)
class CellLookup:
    """The cells of a grid that a mask of ``shape`` sees, and which mask pixel each one reads.

    Only seen cells are listed (in front of the camera, inside the image, above ``hood_row``); every other cell
    stays unknown. ``row_far``/``row_near`` are the first and last mask rows whose pixels overlap the cell's
    footprint (a contact in mask row r falls in the cell when row_far <= r <= row_near), so an obstacle's contact
    row marks the cells it can be in, and no more, at every range.
    """
    grid: GridSpec
    shape: tuple[int, int]           # (rows, cols) of the mask the pixels index
    hood_row: int                    # rows at and below this are the ego hood: never read
    cells: np.ndarray                # flat indices into the (height, width) grid
    pixel: np.ndarray                # flat indices into the mask
    col: np.ndarray                  # mask column of each cell
    row: np.ndarray                  # mask row of each cell (its centre)
    row_far: np.ndarray              # intp
    row_near: np.ndarray             # intp
    top_row: int                     # smallest mask row any cell can involve (rows above it never matter)


def build_lookup(cam: Pinhole, mount: Mount, ground_z: float, grid: GridSpec, hood_row: int | None = None) \
        -> CellLookup:
    """Precompute cell -> mask pixel for a mask of cam.height x cam.width (once per intrinsics/parameters)."""
    rows, cols = cam.height, cam.width
    hood_row = rows if hood_row is None else int(min(max(hood_row, 0), rows))
    xc, yc = grid.cell_centres()
    u, v, front = ground_to_pixel(cam, mount, ground_z, xc, yc)
    col = np.floor(u + 0.5)
    row = np.floor(v + 0.5)
    seen = front & (col >= 0) & (col < cols) & (row >= 0) & (row < hood_row)
    # The footprint's corners bound the rows it covers; a corner behind the camera makes the span unbounded.
    half = grid.resolution / 2
    v_min, v_max = np.full(xc.shape, np.inf), np.full(xc.shape, -np.inf)
    for dx in (-half, half):
        for dy in (-half, half):
            _, vc, fc = ground_to_pixel(cam, mount, ground_z, xc + dx, yc + dy)
            seen &= fc
            v_min, v_max = np.minimum(v_min, vc), np.maximum(v_max, vc)
    cells = np.flatnonzero(seen)
    col_i, row_i = col.ravel()[cells].astype(np.intp), row.ravel()[cells].astype(np.intp)
    # Pixel row r spans [r - 0.5, r + 0.5]: it overlaps the footprint [v_min, v_max] for r in this integer range.
    row_far = np.maximum(np.ceil(v_min.ravel()[cells] - 0.5), 0).astype(np.intp)
    row_near = np.floor(v_max.ravel()[cells] + 0.5).astype(np.intp)
    top = int(row_far.min()) if cells.size else hood_row
    return CellLookup(grid, (rows, cols), hood_row, cells.astype(np.intp), row_i * cols + col_i, col_i, row_i,
                      row_far, row_near, top)
