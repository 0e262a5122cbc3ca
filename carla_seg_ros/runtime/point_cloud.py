"""A semantic point cloud of one camera frame, in the camera's optical frame: x, y, z, label, confidence[, rgb].

Two sources of range:

* **depth**: an aligned metric depth image (32FC1, metres along the optical axis: the CARLA ROS bridge's depth
  camera and CARLA 0.9.16's native one, same pose and intrinsics as the RGB camera). Every ``stride``-th pixel of
  every ``stride``-th row becomes a point; pixels with no finite depth in (0, ``max_range``] (the sky is 1000 m
  in CARLA) are left out.
* **ground** (no depth image): the flat-ground rule of runtime/occupancy_grid.py. Per image column, the ground
  pixels in front of the object's contact become points on the plane z = ground_z, and the contact itself a short
  column of points (``CONTACT_HEIGHTS``) standing where the object meets the ground; pixels behind a contact,
  above the horizon or on the hood are left out. So a costmap that drops the ground by height still sees the
  obstacles (docs/concepts/local_map.md has a Nav2 snippet).

Points are a numpy structured array whose layout is PointCloud2's (``fields()``), so the node copies the bytes.
Labels come from the model's mask at the nearest pixel (the mask is a plain resize of the image). ROS-free.
"""
from __future__ import annotations

import numpy as np

from carla_seg_ros.runtime.ground_projection import Mount, Pinhole, pixel_to_ground
from carla_seg_ros.runtime.occupancy_grid import contact_rows

# sensor_msgs/PointField datatypes
UINT8, FLOAT32 = 2, 7
CONTACT_HEIGHTS = (0.0, 0.5, 1.0)      # metres above the ground: the points standing on each contact (ground rule)
_BASE = [("x", "<f4", 0), ("y", "<f4", 4), ("z", "<f4", 8), ("confidence", "<f4", 12), ("label", "u1", 16)]


def point_dtype(with_rgb: bool) -> np.dtype:
    """x, y, z, confidence (0..1), label (class id)[, rgb (PCL's packed float: 0x00RRGGBB)]; 4-byte aligned."""
    fields = _BASE + ([("rgb", "<f4", 20)] if with_rgb else [])
    return np.dtype({"names": [f[0] for f in fields], "formats": [f[1] for f in fields],
                     "offsets": [f[2] for f in fields], "itemsize": 24 if with_rgb else 20})


def fields(with_rgb: bool) -> list[tuple[str, int, int]]:
    """(name, offset, PointField datatype) of ``point_dtype(with_rgb)``."""
    dtype = point_dtype(with_rgb)
    return [(name, dtype.fields[name][1], UINT8 if dtype.fields[name][0] == np.uint8 else FLOAT32)
            for name in dtype.names]


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 -> (N,) float32 whose bits are 0x00RRGGBB (PCL's and RViz's rgb field)."""
    rgb = rgb.astype(np.uint32)
    return ((rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]).view(np.float32)


class PointCloudBuilder:
    """Precomputed rays of the sampled pixels of one camera at one image size; one call per frame."""

    def __init__(self, cam: Pinhole, mount: Mount, ground_z: float, mask_shape: tuple[int, int], stride: int = 4,
                 max_range: float = 100.0, hood_row_fraction: float = 1.0):
        if stride < 1:
            raise ValueError(f"point stride {stride} must be >= 1")
        self.cam, self.mount, self.stride, self.max_range = cam, mount, int(stride), float(max_range)
        self.ground_z = float(ground_z)
        self.mask_shape = tuple(mask_shape)
        first = self.stride // 2                         # the middle of each stride x stride block
        v = np.arange(first, cam.height, self.stride)
        u = np.arange(first, cam.width, self.stride)
        self._first = first
        self.image_rows, self.image_cols = v, u
        # nearest mask pixel of each sampled image pixel (resize_mask's nearest rule: centre to centre)
        mh, mw = self.mask_shape
        self.mask_rows = np.minimum(((v + 0.5) * mh / cam.height).astype(np.intp), mh - 1)
        self.mask_cols = np.minimum(((u + 0.5) * mw / cam.width).astype(np.intp), mw - 1)
        self._mask_index = (self.mask_rows[:, None] * mw + self.mask_cols[None, :]).ravel()    # flat, per sample
        # x/z and y/z of every sampled pixel's ray, flat in sample order
        self._ray_x = np.tile(((u - cam.cx) / cam.fx).astype(np.float32), len(v))
        self._ray_y = np.repeat(((v - cam.cy) / cam.fy).astype(np.float32), len(u))
        hood = int(round(hood_row_fraction * mh))
        self.hood_row = hood
        # Ground path: where each sampled pixel's ray meets the ground, in the optical frame.
        uu, vv = np.meshgrid(u.astype(np.float64), v.astype(np.float64))
        gx, gy = pixel_to_ground(cam, mount, ground_z, uu, vv)
        hits = np.isfinite(gx) & (np.hypot(gx - mount.x, gy - mount.y) <= self.max_range)
        hits &= (self.mask_rows < hood)[:, None]
        vehicle = np.stack([gx, gy, np.full_like(gx, ground_z)], -1) - mount.position
        optical = vehicle @ mount.vehicle_from_optical()
        # Only the samples that meet the ground can become ground points: per frame, work on those alone.
        self._ground_samples = np.flatnonzero(hits)                     # flat sample indices
        self._ground_xyz = optical.reshape(-1, 3)[self._ground_samples].astype(np.float32)
        self._ground_mask_row = np.broadcast_to(self.mask_rows[:, None], hits.shape).ravel()[self._ground_samples]
        self._ground_col = np.broadcast_to(np.arange(len(u))[None, :], hits.shape).ravel()[self._ground_samples]
        # No sampled pixel above this mask row meets the ground within range, so no contact there matters.
        rows_with_hits = self.mask_rows[hits.any(axis=1)]
        self._top_row = int(rows_with_hits.min()) if rows_with_hits.size else mh

    def _points(self, xyz: np.ndarray, ids: np.ndarray, conf: np.ndarray | None, rgb: np.ndarray | None):
        out = np.empty(len(xyz), point_dtype(rgb is not None))
        out["x"], out["y"], out["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
        out["label"] = ids
        out["confidence"] = 1.0 if conf is None else conf.astype(np.float32) * (1.0 / 255.0)
        if rgb is not None:
            out["rgb"] = pack_rgb(rgb)
        return out

    def _sampled(self, mask: np.ndarray | None, which: np.ndarray):
        """The mask's values at the sampled pixels ``which`` (flat indices into the samples)."""
        return None if mask is None else np.take(mask.reshape(-1), np.take(self._mask_index, which))

    def _sampled_rgb(self, rgb: np.ndarray | None):
        if rgb is None:
            return None
        if rgb.shape[:2] != (self.cam.height, self.cam.width):
            raise ValueError(f"rgb image is {rgb.shape[1]}x{rgb.shape[0]}, the camera {self.cam.width}x"
                             f"{self.cam.height}")
        return rgb[self._first::self.stride, self._first::self.stride][:len(self.image_rows), :len(self.image_cols)]

    def from_depth(self, depth: np.ndarray, class_ids: np.ndarray, confidence: np.ndarray | None = None,
                   rgb: np.ndarray | None = None) -> np.ndarray:
        """Points of an aligned depth image (metres along the optical axis, the camera's size)."""
        if depth.shape != (self.cam.height, self.cam.width):
            raise ValueError(f"depth image is {depth.shape[1]}x{depth.shape[0]}, the camera {self.cam.width}x"
                             f"{self.cam.height}")
        self._check_mask(class_ids)
        d = depth[self._first::self.stride, self._first::self.stride][:len(self.image_rows), :len(self.image_cols)]
        d = np.asarray(d, np.float32)
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(d) & (d > 0) & (d <= self.max_range)
        valid[self.mask_rows >= self.hood_row] = False
        which = np.flatnonzero(valid)
        z = np.take(d, which)
        xyz = np.stack([np.take(self._ray_x, which) * z, np.take(self._ray_y, which) * z, z], -1)
        rgb_s = self._sampled_rgb(rgb)
        return self._points(xyz, self._sampled(class_ids, which), self._sampled(confidence, which),
                            None if rgb_s is None else rgb_s.reshape(-1, 3)[which])

    def from_ground(self, class_ids: np.ndarray, ground: np.ndarray, confidence: np.ndarray | None = None,
                    rgb: np.ndarray | None = None) -> np.ndarray:
        """Ground-plane points up to each column's contact (``ground``: the (256,) bool table of flat classes)."""
        self._check_mask(class_ids)
        last_row = min(self.hood_row, class_ids.shape[0])
        contact = contact_rows(class_ids, ground, min(self._top_row, last_row), last_row)
        col_contact = contact[self.mask_cols]
        visible = np.flatnonzero(self._ground_mask_row > np.take(col_contact, self._ground_col))   # before contact
        which = np.take(self._ground_samples, visible)
        rgb_s = self._sampled_rgb(rgb)
        ground_points = self._points(np.take(self._ground_xyz, visible, axis=0), self._sampled(class_ids, which),
                                     self._sampled(confidence, which),
                                     None if rgb_s is None else rgb_s.reshape(-1, 3)[which])
        # Each sampled column's contact itself (the obstacle), whether or not the stride samples its row; not
        # an object cut by the image's lower edge, whose real contact is out of view (runtime/occupancy_grid.py).
        has = np.flatnonzero((col_contact >= 0) & (col_contact != last_row - 1))
        rows, cols = col_contact[has], self.mask_cols[has]
        v = (rows + 0.5) * self.cam.height / self.mask_shape[0] - 0.5     # the contact row's centre in the image
        gx, gy = pixel_to_ground(self.cam, self.mount, self.ground_z, self.image_cols[has].astype(np.float64), v)
        hit = np.isfinite(gx) & (np.hypot(gx - self.mount.x, gy - self.mount.y) <= self.max_range)
        # A column of points stands on each contact (CONTACT_HEIGHTS above the ground): the object's face rises
        # there, and a costmap that drops ground points by height (Nav2's min_obstacle_height) still marks it.
        feet = np.stack([gx, gy, np.full_like(gx, self.ground_z)], -1)[hit]
        heights = np.asarray(CONTACT_HEIGHTS)
        column = (feet[None, :, :] + heights[:, None, None] * np.array([0.0, 0.0, 1.0])).reshape(-1, 3)
        xyz = ((column - self.mount.position) @ self.mount.vehicle_from_optical()).astype(np.float32)
        k = len(heights)
        rgb_c = None
        if rgb is not None:
            rgb_c = np.tile(rgb[np.clip(np.rint(v[hit]).astype(np.intp), 0, self.cam.height - 1),
                                self.image_cols[has][hit]], (k, 1))
        contact_points = self._points(xyz, np.tile(class_ids[rows[hit], cols[hit]], k),
                                      None if confidence is None else np.tile(confidence[rows[hit], cols[hit]], k),
                                      rgb_c)
        out = np.empty(len(ground_points) + len(contact_points), ground_points.dtype)   # (np.concatenate would
        out[:len(ground_points)] = ground_points                                         # pack the padded layout)
        out[len(ground_points):] = contact_points
        return out

    def _check_mask(self, class_ids: np.ndarray) -> None:
        if class_ids.shape != self.mask_shape:
            raise ValueError(f"mask is {class_ids.shape}, the builder was made for {self.mask_shape}")
