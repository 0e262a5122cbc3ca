"""Camera frames to play: dataset pairs decoded to the bridge's bgra8, read ahead in a thread, paced like a sensor."""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from carla_seg_ros.datasets import Pair, read_rgb
from carla_seg_ros.image_codec import from_rgb

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


def camera_frame(image: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """``image`` as a camera of ``size_wh`` = (W, H) would see it: the centred crop of the camera's aspect, resized
    (area when shrinking, bilinear when growing). For benchmarks at other camera sizes than the data's."""
    import cv2
    w, h = size_wh
    ih, iw = image.shape[:2]
    if iw * h > ih * w:                       # the image is wider than the camera: crop columns
        cw = max(1, round(ih * w / h))
        image = image[:, (iw - cw) // 2:(iw - cw) // 2 + cw]
    else:
        ch = max(1, round(iw * h / w))
        image = image[(ih - ch) // 2:(ih - ch) // 2 + ch]
    shrink = image.shape[1] >= w and image.shape[0] >= h
    return cv2.resize(np.ascontiguousarray(image), (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


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
