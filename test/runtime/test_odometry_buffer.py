"""Pose at a frame's stamp from odometry samples (runtime/odometry_buffer.py): interpolation, out-of-order, late
and missing odometry, jumps and rewound clocks, against poses computed by hand."""
from __future__ import annotations

import math

import pytest

from carla_seg_ros.runtime.odometry_buffer import (ACCEPTED, AHEAD, BEHIND, DUPLICATE, GAP, INVALID, JUMP, NO_ODOMETRY,
                                                   OK, OUT_OF_ORDER, REWIND, OdometryBuffer, PlanarPose, interpolate,
                                                   yaw_of_quaternion)


def straight(t: float) -> PlanarPose:
    """10 m/s along a line at 30 degrees, turning at 0.2 rad/s."""
    return PlanarPose(10 * t * math.cos(0.5236), 10 * t * math.sin(0.5236), 0.1, 0.3 + 0.2 * t)


def close(a: PlanarPose, b: PlanarPose, tol: float = 1e-9) -> bool:
    return (abs(a.x - b.x) < tol and abs(a.y - b.y) < tol and abs(a.z - b.z) < tol
            and abs(math.remainder(a.yaw - b.yaw, 2 * math.pi)) < tol)


def test_a_stamp_between_two_samples_is_interpolated():
    buf = OdometryBuffer(tolerance=0.05)
    for t in (0.0, 0.05, 0.10):
        assert buf.add(t, straight(t)) == ACCEPTED
    pose, status = buf.pose_at(0.07)
    assert status == OK and close(pose, straight(0.07))
    pose, status = buf.pose_at(0.05)
    assert status == OK and close(pose, straight(0.05))


def test_yaw_is_interpolated_on_the_short_arc():
    a, b = PlanarPose(0, 0, 0, math.radians(179)), PlanarPose(1, 0, 0, math.radians(-179))
    mid = interpolate(a, b, 0.5)
    assert abs(abs(mid.yaw) - math.pi) < 1e-9          # through 180, not through 0


def test_quaternion_yaw():
    half = math.radians(40) / 2
    assert yaw_of_quaternion(0.0, 0.0, math.sin(half), math.cos(half)) == pytest.approx(math.radians(40))


def test_out_of_order_odometry_gives_the_same_poses_as_in_order():
    in_order, shuffled = OdometryBuffer(0.05), OdometryBuffer(0.05)
    stamps = [i * 0.05 for i in range(10)]
    for t in stamps:
        in_order.add(t, straight(t))
    answers = [shuffled.add(t, straight(t)) for t in (stamps[0], stamps[2], stamps[1], *stamps[4:], stamps[3])]
    assert answers.count(OUT_OF_ORDER) == 2
    for t in (0.01, 0.06, 0.17, 0.42):
        assert close(in_order.pose_at(t)[0], shuffled.pose_at(t)[0])
    assert shuffled.add(stamps[5], straight(stamps[5])) == DUPLICATE


def test_a_frame_ahead_of_the_odometry_waits_unless_within_the_tolerance():
    buf = OdometryBuffer(tolerance=0.05)
    assert buf.pose_at(1.0) == (None, NO_ODOMETRY)
    buf.add(0.0, straight(0.0))
    buf.add(0.05, straight(0.05))
    pose, status = buf.pose_at(0.08)                       # 30 ms past the newest: extrapolated at the last speed
    assert status == OK and close(pose, straight(0.08), 1e-6 + abs(straight(0.08).yaw - pose.yaw))
    assert abs(pose.x - straight(0.08).x) < 1e-9          # the position is linear in t, so exactly right
    assert buf.pose_at(0.2) == (None, AHEAD)               # late odometry: the caller keeps the frame
    buf.add(0.2, straight(0.2))
    assert buf.pose_at(0.125)[1] == GAP                    # 75 ms from either sample: odometry missing there
    buf.add(0.15, straight(0.15))
    assert buf.pose_at(0.125)[1] == OK


def test_history_is_bounded_and_old_frames_are_behind():
    buf = OdometryBuffer(tolerance=0.05, horizon=1.0)
    for i in range(100):
        buf.add(i * 0.05, straight(i * 0.05))
    assert len(buf) <= 21 and buf.stamps[0] >= 4.95 - 1.0
    assert buf.pose_at(1.0) == (None, BEHIND)


def test_a_jump_or_a_rewound_clock_empties_the_buffer():
    buf = OdometryBuffer(tolerance=0.05, jump_distance=5.0, max_speed=70.0)
    buf.add(0.0, straight(0.0))
    buf.add(0.05, straight(0.05))
    assert buf.add(0.10, PlanarPose(300.0, -40.0)) == JUMP      # teleport: 300 m in 50 ms
    assert len(buf) == 1 and buf.pose_at(0.05)[1] == BEHIND
    assert buf.add(0.15, PlanarPose(300.5, -40.0)) == ACCEPTED
    assert buf.add(10.0, PlanarPose(301.0, -40.0)) == ACCEPTED  # a long gap with little motion is no jump
    assert buf.add(2.0, PlanarPose(0.0, 0.0)) == REWIND          # 8 s back: a restarted clock
    assert len(buf) == 1
    assert buf.add(float("nan"), PlanarPose(0, 0)) == INVALID
