"""Shared by the shutdown, lifecycle and multi-camera tests: a seg_node subprocess and a test-side rclpy node.

Real rclpy over Fast DDS on loopback, ROS_DOMAIN_ID 42 (these tests' own domain).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from carla_seg_ros import image_codec

REPO = Path(__file__).resolve().parents[2]
DOMAIN_ID = 42
BRIDGE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)


def node_env() -> dict:
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID))
    env.pop("PYTHONUNBUFFERED", None)      # the node must flush its own output
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


def start_node(log: Path, *ros_args: str, managed: bool = False) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "carla_seg_ros.ros.seg_node", *(["--managed"] if managed else []), "--ros-args",
           "--params-file", str(REPO / "config" / "seg.yaml"), *ros_args]
    with open(log, "w") as out:
        # Its own process group, so a test can signal the whole group like a terminal's Ctrl-C does.
        return subprocess.Popen(cmd, env=node_env(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def stop_node(proc: subprocess.Popen, timeout: float = 20.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"seg_node exited (rc {proc.returncode}) while waiting for {what}:\n"
                                 + (log.read_text()[-3000:] if log else ""))
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}"
                         + (f"\nnode log:\n{log.read_text()[-3000:]}" if log else ""))


class Probe:
    """Camera publishers and output recorders in a context of its own, spun in a background thread."""

    def __init__(self, name: str = "seg_test_probe"):
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=DOMAIN_ID)
        self.node = rclpy.create_node(name, context=self.context)
        self.lock = threading.Lock()
        self.received: dict[str, dict] = {}          # output topic -> {stamp ns: (frame_id, width, height)}
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - the context is shut down at teardown
            pass

    def camera(self, topic: str):
        return self.node.create_publisher(Image, topic, BRIDGE_QOS)

    def record(self, topic: str):
        self.received.setdefault(topic, {})

        def cb(msg):
            key = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            with self.lock:
                self.received[topic][key] = (msg.header.frame_id, msg.width, msg.height)
        return self.node.create_subscription(Image, topic, cb, 10)

    @staticmethod
    def frame(width: int, height: int, frame_id: str, stamp_ns: int, seed: int = 0) -> Image:
        rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)
        header = Header(frame_id=frame_id)
        header.stamp.sec, header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        return image_codec.to_image(image_codec.from_rgb(rgb, "bgra8"), "bgra8", header)

    def got(self, topic: str) -> dict:
        with self.lock:
            return dict(self.received.get(topic, {}))

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


class FramePublisher:
    """Publishes one RGB frame as bgra8 on ``camera`` at ``rate`` Hz from a thread of its own, stamps advancing
    like a camera's, until ``stop()`` (a camera stream for tests that act on the node while frames flow)."""

    def __init__(self, camera, rgb: np.ndarray, rate: float = 20.0, first_stamp_s: int = 100):
        self.camera, self.rate, self.sent = camera, rate, 0
        self._data = image_codec.from_rgb(rgb, "bgra8")
        self._first = first_stamp_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        period_ns = int(1e9 / self.rate)
        while not self._stop.is_set():
            stamp = self._first * 10**9 + self.sent * period_ns
            header = Header(frame_id="cam")
            header.stamp.sec, header.stamp.nanosec = divmod(stamp, 10**9)
            self.camera.publish(image_codec.to_image(self._data, "bgra8", header))
            self.sent += 1
            time.sleep(1.0 / self.rate)

    def start(self) -> "FramePublisher":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
