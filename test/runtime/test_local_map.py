"""The fused local map against a known world (runtime/local_map.py, runtime/map_fusion.py), no model.

evaluation/synthetic_world.py renders exact label images of a street (road, sidewalks, buildings, parked cars, a
pedestrian, a car overtaking the ego) for a front and a rear camera along a weaving drive at 10 Hz. The map fuses
them with exact odometry. Scores use a one-cell (0.2 m) boundary tolerance (evaluation/map_scores.py): an
object reaches the map only along its visible faces, in a band one mask row wide.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from carla_seg_ros.evaluation import synthetic_world as sw
from carla_seg_ros.evaluation.map_scores import flicker_per_second, tolerant_iou
from carla_seg_ros.runtime.ground_projection import GridSpec, build_lookup
from carla_seg_ros.runtime.local_map import FilterParams, LocalMap, MapSpec
from carla_seg_ros.runtime.map_fusion import CameraEvidence, MapFuser
from carla_seg_ros.runtime.occupancy_grid import load_occupancy_config, project
from carla_seg_ros.runtime.odometry_buffer import AHEAD, BEHIND, JUMP, OK, OdometryBuffer, PlanarPose

CAM = sw.bridge_camera(400, 300)
MOUNTS = {"front": sw.FRONT, "rear": sw.REAR}
RATE, SECONDS = 10.0, 4.0
STEPS = int(RATE * SECONDS)


@pytest.fixture(scope="module")
def classes():
    return load_occupancy_config()


@pytest.fixture(scope="module")
def world():
    return sw.town()


@pytest.fixture(scope="module")
def frames(world):
    """[(t, pose, {camera: labels})] along the drive, rendered once for the module."""
    out = []
    for i in range(STEPS):
        t = i / RATE
        pose = sw.ego_pose(t)
        out.append((t, pose, {name: sw.render(world, CAM, m, pose, t)[0] for name, m in MOUNTS.items()}))
    return out


@pytest.fixture(scope="module")
def evidence(classes):
    return {name: CameraEvidence(CAM, m, 0.0, 60.0, 0.2, classes) for name, m in MOUNTS.items()}


def drive(frames, evidence, classes, params=FilterParams(), steps=None):
    fuser = MapFuser(LocalMap(MapSpec(), classes, params=params), OdometryBuffer(tolerance=0.05))
    for t, pose, labels in frames[:steps]:
        fuser.add_odometry(t, pose)
        for name, mask in labels.items():
            assert fuser.add_frame(t, *evidence[name].cells(mask)) == OK
    return fuser


def world_grid(local_map):
    n, res = local_map.spec.cells, local_map.spec.resolution
    xs = local_map.origin[0] + (np.arange(n) + 0.5) * res
    ys = local_map.origin[1] + (np.arange(n) + 0.5) * res
    return np.meshgrid(xs, ys)


def swept(world, x, y, t_from, t_to, margin=1.0):
    """Cells any moving box covered between t_from and t_to (grown by ``margin`` metres)."""
    out = np.zeros(x.shape, bool)
    for box in (b for b in world.boxes if b.moving):
        for t in np.arange(t_from, t_to + 1e-9, 0.05):
            x0, x1, y0, y1 = box.at(t)
            out |= (x >= x0 - margin) & (x < x1 + margin) & (y >= y0 - margin) & (y < y1 + margin)
    return out


def test_the_fused_map_matches_the_world_per_group_within_20_m(frames, evidence, classes, world):
    fuser = drive(frames, evidence, classes)
    m = fuser.map
    t, pose, _ = frames[-1]
    x, y = world_grid(m)
    truth = world.ground_truth(x, y, t)
    # The overtaking car is scored by the trail test: here only what stands still.
    near = (np.hypot(x - pose.x, y - pose.y) <= 20.0) & ~swept(world, x, y, t - m.params.decay_time, t)
    scores = {}
    for group in m.groups:
        value = m.group(group)
        scores[group] = tolerant_iou(value > 50, classes.groups[group][truth], (value >= 0) & near)
    assert all(s["tp"] >= 9 for s in scores.values()), scores      # every group is seen (pedestrian: 9 cells)
    assert all(s["iou"] >= 0.9 for s in scores.values()), scores
    occupancy = m.occupancy()
    occupied_truth = ~classes.free[truth]
    assert tolerant_iou(occupancy == 100, occupied_truth, (occupancy >= 0) & near)["iou"] >= 0.9
    assert tolerant_iou(occupancy == 0, ~occupied_truth, (occupancy >= 0) & near, 0)["iou"] >= 0.95


def test_coverage_around_the_ego_is_far_beyond_a_single_frame(frames, evidence, classes):
    fused = drive(frames, evidence, classes).map.known().sum()
    single = 0
    for _, pose, labels in frames[::8]:
        for name, mask in labels.items():
            alone = LocalMap(MapSpec(), classes)
            alone.fuse(0.0, pose, *evidence[name].cells(mask))
            single = max(single, alone.known().sum())
    assert fused >= 3 * single, (fused, single)
    assert fused * 0.04 >= 0.2 * 60 * 60          # at least a fifth of the 60 x 60 m map known after 4 s


def test_a_moving_car_leaves_no_trail_after_the_decay_time(frames, evidence, classes, world):
    """The overtaking car passes beside the ego, where neither camera sees the road it leaves: only the decay
    can clear its trail there. With a decay far longer than the drive the trail stays, so the check can fail."""
    decay = 1.0
    t, pose, _ = frames[-1]
    for decay_time, trail_expected in ((decay, False), (1000.0, True)):
        m = drive(frames, evidence, classes, FilterParams(decay_time=decay_time)).map
        x, y = world_grid(m)
        left_long_ago = swept(world, x, y, 0.0, t - decay, margin=0.0) & ~swept(world, x, y, t - decay, t)
        trail = (m.group("vehicles") > 50) & left_long_ago
        occupied = (m.occupancy() == 100) & left_long_ago & classes.free[world.ground_truth(x, y, t)]
        if trail_expected:
            assert trail.sum() >= 5, trail.sum()
        else:
            assert trail.sum() == 0 and occupied.sum() == 0, (trail.sum(), occupied.sum())


def test_an_odometry_jump_resets_the_map(frames, evidence, classes):
    fuser = drive(frames, evidence, classes, steps=10)
    assert fuser.map.known().sum() > 5000
    t = frames[9][0]
    assert fuser.add_odometry(t + 0.1, PlanarPose(500.0, 80.0, 0.0, 1.0)) == JUMP
    assert fuser.map.known().sum() == 0 and fuser.map.resets == 1 and "reset" in fuser.state
    assert fuser.add_frame(t, *evidence["front"].cells(frames[9][2]["front"])) == BEHIND     # from before the jump
    assert fuser.add_frame(t + 0.1, *evidence["front"].cells(frames[9][2]["front"])) == OK
    assert abs(fuser.map.centre[0] - 500.0) <= 0.2 and abs(fuser.map.centre[1] - 80.0) <= 0.2


def same_states(a: LocalMap, b: LocalMap) -> float:
    """Share of the cells known in either map whose occupancy state is equal, compared at the same world cell."""
    res = a.spec.resolution
    dc, dr = (int(round((b.origin[i] - a.origin[i]) / res)) for i in (0, 1))
    n = a.spec.cells
    sa, sb = a.occupancy(), b.occupancy()
    ra, rb = slice(max(dr, 0), n + min(dr, 0)), slice(max(-dr, 0), n + min(-dr, 0))
    ca, cb = slice(max(dc, 0), n + min(dc, 0)), slice(max(-dc, 0), n + min(-dc, 0))
    sa, sb = sa[ra, ca], sb[rb, cb]
    known = (sa >= 0) | (sb >= 0)
    return float((sa[known] == sb[known]).mean())


def test_late_out_of_order_and_missing_odometry(frames, evidence, classes):
    """Frames first, odometry after them and out of order: the same map as odometry first. A frame in a gap of
    the odometry is dropped and counted."""
    reference = drive(frames, evidence, classes, steps=12).map
    fuser = MapFuser(LocalMap(MapSpec(), classes), OdometryBuffer(tolerance=0.05), max_pending=8)
    order = list(range(12))
    for k in range(0, 12, 2):            # odometry of each pair of steps arrives late and swapped
        for i in (k, k + 1):
            t, _, labels = frames[i]
            fuser.add_frame(t, *evidence["front"].cells(labels["front"]))
            fuser.add_frame(t, *evidence["rear"].cells(labels["rear"]))
        for i in (k + 1, k):
            fuser.add_odometry(frames[i][0], frames[i][1])
    assert fuser.counts["frames_fused"] == 24 and fuser.counts["frames_fused_late"] >= 10
    assert fuser.counts["odometry_out_of_order"] == 6 and not fuser.pending
    # The same map as in order, up to where the grid sat when the first frame came and the clamps' rounding:
    # compare the states cell by cell in the odometry frame.
    assert same_states(fuser.map, reference) >= 0.999
    t = frames[11][0]
    assert fuser.add_frame(t + 0.04, *evidence["front"].cells(frames[11][2]["front"])) == OK   # within tolerance
    assert fuser.add_frame(t + 0.5, *evidence["front"].cells(frames[11][2]["front"])) == AHEAD
    fuser.add_odometry(t + 0.9, sw.ego_pose(t + 0.9))       # the frame at t + 0.5 sits in a gap: it waits
    assert len(fuser.pending) == 1
    fuser.add_odometry(t + 1.2, sw.ego_pose(t + 1.2))       # 0.7 s of newer odometry: given up
    assert fuser.counts["frames_dropped_gap"] == 1 and not fuser.pending and "no odometry within" in fuser.state


def test_the_map_follows_the_ego_and_keeps_what_it_saw_in_place(classes):
    m = LocalMap(MapSpec(resolution=0.2, size=40.0, recentre_distance=1.0), classes)
    xs, ys = np.array([3.05, -4.05], np.float32), np.array([2.05, 1.05], np.float32)
    codes = np.array([sw.CAR << 8 | 255, sw.BUILDING << 8 | 255])
    m.fuse(0.0, PlanarPose(100.0, 50.0, 0.0, 0.0), xs, ys, codes)
    before = m.origin
    m.fuse(0.1, PlanarPose(107.3, 46.1, 0.0, 0.0), xs[:0], ys[:0], codes[:0])     # drove off: the grid shifts
    assert m.origin != before and abs(m.centre[0] - 107.3) <= 0.11 and abs(m.centre[1] - 46.1) <= 0.11
    for wx, wy, group in ((103.05, 52.05, "vehicles"), (95.95, 51.05, "static_obstacles")):
        col = int((wx - m.origin[0]) / 0.2)
        row = int((wy - m.origin[1]) / 0.2)
        assert m.group(group)[row, col] > 50, group       # the same world cell still holds it
    assert (m.group("static_obstacles") > 50).sum() == 1


def test_the_fused_map_flickers_far_less_than_the_per_frame_grids_under_label_noise(classes):
    """A parked ego, a still street, 5 % of the pixels of every frame replaced by a random class."""
    world = sw.town(moving=False)
    pose, rate, seconds = PlanarPose(20.0, -2.0, 0.0, 0.2), 20.0, 3.0
    clean = sw.render(world, CAM, sw.FRONT, pose, 0.0)[0]
    per_frame_lookup = build_lookup(CAM, sw.FRONT, 0.0, GridSpec())
    front = CameraEvidence(CAM, sw.FRONT, 0.0, 60.0, 0.2, classes)
    m = LocalMap(MapSpec(), classes)
    rng = np.random.default_rng(3)
    per_frame, fused = [], []
    for i in range(int(rate * seconds)):
        noisy = sw.add_label_noise(clean, 0.05, rng)
        per_frame.append(project(per_frame_lookup, noisy, classes).occupancy(classes))
        m.fuse(i / rate, pose, *front.cells(noisy))
        fused.append(m.occupancy())
    settle = int(rate)                    # the first second: the map is still being built
    grid_flicker = flicker_per_second(per_frame[settle:], seconds - 1.0)
    map_flicker = flicker_per_second(fused[settle:], seconds - 1.0)
    assert grid_flicker > 0.2, grid_flicker                    # the noise does reach the per-frame grids
    assert map_flicker <= 0.1 * grid_flicker, (map_flicker, grid_flicker)


def test_cells_at_any_heading_get_evidence_without_holes(classes):
    """The vehicle-frame evidence grid is 1.5x finer than the map, so a rotated copy leaves no map cell in view
    without a source cell (at the map's own step, about a sixth of the cells at 45 degrees would stay empty)."""
    world = sw.World()                       # an endless road plane: every cell in view is seen
    front = CameraEvidence(CAM, sw.FRONT, 0.0, 60.0, 0.2, classes, max_range=15.0)
    for yaw in (0.0, 0.4, math.pi / 4, 2.0):
        pose = PlanarPose(0.37, -0.11, 0.0, yaw)
        labels = sw.render(world, CAM, sw.FRONT, pose, 0.0)[0]
        m = LocalMap(MapSpec(), classes)
        m.fuse(0.0, pose, *front.cells(labels))
        x, y = world_grid(m)
        # the cells well inside the view: 6..13 m ahead, within 30 degrees of the axis
        cx, cy = pose.to_world(np.float64(sw.FRONT.x), np.float64(0.0))
        fx, fy = math.cos(yaw), math.sin(yaw)
        along = (x - cx) * fx + (y - cy) * fy
        across = -(x - cx) * fy + (y - cy) * fx
        inner = (along >= 6) & (along <= 13) & (np.abs(across) <= 0.5 * along)
        assert m.known()[inner].all(), (yaw, int((~m.known()[inner]).sum()))
