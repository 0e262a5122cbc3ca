"""Frames of any size in, masks at the same size out: the resize around a backend, shared by node and tools.

Each frame is resized to the size the model's policy gives for its own aspect (runtime/input_size.py: the camera's
aspect at the model's height for keep_aspect models, the model's fixed size otherwise). Frames that map to the same
size run as one batch; a batch mixing sizes makes one inference call per size, in order of first appearance.
"""
from __future__ import annotations

import numpy as np

from carla_seg_ros.runtime.backends import Backend
from carla_seg_ros.runtime.preprocess import resize_image, resize_mask


def group_by_size(sizes: list) -> dict:
    """{size: [indices with that size]}, sizes in order of first appearance."""
    groups: dict = {}
    for i, size in enumerate(sizes):
        groups.setdefault(size, []).append(i)
    return groups


class Segmenter:
    def __init__(self, backend: Backend):
        self.backend = backend

    def segment(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One RGB uint8 frame (H, W, 3) -> class ids and confidence, uint8 (H, W) at the frame's size."""
        ids, conf = self.segment_batch([rgb])
        return ids[0], conf[0]

    def segment_batch(self, frames: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        sizes = [self.backend.input_size_for((f.shape[1], f.shape[0])) for f in frames]
        out_ids: list = [None] * len(frames)
        out_conf: list = [None] * len(frames)
        for size, indices in group_by_size(sizes).items():
            ids, conf = self.backend.infer(np.stack([resize_image(frames[i], size) for i in indices]))
            for i, frame_ids, frame_conf in zip(indices, ids, conf):
                hw = (frames[i].shape[1], frames[i].shape[0])
                out_ids[i] = resize_mask(frame_ids, hw)
                out_conf[i] = resize_mask(frame_conf, hw)
        return out_ids, out_conf
