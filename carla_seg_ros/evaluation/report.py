"""Figures and reports for `carla-seg evaluate` and `carla-seg bag-eval`: PNGs, a Markdown file and one
self-contained HTML page (images base64-embedded, no external files, so it can be mailed or attached to CI).
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from carla_seg_ros.classes import IGNORE_INDEX, colors_for, model_coding

IGNORE_COLOR = (255, 255, 255)   # ignored label pixels (e.g. the hood with --hood ignore): white, unlike any class
SAMPLE_PANEL_WIDTH = 400         # px per panel in the sample strip; 2048-wide frames are shrunk to this


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")   # headless: no display on CI or on the robot
    import matplotlib.pyplot as plt
    return plt


def class_colors(names: list[str] | None = None) -> np.ndarray:
    """The colours of a model's classes (by their names: its class set's colours); default: the 13 classes."""
    return colors_for(names) if names is not None else model_coding().colors


def colorize_ids(ids: np.ndarray, names: list[str] | None = None) -> np.ndarray:
    """Class ids -> RGB palette image in the colours of the classes ``names``; IGNORE_INDEX pixels in
    IGNORE_COLOR."""
    lut = np.zeros((256, 3), np.uint8)
    colors = class_colors(names)
    lut[:len(colors)] = colors
    lut[IGNORE_INDEX] = IGNORE_COLOR
    return lut[ids]


def plot_confusion(cm: np.ndarray, names: list[str], path: Path) -> Path:
    """Row-normalised confusion matrix (rows = ground truth): each row shows where that class's pixels went."""
    plt = _pyplot()
    cm = np.asarray(cm, np.float64)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    n = len(names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.62 * n, 0.8 + 0.55 * n), dpi=110)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), names, rotation=45, ha="right")
    ax.set_yticks(range(n), [f"{name} ({share:.1%})" for name, share in zip(names, rows[:, 0] / max(cm.sum(), 1))])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("ground-truth class (share of labelled pixels)")
    for i in range(n):
        for j in range(n):
            if norm[i, j] >= 0.005:
                ax.text(j, i, f"{100 * norm[i, j]:.0f}" if norm[i, j] >= 0.095 else f"{100 * norm[i, j]:.1f}",
                        ha="center", va="center", fontsize=7, color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title("confusion matrix, % of each ground-truth row")
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_iou(iou: dict, mean_iou: float, path: Path) -> Path:
    """Per-class IoU as horizontal bars in the class colours; classes absent from labels and predictions say n/a."""
    plt = _pyplot()
    names = list(iou)
    values = [iou[n] if iou[n] is not None else 0.0 for n in names]
    colors = class_colors(names)[:len(names)] / 255.0
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.2), dpi=110)
    bars = ax.barh(range(len(names)), values, color=colors, edgecolor="black", linewidth=0.6)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.08)
    ax.axvline(mean_iou, color="tab:red", linestyle="--", linewidth=1, label=f"mIoU {mean_iou:.3f}")
    ax.legend(loc="lower right", fontsize=8)
    for bar, name in zip(bars, names):
        label = "n/a" if iou[name] is None else f"{iou[name]:.3f}"
        ax.text(bar.get_width() + 0.01, bar.get_y() + bar.get_height() / 2, label, va="center", fontsize=8)
    ax.set_xlabel("IoU")
    ax.set_title("per-class IoU")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_latency(latency_ms: list[float], path: Path, label: str = "per-frame pipeline time") -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=110)
    data = np.asarray(latency_ms, np.float64)
    ax.hist(data, bins=min(40, max(5, len(data) // 2)), color="tab:blue", edgecolor="white")
    for q, style in ((50, "-"), (90, "--")):
        v = float(np.percentile(data, q))
        ax.axvline(v, color="tab:red", linestyle=style, linewidth=1, label=f"p{q} {v:.1f} ms")
    ax.set_xlabel("ms per frame (resize + inference + resize back; batch time / batch size)")
    ax.set_ylabel("frames")
    ax.set_title(label)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_samples(samples: list[dict], names: list[str], path: Path) -> Path:
    """One row per sample: image | prediction | ground truth, with a class-colour legend."""
    plt = _pyplot()
    from matplotlib.patches import Patch

    from carla_seg_ros.runtime.preprocess import resize_image, resize_mask

    rows = len(samples)
    h0, w0 = samples[0]["rgb"].shape[:2]
    panel_w = min(SAMPLE_PANEL_WIDTH, w0)
    panel_h = int(round(h0 * panel_w / w0))
    height_in = rows * (panel_h / 100 + 0.15) + 0.9   # panels + titles + two legend rows
    fig, axes = plt.subplots(rows, 3, figsize=(3 * panel_w / 100, height_in), dpi=100, squeeze=False)
    for r, s in enumerate(samples):
        size = (panel_w, int(round(s["rgb"].shape[0] * panel_w / s["rgb"].shape[1])))
        panels = (resize_image(np.ascontiguousarray(s["rgb"]), size),
                  colorize_ids(resize_mask(s["pred"], size), names), colorize_ids(resize_mask(s["label"], size), names))
        for c, (img, title) in enumerate(zip(panels, ("image", "prediction", "ground truth"))):
            ax = axes[r, c]
            ax.imshow(img)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=10)
            if c == 0:
                ax.set_ylabel(s["name"][-32:], fontsize=7)
    colors = class_colors(names)
    handles = [Patch(facecolor=colors[i] / 255.0, edgecolor="black", label=n) for i, n in enumerate(names)]
    handles.append(Patch(facecolor=np.asarray(IGNORE_COLOR) / 255.0, edgecolor="black", label="ignored"))
    fig.legend(handles=handles, loc="lower center", ncol=7, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.5 / height_in, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


def write_figures(evaluation, out_dir: Path, prefix: str = "") -> dict[str, Path]:
    """All PNGs of an ``evaluate.Evaluation``; returns {kind: path}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = evaluation.result()
    m = result["metrics"]
    figures = {
        "confusion_png": plot_confusion(evaluation.cm, evaluation.class_names, out_dir / f"{prefix}confusion.png"),
        "iou_png": plot_iou(m["iou"], m["mean_iou"], out_dir / f"{prefix}iou.png"),
    }
    if result["latency_ms"]:
        figures["latency_png"] = plot_latency(result["latency_ms"], out_dir / f"{prefix}latency.png")
    if evaluation.samples:
        figures["samples_png"] = plot_samples(evaluation.samples, evaluation.class_names,
                                              out_dir / f"{prefix}samples.png")
    return figures


# ---------------------------------------------------------------------------------------------------------------
# Markdown / HTML
# ---------------------------------------------------------------------------------------------------------------
FIGURE_TITLES = {"iou_png": "Per-class IoU", "confusion_png": "Confusion matrix",
                 "latency_png": "Inference latency", "samples_png": "Samples: image | prediction | ground truth"}


def _fmt(v, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "n/a"
    if isinstance(v, float):
        return f"{100 * v:.2f} %" if pct else f"{v:.4f}"
    return str(v)


def _summary_rows(result: dict) -> list[tuple[str, str]]:
    m, lyft, t = result["metrics"], result["metrics"]["lyft"], result.get("timing", {})
    rows = [("frames", str(result["frames"])), ("pixel accuracy", _fmt(m["pixel_accuracy"], pct=True)),
            ("mIoU (13 classes)", _fmt(m["mean_iou"])), ("Lyft F2 car", _fmt(lyft["f2_car"])),
            ("Lyft F0.5 road", _fmt(lyft["f05_road"])), ("Lyft F_avg", _fmt(lyft["f_avg"]))]
    if t.get("fps"):
        rows += [("FPS (whole pipeline)", f"{t['fps']:.1f}"), ("ms per frame (mean / p50 / p90)",
                 f"{t['ms_per_frame']:.1f} / {t['ms_per_frame_p50']:.1f} / {t['ms_per_frame_p90']:.1f}"),
                 ("Lyft score (100 F_avg - max(0, 10 - FPS))", f"{lyft['score']:.2f}")]
    timely = result.get("timely")
    if timely:   # seg_eval_node: what the planner had in time (docs/reference/seg_eval_node.md)
        tm = timely["metrics"]
        rows += [("timely frames (ground-truth frames scored)", str(timely["frames"])),
                 ("timely pixel accuracy", _fmt(tm["pixel_accuracy"], pct=True)),
                 ("timely mIoU", _fmt(tm["mean_iou"])),
                 ("timely: frames with no mask in time", str(timely["no_mask_frames"])),
                 ("timely: frames scored with an older mask", str(timely["stale_frames"]))]
    return rows


def _class_rows(result: dict) -> list[tuple[str, str, str, str, str]]:
    cm = np.asarray(result["confusion_matrix"], np.float64)
    gt, pred, tp = cm.sum(1), cm.sum(0), np.diag(cm)
    total = max(cm.sum(), 1)
    out = []
    for i, name in enumerate(result["class_names"]):
        iou = result["metrics"]["iou"][name]
        out.append((name, _fmt(iou), f"{100 * gt[i] / total:.2f} %",
                    f"{tp[i] / pred[i]:.3f}" if pred[i] else "n/a", f"{tp[i] / gt[i]:.3f}" if gt[i] else "n/a"))
    return out


def _context_rows(result: dict) -> list[tuple[str, str]]:
    rows = []
    model = result.get("model", {})
    if model:
        size = "x".join(str(v) for v in model.get("input_size", []))
        if model.get("input_policy") == "keep_aspect":
            lo, hi = model.get("input_widths", ["?", "?"])
            size += f", other aspects at widths {lo}-{hi}"
        rows.append(("model", f"{model.get('path')} ({model.get('arch')}, input {size}), backend {model.get('backend')}"))
    for key in ("data", "split", "bag", "image_topic", "mask_topic", "gt_topic", "gt_format", "coding", "codings",
                "batch_size"):
        if key in result:
            rows.append((key, str(result[key])))
    if "hood" in result:
        h = result["hood"]
        rows.append(("hood rule", f"{h['mode']} from row {h['row_fraction']:.4f} of the height ({h['applies_to']})"))
    for key, value in result.get("pairing", {}).items():
        rows.append((f"pairing: {key}", str(value)))
    for key, value in result.get("skipped", {}).items():
        rows.append((f"skipped: {key}", str(value)))
    for key in ("unknown_color_pixels", "unknown_id_pixels"):
        if key in result:
            rows.append((key.replace("_", " "), str(result[key])))
    for key, value in result.get("live", {}).items():
        rows.append((f"live: {key}", str(value)))
    return rows


def _md_table(header: tuple, rows: list) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _html_table(header: tuple, rows: list) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


CSS = """body{font-family:system-ui,sans-serif;margin:24px;max-width:1300px;color:#222}
table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #ccc;padding:3px 10px;text-align:left}
th{background:#f0f0f0}img{max-width:100%;border:1px solid #ddd;margin:6px 0}h2{margin-top:28px}
.grid{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}.grid>div{flex:1 1 480px}"""


def figure_markdown(figures: dict[str, Path], titles: dict[str, str]) -> list[str]:
    """Markdown lines linking each written figure under its title (the figures sit beside the report)."""
    md = []
    for key, label in titles.items():
        if key in figures:
            md += [f"## {label}", "", f"![{label}]({Path(figures[key]).name})", ""]
    return md


def embedded_figure(figures: dict[str, Path], key: str, titles: dict[str, str]) -> str:
    """HTML heading + the figure as a data URI, so the report is one self-contained file."""
    data = base64.b64encode(Path(figures[key]).read_bytes()).decode("ascii")
    return f'<h2>{html.escape(titles[key])}</h2><img alt="{key}" src="data:image/png;base64,{data}">'


def html_page(title: str, body: list[str], context: list) -> str:
    """A self-contained report page: the title, ``body``, and the "Run" table of ``context`` rows at the end."""
    return "".join([f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                    f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>", *body,
                    "<h2>Run</h2>", _html_table(("item", "value"), context), "</body></html>"])


def write_report(result: dict, figures: dict[str, Path], out_dir: Path, prefix: str = "",
                 title: str = "carla-seg evaluation") -> tuple[Path, Path]:
    """Write ``{prefix}report.md`` (figures linked) and ``{prefix}report.html`` (figures embedded)."""
    out_dir = Path(out_dir)
    summary, classes_, context = _summary_rows(result), _class_rows(result), _context_rows(result)
    class_header = ("class", "IoU", "GT pixels", "precision", "recall")

    md = [f"# {title}", "", _md_table(("metric", "value"), summary), "", "## Per-class IoU", "",
          _md_table(class_header, classes_), ""]
    md += figure_markdown(figures, FIGURE_TITLES)
    md += ["## Run", "", _md_table(("item", "value"), context), ""]
    md_path = out_dir / f"{prefix}report.md"
    md_path.write_text("\n".join(md))

    def img(key):
        return embedded_figure(figures, key, FIGURE_TITLES)

    parts = ["<div class='grid'><div><h2>Summary</h2>", _html_table(("metric", "value"), summary),
             "<h2>Per-class IoU</h2>", _html_table(class_header, classes_), "</div><div>",
             img("iou_png") if "iou_png" in figures else "", "</div></div>"]
    parts += [img(k) for k in ("confusion_png", "latency_png", "samples_png") if k in figures]
    html_path = out_dir / f"{prefix}report.html"
    html_path.write_text(html_page(title, parts, context))
    return md_path, html_path


def write_all(result: dict, evaluation, out_dir: Path, title: str, extra_files: dict | None = None) -> dict:
    """metrics.json, the figures and the Markdown/HTML report in ``out_dir`` (bag-eval and seg_eval_node alike).

    ``result["files"]`` lists what was written; returns that dict of paths.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = write_figures(evaluation, out_dir)
    md, html_path = write_report(result, figures, out_dir, title=title)
    files = {**figures, "report_md": md, "report_html": html_path, **(extra_files or {})}
    result["files"] = {k: str(v) for k, v in files.items()}
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=1))
    return files
