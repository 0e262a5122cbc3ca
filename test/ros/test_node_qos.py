"""How many CARLA-sized frames a subscription receives, per QoS: the measurement behind seg_node's default QoS.

A separate publisher process plays the CARLA ROS bridge (800x600 bgra8, RELIABLE, KEEP_LAST 10, 20 Hz); this
process subscribes with the QoS under test and counts distinct frames. Run it by hand for the full table:

    .venv/bin/python test/test_node_qos.py                       # all QoS variants, 100 frames each
    .venv/bin/python test/test_node_qos.py --frames 200 --only reliable:1

As a test it checks the node's default subscription QoS (config/seg.yaml) receives >= 99 % of the frames.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOMAIN_ID = "41"
WIDTH, HEIGHT = 800, 600
TOPIC = "/carla/ego_vehicle/rgb_front/image"


def _bridge_qos():
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)


def publish(frames: int, rate: float, wait_s: float = 10.0) -> int:
    """The bridge stand-in: waits for a subscriber, sends ``frames`` bgra8 frames at ``rate``, lingers for resends."""
    import numpy as np
    import rclpy

    from carla_seg_ros.image_codec import to_image

    rclpy.init()
    node = rclpy.create_node("qos_probe_publisher")
    pub = node.create_publisher(__import__("sensor_msgs.msg", fromlist=["Image"]).Image, TOPIC, _bridge_qos())
    deadline = time.monotonic() + wait_s
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    time.sleep(0.5)  # discovery of the reader's locators settles after the match
    rng = np.random.default_rng(0)
    image = to_image(rng.integers(0, 255, (HEIGHT, WIDTH, 4), np.uint8), "bgra8")
    image.header.frame_id = "camera"
    start = time.monotonic()
    for i in range(frames):
        target = start + i / rate
        while time.monotonic() < target:
            time.sleep(min(0.002, max(0.0, target - time.monotonic())))
        image.header.stamp.sec, image.header.stamp.nanosec = i, 0   # the frame index travels in the stamp
        pub.publish(image)
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    node.destroy_node()
    rclpy.shutdown()
    return 0


def measure(reliability: str, depth: int, frames: int = 100, rate: float = 20.0, pub_env: dict | None = None,
            sub_env: dict | None = None) -> dict:
    """Run a bridge-like publisher process against a subscription with the given QoS; count what arrives.

    ``pub_env`` / ``sub_env``: extra environment for the publisher process / this (subscribing) process, e.g.
    FASTRTPS_DEFAULT_PROFILES_FILE or FASTDDS_BUILTIN_TRANSPORTS.
    """
    import rclpy
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    env = dict(os.environ, **(pub_env or {}))
    env.setdefault("ROS_DOMAIN_ID", DOMAIN_ID)
    saved = dict(os.environ)
    os.environ["ROS_DOMAIN_ID"] = env["ROS_DOMAIN_ID"]
    os.environ.update(sub_env or {})  # Fast DDS reads its environment when the participant is created
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("qos_probe_subscriber", context=context)
    got: set[int] = set()
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                     reliability=ReliabilityPolicy.RELIABLE if reliability == "reliable"
                     else ReliabilityPolicy.BEST_EFFORT)
    node.create_subscription(Image, TOPIC, lambda m: got.add(m.header.stamp.sec), qos)
    proc = subprocess.Popen([sys.executable, __file__, "--publish", "--frames", str(frames), "--rate", str(rate)],
                            env=env)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        while proc.poll() is None:
            executor.spin_once(timeout_sec=0.05)
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)
    finally:
        proc.kill()
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
        os.environ.clear()
        os.environ.update(saved)
    return {"qos": f"{reliability}:{depth}", "sent": frames, "received": len(got),
            "fraction": len(got) / frames, "publisher_rc": proc.returncode}


VARIANTS = ("best_effort:1", "best_effort:10", "reliable:1", "reliable:2", "reliable:5", "reliable:10")


def _default_qos() -> tuple[str, int]:
    import yaml
    params = yaml.safe_load((ROOT / "config" / "seg.yaml").read_text())["/**"]["ros__parameters"]
    return params["qos_reliability"], int(params["qos_depth"])


def test_default_qos_receives_99_percent_of_bridge_frames():
    pytest.importorskip("rclpy")
    reliability, depth = _default_qos()
    result = measure(reliability, depth, frames=60)
    print(result)
    assert result["publisher_rc"] == 0
    assert result["fraction"] >= 0.99, result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--only", action="append", help="reliability:depth, e.g. best_effort:1 (repeatable)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per variant")
    parser.add_argument("--sub-env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment of the subscriber only (e.g. FASTRTPS_DEFAULT_PROFILES_FILE=config/x.xml)")
    parser.add_argument("--pub-env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment of the publisher process only")
    parser.add_argument("--publish", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.publish:
        return publish(args.frames, args.rate)
    for variant in args.only or VARIANTS:
        reliability, depth = variant.split(":")
        for _ in range(args.repeat):
            r = measure(reliability, int(depth), args.frames, args.rate,
                        pub_env=dict(e.split("=", 1) for e in args.pub_env),
                        sub_env=dict(e.split("=", 1) for e in args.sub_env))
            print(f"{r['qos']:<16} received {r['received']:>4}/{r['sent']}  ({100 * r['fraction']:.1f} %)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
