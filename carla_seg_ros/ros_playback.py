"""Play camera frames to a node running in its own process and record what it publishes back.

Shared by `carla-seg demo` and `carla-seg bench node`. This process stands in for the CARLA ROS bridge: it
publishes bgra8 frames RELIABLE / KEEP_LAST 10 on the camera topic at a fixed rate and notes the wall-clock time
each frame was sent. The node copies the input header to every output, so a reply is matched to its frame by the
header stamp, and its latency is (wall time the reply arrived) - (wall time the frame was sent).

Readiness is proven, not guessed: the node's output publishers must be in the ROS graph and matched both ways, and
then warm-up frames must come back through the whole pipeline before the measured frames start.
"""
from __future__ import annotations

import ctypes
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from .data import Pair, read_rgb
from .ros_image import from_rgb

CAMERA_TOPIC = "/carla/ego_vehicle/rgb_front/image"
CAMERA_FRAME_ID = "ego_vehicle/rgb_front"
BRIDGE_DEPTH = 10           # the CARLA ROS bridge's camera publisher: RELIABLE, KEEP_LAST 10
READY_TIMEOUT_S = 120.0     # PyTorch import + weights on a busy 2-core machine can take a minute
WARMUP_REPLIES = 3


class NodeFailed(RuntimeError):
    """The node under test exited, or never became ready; the message carries the tail of its log."""


# --------------------------------------------------------------------------------------------------- frames

NO_DATA_HELP = """no dataset found. Pass one with --data DIR (`make demo DATA=DIR`), or set CARLA_SEG_DATA:
  * the prepared set: a folder holding fullres/rgb + fullres/label (e.g. ../shared/data/carla_seg);
  * the Kaggle "lyft-udacity-challenge" download, unzipped: the folder holding the CameraRGB/ and CameraSeg/ folders
    (or dataA..dataE, each holding them). It has no `fullres` split: all pairs below the folder are played, or
    pick one sub-folder with --split dataA."""


def resolve_split(data_dir: Path, split: str | None) -> str:
    """``fullres`` for the prepared set; ``all`` for a Kaggle download or a flat rgb/label folder."""
    if split:
        return split
    return "fullres" if (data_dir / "fullres" / "rgb").is_dir() else "all"


@dataclass
class Frame:
    name: str
    pair: Pair
    bgra: np.ndarray   # (H, W, 4) uint8, what the bridge publishes


def load_frame(pair: Pair) -> Frame:
    return Frame(pair.name, pair, from_rgb(read_rgb(pair.rgb), "bgra8"))


def iter_frames(pairs: list[Pair], prefetch: int = 16) -> Iterator[Frame]:
    """Decode frames ahead in a thread so a long list (a Kaggle folder) never has to fit in memory at once."""
    q: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def reader():
        try:
            for pair in pairs:
                if stop.is_set():
                    return
                q.put(load_frame(pair))
            q.put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            q.put(exc)

    thread = threading.Thread(target=reader, name="frame-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():   # unblock a reader waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.05)


def paced(items: Iterable, rate: float) -> Iterator:
    """Yield items at a fixed rate like a simulator's sensor tick: fixed deadlines, no catch-up bursts."""
    period = 1.0 / rate
    deadline = time.monotonic()
    for item in items:
        delay = deadline - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -period:      # fell behind by a whole tick: restart the schedule instead of bursting
            deadline = time.monotonic()
        yield item
        deadline += period


def stamp_key(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def set_stamp(stamp, key: int) -> None:
    stamp.sec, stamp.nanosec = divmod(int(key), 1_000_000_000)


def latency_stats(latencies_s: np.ndarray) -> dict:
    """Percentiles in milliseconds (None when nothing arrived)."""
    if len(latencies_s) == 0:
        return {"p50": None, "p99": None, "mean": None, "max": None}
    ms = np.asarray(latencies_s) * 1000.0
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
            "mean": float(ms.mean()), "max": float(ms.max())}


def diagnostics_of(array_msg, node_name: str) -> dict | None:
    """The node's own DiagnosticStatus (name, message, key/values) from a DiagnosticArray."""
    if array_msg is None:
        return None
    for status in array_msg.status:
        if re.search(rf"(^|/){re.escape(node_name)}:", status.name):   # seg_node names it "/ns/NODE: segmentation"
            level = status.level[0] if isinstance(status.level, (bytes, bytearray)) else int(status.level)
            return {"name": status.name, "level": level, "message": status.message,
                    "values": {kv.key: kv.value for kv in status.values}}
    return None


# --------------------------------------------------------------------------------------------------- process

def ros_param(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def node_argv(module: str, node_name: str, params: dict | None = None, remaps: dict | None = None) -> list[str]:
    """`python -m MODULE --ros-args -r __node:=NAME -p k:=v ... -r from:=to ...` with this interpreter."""
    argv = [sys.executable, "-m", module, "--ros-args", "-r", f"__node:={node_name}"]
    for key, value in (params or {}).items():
        argv += ["-p", f"{key}:={ros_param(value)}"]
    for src, dst in (remaps or {}).items():
        argv += ["-r", f"{src}:={dst}"]
    return argv


try:   # loaded here, in the parent: the child must not dlopen between fork and exec (other threads may hold locks)
    _LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
except OSError:
    _LIBC = None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child before exec: if this process is killed outright, the node gets SIGTERM instead of lingering.
    _LIBC.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


class NodeProcess:
    """A ROS 2 node in its own process that is always stopped: SIGINT (clean rclpy shutdown), then SIGTERM, SIGKILL.

    Use as a context manager; its stdout/stderr go to ``log_path`` (or a temporary file) for error messages.
    """

    def __init__(self, label: str, argv: list[str], log_path: Path | None = None, env: dict | None = None):
        self.label = label
        self.argv = argv
        self.log_path = Path(log_path) if log_path else None
        self.env = env
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self) -> "NodeProcess":
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "w+b")
        else:
            self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=self.env, preexec_fn=_die_with_parent if _LIBC is not None else None)
        return self

    def __enter__(self) -> "NodeProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check(self) -> None:
        """Raise NodeFailed if the node has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise NodeFailed(f"{self.label} exited with code {self.proc.returncode}:\n{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        if self._log is None or self._log.closed:
            return ""
        self._log.flush()
        self._log.seek(0, os.SEEK_END)
        size = self._log.tell()
        self._log.seek(max(0, size - chars))
        return self._log.read().decode("utf-8", "replace")

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            if self.proc.poll() is not None:
                break
            try:
                self.proc.send_signal(sig)
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
            except ProcessLookupError:
                break
        return self.proc.poll()

    def close(self) -> None:
        self.stop()
        if self._log is not None and not self._log.closed:
            self._log.close()


# --------------------------------------------------------------------------------------------------- player

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


class Player:
    """The bridge stand-in: one rclpy node, in a context of its own, publishing frames and recording replies.

    ``send`` may be called from the main thread while the subscriptions are served by a background executor.
    """

    def __init__(self, topic: str = CAMERA_TOPIC, frame_id: str = CAMERA_FRAME_ID, name: str = "carla_seg_player",
                 domain_id: int | None = None):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from rclpy.signals import SignalHandlerOptions
        from sensor_msgs.msg import Image

        self.frame_id = frame_id
        self.context = rclpy.Context()
        # No rclpy signal handlers: Ctrl-C stays a KeyboardInterrupt, so the callers' `finally` stops the node.
        rclpy.init(context=self.context, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(name, context=self.context)
        self.pub = self.node.create_publisher(
            Image, topic, QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=BRIDGE_DEPTH,
                                     reliability=ReliabilityPolicy.RELIABLE))
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

    # ----------------------------------------------------------------------- sending

    def image_message(self, bgra: np.ndarray):
        from .ros_image import to_image
        msg = to_image(bgra, "bgra8")
        msg.header.frame_id = self.frame_id
        return msg

    def send(self, msg, key: int, warmup: bool = False) -> None:
        """Publish ``msg`` stamped ``key`` (ns); the message object may be reused, rclpy serialises it right away."""
        set_stamp(msg.header.stamp, key)
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

    def wait_latest(self, latest: Latest, timeout: float, newer_than: int = 0) -> bool:
        """Wait until ``latest`` holds a message, and more than ``newer_than`` have arrived (a fresh one)."""
        end = time.monotonic() + timeout
        while (latest.message is None or latest.count <= newer_than) and time.monotonic() < end:
            self._subscribe_pending()
            time.sleep(0.05)
        return latest.message is not None and latest.count > newer_than

    def drain(self, process: NodeProcess | None = None, idle_s: float = 1.0, max_s: float = 10.0) -> None:
        """After the last frame: wait until every stream has everything, or nothing new came for ``idle_s``."""
        end = time.monotonic() + max_s
        last_total, last_change = -1, time.monotonic()
        while time.monotonic() < end:
            with self._lock:
                total = sum(len(s.received) for s in self.streams)
                complete = all(len(s.received) >= len(self.sent) for s in self.streams)
            if complete:
                return
            if total != last_total:
                last_total, last_change = total, time.monotonic()
            elif time.monotonic() - last_change > idle_s:
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

    def __enter__(self) -> "Player":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
