"""`carla-seg carla --ros client`: this process publishes each tick as the CARLA ROS bridge would.

Topics: the camera pair (``/carla/<role>/<camera>/image`` bgra8, the semantic camera in palette colours, and
``.../camera_info``), the depth camera with ``--depth`` (``/carla/<role>/depth_front/image`` 32FC1 metres and its
camera_info), the ego vehicle's odometry (``/carla/<role>/odometry``, nav_msgs/Odometry, frame ``map``, child
``<role>``) and ``/clock``. Every message of a tick carries the tick's simulation time.
"""
from __future__ import annotations

from carla_seg_ros.simulator import carla_sensors as cs
from carla_seg_ros.simulator.carla_frames import depth_image_msg, depth_metres, odometry_msg


class BridgePublisher:
    """--ros client: the bridge's topics for the cameras and the ego vehicle, plus /clock."""

    def __init__(self, role: str, width: int, height: int, fov: float, coding: str, depth: bool = False):
        import rclpy
        from nav_msgs.msg import Odometry
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import CameraInfo, Image

        rclpy.init()
        self.node = rclpy.create_node("carla_seg_carla_client")
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.topics = cs.topic_names(role, depth)
        self.pubs = {k: self.node.create_publisher(CameraInfo if k.endswith("_info") else Image, t, qos)
                     for k, t in self.topics.items() if k != "clock"}
        self.odometry = self.node.create_publisher(Odometry, cs.odometry_topic(role), qos)
        self.clock = self.node.create_publisher(Clock, "/clock", 10)
        self.Clock = Clock
        self.role, self.size, self.fov, self.coding = role, (width, height), fov, coding

    def publish(self, stamp: int, rgb_raw, semantic_raw, ego=None, depth_raw=None) -> None:
        """One tick: raw CARLA buffers (BGRA), the ego vehicle's EgoState (None: no odometry this tick, e.g. the
        actor is gone) and the depth camera's raw buffer (None without --depth)."""
        w, h = self.size
        clock = self.Clock()
        clock.clock.sec, clock.clock.nanosec = divmod(stamp, 10**9)
        self.clock.publish(clock)
        if ego is not None:
            self.odometry.publish(odometry_msg(ego, stamp, self.role))
        for key, name, bgra in (("rgb", cs.RGB, cs.bgra_array(rgb_raw, w, h)),
                                ("semantic", cs.SEMANTIC,
                                 cs.semantic_to_palette(cs.bgra_array(semantic_raw, w, h), self.coding))):
            frame_id = f"{self.role}/{name}"
            self.pubs[key].publish(cs.image_msg(bgra, stamp, frame_id))
            self.pubs[f"{key}_info"].publish(cs.camera_info_msg(w, h, self.fov, stamp, frame_id))
        if depth_raw is not None and "depth" in self.pubs:
            frame_id = f"{self.role}/{cs.DEPTH}"
            self.pubs["depth"].publish(depth_image_msg(depth_metres(cs.bgra_array(depth_raw, w, h)), stamp,
                                                       frame_id))
            self.pubs["depth_info"].publish(cs.camera_info_msg(w, h, self.fov, stamp, frame_id))

    def close(self) -> None:
        import rclpy
        self.node.destroy_node()
        rclpy.try_shutdown()
