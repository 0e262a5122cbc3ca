"""Leave-one-stretch-out cross-validation for `carla-seg self-train`: every recipe judged the same way.

* ``--folds K --fold I``: the unlabelled frames are cut into folds (``evaluation/folds.py``: K contiguous stretches
  of the boxed recording, the ahvmousavi weathers a fold of their own); the run trains on every fold but I, less
  the guard band around I, and scores fold I (the fold row of ``evaluation/fold_table.py``: recall per class, size
  and lighting, Car precision and its false-positive sources) at step 0, every --eval-every steps and at the end.
* ``--cv``: all folds (or ``--cv-folds``) in sequence, each in ``OUT/fold<I>_<name>/`` with every other option
  unchanged. A fold with a ``final.json`` is done and skipped; an unfinished one resumes from its ``last.pt``, so
  the driver can be stopped and started again. At the end ``OUT/folds_initial.json``, ``folds_student.json`` and
  ``folds_teacher.json`` (fold tables, for `carla-seg compare-folds`) are written and the tables printed.

Example (recipe comparison, equal steps, both from v2, which never saw these frames):
    carla-seg self-train --init v2.safetensors --cv --folds 4 --steps 150 --out runs/cv_v3recipe
    carla-seg compare-folds runs/cv_base/folds_teacher.json runs/cv_v3recipe/folds_teacher.json
"""
from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np

from carla_seg_ros.evaluation.fold_table import FoldScorer, format_table, make_table
from carla_seg_ros.evaluation.folds import DEFAULT_GUARD, MIN_GUARD, Fold, FoldPlan, fold_split, make_folds
from carla_seg_ros.unlabelled import POOL, read_unlabelled, split_unlabelled

MODELS = ("initial", "student", "teacher")
INITIAL_ROW = "initial_fold_row.json"      # the step-0 row, kept apart so a resumed run still reports it


def add_cv_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("leave-one-stretch-out cross-validation (choices that generalise)")
    g.add_argument("--folds", type=int, metavar="K",
                   help="cut the unlabelled frames into K contiguous stretches plus the ahvmousavi fold; with "
                        "--fold, train without one fold and score it; with --cv, every fold in turn")
    g.add_argument("--fold", metavar="I", help="the held-out fold: index (0-based) or name (stretch1, ahvmousavi)")
    g.add_argument("--guard", type=int, default=DEFAULT_GUARD,
                   help=f"source frame numbers either side of the held-out fold used by neither side (>= {MIN_GUARD}; "
                        "default: %(default)s)")
    g.add_argument("--cv", action="store_true",
                   help="run every fold in sequence into OUT/fold<I>_<name>/ (resumable) and write the fold tables "
                        "OUT/folds_{initial,student,teacher}.json")
    g.add_argument("--all-unlabelled", action="store_true",
                   help="train on every unlabelled frame, none held out: the final model once the folds chose its "
                        "recipe (no held-out box scores then)")
    g.add_argument("--cv-folds", type=lambda t: [v for v in t.split(",") if v], metavar="I,J,...",
                   help="with --cv: only these folds (indices or names), e.g. the stretch folds 0,1,2,3")


def check_cv_args(p: argparse.ArgumentParser, args) -> None:
    if args.all_unlabelled and args.folds is not None:
        p.error("--all-unlabelled holds out nothing: it cannot take --folds")
    if args.folds is None:
        if args.fold is not None or args.cv or args.cv_folds:
            p.error("--fold, --cv and --cv-folds need --folds K")
        return
    if args.folds < 1:
        p.error("--folds must be >= 1 (4 or more for choices)")
    if args.guard < MIN_GUARD:
        p.error(f"--guard must be >= {MIN_GUARD} source frame numbers")
    if args.cv == (args.fold is not None):
        p.error("with --folds give exactly one of --fold I (one held-out fold) or --cv (all of them)")
    if args.cv_folds and not args.cv:
        p.error("--cv-folds needs --cv")


def plan_for(args, frames=None) -> FoldPlan:
    return make_folds(frames if frames is not None else read_unlabelled(args.unlabelled), args.folds, args.guard)


def unlabelled_split(args, frames) -> tuple[dict[str, str], Fold | None]:
    """(name -> POOL / HELD_OUT / GUARD, the held-out fold): the fold split with --folds, else the interleaved
    blocks of ``unlabelled.split_unlabelled`` (the split model v3 was chosen on)."""
    if getattr(args, "all_unlabelled", False):
        return {fr.name: POOL for fr in frames}, None
    if not getattr(args, "folds", None):
        return split_unlabelled(frames), None
    plan = plan_for(args, frames)
    return fold_split(plan, frames, args.fold), plan.fold(args.fold)


def save_initial_row(out: Path, row: dict | None) -> None:
    if row is not None:
        (out / INITIAL_ROW).write_text(json.dumps(row))


def final_fold_rows(out: Path, student_row: dict, teacher_row: dict) -> dict:
    """final.json's ``fold_rows``: the step-0 row (saved when the run started) and the two trained models' rows."""
    return {"initial": json.loads((out / INITIAL_ROW).read_text()), "student": student_row, "teacher": teacher_row}


def score_fold(preds: np.ndarray, held: list, held_images: list, car_id: int, fold_name: str,
               stretch: bool) -> dict:
    """The fold row of the held-out fold from the model's masks (at the model's size; ``held`` holds (frame,
    original size) pairs, ``held_images`` the frames at the model's size, which give the lighting)."""
    scorer = FoldScorer(fold_name, stretch, car_id)
    for (frame, size), pred, rgb in zip(held, preds, held_images):
        scorer.add(pred, frame, rgb, image_size=size)
    return scorer.row()


def fold_dir(out: Path, fold) -> Path:
    return out / f"fold{fold.index}_{fold.name}"


def run_cv(args, run_one) -> int:
    """Every fold in turn with ``run_one(fold_args)`` (self-train's run), then the fold tables."""
    plan = plan_for(args)
    chosen = [plan.fold(k) for k in args.cv_folds] if args.cv_folds else list(plan.folds)
    args.out.mkdir(parents=True, exist_ok=True)
    for fold in chosen:
        out = fold_dir(args.out, fold)
        if (out / "final.json").is_file():
            print(f"fold {fold.index} {fold.name}: done before ({out / 'final.json'}), skipped", flush=True)
            continue
        fold_args = copy.copy(args)
        fold_args.cv, fold_args.cv_folds, fold_args.fold, fold_args.out = False, None, str(fold.index), out
        fold_args.resume = (out / "last.pt").is_file()
        print(f"fold {fold.index} {fold.name}: {len(fold.names)} frames held out -> {out}", flush=True)
        code = run_one(fold_args)
        if code:
            return code
    return write_tables(args.out, plan, chosen, vars(args))


def write_tables(out: Path, plan: FoldPlan, chosen, args: dict) -> int:
    rows = {m: [] for m in MODELS}
    for fold in chosen:
        final = json.loads((fold_dir(out, fold) / "final.json").read_text())
        for m in MODELS:
            rows[m].append(final["fold_rows"][m])
    for m in MODELS:
        table = make_table(rows[m], plan.describe(), {"command": "self-train --cv", "model": m,
                                                      "args": {k: str(v) for k, v in args.items()}})
        (out / f"folds_{m}.json").write_text(json.dumps(table, indent=1))
        print(f"\n{m} ({out / f'folds_{m}.json'}):\n{format_table(table)}", flush=True)
    return 0
