"""The process and host readings behind `bench soak` / `bench fuzz`, and the soak's timeline arithmetic."""
from __future__ import annotations

import os

from carla_seg_ros.benchmarks.bench_soak import arrival_step, timeline
from carla_seg_ros.benchmarks.endurance import cpu_seconds, host_cpu_ticks, steal_fraction


def test_cpu_seconds_grows_with_work():
    before = cpu_seconds([os.getpid()])
    sum(i * i for i in range(2_000_000))
    assert cpu_seconds([os.getpid()]) > before


def test_host_ticks_grow_and_steal_is_a_share():
    before = host_cpu_ticks()
    if before is None:
        return                                  # no /proc/stat: nothing to read (the soak prints '-')
    sum(i * i for i in range(2_000_000))
    after = host_cpu_ticks()
    assert after[0] > before[0] and after[1] >= before[1]
    assert 0.0 <= steal_fraction(before, after) <= 1.0
    assert steal_fraction(after, before) is None and steal_fraction(None, after) is None
    assert steal_fraction((100, 10), (200, 35)) == 0.25


class _Player:
    """What timeline() reads of a Player: ``sent`` and its lock."""

    def __init__(self, sent):
        import threading
        self.sent, self._lock = sent, threading.Lock()


class _Stream:
    def __init__(self, received):
        self.received = received


def _run(late_from: int, cpu_late: float):
    """Four stretches of 10 frames, 20 ms each until ``late_from``, 100 ms after, node CPU per stretch."""
    keys = list(range(40))
    sent = {k: k * 0.05 for k in keys}
    received = {k: sent[k] + (0.1 if k >= late_from else 0.02) for k in keys if k != 5}
    cpus = [0.0, 0.5, 1.0, 1.5, 1.5 + 0.5 * cpu_late]
    checkpoints = [{"frame": 10 * i, "t": 0.5 * i, "node_cpu_s": cpus[i], "host": (100 * i, 0)} for i in range(5)]
    return timeline(_Player(sent), _Stream(received), keys, checkpoints)


def test_timeline_rows_cover_every_frame_once():
    rows = _run(late_from=30, cpu_late=1.0)
    assert [(r["first_frame"], r["end_frame"]) for r in rows] == [(0, 10), (10, 20), (20, 30), (30, 40)]
    assert [r["answered"] for r in rows] == [9, 10, 10, 10] and all(r["sent"] == 10 for r in rows)
    assert abs(rows[0]["p50"] - 20.0) < 1e-6 and abs(rows[3]["p50"] - 100.0) < 1e-6
    assert rows[0]["node_cpu"] == 1.0 and rows[3]["t_s"] == 2.0 and rows[0]["steal"] == 0.0


def test_late_frames_with_an_idle_node_are_called_a_transport_step():
    assert arrival_step(_run(late_from=30, cpu_late=0.5))["first_frame"] == 30
    # the same latency step with the node working as hard as before is not blamed on arrival
    assert arrival_step(_run(late_from=30, cpu_late=1.0)) is None
    assert arrival_step(_run(late_from=99, cpu_late=0.5)) is None


class _Closable:
    """What node_run touches on the node process and the player: ``alive`` and ``close()``."""

    def __init__(self, alive=True):
        self.alive, self.closed = alive, False

    def close(self):
        self.closed = True


def test_node_run_records_a_node_failure_and_always_closes():
    import pytest

    from carla_seg_ros.ros.playback import NodeFailed
    from carla_seg_ros.benchmarks.endurance import node_run

    report, proc, player = {}, _Closable(alive=False), _Closable()
    with node_run(report, proc, player):
        raise NodeFailed("seg_node exited with code 1")
    assert report == {"error": "seg_node exited with code 1", "alive_at_end": False}
    assert proc.closed and player.closed

    report, proc, player = {}, _Closable(), _Closable()
    with pytest.raises(KeyboardInterrupt):          # anything else still propagates, after closing
        with node_run(report, proc, player):
            raise KeyboardInterrupt
    assert report == {"alive_at_end": True} and proc.closed and player.closed
