"""The per-frame work around the model in seg_node, as pure functions: camera frame -> model input, class counts.

Measured on the 2-core machine (800x600 bgra8 -> 384x288, seg_node's stage times from /diagnostics):

* the area resize (2.8 ms quiet on one thread for three channels) is kept: it is what training and evaluation
  use, and no exact faster path exists for the 2.083 scale (the integer-scale path is 0.2 ms, but 400x300 is not
  the model's input). OpenCV's thread pool splits it in two bands: 1.9 ms quiet, and in seg_node's preprocess
  stage (``opencv_threads`` 0 against 1, interleaved) 3.9 / 3.7 ms against 4.9 / 5.0 at 20 Hz and 2.7-2.8 against
  4.5-4.9 at 30 Hz, with the model call no slower (``set_opencv_threads``; an earlier measurement, taken while
  other work loaded the machine, had found two threads slower).
* for four-channel frames (CARLA's bgra8) the colour conversion comes first: ``cv2.cvtColor`` BGRA -> RGB at full
  size is a 0.14 ms SIMD pass, and it leaves the area resize three channels instead of four (resize + reorder
  5.9 ms, convert + resize 4.1 ms on a quiet machine; bitwise the same pixels).
* class counts come from the model-size class ids, each pixel weighted by the block of full-size pixels the
  nearest-neighbour mask resize gives it: the same counts as histogramming the 480 k full-size pixels, which took
  1.4 ms in the node (real masks are long runs of one id, the worst case for a histogram: every increment waits
  for the one before), against 0.4 ms for this.

Resizing stays ``preprocess.resize_image`` (area averaging, exactly what training and evaluation use).
"""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from carla_seg_ros.image_codec import to_rgb, to_rgb_array
from carla_seg_ros.runtime.preprocess import resize_image, resize_mask


def set_opencv_threads(threads: int) -> None:
    """Threads of OpenCV's pool for the resizes (0: OpenCV's own default, one per core)."""
    cv2.setNumThreads(threads if threads > 0 else -1)


def model_input(native: np.ndarray, encoding: str, size_wh: tuple[int, int]) -> np.ndarray:
    """(H, W, C) pixels in ``encoding``'s channel order -> (1, h, w, 3) C-contiguous uint8 RGB at ``size_wh``, the
    model input size for this frame (runtime/input_size.py).

    Colour frames are converted to RGB first (one OpenCV pass, which also drops the alpha channel the resize would
    otherwise average), then resized. rgb8 needs no conversion and mono8 is resized as one channel and widened
    after, so both resize the message's own pixels (padded rows included, through the row stride).
    """
    if encoding in ("rgb8", "mono8"):
        return np.ascontiguousarray(to_rgb(resize_image(native, size_wh), encoding))[None]
    return np.ascontiguousarray(resize_image(to_rgb_array(native, encoding), size_wh))[None]


@lru_cache(maxsize=64)
def _nearest_weights(small: int, full: int, kept: int) -> np.ndarray:
    """How many of the first ``kept`` of ``full`` positions ``resize_mask`` fills from each of ``small`` positions
    (the mask resize itself is asked, on a ramp of indices, so the counts are exact whatever its rounding)."""
    ramp = np.arange(small, dtype=np.uint16)[None, :]
    source = resize_mask(ramp, (full, 1))[0, :max(0, min(kept, full))]
    return np.bincount(source, minlength=small)


@lru_cache(maxsize=16)
def _weight_blocks(small_hw: tuple[int, int], full_wh: tuple[int, int], rows: int) -> tuple:
    """The model-size pixels grouped by how many full-size pixels (in the first ``rows`` rows) each becomes:
    ((weight, row indices, column indices), ...). Nearest-neighbour upsampling by 2.083 makes four groups
    (2x2, 2x3, 3x2, 3x3 blocks); computed once per frame size."""
    rows_w = _nearest_weights(small_hw[0], full_wh[1], rows)
    cols_w = _nearest_weights(small_hw[1], full_wh[0], full_wh[0])
    return tuple((int(a * b), np.flatnonzero(rows_w == a), np.flatnonzero(cols_w == b))
                 for a in np.unique(rows_w[rows_w > 0]) for b in np.unique(cols_w[cols_w > 0]))


def class_counts(ids: np.ndarray, full_wh: tuple[int, int], rows: int, num_classes: int) -> np.ndarray:
    """Pixels of each class id 0..num_classes-1 in the first ``rows`` rows of ``resize_mask(ids, full_wh)``
    (int64), counted on the model-size ``ids`` without making that mask: one histogram per weight group."""
    counts = np.zeros(256, np.int64)
    for weight, row_idx, col_idx in _weight_blocks(ids.shape[:2], tuple(full_wh), int(rows)):
        block = np.ascontiguousarray(ids[row_idx][:, col_idx])
        counts += weight * cv2.calcHist([block], [0], None, [256], [0, 256]).ravel().astype(np.int64)
    return counts[:num_classes]
