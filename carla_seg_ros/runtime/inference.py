"""Frames of any size in, masks at the same size out: the resize around a backend, shared by node and tools."""
from __future__ import annotations

import numpy as np

from carla_seg_ros.runtime.backends import Backend
from carla_seg_ros.runtime.preprocess import resize_image, resize_mask


class Segmenter:
    def __init__(self, backend: Backend):
        self.backend = backend

    def segment(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One RGB uint8 frame (H, W, 3) -> class ids and confidence, uint8 (H, W) at the frame's size."""
        ids, conf = self.segment_batch([rgb])
        return ids[0], conf[0]

    def segment_batch(self, frames: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        size = self.backend.input_size
        batch = np.stack([resize_image(f, size) for f in frames])
        ids, conf = self.backend.infer(batch)
        out_ids, out_conf = [], []
        for f, i, c in zip(frames, ids, conf):
            hw = (f.shape[1], f.shape[0])
            out_ids.append(resize_mask(i, hw))
            out_conf.append(resize_mask(c, hw))
        return out_ids, out_conf
