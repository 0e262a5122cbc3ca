"""seg_node shuts down cleanly however many SIGINTs it gets (a terminal's Ctrl-C and `ros2 launch` both signal the
process group): exit code 0, no traceback, its last log line written. Real node, real DDS, frames in flight."""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

pytest.importorskip("rclpy", reason="ROS 2 wheels (extra `ros`) are not installed")
from seg_probe import Probe, start_node, wait_for  # noqa: E402

TOPIC = "/shutdown_test/camera/image"


@pytest.fixture(scope="module")
def probe():
    p = Probe("shutdown_probe")
    yield p
    p.close()


# The managed node shares the shutdown path (ros/shutdown.run_node); its two-signal case covers it.
@pytest.mark.parametrize("managed, signals", [(False, 1), (False, 2), (False, 3), (True, 2)],
                         ids=["plain-1", "plain-2", "plain-3", "managed-2"])
def test_repeated_sigint_exits_cleanly(probe, tmp_path, signals, managed):
    log = tmp_path / "node.log"
    proc = start_node(log, "-r", f"image:={TOPIC}", managed=managed)
    camera = probe.camera(TOPIC)
    stop = threading.Event()
    streamer = None
    try:
        if managed:
            wait_for(lambda: "waiting in state unconfigured" in log.read_text(), 90, "the managed node", proc, log)
        else:
            wait_for(lambda: camera.get_subscription_count() >= 1, 90, "the camera subscription", proc, log)

            def stream():        # keep the inference thread busy while the signals arrive
                i = 0
                while not stop.is_set():
                    camera.publish(probe.frame(320, 240, "cam", time.time_ns(), seed=i))
                    i += 1
                    time.sleep(0.03)
            streamer = threading.Thread(target=stream, daemon=True)
            streamer.start()
            time.sleep(1.0)
        for _ in range(signals):
            os.killpg(proc.pid, signal.SIGINT)
            time.sleep(0.02)
        rc = proc.wait(timeout=30)
    finally:
        stop.set()
        if streamer is not None:
            streamer.join(timeout=5.0)     # before its publisher goes: no publish on a destroyed handle
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        probe.node.destroy_publisher(camera)
    text = log.read_text()
    assert rc == 0, f"exit code {rc}:\n{text}"
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    assert "SIGINT: shutting down" in text, text      # the last log line made it out (output flushed)
