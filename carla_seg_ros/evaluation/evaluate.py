"""`carla-seg evaluate`: metrics of a model on a dataset split (pixel accuracy, IoU, mIoU, Lyft score, FPS).

Examples:
    carla-seg evaluate --split test --json runs/eval/test.json
    carla-seg evaluate --split fullres --json runs/eval/fullres.json          # 800x600, predictions upsampled
    carla-seg evaluate --data ../shared/data/carla_seg_modern --json runs/eval/modern.json   # 23/29 tags remapped

Every frame goes through ``inference.Segmenter`` (resize to the model's input at the frame's aspect for a
keep_aspect model, runtime/input_size.py, inference, nearest-neighbour resize of the prediction back to the frame's
size), exactly as in the node. The ``Evaluation`` accumulator below is shared
with `carla-seg bag-eval`, so a bag made from a split by `carla-seg make-bag` gives the same numbers to the last digit
(only the measured timings differ).
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from carla_seg_ros.evaluation import metrics
from carla_seg_ros.runtime.backends import BACKEND_CHOICES, Backend, create_backend
from carla_seg_ros.classes import CODINGS, IGNORE_INDEX
from carla_seg_ros.datasets import HOOD_MODES, HoodRule, find_pairs, labels_from_tag_ids, read_rgb, read_tag_ids
from carla_seg_ros.runtime.inference import Segmenter
from carla_seg_ros.runtime.input_size import width_range
from carla_seg_ros.runtime.model_info import ModelInfo
from carla_seg_ros.paths import default_data_dir, default_model
from carla_seg_ros.runtime.preprocess import resize_mask

DEFAULT_SAMPLES = 4


def hood_rule(mode: str, info: ModelInfo, row_fraction: float | None = None) -> HoodRule:
    """The label hood rule: ``auto`` = the rule the model was trained with (stored in its metadata)."""
    if mode == "auto":
        return HoodRule(info.hood_mode, info.hood_row_fraction if row_fraction is None else row_fraction)
    return HoodRule(mode, info.hood_row_fraction if row_fraction is None else row_fraction)


class Evaluation:
    """Accumulates one confusion matrix over frames, plus timings and a few sample frames for the report.

    ``add(pred_ids, label)`` takes model class ids; a prediction of another size than the label is resized to the
    label's size with nearest neighbour (ids are never blended). ``result()`` returns the JSON-ready metrics.
    """

    def __init__(self, class_names: list[str], num_samples: int = DEFAULT_SAMPLES, expected_frames: int | None = None):
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.cm = np.zeros((self.num_classes, self.num_classes), np.int64)
        self.per_frame: list[dict] = []
        self.samples: list[dict] = []
        self.batch_seconds: list[tuple[float, int]] = []   # (seconds, frames) of each timed pipeline call
        self.num_samples = num_samples
        self._sample_at = _evenly_spaced(expected_frames, num_samples) if expected_frames else None

    @property
    def frames(self) -> int:
        return len(self.per_frame)

    def add(self, pred_ids: np.ndarray, label: np.ndarray, name: str = "", rgb: np.ndarray | None = None) -> np.ndarray:
        """Count one frame; returns its (C, C) confusion matrix."""
        if pred_ids.shape != label.shape:
            pred_ids = resize_mask(pred_ids, (label.shape[1], label.shape[0]))
        cm = metrics.confusion_matrix(label, pred_ids, self.num_classes)
        self.cm += cm
        index = len(self.per_frame)
        self.per_frame.append({"name": name, "pixel_accuracy": _finite(metrics.pixel_accuracy(cm)),
                               "mean_iou": _finite(metrics.mean_iou(cm)), "pixels": int(cm.sum())})
        if rgb is not None and self._keep_sample(index):
            self.samples.append({"name": name, "rgb": rgb, "pred": pred_ids, "label": label})
        return cm

    def add_timing(self, seconds: float, frames: int) -> None:
        self.batch_seconds.append((float(seconds), int(frames)))

    def _keep_sample(self, index: int) -> bool:
        if self._sample_at is not None:
            return index in self._sample_at
        return len(self.samples) < self.num_samples

    def timing(self) -> dict:
        return pipeline_timing(self.batch_seconds)

    def result(self) -> dict:
        timing = self.timing()
        return {
            "frames": self.frames,
            "class_names": self.class_names,
            "metrics": metrics.summarize(self.cm, self.class_names, timing["fps"]),
            "confusion_matrix": self.cm.tolist(),
            "timing": {k: v for k, v in timing.items() if k != "latency_ms"},
            "latency_ms": timing["latency_ms"],
            "per_frame": self.per_frame,
        }


def pipeline_timing(batch_seconds: list[tuple[float, int]]) -> dict:
    """Frames per second of the whole pipeline (resize + inference + resize back), from (seconds, frames) of the
    timed calls."""
    if not batch_seconds:
        return {"fps": None, "ms_per_frame": None, "latency_ms": []}
    seconds = sum(s for s, _ in batch_seconds)
    frames = sum(n for _, n in batch_seconds)
    per_frame_ms = [1000.0 * s / n for s, n in batch_seconds for _ in range(n)]
    return {"fps": frames / seconds if seconds else None, "ms_per_frame": 1000.0 * seconds / frames,
            "ms_per_frame_p50": float(np.percentile(per_frame_ms, 50)),
            "ms_per_frame_p90": float(np.percentile(per_frame_ms, 90)),
            "latency_ms": per_frame_ms}


def _finite(value: float) -> float | None:
    """NaN (a frame whose pixels are all ignored) becomes None: JSON has no NaN."""
    return None if np.isnan(value) else float(value)


def _evenly_spaced(total: int, count: int) -> set[int]:
    if total <= 0 or count <= 0:
        return set()
    return {int(round(i)) for i in np.linspace(0, total - 1, min(count, total))}


def run_batch(segmenter: Segmenter, evaluation: Evaluation,
              frames: list[tuple[str, np.ndarray, np.ndarray]]) -> tuple[list, list]:
    """Segment a batch of (name, rgb, label) frames, time the whole pipeline and add them.

    Returns (class ids, confidences) at each frame's size.

    The one code path for `evaluate` and `bag-eval`: same resize, same batch, same accumulation.
    """
    t0 = time.perf_counter()
    preds, confs = segmenter.segment_batch([rgb for _, rgb, _ in frames])
    evaluation.add_timing(time.perf_counter() - t0, len(frames))
    for (name, rgb, label), pred in zip(frames, preds):
        evaluation.add(pred, label, name, rgb)
    return preds, confs


def format_summary(result: dict) -> str:
    """A few lines for the terminal."""
    m = result["metrics"]
    lyft = m["lyft"]
    fps = result["timing"].get("fps")
    lines = [f"frames {result['frames']}  pixel accuracy {m['pixel_accuracy'] * 100:.2f} %  mIoU {m['mean_iou']:.4f}  "
             f"Lyft F2 car {lyft['f2_car']:.4f}  F0.5 road {lyft['f05_road']:.4f}  F_avg {lyft['f_avg']:.4f}"
             + (f"  {fps:.1f} FPS" if fps else "")]
    lines.append("  ".join(f"{name} {'-' if v is None else f'{v:.3f}'}" for name, v in m["iou"].items()))
    return "\n".join(lines)


def model_summary(backend: Backend) -> dict:
    info = backend.info
    return {"path": str(backend.model_path), "backend": backend.name, "arch": info.arch,
            "input_size": [info.input_width, info.input_height], "input_policy": info.input_policy,
            "input_widths": list(width_range(info))}


def add_inference_arguments(p: argparse.ArgumentParser, hood: bool = True) -> None:
    """Options shared with `carla-seg bag-eval` and `evaluate-boxes`: the same defaults are part of "same frames,
    same numbers". ``hood=False`` leaves out the hood options, which only apply to labels."""
    p.add_argument("--model", type=Path, default=default_model(), help="exported .onnx (default: %(default)s)")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default="onnxruntime",
                   help="inference runtime (default: %(default)s, the reference)")
    p.add_argument("--threads", type=int, default=0, help="runtime CPU threads (0 = runtime default)")
    p.add_argument("--batch-size", type=int, default=4, help="frames per inference call")
    if hood:
        p.add_argument("--hood", choices=HOOD_MODES + ("auto",), default="auto",
                       help="ego-hood rule for 13-tag labels; auto = the rule stored in the model (default)")
        p.add_argument("--hood-row", type=float,
                       help="first hood row as a fraction of the height (default: the model's)")
    p.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, help="sample overlays in the report")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="carla-seg evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=default_data_dir(),
                   help="dataset folder: prepared layout, flat rgb/label (modern set) or Kaggle (default: %(default)s)")
    p.add_argument("--split", default="test", help="test, val, train, fullres (or a Kaggle sub-folder, all)")
    add_inference_arguments(p)
    p.add_argument("--json", type=Path, help="metrics JSON to write (default: OUT_DIR/metrics.json)")
    p.add_argument("--out-dir", type=Path,
                   help="folder for the confusion matrix, sample overlays and report (default: the JSON's folder)")
    p.add_argument("--coding", choices=("auto",) + CODINGS, default="auto",
                   help="CARLA coding of the labels; auto = from the name prefix (t23_/t29_, else tags13)")
    p.add_argument("--match", action="append", metavar="GLOB",
                   help="evaluate only frames whose name matches this shell pattern (repeatable), e.g. "
                        "--match 'lyft*' --match 'bearpelican*' for the test frames from other drives")
    p.add_argument("--limit", type=int, help="evaluate only the first N frames")
    return p


def output_paths(json_path: Path | None, out_dir: Path | None) -> tuple[Path, Path, str]:
    """(json, folder, file prefix): figures are named after the JSON so several runs can share a folder."""
    if json_path is None and out_dir is None:
        out_dir = Path("runs/eval")
    if json_path is None:
        return out_dir / "metrics.json", out_dir, ""
    return json_path, (out_dir or json_path.parent), f"{json_path.stem}_"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from tqdm import tqdm

    from carla_seg_ros.evaluation import report

    if args.data is None:
        print("carla-seg evaluate: no dataset found; pass --data DIR or set CARLA_SEG_DATA", file=sys.stderr)
        return 2
    if args.batch_size < 1:
        print("carla-seg evaluate: --batch-size must be >= 1", file=sys.stderr)
        return 2
    try:
        pairs = find_pairs(args.data, args.split)
        if args.match:
            pairs = [p for p in pairs if any(fnmatch.fnmatchcase(p.name, g) for g in args.match)]
            if not pairs:
                raise FileNotFoundError(f"no frame of split {args.split!r} matches {' or '.join(args.match)}")
        pairs = pairs[:args.limit]
        backend = create_backend(args.backend, args.model, threads=args.threads)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"carla-seg evaluate: {exc}", file=sys.stderr)
        return 2
    if args.coding != "auto":
        pairs = [replace(p, coding=args.coding) for p in pairs]
    hood = hood_rule(args.hood, backend.info, args.hood_row)
    names = [c["name"] for c in backend.info.classes]
    json_path, out_dir, prefix = output_paths(args.json, args.out_dir)

    segmenter = Segmenter(backend)
    evaluation = Evaluation(names, args.samples, expected_frames=len(pairs))
    codings: dict[str, int] = {}
    with tqdm(total=len(pairs), desc=f"evaluate {args.split}", unit="frame") as bar:
        for start in range(0, len(pairs), args.batch_size):
            batch = []
            for pair in pairs[start:start + args.batch_size]:
                codings[pair.coding] = codings.get(pair.coding, 0) + 1
                # labels in the model's classes: its metadata maps each coding's tags to its class set
                label = labels_from_tag_ids(read_tag_ids(pair.label), pair.coding, hood,
                                            lut=backend.info.tag_lut(pair.coding))
                batch.append((pair.name, read_rgb(pair.rgb), label))
            run_batch(segmenter, evaluation, batch)
            bar.update(len(batch))

    result = evaluation.result()
    result.update({
        "command": "evaluate",
        "data": str(args.data), "split": args.split, "match": args.match, "codings": codings,
        "hood": {"mode": hood.mode, "row_fraction": hood.row_fraction, "applies_to": "tags13 labels"},
        "ignore_index": IGNORE_INDEX, "batch_size": args.batch_size,
        "model": model_summary(backend),
    })
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    figures = report.write_figures(evaluation, out_dir, prefix)
    md, html = report.write_report(result, figures, out_dir, prefix,
                                   title=f"carla-seg evaluate: {Path(args.data).name}/{args.split}")
    save_result(result, json_path, figures, md, html, format_summary(result))
    return 0


def save_result(result: dict, json_path: Path, figures: dict, md: Path, html: Path, summary: str) -> None:
    """The files written (figures, reports) recorded in the result, the result as JSON, and the terminal lines:
    the last step of `evaluate` and `evaluate-boxes`."""
    result["files"] = {k: str(v) for k, v in {**figures, "report_md": md, "report_html": html}.items()}
    json_path.write_text(json.dumps(result, indent=1))
    print(summary)
    print(f"wrote {json_path}, {html} and figures in {Path(html).parent}")     # the reports sit beside the figures


if __name__ == "__main__":
    raise SystemExit(main())
