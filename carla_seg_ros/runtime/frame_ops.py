"""The per-frame work around the model in seg_node, as pure functions: camera frame -> model input, class counts.

Measured on the 2-core machine (800x600 bgra8 -> 384x288, profile of seg_node's processing):

* OpenCV's own thread pool doubles the INTER_AREA resize (2.8 -> 6.0 ms) when it races the runtime's threads and
  the DDS threads for two cores, so ``single_threaded_opencv`` gives OpenCV one thread: the runtime already has
  the cores, and a frame's pre-/post-processing is a few ms of serial work between two inferences.
* the area resize itself (about 4 ms quiet for three channels) is kept: it is what training and evaluation use,
  and no exact faster path exists for the 2.083 scale (the integer-scale path is 0.2 ms, but 400x300 is not the
  model's input).
* for four-channel frames (CARLA's bgra8) the colour conversion comes first: ``cv2.cvtColor`` BGRA -> RGB at full
  size is a 0.14 ms SIMD pass, and it leaves the area resize three channels instead of four (resize + reorder
  5.9 ms, convert + resize 4.1 ms on a quiet machine; bitwise the same pixels).
* ``np.bincount`` over the 480 k mask pixels took 1.1-1.5 ms; ``cv2.calcHist`` gives the same counts in 0.4 ms.

Resizing stays ``preprocess.resize_image`` (area averaging, exactly what training and evaluation use).
"""
from __future__ import annotations

import cv2
import numpy as np

from carla_seg_ros.image_codec import to_rgb, to_rgb_array
from carla_seg_ros.runtime.preprocess import resize_image


def single_threaded_opencv() -> None:
    cv2.setNumThreads(1)


def model_input(native: np.ndarray, encoding: str, size_wh: tuple[int, int]) -> np.ndarray:
    """(H, W, C) pixels in ``encoding``'s channel order -> (1, h, w, 3) C-contiguous uint8 RGB at the model size.

    Colour frames are converted to RGB first (one OpenCV pass, which also drops the alpha channel the resize would
    otherwise average), then resized. rgb8 needs no conversion and mono8 is resized as one channel and widened
    after, so both resize the message's own pixels (padded rows included, through the row stride).
    """
    if encoding in ("rgb8", "mono8"):
        return np.ascontiguousarray(to_rgb(resize_image(native, size_wh), encoding))[None]
    return np.ascontiguousarray(resize_image(to_rgb_array(native, encoding), size_wh))[None]


def class_counts(mask: np.ndarray, rows: int, num_classes: int) -> np.ndarray:
    """Pixels of each class id 0..num_classes-1 in the first ``rows`` rows of a uint8 mask (int64)."""
    valid = mask[:max(0, rows)]
    if valid.size == 0:
        return np.zeros(num_classes, np.int64)
    hist = cv2.calcHist([np.ascontiguousarray(valid)], [0], None, [256], [0, 256])
    return hist.ravel()[:num_classes].astype(np.int64)
