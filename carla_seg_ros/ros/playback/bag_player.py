"""Replaying rosbag2 recordings over DDS on a schedule the caller controls (a `ros2 bag play` stand-in for tests).

Messages are read with rosbags and handed to rclpy as the very CDR bytes of the bag
(``rclpy.serialization.deserialize_message``), so what is published is exactly what was recorded. The caller
decides the order: e.g. the ground truth of frame i, then the mask of frame i - 3, to play a pipeline that is three
frames late. ``/clock`` is published by ``clock(ns)`` like the CARLA bridge does in synchronous mode.
"""
from __future__ import annotations

import time

MSG_TYPES = {"sensor_msgs/msg/Image": ("sensor_msgs.msg", "Image"),
             "sensor_msgs/msg/CameraInfo": ("sensor_msgs.msg", "CameraInfo"),
             "rosgraph_msgs/msg/Clock": ("rosgraph_msgs.msg", "Clock"),
             "nav_msgs/msg/Odometry": ("nav_msgs.msg", "Odometry")}


def _msg_class(msgtype: str):
    import importlib
    module, name = MSG_TYPES[msgtype]
    return getattr(importlib.import_module(module), name)


def read_bag(path, topics: list[str]) -> dict[str, list]:
    """{topic: [rclpy message, ...]} in bag order for ``topics`` (raises KeyError naming a missing topic)."""
    from rclpy.serialization import deserialize_message

    from carla_seg_ros.evaluation.bag_reading import open_bag
    reader = open_bag(path)
    try:
        present = {c.topic: c.msgtype for c in reader.connections}
        missing = [t for t in topics if t not in present]
        if missing:
            raise KeyError(f"{path} has no topic {', '.join(missing)}; it has {', '.join(sorted(present))}")
        out = {t: [] for t in topics}
        conns = [c for c in reader.connections if c.topic in out]
        for conn, _, raw in reader.messages(connections=conns):
            out[conn.topic].append(deserialize_message(bytes(raw), _msg_class(conn.msgtype)))
    finally:
        reader.close()
    return out


class BagPlayer:
    """Publishers for replayed topics (RELIABLE, KEEP_LAST ``depth``, like the bridge) and for /clock."""

    def __init__(self, name: str = "carla_seg_bag_player", domain_id: int | None = None, depth: int = 10,
                 clock_topic: str = "/clock"):
        import rclpy
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from rosgraph_msgs.msg import Clock
        from rclpy.signals import SignalHandlerOptions

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(name, context=self.context)
        self.qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.RELIABLE)
        self.pubs = {}
        self.clock_pub = self.node.create_publisher(Clock, clock_topic, 10)
        self._Clock = Clock
        from rclpy.executors import SingleThreadedExecutor
        # One executor for everything the caller spins on this node (a node belongs to one executor at a time).
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def publisher(self, topic: str, msg_type):
        if topic not in self.pubs:
            self.pubs[topic] = self.node.create_publisher(msg_type, topic, self.qos)
        return self.pubs[topic]

    def publish(self, topic: str, msg) -> None:
        self.publisher(topic, type(msg)).publish(msg)

    def clock(self, ns: int) -> None:
        msg = self._Clock()
        msg.clock.sec, msg.clock.nanosec = divmod(int(ns), 1_000_000_000)
        self.clock_pub.publish(msg)

    def wait_subscribed(self, topics: list[str], timeout: float = 30.0, check=None) -> None:
        """Block until every topic's publisher (and /clock's) has a subscriber; ``check()`` may raise meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            waiting = [t for t in topics if self.pubs[t].get_subscription_count() == 0]
            if self.clock_pub.get_subscription_count() == 0:
                waiting.append(self.clock_pub.topic_name)
            if not waiting:
                return
            if check is not None:
                check()
            if time.monotonic() > deadline:
                raise TimeoutError(f"no subscriber on {', '.join(waiting)} after {timeout:.0f} s")
            time.sleep(0.05)

    def call_trigger(self, service: str, timeout: float = 30.0):
        """Call a std_srvs/Trigger service; returns the response (TimeoutError if it does not answer)."""
        from std_srvs.srv import Trigger
        client = self.node.create_client(Trigger, service)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise TimeoutError(f"service {service} not available after {timeout:.0f} s")
            future = client.call_async(Trigger.Request())
            self.executor.spin_until_future_complete(future, timeout_sec=timeout)
            if not future.done():
                raise TimeoutError(f"service {service} did not answer within {timeout:.0f} s")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        import rclpy
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
