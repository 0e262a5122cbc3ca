"""Timely accuracy: score each ground-truth frame against the mask a planner actually had for it.

Pylot's "timely" metrics (Gog et al., "Pylot: a modular platform for exploring latency-accuracy tradeoffs in
autonomous vehicles", ICRA 2021) charge a perception module for its runtime: the ground truth at time t is
compared with the newest output available at t, not with the output computed from the frame taken at t.

Here, for a ground-truth frame stamped ``t``, the planner reads the newest mask at ``t + budget`` (``budget`` is
the planner's latency allowance, by default one 20 Hz tick):

* candidates are the masks whose header stamp is ``<= t`` (+ the pairing tolerance) and that had *arrived* by
  ``t + budget`` on the evaluator's clock (sim time under ``use_sim_time``), i.e. stamp + measured latency;
* the newest candidate is scored against the ground truth of ``t``. When it is an older frame's mask the frame
  counts as *stale*: the scene has moved on, which lowers the score as it would mislead a planner;
* with no candidate at all the frame counts as *no mask*: its labelled pixels are misses of their class (they
  enter every class's IoU denominator and the pixel-accuracy total), so a pipeline that is too slow to deliver
  anything scores 0, not "n/a".

When every mask arrives within the budget, the timely score equals the plain stamp-paired score exactly.
"""
from __future__ import annotations

from bisect import bisect_right, insort
from collections import deque

import numpy as np

from carla_seg_ros.classes import IGNORE_INDEX
from carla_seg_ros.evaluation import metrics
from carla_seg_ros.evaluation.evaluate import Evaluation


def summarize_with_misses(cm: np.ndarray, missing: np.ndarray, class_names: list[str]) -> dict:
    """metrics.summarize of ``cm`` where ``missing[c]`` more pixels of class c had no prediction at all.

    The misses become an extra predicted column ("no mask"), so the per-class figures are metrics.py's own and,
    with no misses, identical to ``metrics.summarize(cm)`` to the last digit. The Lyft F-scores cover the frames
    that had a mask only.
    """
    n = len(class_names)
    aug = np.zeros((n + 1, n + 1), np.int64)
    aug[:n, :n] = cm
    aug[:n, n] = missing
    iou = metrics.iou_per_class(aug)[:n]
    mean = float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")
    plain = metrics.summarize(aug[:n, :n], class_names)
    plain.update({"pixel_accuracy": metrics.pixel_accuracy(aug), "mean_iou": mean,
                  "iou": {name: (None if np.isnan(v) else float(v)) for name, v in zip(class_names, iou)},
                  "pixels": int(aug.sum()), "pixels_without_mask": int(missing.sum())})
    return plain


class TimelyScore:
    """Keeps the recent masks with their arrival times and scores ground-truth frames once their deadline passed."""

    def __init__(self, class_names: list[str], budget_ns: int, tolerance_ns: int, history: int = 30):
        self.class_names = list(class_names)
        self.budget_ns = int(budget_ns)
        self.tolerance_ns = int(tolerance_ns)
        self.evaluation = Evaluation(class_names, num_samples=0)
        self.missing = np.zeros(len(class_names), np.int64)
        self.masks: deque = deque(maxlen=history)       # (stamp, arrival, mask) sorted by stamp
        self.waiting: list = []                          # (gt stamp, label) until now >= stamp + budget
        self.no_mask_frames = 0
        self.stale_frames = 0
        self.size_mismatch = 0
        self.forced = 0                                  # scored before their deadline (clock not advancing)

    def add_mask(self, stamp: int, arrival: int, mask: np.ndarray) -> None:
        if self.masks and stamp < self.masks[-1][0]:     # out of order (rare): keep the history sorted
            items = list(self.masks)
            insort(items, (stamp, arrival, mask), key=lambda m: m[0])
            self.masks = deque(items, maxlen=self.masks.maxlen)
        else:
            self.masks.append((stamp, arrival, mask))

    def add_ground_truth(self, stamp: int, label: np.ndarray) -> None:
        self.waiting.append((stamp, label))
        # A clock that never reaches the deadlines (use_sim_time without /clock) must not hold frames forever:
        # beyond this many the oldest is scored with what has arrived, and counted.
        if len(self.waiting) > 4 * self.masks.maxlen:
            self.waiting.sort(key=lambda w: w[0])
            self.forced += 1
            self._score(*self.waiting.pop(0))

    def advance(self, now: int) -> None:
        """Score every waiting frame whose deadline has passed on the evaluator's clock."""
        due = [w for w in self.waiting if now >= w[0] + self.budget_ns]
        if due:
            self.waiting = [w for w in self.waiting if now < w[0] + self.budget_ns]
            for stamp, label in sorted(due, key=lambda w: w[0]):
                self._score(stamp, label)

    def finish(self) -> None:
        """End of the run: score what is still waiting with the masks that arrived in time for it."""
        for stamp, label in sorted(self.waiting, key=lambda w: w[0]):
            self._score(stamp, label)
        self.waiting = []

    def _score(self, stamp: int, label: np.ndarray) -> None:
        deadline = stamp + self.budget_ns
        stamps = [m[0] for m in self.masks]
        chosen = None
        for k in range(bisect_right(stamps, stamp + self.tolerance_ns) - 1, -1, -1):
            if self.masks[k][1] <= deadline:
                chosen = self.masks[k]
                break
        name = f"t={stamp / 1e9:.3f}s"
        if chosen is None:
            self.no_mask_frames += 1
            valid = label[label != IGNORE_INDEX]
            self.missing += np.bincount(valid, minlength=len(self.class_names))[:len(self.class_names)]
            return
        if chosen[2].shape != label.shape:
            self.size_mismatch += 1
            return
        if abs(chosen[0] - stamp) > self.tolerance_ns:
            self.stale_frames += 1
        self.evaluation.add(chosen[2], label, name)

    def result(self) -> dict:
        return {"frames": self.evaluation.frames + self.no_mask_frames, "scored_with_mask": self.evaluation.frames,
                "no_mask_frames": self.no_mask_frames, "stale_frames": self.stale_frames,
                "size_mismatch": self.size_mismatch, "scored_before_deadline": self.forced,
                "budget_s": self.budget_ns / 1e9,
                "metrics": summarize_with_misses(self.evaluation.cm, self.missing, self.class_names),
                "confusion_matrix": self.evaluation.cm.tolist(), "missing_pixels": self.missing.tolist()}
