"""The free-space rule and the group grids on synthetic masks (runtime/occupancy_grid.py)."""
from __future__ import annotations

import numpy as np
import pytest

from carla_seg_ros.classes import class_names
from carla_seg_ros.runtime.ground_projection import GridSpec, Mount, Pinhole, build_lookup, pixel_to_ground
from carla_seg_ros.runtime.occupancy_grid import (FREE, OCCUPIED, UNKNOWN, contact_rows, load_occupancy_config,
                                                  project)

NAMES = class_names()
SKY, BUILDING, PEDESTRIAN, ROADLINE, ROAD, SIDEWALK, CAR = (NAMES.index(n) for n in (
    "Unlabeled", "Building", "Pedestrian", "RoadLine", "Road", "Sidewalk", "Car"))
# The bridge's 800x600 FOV-90 rgb_front, seen through a 400x300 mask; mount x 2 m, z 2 m, level.
CAM = Pinhole(400.0, 400.0, 400.0, 300.0, 800, 600).scaled(400, 300)
MOUNT = Mount()
GRID = GridSpec()                 # 0..40 m ahead, +-20 m, 0.2 m cells
CENTRE_ROW = GRID.height // 2     # the grid row at y = +0.1 m, straight ahead
CONFIDENCE = 204                  # 0.8 x 255


@pytest.fixture(scope="module")
def classes():
    return load_occupancy_config()


def road_mask() -> np.ndarray:
    mask = np.full((300, 400), ROAD, np.uint8)
    mask[:150] = SKY                # everything at and above the horizon (row 149.75)
    mask[::7, ::5] = ROADLINE       # road markings are drivable too
    return mask


def distance_of_row(row: float) -> float:
    """x (vehicle frame) where the ray of mask row ``row``, centre column, meets the ground."""
    return float(pixel_to_ground(CAM, MOUNT, 0.0, CAM.cx, row)[0])


def grid_x(col: np.ndarray) -> np.ndarray:
    return GRID.x_min + (np.asarray(col) + 0.5) * GRID.resolution


def run(mask, classes, hood_row=None, confidence=None):
    lookup = build_lookup(CAM, MOUNT, 0.0, GRID, hood_row)
    frame = project(lookup, mask, classes, confidence)
    return lookup, frame


def test_a_road_only_mask_is_free_up_to_the_range(classes):
    lookup, frame = run(road_mask(), classes)
    grid = frame.occupancy(classes)
    assert grid.shape == (GRID.height, GRID.width) and grid.dtype == np.int8
    seen = np.zeros(grid.size, bool)
    seen[lookup.cells] = True
    assert (grid.ravel()[seen] == FREE).all()
    assert (grid.ravel()[~seen] == UNKNOWN).all()       # behind the camera's view, outside the FOV
    free_x = grid_x(np.nonzero(grid[CENTRE_ROW] == FREE)[0])
    assert free_x.max() > GRID.x_max - GRID.resolution   # free to the last cell ahead
    assert free_x.min() == pytest.approx(2.0 + 2.0 / 0.75, abs=0.3)   # the nearest ground the camera sees


def test_a_vehicle_blob_is_occupied_at_its_lowest_row_and_unknown_behind(classes):
    r = 200                                            # lowest row of the blob
    mask = road_mask()
    mask[170:r + 1, 185:216] = CAR                     # a car straight ahead, its wheels at row r
    confidence = np.full(mask.shape, CONFIDENCE, np.uint8)
    _, frame = run(mask, classes, confidence=confidence)
    grid = frame.occupancy(classes)[CENTRE_ROW]
    contact = distance_of_row(r)                       # 2 + 200 x 2 / (200 - 149.75) = 9.96 m
    assert contact == pytest.approx(2.0 + 400.0 / 50.25)
    x = grid_x(np.arange(GRID.width))
    occupied = x[grid == OCCUPIED]
    # Occupied: the cells covering row r's footprint (rows r +- 0.5), and no others.
    near_edge, far_edge = distance_of_row(r + 0.5), distance_of_row(r - 0.5)
    assert occupied.size >= 1
    assert occupied.min() >= near_edge - GRID.resolution and occupied.max() <= far_edge + GRID.resolution
    assert (grid[(x > 4.8) & (x < near_edge - GRID.resolution)] == FREE).all()
    # Behind the car: unknown, never occupied (a warp of every pixel would paint rows 170-199 onto 10-16 m).
    behind = grid[x > far_edge + GRID.resolution]
    assert (behind == UNKNOWN).all()
    # The vehicles grid: the model's confidence where the car stands, 0 on the road in front, -1 behind.
    vehicles = frame.group(classes, "vehicles")[CENTRE_ROW]
    assert set(vehicles[grid == OCCUPIED]) == {80}      # 204 / 255 = 80 %
    assert (vehicles[grid == FREE] == 0).all() and (vehicles[x > far_edge + GRID.resolution] == UNKNOWN).all()
    drivable = frame.group(classes, "drivable")[CENTRE_ROW]
    assert (drivable[grid == FREE] == 80).all() and (drivable[grid == OCCUPIED] == 0).all()
    # Columns beside the car still see the road to the range.
    side = frame.occupancy(classes)[GRID.height // 2 + 25]     # 5 m to the left
    assert side[-1] == FREE


def test_a_far_obstacle_covers_only_its_rows_footprint(classes):
    r = 158                                            # ~ 2 + 400 / 8.25 = 50 m: beyond the grid
    mask = road_mask()
    mask[150:r + 1, 195:206] = PEDESTRIAN
    grid = run(mask, classes)[1].occupancy(classes)[CENTRE_ROW]
    assert OCCUPIED not in grid                        # the contact is beyond 40 m: the grid is free to its end
    r = 165                                            # 2 + 400 / 15.25 = 28.2 m
    mask[150:r + 1, 195:206] = PEDESTRIAN
    grid = run(mask, classes)[1].occupancy(classes)[CENTRE_ROW]
    occupied = grid_x(np.nonzero(grid == OCCUPIED)[0])
    assert occupied.min() >= distance_of_row(r + 0.5) - GRID.resolution
    assert occupied.max() <= distance_of_row(r - 0.5) + GRID.resolution


def test_sidewalk_is_occupied_and_seen_across_until_the_building(classes):
    mask = road_mask()
    mask[150:200, :] = BUILDING                        # building base at row 199 (~10 m)
    mask[200:230, :] = SIDEWALK                        # sidewalk from ~7 m to ~10 m
    grid = run(mask, classes)[1].occupancy(classes)[CENTRE_ROW]
    x = grid_x(np.arange(GRID.width))
    assert (grid[(x > distance_of_row(229.5) + 0.2) & (x < distance_of_row(200.5) - 0.2)] == OCCUPIED).all()
    assert (grid[x > distance_of_row(198.5) + 0.3] == UNKNOWN).all()
    # The strict rule (nothing seen through): free space ends at the kerb, the sidewalk behind it is unknown.
    strict = type(classes)(classes.free_space, classes.free, classes.free.copy(), classes.groups)
    grid = run(mask, strict)[1].occupancy(strict)[CENTRE_ROW]
    assert (grid[x > distance_of_row(228.5) + 0.3] == UNKNOWN).all()
    assert OCCUPIED in grid


def test_the_ego_hood_is_unseen_and_does_not_block_the_road(classes):
    mask = road_mask()
    mask[247:] = CAR                                   # the CARLA 0.8 hood, rows 0.825 x 300 and below
    unhooded = run(mask, classes)[1].occupancy(classes)
    assert FREE not in unhooded                        # the hood looks like a car right in front
    lookup, frame = run(mask, classes, hood_row=247)
    grid = frame.occupancy(classes)
    assert (grid.ravel()[lookup.cells] == FREE).all() and FREE in grid[CENTRE_ROW]


def test_contact_rows():
    ground = np.zeros(256, bool)
    ground[[ROAD, ROADLINE]] = True
    mask = np.full((10, 3), ROAD, np.uint8)
    mask[2, 0] = CAR
    mask[8, 1] = CAR
    mask[9, 1] = CAR                                   # in the hood band below
    np.testing.assert_array_equal(contact_rows(mask, ground), [2, 9, -1])
    np.testing.assert_array_equal(contact_rows(mask, ground, hood_row=9), [2, 8, -1])
    np.testing.assert_array_equal(contact_rows(mask, ground, top_row=3, hood_row=8), [-1, -1, -1])


def test_occupancy_config_groups_and_errors(tmp_path):
    classes = load_occupancy_config()
    assert list(classes.groups) == ["drivable", "vehicles", "pedestrians", "static_obstacles"]
    assert classes.free_space == "drivable" and set(np.flatnonzero(classes.free)) == {ROAD, ROADLINE}
    assert set(np.flatnonzero(classes.groups["vehicles"])) == {CAR}
    bad = tmp_path / "bad.yaml"
    bad.write_text("groups:\n  drivable: [Road, Tarmac]\n")
    with pytest.raises(ValueError, match="unknown class 'Tarmac'"):
        load_occupancy_config(bad)
    bad.write_text("groups:\n  my-group: [Road]\nfree_space: my-group\n")
    with pytest.raises(ValueError, match="not a valid topic name"):
        load_occupancy_config(bad)
    bad.write_text("free_space: road\ngroups:\n  drivable: [Road]\n")
    with pytest.raises(ValueError, match="free_space 'road'"):
        load_occupancy_config(bad)
    with pytest.raises(ValueError, match="cannot read"):
        load_occupancy_config(tmp_path / "missing.yaml")


def test_a_car_cut_by_the_lower_edge_is_not_placed_behind_itself(classes):
    """Its contact with the road is out of view, nearer than the last row's ground: those columns are unknown,
    while a car whose wheels are in view still lands where it stands."""
    mask = road_mask()
    mask[200:, 100:160] = CAR            # beside the camera: reaches the image's lower edge
    mask[170:240, 250:300] = CAR         # farther ahead: its contact row (239) is in view
    lookup, frame = run(mask, classes)
    grid = frame.occupancy(classes)
    vehicles = frame.group(classes, "vehicles")
    col_of_cell = np.full(grid.size, -1)
    col_of_cell[lookup.cells] = lookup.col
    cut = np.isin(col_of_cell, np.arange(100, 160)).reshape(grid.shape)
    whole = np.isin(col_of_cell, np.arange(255, 295)).reshape(grid.shape)
    assert (grid[cut] == UNKNOWN).all() and (vehicles[cut] == UNKNOWN).all()
    assert (vehicles[whole] > 0).any()
    landed = grid_x(np.nonzero((vehicles > 0).any(axis=0))[0])
    assert landed.min() == pytest.approx(distance_of_row(239.5), abs=0.6)
