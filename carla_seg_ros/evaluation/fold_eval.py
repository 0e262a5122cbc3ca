"""`carla-seg evaluate-boxes --folds K`: one fixed model's box scores per leave-one-stretch-out fold.

Every frame of the folder is scored once, in its fold (``evaluation/folds.py``: K contiguous stretches of the boxed
recording by source frame number, the ahvmousavi weathers a fold of their own). Guard bands only matter when a fold
is held out of training (``self-train --fold``); a fixed model trained elsewhere is scored on every frame. Mind what
the model was trained on: a model self-trained on this folder's frames (v3 and the fast rung were, on the old
split's pool) gives fit figures here, not held-out ones.

Written: the fold table JSON (``fold_table.make_table``, plus the model and timing), a Markdown file beside it with
the per-fold table, mean ± std, worst fold and the false-positive sources, and the table on the terminal.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import sys
import time
from pathlib import Path

from carla_seg_ros.evaluation.boxes import BoxRule
from carla_seg_ros.evaluation.evaluate import model_summary
from carla_seg_ros.evaluation.fold_table import FP_SHARES, FoldScorer, format_table, make_table
from carla_seg_ros.evaluation.folds import DEFAULT_GUARD, MIN_GUARD, make_folds
from carla_seg_ros.runtime.backends import create_backend
from carla_seg_ros.runtime.inference import Segmenter
from carla_seg_ros.unlabelled import read_frame, read_unlabelled


def add_fold_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--folds", type=int, metavar="K",
                   help="score per leave-one-stretch-out fold: K contiguous stretches of the boxed recording "
                        "(>= 4 for choices) plus the ahvmousavi fold; writes a fold table (mean ± std, worst fold)")
    p.add_argument("--guard", type=int, default=DEFAULT_GUARD,
                   help="with --folds: guard band in source frame numbers either side of a held-out fold, recorded "
                        f"in the table (>= {MIN_GUARD}; default: %(default)s)")


def check_fold_arguments(args) -> str | None:
    if args.folds is not None and args.folds < 1:
        return "--folds must be >= 1 (4 or more for choices)"
    if args.guard < MIN_GUARD:
        return f"--guard must be >= {MIN_GUARD} source frame numbers"
    return None


def score_folds(segmenter: Segmenter, frames, plan, car_id: int, rule: BoxRule, batch_size: int = 4,
                limit: int | None = None, progress: bool = True) -> tuple[list[dict], dict]:
    """(fold rows, {unreadable, frames_scored, seconds}) for every frame of every fold (first ``limit`` per fold)."""
    from tqdm import tqdm

    by_name = {fr.name: fr for fr in frames}
    rows, unreadable, scored, t0 = [], [], 0, time.perf_counter()
    total = sum(len(f.names[:limit]) for f in plan.folds)
    with tqdm(total=total, desc="evaluate-boxes folds", unit="frame", disable=not progress or None) as bar:
        for fold in plan.folds:
            scorer = FoldScorer(fold.name, fold.stretch, car_id, rule)
            members = [by_name[n] for n in fold.names[:limit]]
            for start in range(0, len(members), batch_size):
                batch = []
                for frame in members[start:start + batch_size]:
                    try:
                        batch.append((frame, read_frame(frame)))
                    except (ValueError, OSError) as exc:   # count and skip: one bad file must not end the run
                        unreadable.append({"name": frame.name, "error": str(exc)})
                if batch:
                    preds, _ = segmenter.segment_batch([rgb for _, rgb in batch])
                    for (frame, rgb), pred in zip(batch, preds):
                        scorer.add(pred, frame, rgb, (rgb.shape[1], rgb.shape[0]))
                        scored += 1
                bar.update(len(members[start:start + batch_size]))
            rows.append(scorer.row())
    return rows, {"unreadable": unreadable, "frames_scored": scored, "seconds": time.perf_counter() - t0}


def markdown(table: dict, title: str) -> str:
    m = table.get("model", {})
    lines = [f"# {title}", "", f"model: {m.get('path')} ({m.get('arch')}, input "
             f"{'x'.join(str(v) for v in m.get('input_size', []))}), backend {m.get('backend')}", "",
             f"folds: {table['plan']['rule']}", "",
             f"rule: vehicle box found when >= {table['rule']['coverage']:g} of its visible pixels are Car; boxes "
             f">= {table['rule']['min_area_px']:g} px; Car precision in boxes grown by {table['rule']['grow']:g}", "",
             "## Vehicle box recall and Car precision per fold", "", format_table(table), "",
             "## Where the Car pixels outside every box lie (share of those pixels; no labels, so by place)", "",
             format_table(table, FP_SHARES), ""]
    lines += ["## Car share per weather and lighting (the score of folds without boxes)", ""]
    lines += [f"- {r['fold']}: " + ", ".join(f"{k} {100 * v:.2f} %" for k, v in r["car_share_by_group"].items()
                                             if v is not None) for r in table["folds"] if r.get("car_share_by_group")]
    lines.append("")
    tops = [(r["fold"], r.get("top_fp_frames") or []) for r in table["folds"]]
    lines += ["## Frames with the most Car pixels outside every box", ""]
    lines += [f"- {fold}: " + ", ".join(f"{t['name']} ({100 * t['fp_share_of_frame']:.1f} % of the frame)"
                                        for t in top) for fold, top in tops if top]
    return "\n".join(lines) + "\n"


def run(args, prog: str = "carla-seg evaluate-boxes") -> int:
    """The --folds path of evaluate-boxes (args from its parser, with add_fold_arguments)."""
    problem = check_fold_arguments(args)
    if problem:
        print(f"{prog}: {problem}", file=sys.stderr)
        return 2
    try:
        frames = read_unlabelled(args.data)
        if args.match:
            frames = [fr for fr in frames if any(fnmatch.fnmatchcase(fr.name, g) for g in args.match)]
            if not frames:
                raise FileNotFoundError(f"no frame matches {' or '.join(args.match)}")
        plan = make_folds(frames, args.folds, args.guard)
        backend = create_backend(args.backend, args.model, threads=args.threads)
        names = [c["name"] for c in backend.info.classes]
        if "Car" not in names:
            raise ValueError(f"model {args.model} has no Car class (classes: {names})")
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    rule = BoxRule(args.min_area, args.coverage, args.grow)
    rows, info = score_folds(Segmenter(backend), frames, plan, names.index("Car"), rule, args.batch_size,
                             args.limit)
    if not info["frames_scored"]:
        print(f"{prog}: none of the selected images could be read", file=sys.stderr)
        return 2
    table = make_table(rows, plan.describe(), {
        "command": "evaluate-boxes --folds", "data": str(args.data), "model": model_summary(backend),
        "rule": {"min_area_px": rule.min_area, "coverage": rule.coverage, "grow": rule.grow},
        "limit_per_fold": args.limit, "match": args.match, "frames_scored": info["frames_scored"],
        "unreadable": info["unreadable"], "wall_seconds": round(info["seconds"], 1)})
    json_path = args.json or (args.out_dir or Path("runs/eval_boxes")) / "folds.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(table, indent=1))
    md_path = (args.out_dir or json_path.parent) / f"{json_path.stem}.md"
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(markdown(table, f"{prog} --folds {args.folds}: {Path(args.data).name}"))
    print(format_table(table))
    if info["unreadable"]:
        print(f"unreadable images skipped: {len(info['unreadable'])}")
    print(f"wrote {json_path} and {md_path} ({info['frames_scored']} frames in {info['seconds']:.0f} s)")
    return 0
