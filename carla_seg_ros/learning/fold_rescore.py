"""`carla-seg rescore-folds`: score the fold models of a `self-train --cv` run again, each on its own held-out
stretch, as they would ship: mixed with the weights they started from (`carla-seg mix-weights`) and/or run at
another input height (a ladder rung exported with `--input-height`). Writes a fold table, so `compare-folds` judges
a mix or a rung exactly as it judges a recipe.

    carla-seg rescore-folds runs/cv_v4 --mix-with v2.safetensors --alpha 0.5 --json runs/cv_v4/folds_mix05.json
    carla-seg rescore-folds runs/cv_v4 --mix-with v2.safetensors --alpha 0.5 --height 384 \\
        --json runs/cv_v4/folds_mix05_h384.json
    carla-seg compare-folds runs/cv_v4/folds_mix05.json runs/cv_v4/folds_mix05_h384.json

Each fold folder's config.json gives the unlabelled folder, K and the guard of the run, so the held-out frames are
exactly the ones the fold's model never saw. Frames are resized to the model's 4:3 size at ``--height`` and scored
in PyTorch (``self_train_cv.score_fold``), as the run itself scored them.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from carla_seg_ros import classes
from carla_seg_ros.evaluation.fold_table import format_table, make_table
from carla_seg_ros.learning.self_train import model_size
from carla_seg_ros.learning.self_train_cv import plan_for, score_fold, unlabelled_split
from carla_seg_ros.learning.self_train_scoring import predict
from carla_seg_ros.learning.weight_mix import mix_share, mix_state
from carla_seg_ros.networks.weights import load_model
from carla_seg_ros.runtime.preprocess import resize_image
from carla_seg_ros.unlabelled import HELD_OUT, frames_of, read_frame, read_unlabelled


def fold_folders(run: Path) -> list[Path]:
    """The fold folders of a CV run that finished (fold<I>_<name>/ with final.json), in fold order."""
    folders = sorted((p for p in run.glob("fold*_*") if (p / "final.json").is_file()),
                     key=lambda p: int(p.name[4:].split("_")[0]))
    if not folders:
        raise ValueError(f"{run} holds no finished fold of a `self-train --cv` run (fold<I>_<name>/final.json)")
    return folders


def run_options(folder: Path) -> argparse.Namespace:
    """The fold run's own split options, from its config.json (written as strings), as self-train parsed them."""
    saved = json.loads((folder / "config.json").read_text())["args"]
    limit = saved.get("limit_images")
    return argparse.Namespace(unlabelled=saved["unlabelled"], folds=int(saved["folds"]), guard=int(saved["guard"]),
                              fold=saved["fold"], height=int(saved["height"]),
                              limit_images=None if limit in (None, "None") else int(limit))


def rescore_fold(folder: Path, which: str, base: dict | None, alpha: float, height: int | None) -> dict:
    """The fold-table row of one fold's model (mixed with ``base`` at ``alpha`` when given) on its held-out stretch."""
    opts = run_options(folder)
    model, _ = load_model(folder / f"{which}.safetensors")
    if base is not None:
        model.load_state_dict(mix_state(model.state_dict(), base, alpha))
    frames = read_unlabelled(opts.unlabelled)
    split, fold = unlabelled_split(opts, frames)          # the very frames the run held out and scored
    held = frames_of(frames, split, HELD_OUT)[:opts.limit_images]
    size = model_size(height or opts.height)
    rgbs = [read_frame(fr) for fr in held]
    images = [resize_image(rgb, size) for rgb in rgbs]
    preds = predict(model, np.stack(images), "cpu")
    car_id = classes.class_names().index("Car")
    return score_fold(preds, [(fr, (rgb.shape[1], rgb.shape[0])) for fr, rgb in zip(held, rgbs)], images, car_id,
                      fold.name, fold.stretch)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="carla-seg rescore-folds", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="output folder of `carla-seg self-train --cv`")
    p.add_argument("--model", choices=["student", "teacher"], default="student", help="which weights of each fold")
    p.add_argument("--mix-with", type=Path, help="weights to mix each fold's model with (the run's --init)")
    p.add_argument("--alpha", type=mix_share, default=1.0, help="share of the fold's model in the mix (default 1.0)")
    p.add_argument("--height", type=int, help="input height to score at (a multiple of 32; default: the run's)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = all cores)")
    p.add_argument("--json", type=Path, required=True, help="fold table to write")
    return p


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.height is not None and (args.height < 32 or args.height % 32):
        p.error(f"--height must be a positive multiple of 32, got {args.height}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        folders = fold_folders(args.run)
        base = load_file(str(args.mix_with)) if args.mix_with else None
        from tqdm import tqdm
        rows = [rescore_fold(f, args.model, base, args.alpha, args.height)
                for f in tqdm(folders, desc="folds", disable=None)]
    except (OSError, ValueError, KeyError, SafetensorError) as exc:
        print(f"carla-seg rescore-folds: {exc}", file=sys.stderr)
        return 2
    table = make_table(rows, plan_for(run_options(folders[0])).describe(),
                       {"command": "rescore-folds", "model": args.model,
                        "args": {k: str(v) for k, v in vars(args).items()}})
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(table, indent=1))
    print(format_table(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
