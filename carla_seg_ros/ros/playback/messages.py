"""Reading replies: header stamps as integer keys, latency percentiles, a node's own DiagnosticStatus."""
from __future__ import annotations

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
