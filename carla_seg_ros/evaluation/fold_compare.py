"""`carla-seg compare-folds`: does a new recipe's fold table beat the base's? (``fold_table.compare_tables``)

A recipe wins only when it wins on the mean over the stretch folds and loses no fold by more than --max-fold-loss.
Both tables come from `carla-seg evaluate-boxes --folds K` or `carla-seg self-train --cv` (OUT/folds_teacher.json,
OUT/folds_student.json) with the same K and guard.

Examples:
    carla-seg compare-folds runs/cv_v3/folds_teacher.json runs/cv_boxterm/folds_teacher.json
    carla-seg compare-folds base.json new.json --score recall_truck --max-fold-loss 0.05
    carla-seg compare-folds base.json new.json --score car_precision --json runs/compare.json
Exit status: 0 when the new table wins, 1 when it does not, 2 on bad input.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from carla_seg_ros.evaluation.fold_table import SCORES, compare_tables, format_comparison, format_table

PROG = "carla-seg compare-folds"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("base", type=Path, help="fold table JSON of the recipe to beat")
    p.add_argument("new", type=Path, help="fold table JSON of the candidate recipe")
    p.add_argument("--score", choices=SCORES, default="recall",
                   help="the score that decides (default: %(default)s, vehicle box recall at 25 %% coverage)")
    p.add_argument("--max-fold-loss", type=float, default=0.03,
                   help="the new recipe loses if any fold drops by more than this (default: %(default)s = 3 points)")
    p.add_argument("--min-mean-gain", type=float, default=0.0,
                   help="the mean over the stretch folds must rise by more than this (default: %(default)s)")
    p.add_argument("--show", action="store_true", help="print both fold tables too")
    p.add_argument("--json", type=Path, help="write the verdict here")
    return p


def read_table(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON ({exc.msg} at line {exc.lineno})") from None


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.max_fold_loss < 0:
        print(f"{PROG}: --max-fold-loss must be >= 0", file=sys.stderr)
        return 2
    try:
        base, new = read_table(args.base), read_table(args.new)
        verdict = compare_tables(base, new, args.score, args.max_fold_loss, args.min_mean_gain)
    except ValueError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    if args.show:
        print(f"base: {args.base}\n{format_table(base)}\n\nnew: {args.new}\n{format_table(new)}\n")
    print(format_comparison(verdict, str(args.base), str(args.new)))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"base": str(args.base), "new": str(args.new), **verdict}, indent=1))
    return 0 if verdict["wins"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
