"""Training-time augmentation: photometric and weather-like jitter, rescale-and-crop, flips, and copy-paste of
object pixels between training frames (the rare classes in front of new backgrounds)."""
from __future__ import annotations

import cv2
import numpy as np

from carla_seg_ros import classes
from carla_seg_ros.runtime.preprocess import resize_mask


def photometric(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour and weather-like jitter, kept gentle on purpose.

    The first run used strong jitter (brightness x0.6-1.4, saturation x0.5-1.5, colour casts, frequent dusk/haze):
    it fit the training frames to only ~95 % and reached 85 % on val, confusing vegetation with buildings and
    sidewalk with road, whose colour differences that jitter washes out. These ranges keep those cues.
    """
    x = img.astype(np.float32)
    x = x * rng.uniform(0.85, 1.15) + rng.uniform(-12, 12)                    # brightness / contrast
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * rng.uniform(0.85, 1.15)                            # saturation
    x = x * rng.uniform(0.97, 1.03, size=3)                                    # slight white-balance shift
    if rng.random() < 0.1:                                                     # light haze / fog
        a = rng.uniform(0.05, 0.2)
        x = x * (1 - a) + a * rng.uniform(170, 220)
    x = np.clip(x, 0, 255)
    if rng.random() < 0.2:                                                     # gamma (exposure curve)
        x = 255.0 * (x / 255.0) ** rng.uniform(0.8, 1.25)
    if rng.random() < 0.1:                                                     # slight blur (motion, lens)
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.4, 1.0))
    if rng.random() < 0.2:                                                     # sensor noise
        x = x + rng.normal(0, rng.uniform(1, 4), x.shape)
    return np.clip(x, 0, 255).astype(np.uint8)


# Object classes that copy-paste moves between frames: small, rare "things" whose look does not depend on what is
# behind them. Stuff classes (road, building, fence, wall) stay where they were rendered.
PASTE_CLASSES = ("Pedestrian", "Pole", "Car", "TrafficSign")


def copy_paste(img, label, donor_img, donor_label, paste_ids: np.ndarray, rng: np.random.Generator):
    """Paste the object pixels of a donor frame onto a frame, at the same place (copy-paste augmentation).

    Both frames come from the same forward camera at the same height, so an object keeps a plausible size and
    position where it is pasted. It puts rare objects in front of new backgrounds, against the one drive's habit of
    showing each car or pole beside the same kerb. The donor is flipped half the time for more placements.
    """
    if rng.random() < 0.5:
        donor_img, donor_label = donor_img[:, ::-1], donor_label[:, ::-1]
    mask = np.isin(donor_label, paste_ids)
    img, label = img.copy(), label.copy()
    img[mask], label[mask] = donor_img[mask], donor_label[mask]
    return img, label


def augment(img, label, crop_wh, scale_range, rng: np.random.Generator):
    """Random rescale, crop (padding with IGNORE where the scaled frame is smaller), flip, photometric jitter."""
    s = rng.uniform(*scale_range)
    h, w = img.shape[:2]
    sw, sh = max(1, round(w * s)), max(1, round(h * s))
    img = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_LINEAR)
    label = resize_mask(label, (sw, sh))
    cw, ch = crop_wh
    if sw < cw or sh < ch:
        pw, ph = max(0, cw - sw), max(0, ch - sh)
        img = cv2.copyMakeBorder(img, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=0)
        label = cv2.copyMakeBorder(label, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=classes.IGNORE_INDEX)
        sh, sw = label.shape
    y, x = rng.integers(0, sh - ch + 1), rng.integers(0, sw - cw + 1)
    img, label = img[y:y + ch, x:x + cw], label[y:y + ch, x:x + cw]
    if rng.random() < 0.5:
        img, label = img[:, ::-1], label[:, ::-1]
    return photometric(img, rng), np.ascontiguousarray(label)


def training_batch(images, labels, idx, args, paste_ids: np.ndarray, rng: np.random.Generator):
    """The frames idx as one batch, each through copy-paste (with probability args.copy_paste) and augment()."""
    if not args.augment:
        return images[idx], labels[idx]
    batch = []
    for j in idx:
        img, label = images[j], labels[j]
        if args.copy_paste and rng.random() < args.copy_paste:
            donor = rng.integers(len(images))
            img, label = copy_paste(img, label, images[donor], labels[donor], paste_ids, rng)
        batch.append(augment(img, label, args.crop, (args.scale_min, args.scale_max), rng))
    return np.stack([b[0] for b in batch]), np.stack([b[1] for b in batch])
