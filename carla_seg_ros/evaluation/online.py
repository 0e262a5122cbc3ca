"""Online evaluation of a live mask stream against a live ground-truth stream (no ROS here: seg_eval_node feeds it).

Masks and ground-truth frames arrive in any order, each with its header stamp. They are paired by stamp with
stamp_pairing.StampPairer (nearest partner within the tolerance, each frame used once, as `bag-eval`'s
``pair_stamps`` does for a whole bag; the dataset recorders pair camera and ground truth with it too), and each
pair goes through `carla-seg evaluate`'s ``Evaluation.add`` (one confusion matrix, metrics.py's formulas), so the
same frames give bag-eval's numbers to the last digit. A frame whose partner has not come once the stream is
``match_window`` further on (by stamp) is counted as unmatched; at the end every frame still waiting is counted.
Frames that could not be decoded were counted by the caller (``Counters``) and are passed in as ``None``, so their
partner is not counted a second time as unmatched.

Besides the whole run there is a sliding window (the last N pairs) and the timely score (timely.py).
"""
from __future__ import annotations

from collections import deque

import numpy as np

from carla_seg_ros.evaluation import metrics
from carla_seg_ros.evaluation.bag_reading import Counters
from carla_seg_ros.evaluation.evaluate import Evaluation
from carla_seg_ros.evaluation.stamp_pairing import FIRST, SECOND, StampPairer
from carla_seg_ros.evaluation.timely import TimelyScore

SIZE_HINT = ("the ground-truth camera must have the segmented camera's size and pose; the CARLA ROS bridge's "
             "default sensor file spawns semantic_segmentation_front at 400x70: use config/carla_objects.json")


def frame_name(stamp: int) -> str:
    return f"t={stamp / 1e9:.3f}s"     # bag-eval's per-frame names


def _brief(summary: dict) -> dict:
    return {k: summary[k] for k in ("pixel_accuracy", "mean_iou", "iou", "pixels")}


class OnlineEvaluation:
    def __init__(self, class_names: list[str], counters: Counters, tolerance_ns: int = 10_000_000,
                 match_window_ns: int = 2_000_000_000, window_frames: int = 100, timely_budget_ns: int = 50_000_000,
                 history: int = 30, latency_samples: int = 1000):
        self.class_names = list(class_names)
        self.counters = counters
        self.tolerance_ns = int(tolerance_ns)
        self.match_window_ns = int(match_window_ns)
        self.evaluation = Evaluation(self.class_names, num_samples=0)
        self.timely = TimelyScore(self.class_names, timely_budget_ns, tolerance_ns, history)
        self.window: deque = deque(maxlen=window_frames)
        self.window_cm = np.zeros((len(class_names),) * 2, np.int64)
        # Masks are the first stream, ground truth the second; a pair is named by the mask's stamp.
        self.pairer = StampPairer(tolerance_ns, match_window_ns,
                                  lambda stamp, mask, _gt_stamp, label: self._pair(stamp, mask, label),
                                  self._unmatched)
        self.counts = {"mask_messages": 0, "gt_messages": 0, "paired": 0, "unmatched_mask": 0, "unmatched_gt": 0}
        self.latencies: deque = deque(maxlen=latency_samples)   # mask arrival - stamp, seconds
        self._stamps: list[int] = []                      # stamp of each evaluated frame (per_frame order)

    @property
    def masks(self) -> dict:
        """stamp -> mask waiting for its ground truth"""
        return self.pairer.pending[FIRST]

    @property
    def labels(self) -> dict:
        """stamp -> label waiting for its mask"""
        return self.pairer.pending[SECOND]

    def _unmatched(self, side: int, _stamp: int) -> None:
        self.counts["unmatched_mask" if side == FIRST else "unmatched_gt"] += 1

    # ------------------------------------------------------------------ input
    def add_mask(self, stamp: int, arrival: int, mask: np.ndarray | None) -> None:
        """A mask (model class ids) stamped ``stamp`` that arrived at ``arrival`` (ns, evaluator clock)."""
        self.counts["mask_messages"] += 1
        if arrival > 0:
            self.latencies.append((arrival - stamp) / 1e9)
        if mask is not None:
            self.timely.add_mask(stamp, arrival, mask)
        self.pairer.add(FIRST, stamp, mask)

    def add_ground_truth(self, stamp: int, label: np.ndarray | None) -> None:
        """A ground-truth frame already decoded to model class ids (hood rule applied)."""
        self.counts["gt_messages"] += 1
        if label is not None:
            self.timely.add_ground_truth(stamp, label)
        self.pairer.add(SECOND, stamp, label)

    def _pair(self, stamp: int, mask: np.ndarray | None, label: np.ndarray | None) -> None:
        """``stamp`` is the mask's (bag-eval names frames by the camera stamp, which the mask carries)."""
        if mask is None or label is None:
            return        # the undecodable side is already counted under skipped
        self.counts["paired"] += 1
        if mask.shape != label.shape:
            self.counters.skip("size_mismatch", f"mask {mask.shape[1]}x{mask.shape[0]} and ground truth "
                                                f"{label.shape[1]}x{label.shape[0]} at {frame_name(stamp)} differ in "
                                                f"size; {SIZE_HINT}")
            return
        cm = self.evaluation.add(mask, label, frame_name(stamp))
        self._stamps.append(stamp)
        if len(self.window) == self.window.maxlen:
            self.window_cm -= self.window[0]
        self.window.append(cm)
        self.window_cm += cm

    def advance(self, now: int) -> None:
        """The evaluator's clock moved to ``now`` (ns): score the timely frames that are due."""
        self.timely.advance(now)

    def finish(self) -> None:
        """End of the run: everything still waiting is unmatched; timely frames are scored with what came."""
        self.pairer.finish()
        self.timely.finish()

    # ------------------------------------------------------------------ output
    def latency_ms(self) -> dict:
        if not self.latencies:
            return {"p50": None, "p99": None, "samples": 0}
        ms = 1000.0 * np.asarray(self.latencies)
        return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)), "samples": len(ms)}

    def pairing(self, tolerance_s: float | None = None) -> dict:
        out = dict(self.counts, waiting_mask=self.pairer.waiting(FIRST), waiting_gt=self.pairer.waiting(SECOND))
        return out if tolerance_s is None else dict(out, tolerance_s=tolerance_s)

    def snapshot(self) -> dict:
        """The running figures (whole run, sliding window, timely) for ~/metrics and /diagnostics."""
        timely = self.timely.result()
        return {"frames": self.evaluation.frames,
                "run": _brief(metrics.summarize(self.evaluation.cm, self.class_names)),
                "window": dict(_brief(metrics.summarize(self.window_cm, self.class_names)), frames=len(self.window)),
                "timely": dict(_brief(timely["metrics"]), frames=timely["frames"],
                               no_mask_frames=timely["no_mask_frames"], stale_frames=timely["stale_frames"],
                               waiting=len(self.timely.waiting)),
                "pairing": self.pairing(), "skipped": dict(self.counters.skipped),
                "unknown_color_pixels": self.counters.unknown_color_pixels,
                "unknown_id_pixels": self.counters.unknown_id_pixels, "mask_latency_ms": self.latency_ms()}

    def result(self) -> dict:
        """bag-eval's metrics.json fields (frames in stamp order), plus timely, window and latency."""
        result = self.evaluation.result()
        order = sorted(range(len(self._stamps)), key=self._stamps.__getitem__)
        result["per_frame"] = [result["per_frame"][k] for k in order]
        result.update({"skipped": dict(self.counters.skipped), "skip_messages": dict(self.counters.first_error),
                       "unknown_color_pixels": self.counters.unknown_color_pixels,
                       "unknown_id_pixels": self.counters.unknown_id_pixels,
                       "timely": self.timely.result(),
                       "window": dict(_brief(metrics.summarize(self.window_cm, self.class_names)),
                                      frames=len(self.window)),
                       "mask_latency_ms": self.latency_ms()})
        return result
