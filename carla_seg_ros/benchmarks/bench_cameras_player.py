"""The bridge stand-in for `bench cameras`: one publisher per camera topic, readiness of several node processes."""
from __future__ import annotations

import time

from carla_seg_ros.ros.playback import BRIDGE_DEPTH, NodeFailed, ReplyRecorder


class MultiPlayer(ReplyRecorder):
    """Publishes on several camera topics; ``sent`` (all cameras, for the recorder) and ``sent_by_camera``."""

    def __init__(self, topics: list[str], name: str = "bench_cameras_player"):
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        super().__init__(name)
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=BRIDGE_DEPTH, reliability=ReliabilityPolicy.RELIABLE)
        self.pubs = [self.node.create_publisher(Image, topic, qos) for topic in topics]
        self.sent_by_camera: list[dict] = [{} for _ in topics]

    def newest_sent(self, stream) -> int | None:
        """Stream i carries camera i's replies (bench cameras watches the outputs in camera order)."""
        cam = self.streams.index(stream)
        with self._lock:
            keys = self.sent_by_camera[cam] if cam < len(self.sent_by_camera) else {}
            return max(keys) if keys else None

    @staticmethod
    def image_message(bgra):
        from carla_seg_ros.image_codec import to_image
        msg = to_image(bgra, "bgra8")
        msg.header.frame_id = "bench_camera"
        return msg

    def send_camera(self, cam: int, msg, key: int, warmup: bool = False) -> None:
        from carla_seg_ros.ros.playback import set_stamp
        set_stamp(msg.header.stamp, key)
        with self._lock:
            if warmup:
                self.warmup_sent.add(key)
            else:
                self.sent[key] = self.sent_by_camera[cam][key] = time.time()
        self.pubs[cam].publish(msg)

    def wait_all_ready(self, procs: list, warmup_msg, timeout: float, replies: int = 2) -> float:
        """Every output matched, every camera subscribed, then ``replies`` warm-up answers on every output."""
        start = time.monotonic()
        deadline = start + timeout

        def check(what: str):
            for proc in procs:
                proc.check()
            if time.monotonic() > deadline:
                raise NodeFailed(f"not ready after {timeout:.0f} s: {what}\n{procs[0].tail()}")

        while True:
            self._subscribe_pending()
            missing = [s.topic for s in self.streams if s.subscription is None
                       or s.subscription.get_publisher_count() < 1]
            missing += [p.topic_name for p in self.pubs if p.get_subscription_count() < 1]
            if not missing:
                break
            check(f"waiting for {', '.join(missing)}")
            time.sleep(0.05)
        next_send = 0.0
        while min(s.warmup_replies for s in self.streams) < replies:
            check("warm-up frames unanswered")
            if time.monotonic() >= next_send:
                now = time.time_ns()
                for cam in range(len(self.pubs)):
                    self.send_camera(cam, warmup_msg, now + cam, warmup=True)
                next_send = time.monotonic() + 0.3
            time.sleep(0.01)
        time.sleep(0.5)
        return time.monotonic() - start
