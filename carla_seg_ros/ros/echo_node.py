"""echo_node: the transport floor for `carla-seg bench node`.

Subscribes ``image`` exactly as seg_node does (same QoS parameters, with seg_node's own defaults, so the two cannot
drift apart) and republishes the first channel of every frame as a mono8 image of the same size, with the same
header, on ``~/mask``. Whatever latency it shows is DDS transport, serialisation and rclpy overhead; seg_node's
latency above it is the segmentation pipeline itself.

    python -m carla_seg_ros.ros.echo_node --ros-args -r image:=/carla/ego_vehicle/rgb_front/image
"""
from __future__ import annotations

import sys

import numpy as np

from carla_seg_ros.image_codec import ImageRejected, mono8, pixels

QOS_PARAMETERS = ("qos_reliability", "qos_depth")


def first_channel(msg) -> np.ndarray:
    """(H, W) uint8: the frame's first channel, one contiguous copy (what goes on the wire)."""
    return np.ascontiguousarray(pixels(msg)[..., 0])


def main(args=None) -> int:
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.node import Node
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from carla_seg_ros.ros.seg_node import PARAMETERS_BY_NAME

    class EchoNode(Node):
        def __init__(self):
            super().__init__("echo_node")
            # seg_node's own declarations (default, description, range) for the QoS it subscribes with
            p = {name: self.declare_parameter(name, PARAMETERS_BY_NAME[name].default,
                                              PARAMETERS_BY_NAME[name].descriptor()).value
                 for name in QOS_PARAMETERS}
            reliability, depth = p["qos_reliability"], p["qos_depth"]
            choices = PARAMETERS_BY_NAME["qos_reliability"].choices
            if reliability not in choices:
                raise ValueError(f"parameter qos_reliability: {reliability!r} is not one of {', '.join(choices)}")
            qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                             reliability=ReliabilityPolicy.RELIABLE if reliability == "reliable"
                             else ReliabilityPolicy.BEST_EFFORT)
            self.pub = self.create_publisher(Image, "~/mask", 10)
            self.sub = self.create_subscription(Image, "image", self.on_image, qos)
            self.rejected = 0
            self.get_logger().info(f"echoing {self.sub.topic_name} -> {self.pub.topic_name} "
                                   f"(qos {reliability}, depth {depth})")

        def on_image(self, msg) -> None:
            try:
                mask = first_channel(msg)
            except ImageRejected as exc:
                self.rejected += 1
                self.get_logger().warning(f"rejected image ({exc.reason}): {exc.message}", throttle_duration_sec=5.0)
                return
            self.pub.publish(mono8(mask, msg.header))

    rclpy.init(args=args)
    node = None
    try:
        node = EchoNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, rclpy.exceptions.ParameterException) as exc:   # bad value, type or range
        print(f"echo_node: {exc}", file=sys.stderr)
        return 2
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
