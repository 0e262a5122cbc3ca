"""`carla-seg evaluate-boxes`: box scores of a model on unlabelled CARLA frames (no semantic labels, 2D boxes).

Examples:
    carla-seg evaluate-boxes --json runs/eval/boxes_held_out.json                  # the held-out block (default)
    carla-seg evaluate-boxes --part pool --json runs/eval/boxes_pool.json          # the frames self-training uses
    carla-seg evaluate-boxes --part all --match 'relke_*' --coverage 0.5 --json runs/eval/boxes_relke.json
    carla-seg evaluate-boxes --data ../shared/data/carla_unlabelled --limit 40 --samples 6 --out-dir runs/eval/b
    carla-seg evaluate-boxes --folds 4 --json runs/eval/folds_v3.json        # per leave-one-stretch-out fold

Scores (``evaluation/boxes.py``, docs/tutorials/offline_evaluation.md "Frames without labels"):
  vehicle box recall   share of car/truck boxes with >= --min-area visible pixels whose pixels are at least
                       --coverage predicted Car;
  Car precision        share of predicted Car pixels inside some box (any class) grown by --grow on every side,
                       on frames of sources that box their objects (a lower bound: far cars are often unboxed);
  Car share            predicted Car pixels / all pixels, on every frame (the one number for unboxed sources).
Both overall and per group: source=, weather= (where the manifest names it) and lighting= (dark: mean grey < 40).

--folds K: every frame scored in its fold of ``evaluation/folds.py`` (K contiguous stretches of the boxed recording
by source frame number, the ahvmousavi weathers a fold of their own); a fold table per fold with recall per box
class, size bucket and lighting, Car precision and where the Car pixels outside every box lie, then the mean ± std
and worst fold of the stretch folds (``evaluation/fold_eval.py``; compare two with `carla-seg compare-folds`).
--limit then applies per fold, --part and --samples do not apply.

--part: the held-out split of ``unlabelled.split_unlabelled`` (every fifth block of each recording, guard frames on
both sides) is computed on the whole folder, so held_out here is the block self-training never sees.

Every frame goes through ``inference.Segmenter`` (resize to the model's input, inference, nearest-neighbour resize
of the prediction back to the frame's size), exactly as in `carla-seg evaluate` and the node.
"""
from __future__ import annotations

import argparse
import fnmatch
import sys
import time
from pathlib import Path

import numpy as np

from carla_seg_ros.evaluation.boxes import BoxRule, BoxScores, scored_boxes
from carla_seg_ros.evaluation.evaluate import (_evenly_spaced, add_inference_arguments, model_summary, output_paths,
                                               pipeline_timing, save_result)
from carla_seg_ros.evaluation.fold_eval import add_fold_arguments
from carla_seg_ros.evaluation.fold_eval import run as run_folds
from carla_seg_ros.paths import default_unlabelled_dir
from carla_seg_ros.runtime.backends import create_backend
from carla_seg_ros.runtime.inference import Segmenter
from carla_seg_ros.runtime.preprocess import resize_image, resize_mask
from carla_seg_ros.unlabelled import (GUARD, HELD_OUT, POOL, VEHICLE_BOX_CLASSES, UnlabelledFrame, read_frame,
                                      read_unlabelled, split_unlabelled)

PARTS = (HELD_OUT, POOL, "all")
SAMPLE_WIDTH = 480          # px: sample overlays are stored and drawn at this width
PROG = "carla-seg evaluate-boxes"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=default_unlabelled_dir(),
                   help="folder of unlabelled frames: rgb/, manifest.csv, boxes.csv (default: %(default)s)")
    p.add_argument("--part", choices=PARTS, default=HELD_OUT,
                   help="held_out (default: never trained on), pool (the self-training frames) or all (with guards)")
    add_inference_arguments(p, hood=False)
    p.add_argument("--min-area", type=float, default=BoxRule.min_area,
                   help="vehicle boxes with fewer visible pixels are not scored for recall (default: %(default)s)")
    p.add_argument("--coverage", type=float, default=BoxRule.coverage,
                   help="a vehicle box is found when this share of its pixels is Car (default: %(default)s)")
    p.add_argument("--grow", type=float, default=BoxRule.grow,
                   help="boxes grow by this share of their size on every side for Car precision (default: %(default)s)")
    p.add_argument("--match", action="append", metavar="GLOB",
                   help="score only frames whose name matches this shell pattern (repeatable), e.g. 'relke_*'")
    p.add_argument("--limit", type=int, help="score only the first N frames of the part")
    p.add_argument("--json", type=Path, help="scores JSON to write (default: OUT_DIR/metrics.json)")
    p.add_argument("--out-dir", type=Path,
                   help="folder for the figures and the report (default: the JSON's folder, else runs/eval_boxes)")
    add_fold_arguments(p)
    return p


def select_frames(frames: list[UnlabelledFrame], split: dict[str, str], part: str, match: list[str] | None,
                  limit: int | None) -> list[UnlabelledFrame]:
    chosen = frames if part == "all" else [fr for fr in frames if split[fr.name] == part]
    if match:
        chosen = [fr for fr in chosen if any(fnmatch.fnmatchcase(fr.name, g) for g in match)]
    if not chosen:
        raise FileNotFoundError(f"no frame of part {part!r}" + (f" matches {' or '.join(match)}" if match else ""))
    return chosen[:limit]


def sample_indices(frames: list[UnlabelledFrame], count: int) -> set[int]:
    """Evenly spaced frames with a vehicle box (the overlays are about boxes), filled up with evenly spaced others."""
    boxed = [i for i, fr in enumerate(frames) if any(b.cls in VEHICLE_BOX_CLASSES for b in fr.boxes)]
    chosen = {boxed[i] for i in _evenly_spaced(len(boxed), count)}
    rest = [i for i in range(len(frames)) if i not in chosen]
    return chosen | {rest[i] for i in _evenly_spaced(len(rest), count - len(chosen))}


def make_sample(frame: UnlabelledFrame, rgb: np.ndarray, pred: np.ndarray, rule: BoxRule, car_id: int,
                coverages: list[float]) -> dict:
    """A small copy of the frame and its Car mask, with every box in sample pixels and how it was judged."""
    h, w = rgb.shape[:2]
    size = (SAMPLE_WIDTH, int(round(h * SAMPLE_WIDTH / w)))
    s = size[0] / w
    scored = scored_boxes(frame, rule, (w, h))
    boxes = []
    for box in frame.boxes:
        kind, cov = "other", None
        visible = box.clipped(w, h)
        if visible in scored:
            cov = coverages[scored.index(visible)]
            kind = "found" if cov >= rule.coverage else "missed"
        elif box.cls in VEHICLE_BOX_CLASSES:
            kind = "small"
        boxes.append({"cls": box.cls, "xyxy": [box.x0 * s, box.y0 * s, box.x1 * s, box.y1 * s], "kind": kind,
                      "coverage": cov})
    return {"name": frame.name, "rgb": resize_image(rgb, size), "car": resize_mask(pred, size) == car_id,
            "boxes": boxes}


def validate(args) -> str | None:
    if args.data is None:
        return "no unlabelled frames found; pass --data DIR or set CARLA_SEG_UNLABELLED"
    if not Path(args.data).is_dir():
        return f"{args.data} does not exist or is not a folder"
    if args.batch_size < 1:
        return "--batch-size must be >= 1"
    if not 0.0 < args.coverage <= 1.0:
        return "--coverage must be in (0, 1]"
    if args.grow < 0 or args.min_area < 0:
        return "--grow and --min-area must be >= 0"
    if args.limit is not None and args.limit < 1:
        return "--limit must be >= 1"
    if args.samples < 0:
        return "--samples must be >= 0"
    return None


def format_summary(result: dict) -> str:
    """A few lines for the terminal: the two scores overall, then one line per group."""
    o, rule, t = result["overall"], result["rule"], result["timing"]

    def pct(v):
        return "    n/a" if v is None else f"{100 * v:5.1f} %"

    lines = [f"frames {result['frames_scored']} scored ({result['part']} of {result['data']})"
             + (f", {result['unreadable']['count']} unreadable skipped" if result["unreadable"]["count"] else "")
             + (f"  {t['fps']:.1f} FPS ({result['model']['backend']})" if t.get("fps") else ""),
             f"vehicle box recall {pct(o['recall'])}  found {o['found']}/{o['vehicle_boxes']} boxes "
             f"(coverage >= {rule['coverage']:g}, >= {rule['min_area_px']:g} px)",
             f"Car precision {pct(o['car_precision'])}  (Car pixels in boxes grown by {rule['grow']:g}, "
             f"{o['boxed_frames']} boxed frames)   Car share {pct(o['car_share'])} of all pixels",
             f"  {'group':<22} {'frames':>6}  {'recall':>7}  {'found/boxes':>11}  {'Car precision':>13}  "
             f"{'Car share':>9}"]
    order = {"source": 0, "weather": 1, "lighting": 2}
    for key, g in sorted(result["groups"].items(), key=lambda kv: (order.get(kv[0].split("=")[0], 3), kv[0])):
        lines.append(f"  {key:<22} {g['frames']:>6}  {pct(g['recall'])}  {g['found']:>5}/{g['vehicle_boxes']:<5}  "
                     f"{pct(g['car_precision']):>13}  {pct(g['car_share']):>9}")
    if result["unreadable"]["count"]:
        lines.append(f"unreadable images skipped: {', '.join(result['unreadable']['names'][:5])}"
                     + (" ..." if result["unreadable"]["count"] > 5 else ""))
    return "\n".join(lines)


def fail(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    problem = validate(args)
    if problem:
        return fail(problem)
    if args.folds is not None:
        return run_folds(args, PROG)
    from tqdm import tqdm

    from carla_seg_ros.evaluation import box_report

    try:
        every = read_unlabelled(args.data)
        split = split_unlabelled(every)
        frames = select_frames(every, split, args.part, args.match, args.limit)
        if not any(fr.has_boxes for fr in frames):
            raise FileNotFoundError(f"none of the {len(frames)} selected frames has boxes, nothing to score "
                                    f"(no boxes.csv in {args.data}, or --match/--limit kept only unboxed sources)")
        backend = create_backend(args.backend, args.model, threads=args.threads)
        names = [c["name"] for c in backend.info.classes]
        if "Car" not in names:
            raise ValueError(f"model {args.model} has no Car class (classes: {names})")
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
        return fail(str(exc))

    rule = BoxRule(args.min_area, args.coverage, args.grow)
    car_id = names.index("Car")
    scores = BoxScores(car_id, rule)
    segmenter = Segmenter(backend)
    default_dir = None if args.json else Path("runs/eval_boxes")
    json_path, out_dir, prefix = output_paths(args.json, args.out_dir or default_dir)
    keep = sample_indices(frames, args.samples)
    samples, unreadable, batch_seconds = [], [], []
    t_start = time.perf_counter()
    with tqdm(total=len(frames), desc=f"evaluate-boxes {args.part}", unit="frame") as bar:
        for start in range(0, len(frames), args.batch_size):
            batch = []
            for index, frame in enumerate(frames[start:start + args.batch_size], start):
                try:
                    batch.append((index, frame, read_frame(frame)))
                except (ValueError, OSError) as exc:    # count and skip: one bad file must not end a long run
                    unreadable.append({"name": frame.name, "error": str(exc)})
            if batch:
                t0 = time.perf_counter()
                preds, _ = segmenter.segment_batch([rgb for _, _, rgb in batch])
                batch_seconds.append((time.perf_counter() - t0, len(batch)))
                for (index, frame, rgb), pred in zip(batch, preds):
                    size = (rgb.shape[1], rgb.shape[0])
                    scores.add(pred, frame, rgb, image_size=size)
                    if index in keep:   # unrounded coverages of this frame's scored boxes, in order
                        n = len(scores.per_frame[-1]["coverages"])
                        coverages = [c for _, _, c in scores.boxes[len(scores.boxes) - n:]]
                        samples.append(make_sample(frame, rgb, pred, rule, car_id, coverages))
            bar.update(min(args.batch_size, len(frames) - start))
    if not scores.per_frame:
        return fail(f"none of the {len(frames)} selected images could be read (first: {unreadable[0]['error']})")

    timing = pipeline_timing(batch_seconds)
    result = scores.result()
    counts = {p: sum(1 for v in split.values() if v == p) for p in (POOL, HELD_OUT, GUARD)}
    result.update({
        "command": "evaluate-boxes",
        "data": str(args.data), "part": args.part, "match": args.match, "limit": args.limit,
        "split": {"rule": "split_unlabelled: every 5th block of about 60 frames of each sequence held out, "
                          "2 guard frames on each side of a held-out block used by neither side",
                  "frames_in_folder": len(every), **counts},
        "frames_selected": len(frames), "frames_scored": len(scores.per_frame),
        "unreadable": {"count": len(unreadable), "names": [u["name"] for u in unreadable],
                       "errors": [u["error"] for u in unreadable]},
        "model": model_summary(backend), "batch_size": args.batch_size, "threads": args.threads,
        "timing": {k: v for k, v in timing.items() if k != "latency_ms"},
        "wall_seconds": time.perf_counter() - t_start,
    })
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    figures = box_report.write_figures(result, samples, out_dir, prefix)
    md, html = box_report.write_report(result, figures, out_dir, prefix,
                                       title=f"{PROG}: {Path(args.data).name}/{args.part}")
    save_result(result, json_path, figures, md, html, format_summary(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
