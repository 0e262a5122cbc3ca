"""The training data of `carla-seg train`: each --data folder's split (prepared splits, or contiguous time blocks of a
recorded folder), its frames and labels held in memory at the model's input size, and the augmented batches
(seeded per sample, so several processes draw what one process would)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from carla_seg_ros import classes
from carla_seg_ros.datasets import (HoodRule, find_pairs, is_flat, read_label, read_rgb, time_block_split,
                                    time_order)
from carla_seg_ros.learning.augment import training_batch
from carla_seg_ros.runtime.preprocess import resize_image, resize_mask


def load_splits(data_dir, splits: list[str], size_wh, hood: HoodRule, limit: int | None = None,
                class_set: str = classes.DEFAULT_CLASS_SET):
    """All frames of the splits, concatenated and resized to the model's input size, as uint8 arrays held in memory
    (~130 MB); labels as class ids of ``class_set``."""
    pairs = [p for split in splits for p in find_pairs(data_dir, split)][:limit]
    return load_pairs(pairs, size_wh, hood, class_set)


def load_pairs(pairs, size_wh, hood: HoodRule, class_set: str = classes.DEFAULT_CLASS_SET):
    """Frames and labels of ``pairs`` (any mix of codings: each label remapped from its own coding to
    ``class_set``), resized to the input size, as uint8 arrays."""
    images = np.stack([resize_image(read_rgb(p.rgb), size_wh) for p in pairs])
    labels = np.stack([resize_mask(read_label(p, hood, class_set), size_wh) for p in pairs])
    return images, labels


def split_folder(data_dir: Path, train_splits: list[str], args) -> tuple[list, list, dict]:
    """(train pairs, val pairs, split record) of one --data folder.

    A prepared folder (train/ val/ ...) gives its splits. A recorded (flat) folder is cut in time: contiguous val
    blocks with guard bands (datasets.time_block_split); "val" in --train-splits then puts the val blocks into
    the training data too (guard frames stay out)."""
    data_dir = Path(data_dir)
    if not is_flat(data_dir):
        train = [p for split in train_splits for p in find_pairs(data_dir, split)]
        val = find_pairs(data_dir, "val")
        return train, val, {"folder": str(data_dir), "layout": "prepared", "train_splits": train_splits,
                            "train": [p.name for p in train], "val": [p.name for p in val]}
    ordered, order = time_order(data_dir, find_pairs(data_dir, "all"))
    blocks = args.val_blocks or max(1, min(5, len(ordered) // 400))
    split = time_block_split(ordered, args.val_fraction, args.guard_frames, blocks)
    train = split.train + (split.val if "val" in train_splits else [])
    codings = sorted({p.coding for p in ordered})
    return train, split.val, {
        "folder": str(data_dir), "layout": "recorded (flat): contiguous time blocks", "order": order,
        "codings": codings, "frames": len(ordered), "val_fraction": args.val_fraction, "guard_frames_per_side":
        args.guard_frames, "val_blocks": [[ordered[a].name, ordered[b].name] for a, b in split.blocks],
        "train": [p.name for p in train], "val": [p.name for p in split.val], "guard": [p.name for p in split.guard]}


def load_data(args, hood: HoodRule, verbose: bool = True):
    """(train images, labels) and (val images, labels) of every --data folder, resized to the input size and held
    in memory; the split of each folder is printed and written to OUT/split.json (rank 0)."""
    t_load = time.time()
    train_pairs, val_pairs, record = [], [], []
    for folder in args.data:
        tr, va, rec = split_folder(folder, args.train_splits, args)
        tr, va = tr[:args.limit_images], va[:args.limit_images]
        train_pairs += tr
        val_pairs += va
        rec.update(train_used=len(tr), val_used=len(va))
        record.append(rec)
        if verbose:
            codings = "+".join(sorted({p.coding for p in tr + va}))
            print(f"data {folder}: {rec['layout']}, {codings}: {len(tr)} train / {len(va)} val frames"
                  + (f" ({len(rec['guard'])} guard frames dropped; val blocks "
                     + ", ".join(f"{a}..{b}" for a, b in rec["val_blocks"]) + f"; order: {rec['order']})"
                     if "guard" in rec else ""))
    if not val_pairs:
        raise SystemExit("no validation frames: give a folder with a val split or a recorded folder")
    if verbose:
        (args.out / "split.json").write_text(json.dumps({"class_set": args.class_set, "folders": record}, indent=1))
    train = load_pairs(train_pairs, args.input_size, hood, args.class_set)
    val = load_pairs(val_pairs, args.input_size, hood, args.class_set)
    if verbose:
        print(f"data: {len(train[0])} frames of {'+'.join(args.train_splits)} / {len(val[0])} val frames "
              f"{'' if 'val' not in args.train_splits else '(NOT held out: part of the training data) '}"
              f"at {args.input_size[0]}x{args.input_size[1]}, classes {args.class_set} "
              f"({time.time() - t_load:.1f}s); split in {args.out / 'split.json'}")
    return train, val


def shard(idx: np.ndarray, rank: int, world: int) -> np.ndarray:
    """This process's contiguous part of a global batch (sizes differ by at most one), as DistributedSampler
    divides a dataset."""
    return np.array_split(idx, world)[rank]


def sample_batch(train_x, train_y, idx, positions, args, paste_ids, epoch: int, step: int):
    """The augmented frames idx. Each sample draws from its own generator, seeded by (seed, epoch, step, position
    in the global batch), so a frame is augmented the same way whichever process takes it."""
    xs, ys = [], []
    for j, pos in zip(idx, positions):
        rng = np.random.default_rng([args.seed, epoch, step, int(pos)])
        xb, yb = training_batch(train_x, train_y, np.array([j]), args, paste_ids, rng)
        xs.append(xb[0])
        ys.append(yb[0])
    return np.stack(xs), np.stack(ys)
