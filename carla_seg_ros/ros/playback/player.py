"""The CARLA ROS bridge stand-in: publishes camera frames RELIABLE / KEEP_LAST 10 and proves the node is ready."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from carla_seg_ros.ros.playback.node_process import READY_TIMEOUT_S, NodeFailed, NodeProcess
from carla_seg_ros.ros.playback.messages import camera_info_message, set_stamp
from carla_seg_ros.ros.playback.recorder import ReplyRecorder

CAMERA_TOPIC = "/carla/ego_vehicle/rgb_front/image"
CAMERA_INFO_TOPIC = "/carla/ego_vehicle/rgb_front/camera_info"
ODOMETRY_TOPIC = "/carla/ego_vehicle/odometry"
CAMERA_FRAME_ID = "ego_vehicle/rgb_front"
BRIDGE_DEPTH = 10           # the CARLA ROS bridge's camera publisher: RELIABLE, KEEP_LAST 10
WARMUP_REPLIES = 3


class Player(ReplyRecorder):
    """Publishes frames on the camera topic and records the replies (see ReplyRecorder).

    ``send`` may be called from the main thread while the subscriptions are served by a background executor.
    With ``camera_info_topic``, each frame is preceded by a CameraInfo of its size with the same header, as the
    bridge publishes them (FOV ``fov_deg``). With ``odometry_topic``, each frame is preceded by an odometry of the
    same stamp, the vehicle driving straight along x at ``speed`` m/s (seg_node's local map).
    """

    def __init__(self, topic: str = CAMERA_TOPIC, frame_id: str = CAMERA_FRAME_ID, name: str = "carla_seg_player",
                 domain_id: int | None = None, camera_info_topic: str | None = None, fov_deg: float = 90.0,
                 odometry_topic: str | None = None, speed: float = 10.0):
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        super().__init__(name, domain_id)
        self.frame_id = frame_id
        bridge_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=BRIDGE_DEPTH,
                                reliability=ReliabilityPolicy.RELIABLE)
        self.pub = self.node.create_publisher(Image, topic, bridge_qos)
        self.fov_deg = fov_deg
        self._infos: dict[tuple[int, int], object] = {}
        self.info_pub = None
        if camera_info_topic:
            from sensor_msgs.msg import CameraInfo
            self.info_pub = self.node.create_publisher(CameraInfo, camera_info_topic, bridge_qos)
        self.odom_pub, self.speed, self._first_key = None, speed, None
        if odometry_topic:
            from nav_msgs.msg import Odometry
            self.odom_pub = self.node.create_publisher(Odometry, odometry_topic, bridge_qos)
            self._odometry = Odometry()
            self._odometry.header.frame_id, self._odometry.child_frame_id = "map", "ego_vehicle"
            self._odometry.pose.pose.orientation.w = 1.0

    # ----------------------------------------------------------------------- sending

    def image_message(self, bgra: np.ndarray):
        from carla_seg_ros.image_codec import to_image
        msg = to_image(bgra, "bgra8")
        msg.header.frame_id = self.frame_id
        return msg

    def send(self, msg, key: int, warmup: bool = False) -> None:
        """Publish ``msg`` stamped ``key`` (ns); the message object may be reused, rclpy serialises it right away."""
        set_stamp(msg.header.stamp, key)
        if self.info_pub is not None:
            size = (msg.width, msg.height)
            if size not in self._infos:
                self._infos[size] = camera_info_message(msg.width, msg.height, self.fov_deg, self.frame_id)
            info = self._infos[size]
            set_stamp(info.header.stamp, key)
            self.info_pub.publish(info)
        if self.odom_pub is not None:
            self._first_key = key if self._first_key is None else self._first_key
            set_stamp(self._odometry.header.stamp, key)
            self._odometry.pose.pose.position.x = self.speed * (key - self._first_key) * 1e-9
            self._odometry.twist.twist.linear.x = self.speed
            self.odom_pub.publish(self._odometry)
        with self._lock:
            if warmup:
                self.warmup_sent.add(key)
            else:
                self.sent[key] = time.time()
        self.pub.publish(msg)

    # ----------------------------------------------------------------------- readiness and draining

    def wait_ready(self, process: NodeProcess, warmup_msg, timeout: float = READY_TIMEOUT_S,
                   warmup_replies: int = WARMUP_REPLIES, status: Callable[[str], None] | None = None) -> float:
        """Block until the node answers; returns the seconds it took. Raises NodeFailed with the reason.

        1. every required output publisher is in the graph, subscribed with a matching QoS and matched;
        2. the node's input subscription has matched our publisher;
        3. ``warmup_replies`` warm-up frames came back on the first stream (proves the whole pipeline, model loaded).
        """
        start = time.monotonic()
        deadline = start + timeout
        say = status or (lambda _msg: None)
        say(f"waiting for {process.label} to start")
        while True:
            process.check()
            self._subscribe_pending()
            missing = self._missing()
            if not missing:
                break
            if time.monotonic() > deadline:
                raise NodeFailed(f"{process.label} not ready after {timeout:.0f} s: waiting for "
                                 f"{', '.join(missing)}\n--- node log ---\n{process.tail()}")
            time.sleep(0.05)
        say(f"{process.label} matched; warming up")
        primary = self.streams[0]
        next_send = 0.0
        while primary.warmup_replies < warmup_replies:
            process.check()
            now = time.monotonic()
            if now > deadline:
                raise NodeFailed(f"{process.label} matched but returned {primary.warmup_replies} of "
                                 f"{warmup_replies} warm-up frames within {timeout:.0f} s on {primary.topic}"
                                 f"\n--- node log ---\n{process.tail()}")
            if now >= next_send:
                self.send(warmup_msg, time.time_ns(), warmup=True)
                next_send = now + 0.25
            time.sleep(0.01)
        time.sleep(0.5)   # let the last warm-up replies drain before the measured frames
        return time.monotonic() - start

    def _missing(self) -> list[str]:
        missing = [f"publisher {s.topic}" for s in [*self.streams, *self.latest]
                   if s.required and s.subscription is None]
        missing += [f"match on {s.topic}" for s in [*self.streams, *self.latest]
                    if s.required and s.subscription is not None and s.subscription.get_publisher_count() < 1]
        if self.pub.get_subscription_count() < 1:
            missing.append(f"a subscriber on {self.pub.topic_name}")
        return missing
