"""The honest split of `carla-seg adapt`: frames in time order -> fine-tune part, guard band, held-out stretch.

Neighbouring frames of a drive are near copies, so a held-out frame must not have a neighbour in the fine-tune
part: the held-out part is one contiguous stretch at the END of the recording (the frames a user drives next), and
``guard`` frames before it are dropped. Interleaved blocks would score the same streets seconds later.

Several source folders (several bags) are concatenated in the order given, each in its own time order
(datasets.time_order: the manifest's stamps, else the names), so the held-out stretch is the end of the last one.

``write_prepared`` lays the parts out as a prepared dataset (``train/`` and ``val/`` with rgb/ and label/ links and
a manifest naming each frame's coding), which `carla-seg train` reads as it is: its "val" is the held-out part, for
which it only prints a figure (adapt uses the final weights, never a checkpoint chosen on held-out frames).
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from carla_seg_ros.datasets import Pair, find_pairs, is_flat, time_block_split, time_order

MIN_FRAMES = 12               # below this there is no fine-tune part and held-out stretch worth a number
DEFAULT_HELD_OUT = 0.2
DEFAULT_GUARD = 10


class TooFewFrames(ValueError):
    pass


@dataclass(frozen=True)
class AdaptSplit:
    finetune: list
    guard: list
    held_out: list

    def record(self) -> dict:
        def span(part):
            return [part[0].name, part[-1].name] if part else []
        return {"finetune": len(self.finetune), "guard": len(self.guard), "held_out": len(self.held_out),
                "finetune_span": span(self.finetune), "held_out_span": span(self.held_out),
                "held_out_names": [p.name for p in self.held_out]}


def ordered_pairs(folders: list[Path]) -> list[Pair]:
    """Every labelled pair of ``folders``, each folder in time order, folders in the order given."""
    out = []
    for folder in folders:
        pairs = find_pairs(folder, "all") if is_flat(folder) else \
            [p for split in ("train", "val", "test") if (Path(folder) / split / "rgb").is_dir()
             for p in find_pairs(folder, split)]
        out += time_order(folder, pairs)[0]
    return out


def split_in_time(ordered: list, held_out_fraction: float = DEFAULT_HELD_OUT, guard: int = DEFAULT_GUARD,
                  min_frames: int = MIN_FRAMES) -> AdaptSplit:
    """The last ``held_out_fraction`` of the frames held out, ``guard`` frames before them dropped (shrunk on short
    recordings so the fine-tune part keeps at least half of the frames). TooFewFrames below ``min_frames``."""
    n = len(ordered)
    if n < min_frames:
        raise TooFewFrames(f"too few frames: {n} labelled frames, adapt needs at least {min_frames} (record more, "
                           "or lower --min-frames)")
    if not 0.0 < held_out_fraction < 1.0:
        raise ValueError(f"--held-out is a fraction in (0, 1), got {held_out_fraction}")
    n_held = max(1, round(n * held_out_fraction))
    guard = max(0, min(guard, n - n_held - (n + 1) // 2))
    cut = n - n_held
    return AdaptSplit(list(ordered[:cut - guard]), list(ordered[cut - guard:cut]), list(ordered[cut:]))


def keep_parts(folder: Path, guard: int = DEFAULT_GUARD) -> tuple[list, list]:
    """(train part, scored part) of a --keep-data folder: its train and val splits when it has them, else the
    last tenth of its frames in time (one block, with guard frames) as the scored part."""
    folder = Path(folder)
    if (folder / "train" / "rgb").is_dir() and (folder / "val" / "rgb").is_dir():
        return find_pairs(folder, "train"), find_pairs(folder, "val")
    ordered = ordered_pairs([folder])
    split = time_block_split(ordered, 0.1, guard, 1)
    return split.train, split.val


def thin(pairs: list, count: int) -> list:
    """``count`` frames spread evenly over ``pairs`` (all of them if there are not more)."""
    if count >= len(pairs):
        return list(pairs)
    step = len(pairs) / count
    return [pairs[int(i * step)] for i in range(count)]


def write_prepared(root: Path, parts: dict[str, list[tuple[str, Pair]]]) -> Path:
    """``root/<split>/{rgb,label}/<name>.png`` links to the pairs' files, and ``root/<split>/manifest.csv`` with
    each frame's coding (names get a source prefix, so two folders' frames never collide)."""
    for split, entries in parts.items():
        rgb_dir, label_dir = root / split / "rgb", root / split / "label"
        rgb_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        with open(root / split / "manifest.csv", "w", newline="") as f:
            w = csv.DictWriter(f, ["name", "coding", "source"])
            w.writeheader()
            for name, pair in entries:
                for link, target in ((rgb_dir / f"{name}.png", pair.rgb), (label_dir / f"{name}.png", pair.label)):
                    if link.is_symlink() or link.exists():
                        link.unlink()
                    os.symlink(Path(target).resolve(), link)
                w.writerow({"name": name, "coding": pair.coding, "source": str(pair.rgb)})
    return root
