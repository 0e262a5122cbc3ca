"""seg_eval_node's outputs: the ~/metrics JSON, its DiagnosticStatus and the metrics.json/report it writes."""
from __future__ import annotations

import json
import math

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from carla_seg_ros.classes import IGNORE_INDEX


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def metrics_json(snapshot: dict, stamp_ns: int, coding: str) -> str:
    """The running figures as one JSON object (NaN -> null, JSON has no NaN)."""
    def clean(v):
        if isinstance(v, float) and math.isnan(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return v
    return json.dumps(clean(dict(snapshot, stamp_ns=stamp_ns, coding=coding)), sort_keys=True)


def diagnostic_status(snapshot: dict, name: str, coding: str, gt_topic: str) -> DiagnosticStatus:
    run, window, timely, pairing = snapshot["run"], snapshot["window"], snapshot["timely"], snapshot["pairing"]
    values = {
        "coding": coding, "frames_paired": pairing["paired"], "frames_evaluated": snapshot["frames"],
        "mask_messages": pairing["mask_messages"], "gt_messages": pairing["gt_messages"],
        "unmatched_mask": pairing["unmatched_mask"], "unmatched_gt": pairing["unmatched_gt"],
        "waiting_mask": pairing["waiting_mask"], "waiting_gt": pairing["waiting_gt"],
        "run_pixel_accuracy": run["pixel_accuracy"], "run_miou": run["mean_iou"],
        "window_pixel_accuracy": window["pixel_accuracy"], "window_miou": window["mean_iou"],
        "window_frames": window["frames"],
        "timely_pixel_accuracy": timely["pixel_accuracy"], "timely_miou": timely["mean_iou"],
        "timely_frames": timely["frames"], "timely_no_mask_frames": timely["no_mask_frames"],
        "timely_stale_frames": timely["stale_frames"],
        "mask_latency_p50_ms": snapshot["mask_latency_ms"]["p50"],
        "mask_latency_p99_ms": snapshot["mask_latency_ms"]["p99"],
        "unknown_color_pixels": snapshot["unknown_color_pixels"], "unknown_id_pixels": snapshot["unknown_id_pixels"],
        **{f"skipped_{reason}": count for reason, count in snapshot["skipped"].items()},
        **{f"iou_{cls}": v for cls, v in run["iou"].items()},
    }
    skipped = sum(snapshot["skipped"].values())
    level, message = DiagnosticStatus.OK, "ok"
    if skipped:
        level, message = DiagnosticStatus.WARN, f"{skipped} frames skipped ({', '.join(snapshot['skipped'])})"
    elif snapshot["unknown_color_pixels"] or snapshot["unknown_id_pixels"]:
        level, message = DiagnosticStatus.WARN, "ground truth has colours/ids outside the coding (ignored, counted)"
    elif pairing["gt_messages"] == 0:
        level, message = DiagnosticStatus.WARN, f"no ground truth received on {gt_topic} yet"
    elif pairing["paired"] == 0:
        level, message = DiagnosticStatus.WARN, "no mask/ground-truth pair yet (check the topics and stamps)"
    return DiagnosticStatus(level=level, name=f"{name}: evaluation", message=message, hardware_id="seg_eval",
                            values=[KeyValue(key=k, value=_fmt(v)) for k, v in values.items()])


def run_result(online, p: dict, coding: str, hood, info, model_path, clock: str) -> dict:
    """bag-eval's metrics.json layout for a live run (see docs/reference/seg_eval_node.md)."""
    result = online.result()
    result.update({
        "command": "seg_eval_node", "mask_topic": p["mask_topic"], "gt_topic": p["gt_topic"],
        "gt_format": p["gt_format"], "coding": coding, "pairing": online.pairing(p["stamp_tolerance"]),
        "hood": {"mode": hood.mode, "row_fraction": hood.row_fraction, "applies_to": "tags13 ground truth"},
        "ignore_index": IGNORE_INDEX,
        "model": {"path": str(model_path), "backend": "(seg_node's)", "arch": info.arch,
                  "input_size": [info.input_width, info.input_height]},
        "live": {"clock": clock, "timely_budget_s": p["timely_budget"], "window_frames": p["window_frames"],
                 "match_window_s": p["match_window"],
                 "mask_latency_p50_ms": result["mask_latency_ms"]["p50"],
                 "mask_latency_p99_ms": result["mask_latency_ms"]["p99"]},
    })
    return result
