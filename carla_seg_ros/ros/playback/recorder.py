"""Record what a node under test publishes back: one rclpy node in a context of its own, served by a background
executor, subscribing each output topic once its publisher appears (with a QoS that matches it)."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from carla_seg_ros.ros.playback.messages import latency_stats, stamp_key

if TYPE_CHECKING:
    from carla_seg_ros.ros.playback.node_process import NodeProcess


@dataclass
class Stream:
    """Replies on one stamped output topic, keyed by header stamp."""
    topic: str
    msg_type: type
    on_message: Callable | None = None     # (stamp_key, msg, receive_wall_time) for the measured frames only
    required: bool = True
    received: dict = field(default_factory=dict)   # stamp key -> wall time of first arrival
    duplicates: int = 0
    warmup_replies: int = 0
    unexpected: int = 0
    subscription: object = None


@dataclass
class Latest:
    """The last message on an unstamped topic (label_info, diagnostics)."""
    topic: str
    msg_type: type
    required: bool = False
    message: object = None
    count: int = 0
    subscription: object = None


class ReplyRecorder:
    """Subscriptions and bookkeeping of the frames sent and the replies received, keyed by header stamp.

    Subclasses publish the frames and note them in ``sent`` (measured) or ``warmup_sent`` under ``_lock``.
    """

    def __init__(self, name: str, domain_id: int | None = None):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        self.context = rclpy.Context()
        # No rclpy signal handlers: Ctrl-C stays a KeyboardInterrupt, so the callers' `finally` stops the node.
        rclpy.init(context=self.context, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(name, context=self.context)
        self.sent: dict[int, float] = {}
        self.warmup_sent: set[int] = set()
        self.streams: list[Stream] = []
        self.latest: list[Latest] = []
        self._lock = threading.Lock()
        self._running = True
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, name="player-executor", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self._running and self.context.ok():
            try:
                self._executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - shutdown races while closing
                if self._running:
                    raise

    # ----------------------------------------------------------------------- topics

    def watch(self, topic: str, msg_type: type, on_message: Callable | None = None, required: bool = True) -> Stream:
        """Record replies on a stamped topic; the subscription is made once the node's publisher shows up."""
        stream = Stream(topic, msg_type, on_message, required)
        self.streams.append(stream)
        return stream

    def watch_latest(self, topic: str, msg_type: type, required: bool = False) -> Latest:
        latest = Latest(topic, msg_type, required)
        self.latest.append(latest)
        return latest

    def _publisher_qos(self, topic: str):
        """A subscription QoS compatible with the publisher already on ``topic`` (None while there is none)."""
        from rclpy.qos import HistoryPolicy, QoSProfile
        infos = self.node.get_publishers_info_by_topic(topic)
        if not infos:
            return None
        pub_qos = infos[0].qos_profile
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=pub_qos.reliability,
                          durability=pub_qos.durability)

    def _subscribe_pending(self) -> None:
        for stream in self.streams:
            if stream.subscription is None and (qos := self._publisher_qos(stream.topic)) is not None:
                stream.subscription = self.node.create_subscription(
                    stream.msg_type, stream.topic, self._stream_callback(stream), qos)
        for latest in self.latest:
            if latest.subscription is None and (qos := self._publisher_qos(latest.topic)) is not None:
                latest.subscription = self.node.create_subscription(
                    latest.msg_type, latest.topic, self._latest_callback(latest), qos)

    def _stream_callback(self, stream: Stream):
        def callback(msg):
            now = time.time()
            key = stamp_key(msg.header.stamp)
            with self._lock:
                if key in self.warmup_sent:
                    stream.warmup_replies += 1
                    return
                if key not in self.sent:
                    stream.unexpected += 1
                    return
                if key in stream.received:
                    stream.duplicates += 1
                    return
                stream.received[key] = now
            if stream.on_message is not None:
                stream.on_message(key, msg, now)
        return callback

    @staticmethod
    def _latest_callback(latest: Latest):
        def callback(msg):
            latest.message = msg
            latest.count += 1
        return callback

    def wait_latest(self, latest: Latest, timeout: float, newer_than: int = 0) -> bool:
        """Wait until ``latest`` holds a message, and more than ``newer_than`` have arrived (a fresh one)."""
        end = time.monotonic() + timeout
        while (latest.message is None or latest.count <= newer_than) and time.monotonic() < end:
            self._subscribe_pending()
            time.sleep(0.05)
        return latest.message is not None and latest.count > newer_than

    def newest_sent(self, stream: Stream) -> int | None:
        """The newest measured frame whose reply ``stream`` carries (every frame sent, by default)."""
        with self._lock:
            return max(self.sent) if self.sent else None

    def drain(self, process: NodeProcess | None = None, max_s: float = 30.0) -> None:
        """After the last frame: wait until every stream has the reply to the newest frame sent to it.

        A newest-frame node always answers its newest frame and publishes in order, so once that reply is in,
        nothing more comes. How long it takes is the machine's speed (seconds on a loaded AVX2 machine), so that
        reply is what is waited for, up to ``max_s``, not a pause in the replies: a pause of a second used to end
        short runs before their first reply. Streams without a subscription are not waited for; a node that has
        exited ends the wait.
        """
        end = time.monotonic() + max_s
        while time.monotonic() < end:
            newest = {id(s): self.newest_sent(s) for s in self.streams}
            with self._lock:
                complete = all(len(s.received) >= len(self.sent) for s in self.streams)
                waiting = [s for s in self.streams if newest[id(s)] is not None
                           and newest[id(s)] not in s.received and (s.subscription is not None or s.received)]
            if complete or not waiting:
                return
            if process is not None and not process.alive:
                return
            time.sleep(0.05)

    # ----------------------------------------------------------------------- results

    def latencies(self, stream: Stream) -> np.ndarray:
        with self._lock:
            return np.array([t - self.sent[k] for k, t in stream.received.items()], np.float64)

    def stream_summary(self, stream: Stream, rate: float) -> dict:
        """Frames sent/received, dropped, output rate and latency percentiles of one output topic."""
        with self._lock:
            sent = len(self.sent)
            arrivals = sorted(stream.received.values())
            send_times = sorted(self.sent.values())
        lat = latency_stats(self.latencies(stream))
        out_hz = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) if len(arrivals) > 1 and \
            arrivals[-1] > arrivals[0] else None
        send_hz = (len(send_times) - 1) / (send_times[-1] - send_times[0]) if len(send_times) > 1 and \
            send_times[-1] > send_times[0] else None
        return {"topic": stream.topic, "frames_sent": sent, "frames_received": len(arrivals),
                "dropped": sent - len(arrivals), "duplicates": stream.duplicates, "target_rate_hz": rate,
                "send_rate_hz": send_hz, "output_rate_hz": out_hz, "latency_ms": lat}

    def close(self) -> None:
        import rclpy
        self._running = False
        self._thread.join(2.0)
        try:
            self._executor.shutdown(timeout_sec=1.0)
            self.node.destroy_node()
        finally:
            rclpy.try_shutdown(context=self.context)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
