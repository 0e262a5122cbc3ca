"""Reading replies: header stamps as integer keys, latency percentiles, a node's own DiagnosticStatus; and the
bridge's CameraInfo, sent beside the frames."""
from __future__ import annotations

import math
import re

import numpy as np


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


def camera_info_message(width: int, height: int, fov_deg: float = 90.0, frame_id: str = ""):
    """sensor_msgs/CameraInfo as the CARLA ROS bridge publishes it with every frame: pinhole, no distortion,
    fx = fy = width / (2 tan(fov / 2)), cx = width / 2, cy = height / 2."""
    from sensor_msgs.msg import CameraInfo

    fx = width / (2.0 * math.tan(math.radians(fov_deg) / 2.0))
    msg = CameraInfo(width=int(width), height=int(height), distortion_model="plumb_bob")
    msg.header.frame_id = frame_id
    msg.d = [0.0] * 5
    msg.k = [fx, 0.0, width / 2.0, 0.0, fx, height / 2.0, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [fx, 0.0, width / 2.0, 0.0, 0.0, fx, height / 2.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg
