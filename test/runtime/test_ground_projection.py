"""Flat-ground pinhole geometry against hand-computed values (runtime/ground_projection.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from carla_seg_ros.runtime.ground_projection import (GridSpec, InvalidCameraInfo, Mount, Pinhole, build_lookup,
                                                     ground_to_pixel, pixel_to_ground)

# The CARLA bridge's rgb_front: 800x600, FOV 90 -> fx = fy = 800 / (2 tan 45 deg) = 400, cx = 400, cy = 300.
BRIDGE = Pinhole(400.0, 400.0, 400.0, 300.0, 800, 600)
HEIGHT, PITCH = 1.5, 10.0     # a camera 1.5 m above the ground, looking 10 degrees down


def test_optical_axis_and_image_axes_follow_the_optical_frame():
    # Pitch 0: the principal point looks straight ahead, +u to the right (-y), +v down (-z).
    m = Mount(x=0, y=0, z=2, roll=0, pitch=0, yaw=0)
    r = m.vehicle_from_optical()
    np.testing.assert_allclose(r @ [0, 0, 1], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(r @ [1, 0, 0], [0, -1, 0], atol=1e-12)
    np.testing.assert_allclose(r @ [0, 1, 0], [0, 0, -1], atol=1e-12)
    # Yaw 90: looking left.
    np.testing.assert_allclose(Mount(yaw=90).vehicle_from_optical() @ [0, 0, 1], [0, 1, 0], atol=1e-12)


@pytest.mark.parametrize("v", [300.0, 360.0, 420.0, 599.0])
def test_a_pixel_ray_hits_the_ground_at_the_analytic_distance(v):
    mount = Mount(x=1.0, y=0.0, z=HEIGHT, pitch=PITCH)
    x, y = pixel_to_ground(BRIDGE, mount, 0.0, 400.0, v)
    below = math.radians(PITCH) + math.atan((v - 300.0) / 400.0)     # ray angle below the horizontal
    assert x == pytest.approx(1.0 + HEIGHT / math.tan(below), rel=1e-9)
    assert y == pytest.approx(0.0, abs=1e-9)


def test_an_off_centre_column_hits_the_ground_to_the_side():
    # Pitch 0, camera 2 m up: row 400 is 100 px below the centre -> 8 m ahead; column 600 is 200 px right
    # -> y = -(200 / 400) x 8 = -4 m.
    x, y = pixel_to_ground(BRIDGE, Mount(x=0, z=2.0), 0.0, 600.0, 400.0)
    assert (float(x), float(y)) == pytest.approx((8.0, -4.0))


def test_pixels_at_and_above_the_horizon_map_to_nothing():
    mount = Mount(x=0, z=HEIGHT, pitch=PITCH)
    horizon = 300.0 - 400.0 * math.tan(math.radians(PITCH))      # row of the horizon
    x, _ = pixel_to_ground(BRIDGE, mount, 0.0, [400.0] * 4, [0.0, horizon - 1, horizon, horizon + 1])
    assert np.isnan(x[:3]).all() and np.isfinite(x[3]) and x[3] > 100
    # A camera below the ground plane sees no ground at all.
    assert np.isnan(pixel_to_ground(BRIDGE, Mount(z=-1.0), 0.0, 400.0, 599.0)[0])


def test_ground_to_pixel_inverts_pixel_to_ground():
    mount = Mount(x=2.0, y=0.3, z=1.7, roll=2.0, pitch=8.0, yaw=-5.0)
    u, v = np.meshgrid(np.linspace(0, 799, 9), np.linspace(320, 599, 7))
    x, y = pixel_to_ground(BRIDGE, mount, 0.2, u, v)
    u2, v2, front = ground_to_pixel(BRIDGE, mount, 0.2, x, y)
    assert front.all()
    np.testing.assert_allclose(u2, u, atol=1e-6)
    np.testing.assert_allclose(v2, v, atol=1e-6)
    # A point behind the camera is not in front of it.
    assert not ground_to_pixel(BRIDGE, mount, 0.2, -5.0, 0.0)[2]


def test_cell_to_pixel_to_cell_round_trip():
    grid = GridSpec(0.0, 40.0, -20.0, 20.0, 0.2)
    lookup = build_lookup(BRIDGE, Mount(), 0.0, grid)
    assert lookup.cells.size > 10000
    rows, cols = np.divmod(lookup.pixel, BRIDGE.width)
    x, y = pixel_to_ground(BRIDGE, Mount(), 0.0, cols.astype(float), rows.astype(float))
    grid_row, grid_col = grid.cell_of(x, y)
    cell_row, cell_col = np.divmod(lookup.cells, grid.width)
    # Near cells: the pixel centre lies in the cell itself; far away a pixel covers many cells, so the round trip
    # lands within the ground footprint of half a pixel.
    near = (cell_col * grid.resolution < 15.0)
    assert (grid_row[near] == cell_row[near]).mean() > 0.97 and (grid_col[near] == cell_col[near]).mean() > 0.97
    xc, yc = grid.cell_centres()
    err = np.hypot(x - xc.ravel()[lookup.cells], y - yc.ravel()[lookup.cells])
    metres_per_row = xc.ravel()[lookup.cells] ** 2 / (400.0 * 2.0)     # d(distance)/d(row) = d^2 / (fy h)
    assert (err <= 0.5 * grid.resolution * math.sqrt(2) + metres_per_row).all()


def test_lookup_leaves_out_cells_behind_outside_and_under_the_hood():
    grid = GridSpec(0.0, 40.0, -20.0, 20.0, 0.2)
    full = build_lookup(BRIDGE, Mount(), 0.0, grid)
    xc, yc = (a.ravel()[full.cells] for a in grid.cell_centres())
    # Pitch 0, 2 m up, half vertical FOV atan(300/400): the nearest visible ground is 2 / 0.75 = 2.67 m ahead.
    assert xc.min() >= 2.0 + 2.0 / 0.75 - grid.resolution
    assert (np.abs(yc) <= (xc - 2.0) + grid.resolution).all()    # FOV 90: |y| <= distance ahead
    hooded = build_lookup(BRIDGE, Mount(), 0.0, grid, hood_row=495)
    assert hooded.cells.size < full.cells.size and (hooded.row < 495).all()


def test_intrinsics_validation_and_scaling():
    with pytest.raises(InvalidCameraInfo, match="fx = 0.0"):
        Pinhole(0.0, 400.0, 400.0, 300.0, 800, 600).check()
    with pytest.raises(InvalidCameraInfo, match="fy = nan"):
        Pinhole(400.0, float("nan"), 400.0, 300.0, 800, 600).check()
    with pytest.raises(InvalidCameraInfo, match="fx = -400.0"):
        Pinhole(-400.0, 400.0, 400.0, 300.0, 800, 600).check()
    with pytest.raises(InvalidCameraInfo, match="cx = inf"):
        Pinhole(400.0, 400.0, float("inf"), 300.0, 800, 600).check()
    with pytest.raises(InvalidCameraInfo, match="size 0x600"):
        Pinhole(400.0, 400.0, 400.0, 300.0, 0, 600).check()
    half = BRIDGE.for_image(400, 300)
    assert (half.fx, half.fy, half.width, half.height) == (200.0, 200.0, 400, 300)
    assert (half.cx, half.cy) == (199.75, 149.75)        # pixel centres: (c + 0.5) / 2 - 0.5
    # The same ground point lands on the same place of the image at both sizes.
    u, v, _ = ground_to_pixel(BRIDGE, Mount(), 0.0, 12.0, 3.0)
    u2, v2, _ = ground_to_pixel(half, Mount(), 0.0, 12.0, 3.0)
    assert ((u2 + 0.5) * 2 - 0.5, (v2 + 0.5) * 2 - 0.5) == pytest.approx((float(u), float(v)))
    with pytest.raises(InvalidCameraInfo, match="different aspect ratio"):
        BRIDGE.for_image(640, 360)


def test_grid_spec_layout_and_validation():
    grid = GridSpec()
    assert (grid.width, grid.height) == (200, 200)
    xc, yc = grid.cell_centres()
    assert (xc[0, 0], yc[0, 0], xc[0, -1], yc[-1, 0]) == pytest.approx((0.1, -19.9, 39.9, 19.9))
    with pytest.raises(ValueError, match="max must exceed min"):
        GridSpec(10.0, 5.0).check()
    with pytest.raises(ValueError, match="exceeds"):
        GridSpec(0.0, 1000.0, -1000.0, 1000.0, 0.1).check()
