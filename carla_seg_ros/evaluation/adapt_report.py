"""Before/after scores of `carla-seg adapt`: the start model and the adapted one on the same held-out frames.

``score`` runs one exported model over labelled pairs exactly as `carla-seg evaluate` does (inference.Segmenter,
the model's own tag maps and hood rule, the shared ``Evaluation`` accumulator), so an adapt report and an
`evaluate` run of the same frames agree to the last digit. ``write_report`` writes one self-contained HTML page:
the before/after table (mIoU, pixel accuracy, per-class IoU, box recall where the frames have boxes), the
forgetting guard (or the sentence that only the user's own domain was measured), and the same frames segmented
by both models side by side. ``summary_lines`` is the short version printed at the end.
"""
from __future__ import annotations

import base64
import html
from pathlib import Path

import cv2
import numpy as np

from carla_seg_ros.datasets import labels_from_tag_ids, read_rgb, read_tag_ids
from carla_seg_ros.evaluation.evaluate import Evaluation, hood_rule, run_batch
from carla_seg_ros.evaluation.report import CSS, _html_table, colorize_ids
from carla_seg_ros.runtime.backends import create_backend
from carla_seg_ros.runtime.inference import Segmenter

OVERLAY_WIDTH = 400         # px of each overlay in the report
OVERLAY_ALPHA = 0.5
NOT_MEASURED = ("Only your own domain was measured: without --keep-data nothing checks what the adapted model "
                "forgot of the frames the start model was trained on.")
GUARD_LIMIT = ("The forgetting guard scores the --keep-data frames, a sample of the old domain: it shows forgetting "
               "there, not on other towns or weathers that neither folder holds.")


def score(model: Path, pairs: list, sample_count: int = 4, backend: str = "onnxruntime", threads: int = 0,
          batch_size: int = 4, desc: str = "score") -> tuple[dict, dict]:
    """(metrics of ``model`` on ``pairs``, {name: (rgb, prediction)} of ``sample_count`` evenly spaced frames)."""
    from tqdm import tqdm

    runtime = create_backend(backend, model, threads=threads)
    names = [c["name"] for c in runtime.info.classes]
    hood = hood_rule("auto", runtime.info)
    evaluation = Evaluation(names, sample_count, expected_frames=len(pairs))
    segmenter = Segmenter(runtime)
    for start in tqdm(range(0, len(pairs), batch_size), desc=desc, unit="batch", leave=False):
        batch = [(p.name, read_rgb(p.rgb), labels_from_tag_ids(read_tag_ids(p.label), p.coding, hood,
                                                                 lut=runtime.info.tag_lut(p.coding)))
                 for p in pairs[start:start + batch_size]]
        run_batch(segmenter, evaluation, batch)
    result = evaluation.result()
    m = result["metrics"]
    out = {"frames": result["frames"], "miou": m["mean_iou"], "pixel_accuracy": m["pixel_accuracy"],
           "iou": m["iou"], "class_names": names, "model": str(model)}
    samples = {s["name"]: (s["rgb"], s["pred"]) for s in evaluation.samples}
    return out, samples


def overlay(rgb: np.ndarray, ids: np.ndarray, names: list[str]) -> np.ndarray:
    """The frame blended with its class colours, scaled to OVERLAY_WIDTH."""
    colour = colorize_ids(ids, names)
    blend = (rgb.astype(np.float32) * (1 - OVERLAY_ALPHA) + colour * OVERLAY_ALPHA).astype(np.uint8)
    h = round(blend.shape[0] * OVERLAY_WIDTH / blend.shape[1])
    return cv2.resize(blend, (OVERLAY_WIDTH, h), interpolation=cv2.INTER_AREA)


def _png_uri(rgb: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok, "PNG encoding of an overlay failed"
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _f(value, pct: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value * 100:.2f} %" if pct else f"{value:.4f}"


def _delta(before, after) -> str:
    if before is None or after is None:
        return "-"
    return f"{(after - before):+.4f}"


def table_rows(scores: dict) -> list[tuple]:
    """Rows (part, metric, before, after, change) of the before/after table from ``scores[part][before|after]``."""
    rows = []
    for part, label in (("held_out", "held-out (your frames)"), ("keep", "keep-data (old domain)")):
        if part not in scores:
            continue
        b, a = scores[part]["before"], scores[part]["after"]
        for key, name, pct in (("miou", "mIoU", False), ("pixel_accuracy", "pixel accuracy", True),
                               ("vehicle_box_recall", "vehicle box recall", False)):
            if b.get(key) is not None or a.get(key) is not None:
                rows.append((label, name, _f(b.get(key), pct), _f(a.get(key), pct), _delta(b.get(key), a.get(key))))
    return rows


def class_rows(part: dict) -> list[tuple]:
    before, after = part["before"].get("iou") or {}, part["after"].get("iou") or {}
    return [(name, _f(before.get(name)), _f(after.get(name)), _delta(before.get(name), after.get(name)))
            for name in after or before]


def write_report(path: Path, scores: dict, samples: dict, context: list[tuple], guard_note: str) -> Path:
    """One HTML page: the tables, the guard note and the before/after overlays (``samples``: name -> (rgb,
    before ids, after ids, class names))."""
    body = ["<h2>Before / after</h2>",
            _html_table(("frames", "metric", "start model", "adapted", "change"), table_rows(scores)),
            f"<p><b>{html.escape(guard_note)}</b></p>"]
    for part, label in (("held_out", "Per-class IoU, held-out frames"), ("keep", "Per-class IoU, keep-data")):
        if part in scores and scores[part]["before"].get("iou"):
            body += [f"<h2>{label}</h2>", _html_table(("class", "start model", "adapted", "change"),
                                                      class_rows(scores[part]))]
    if samples:
        body.append("<h2>Held-out frames: start model (left), adapted (right)</h2>")
        for name, (rgb, before, after, names) in samples.items():
            body.append(f"<div><p>{html.escape(name)}</p>"
                        f"<img alt='before {html.escape(name)}' src='{_png_uri(overlay(rgb, before, names))}'> "
                        f"<img alt='after {html.escape(name)}' src='{_png_uri(overlay(rgb, after, names))}'></div>")
    body += ["<h2>Run</h2>", _html_table(("item", "value"), context)]
    title = "carla-seg adapt: before / after"
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{CSS}</style>"
                    f"</head><body><h1>{title}</h1>{''.join(body)}</body></html>")
    return path


def summary_lines(scores: dict, guard_note: str) -> list[str]:
    lines = []
    for label, metric, before, after, change in table_rows(scores):
        lines.append(f"  {label:<24} {metric:<19} {before:>9} -> {after:>9}  ({change})")
    return lines + [f"  {guard_note}"]
