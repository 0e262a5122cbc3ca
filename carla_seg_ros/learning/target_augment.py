"""Augmentation for self-training: crops of varying aspect, strong photometric and weather jitter, ClassMix.

The labelled drive is one clear afternoon; the frames users run are modern towns at night, in rain and fog, from
cameras of any aspect. So the student sees:
* crops of the model height and a width drawn per batch (4:3 to beyond 16:9), as the node feeds it;
* strong colour jitter and simulated night, fog and rain (on unlabelled frames always, on labelled frames
  sometimes, where the label stays true under the change);
* ClassMix (DACS): the pixels of half of the classes of a labelled crop pasted onto an unlabelled crop, labels
  and all, so objects with certain labels appear in front of target-domain backgrounds.
"""
from __future__ import annotations

import cv2
import numpy as np

from carla_seg_ros import classes
from carla_seg_ros.runtime.input_size import width_for_aspect
from carla_seg_ros.runtime.preprocess import resize_mask

# Crop aspects, drawn per batch: 4:3, 14:9, 16:9 and 20:9 (at height 288: widths 384, 448, 512 and 640).
CROP_ASPECTS = (4 / 3, 14 / 9, 16 / 9, 20 / 9)
CROP_ASPECT_P = (0.4, 0.2, 0.3, 0.1)


def crop_width(rng: np.random.Generator, height: int = 288) -> int:
    """A crop width for the model height: one of CROP_ASPECTS, as the node would run it (a multiple of 32)."""
    return width_for_aspect(height, float(rng.choice(CROP_ASPECTS, p=CROP_ASPECT_P)))


def random_crop(img: np.ndarray, maps: list[np.ndarray], crop_wh: tuple[int, int], scale: tuple[float, float],
                rng: np.random.Generator, pad_value: int = classes.IGNORE_INDEX):
    """Rescale by a factor drawn from ``scale`` (relative to the smallest scale that covers the crop), crop, flip.

    ``maps`` (labels, box masks) follow the image with nearest-neighbour resizing; areas outside a frame scaled
    below the crop are padded with ``pad_value`` in the maps and black in the image.
    """
    h, w = img.shape[:2]
    cw, ch = crop_wh
    s = max(cw / w, ch / h) * rng.uniform(*scale)
    sw, sh = max(1, round(w * s)), max(1, round(h * s))
    img = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    maps = [resize_mask(m, (sw, sh)) for m in maps]
    if sw < cw or sh < ch:
        pw, ph = max(0, cw - sw), max(0, ch - sh)
        img = cv2.copyMakeBorder(img, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=0)
        maps = [cv2.copyMakeBorder(m, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=pad_value) for m in maps]
        sh, sw = img.shape[:2]
    y, x = rng.integers(0, sh - ch + 1), rng.integers(0, sw - cw + 1)
    img, maps = img[y:y + ch, x:x + cw], [m[y:y + ch, x:x + cw] for m in maps]
    if rng.random() < 0.5:
        img, maps = img[:, ::-1], [m[:, ::-1] for m in maps]
    return np.ascontiguousarray(img), [np.ascontiguousarray(m) for m in maps]


def night(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dark, blue-shifted, noisy: exposure x0.3-0.6, a darker curve, a cool cast, sensor noise. The range ends
    where the relke night frames are (mean grey 20-40): darker than that, nothing is left to learn from."""
    x = x * rng.uniform(0.3, 0.6)
    x = 255.0 * (np.clip(x, 0, 255) / 255.0) ** rng.uniform(1.0, 1.3)
    x = x * np.array([rng.uniform(0.8, 1.0), rng.uniform(0.9, 1.05), rng.uniform(1.0, 1.25)], np.float32)
    return x + rng.normal(0, rng.uniform(2, 6), x.shape).astype(np.float32)


def fog(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blend towards a light grey that is densest at the horizon (the middle rows) and thinner at the bottom."""
    h = x.shape[0]
    density = rng.uniform(0.25, 0.65)
    rows = np.linspace(0, 1, h, dtype=np.float32)
    profile = density * np.clip(1.2 - 1.4 * np.abs(rows - rng.uniform(0.35, 0.55)), 0.3, 1.0)[:, None, None]
    return x * (1 - profile) + profile * rng.uniform(150, 215)


def rain(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Overcast darkening, slight blur and bright slanted streaks."""
    x = x * rng.uniform(0.55, 0.85)
    x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.5, 1.2))
    h, w = x.shape[:2]
    streaks = np.zeros((h, w), np.float32)
    n = int(rng.integers(150, 500))
    ys, xs = rng.integers(0, h, n), rng.integers(0, w, n)
    length, slant = int(rng.integers(8, 20)), rng.uniform(-0.3, 0.3)
    for y0, x0 in zip(ys, xs):
        cv2.line(streaks, (int(x0), int(y0)), (int(x0 + slant * length), int(y0 + length)), 1.0, 1)
    streaks = cv2.GaussianBlur(streaks, (0, 0), 0.7) * rng.uniform(40, 90)
    return x + streaks[..., None]


WEATHERS = (night, fog, rain)


def strong_photometric(img: np.ndarray, rng: np.random.Generator, weather_p: float = 0.3) -> np.ndarray:
    """Strong colour jitter (brightness x0.6-1.4, saturation x0.4-1.6, gamma, blur, noise) and, with probability
    ``weather_p``, one of night / fog / rain. Only used where labels cannot be hurt by it: pseudo-labels come from
    the teacher's clean view, and labelled frames keep their labels under any colour change."""
    x = img.astype(np.float32)
    if rng.random() < weather_p:
        x = WEATHERS[rng.integers(len(WEATHERS))](x, rng)
    x = x * rng.uniform(0.6, 1.4) + rng.uniform(-25, 25)
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * rng.uniform(0.4, 1.6)
    x = x * rng.uniform(0.9, 1.1, size=3).astype(np.float32)
    x = np.clip(x, 0, 255)
    if rng.random() < 0.3:
        x = 255.0 * (x / 255.0) ** rng.uniform(0.7, 1.4)
    if rng.random() < 0.3:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.5, 1.5))
    if rng.random() < 0.3:
        x = x + rng.normal(0, rng.uniform(2, 8), x.shape).astype(np.float32)
    return np.clip(x, 0, 255).astype(np.uint8)


def class_mix(target_img: np.ndarray, target_label: np.ndarray, source_img: np.ndarray, source_label: np.ndarray,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """ClassMix / DACS: half of the classes present in the source crop, pixels and labels, pasted onto the target.

    Both crops have the same size. Ignored source pixels (padding) are never pasted.
    """
    present = [c for c in np.unique(source_label) if c != classes.IGNORE_INDEX]
    if not present:
        return target_img, target_label
    chosen = rng.choice(present, size=max(1, len(present) // 2), replace=False)
    mask = np.isin(source_label, chosen)
    img, label = target_img.copy(), target_label.copy()
    img[mask], label[mask] = source_img[mask], source_label[mask]
    return img, label
