"""Figures and report of `carla-seg evaluate-boxes`, in the style of `carla-seg evaluate` (report.py): PNGs, a
Markdown file linking them and one self-contained HTML page with them embedded.
"""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from carla_seg_ros.evaluation.report import (_fmt, _html_table, _md_table, _pyplot, embedded_figure,
                                             figure_markdown, html_page)

CAR_TINT = (0, 200, 255)      # predicted Car pixels, blended into the frame
TINT_ALPHA = 0.45
BOX_COLORS = {"found": (40, 200, 40), "missed": (230, 30, 30), "small": (160, 160, 160), "other": (160, 160, 160)}
FIGURE_TITLES = {"recall_curve_png": "Vehicle box recall against the coverage threshold",
                 "coverage_by_size_png": "Box coverage by box size",
                 "samples_png": "Samples: predicted Car tinted; boxes green found, red missed, grey other classes"}
GROUP_KINDS = (("source", "Per source"), ("weather", "Per weather"),
               ("lighting", "Per lighting (dark: mean grey < 40)"))


def overlay(sample: dict) -> np.ndarray:
    """The sample frame with its Car pixels tinted and every box drawn (vehicle boxes with their coverage)."""
    import cv2

    img = sample["rgb"].astype(np.float32)
    car = sample["car"]
    img[car] = (1 - TINT_ALPHA) * img[car] + TINT_ALPHA * np.asarray(CAR_TINT, np.float32)
    img = np.ascontiguousarray(img.round().clip(0, 255).astype(np.uint8))
    # Grey boxes first, so the judged vehicle boxes are drawn on top.
    for box in sorted(sample["boxes"], key=lambda b: b["kind"] in ("found", "missed")):
        x0, y0, x1, y1 = (int(round(v)) for v in box["xyxy"])
        color = BOX_COLORS[box["kind"]]
        cv2.rectangle(img, (x0, y0), (x1, y1), color, 2 if box["kind"] in ("found", "missed") else 1)
        if box["coverage"] is not None:
            label = f"{100 * box['coverage']:.0f}%"
            cv2.putText(img, label, (max(0, x0), max(10, y0 - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, color, 1,
                        cv2.LINE_AA)
    return img


def plot_samples(samples: list[dict], path: Path, columns: int = 2) -> Path:
    plt = _pyplot()
    from matplotlib.patches import Patch

    rows = -(-len(samples) // columns)
    h, w = samples[0]["rgb"].shape[:2]
    fig, axes = plt.subplots(rows, columns, figsize=(columns * w / 100, rows * (h / 100 + 0.3) + 0.5), dpi=100,
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, s in zip(axes.ravel(), samples):
        ax.imshow(overlay(s))
        judged = [b for b in s["boxes"] if b["kind"] in ("found", "missed")]
        found = sum(b["kind"] == "found" for b in judged)
        ax.set_title(f"{s['name']}  found {found}/{len(judged)}", fontsize=8)
    handles = [Patch(facecolor=np.asarray(CAR_TINT) / 255, label="predicted Car"),
               Patch(edgecolor=np.asarray(BOX_COLORS["found"]) / 255, facecolor="none", label="vehicle box found"),
               Patch(edgecolor=np.asarray(BOX_COLORS["missed"]) / 255, facecolor="none", label="vehicle box missed"),
               Patch(edgecolor=np.asarray(BOX_COLORS["other"]) / 255, facecolor="none",
                     label="other class / below min area")]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.35 / (rows * (h / 100 + 0.3) + 0.5), 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_recall_curve(result: dict, path: Path) -> Path:
    """Recall at coverage thresholds 0.05..0.75, overall and per lighting group from the per-frame coverages."""
    plt = _pyplot()
    curve = result["recall_by_coverage"]
    rule = result["rule"]
    t = [c["coverage"] for c in curve]
    fig, ax = plt.subplots(figsize=(7, 3.8), dpi=110)
    ax.plot(t, [np.nan if c["recall"] is None else c["recall"] for c in curve], "o-", color="tab:blue",
            label=f"all ({result['overall']['vehicle_boxes']} boxes)")
    for key, style in (("lighting=dark", "s--"), ("lighting=lit", "^--")):
        cov = np.array([c for f in result["per_frame"] if key in f.get("groups", ()) for c in f["coverages"]],
                       np.float64)
        if cov.size:
            ax.plot(t, [(cov >= x).mean() for x in t], style, linewidth=1, markersize=4,
                    label=f"{key.split('=')[1]} ({cov.size} boxes)")
    ax.axvline(rule["coverage"], color="tab:red", linestyle=":", linewidth=1,
               label=f"threshold {rule['coverage']:g}: recall {_fmt(result['overall']['recall'], pct=True)}")
    ax.set_xlim(0, 0.8)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("coverage threshold (share of the box's pixels predicted Car)")
    ax.set_ylabel("vehicle box recall")
    ax.set_title(f"vehicle box recall against the coverage threshold (boxes >= {rule['min_area_px']:g} px)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_coverage_by_size(result: dict, path: Path) -> Path:
    """One coverage histogram per box size bucket, the threshold marked."""
    plt = _pyplot()
    buckets = result["by_box_size"]
    coverage = result["rule"]["coverage"]
    fig, axes = plt.subplots(1, len(buckets), figsize=(3.0 * len(buckets), 3.0), dpi=110, sharey=False,
                             squeeze=False)
    bins = np.linspace(0, 1, 21)
    for ax, (name, b) in zip(axes[0], buckets.items()):
        cov = np.asarray(b["coverages"], np.float64)
        if cov.size:
            ax.hist(cov, bins=bins, color="tab:blue", edgecolor="white")
        ax.axvline(coverage, color="tab:red", linestyle=":", linewidth=1)
        ax.set_title(f"{name}: {b['found']}/{b['vehicle_boxes']} found"
                     + (f" ({100 * b['recall']:.0f} %)" if b["recall"] is not None else ""), fontsize=9)
        ax.set_xlabel("coverage (share Car)", fontsize=8)
        ax.set_xlim(0, 1)
    axes[0][0].set_ylabel("vehicle boxes")
    fig.suptitle("coverage of each scored vehicle box, by visible box size (red: threshold)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_figures(result: dict, samples: list[dict], out_dir: Path, prefix: str = "") -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = {"recall_curve_png": plot_recall_curve(result, out_dir / f"{prefix}recall_curve.png"),
               "coverage_by_size_png": plot_coverage_by_size(result, out_dir / f"{prefix}coverage_by_size.png")}
    if samples:
        figures["samples_png"] = plot_samples(samples, out_dir / f"{prefix}samples.png")
    return figures


# ---------------------------------------------------------------------------------------------------------------
# Markdown / HTML
# ---------------------------------------------------------------------------------------------------------------
GROUP_HEADER = ("group", "frames", "boxed frames", "vehicle boxes", "found", "recall", "Car pixels",
                "in grown boxes", "Car precision", "Car share (all frames)")


def _tally_row(name: str, t: dict) -> tuple:
    return (name, t["frames"], t["boxed_frames"], t["vehicle_boxes"], t["found"], _fmt(t["recall"], pct=True),
            t["car_pixels"], t["car_pixels_in_boxes"], _fmt(t["car_precision"], pct=True),
            _fmt(t["car_share"], pct=True))


def _summary_rows(result: dict) -> list[tuple[str, str]]:
    o, rule, t = result["overall"], result["rule"], result.get("timing", {})
    rows = [("frames scored", f"{result['frames_scored']} of {result['frames_selected']} selected"),
            ("vehicle box recall", f"{_fmt(o['recall'], pct=True)} ({o['found']} of {o['vehicle_boxes']} car/truck "
                                   f"boxes; coverage >= {rule['coverage']:g}, >= {rule['min_area_px']:g} visible px)"),
            ("Car precision", f"{_fmt(o['car_precision'], pct=True)} ({o['car_pixels_in_boxes']} of {o['car_pixels']}"
                              f" Car pixels in boxes grown by {rule['grow']:g}; {o['boxed_frames']} boxed frames)"),
            ("Car share", f"{_fmt(o['car_share'], pct=True)} of all pixels of the {o['frames']} frames"),
            ("unreadable images skipped", str(result["unreadable"]["count"]))]
    if t.get("fps"):
        rows += [("FPS (whole pipeline)", f"{t['fps']:.1f}"), ("ms per frame (mean / p50 / p90)",
                 f"{t['ms_per_frame']:.1f} / {t['ms_per_frame_p50']:.1f} / {t['ms_per_frame_p90']:.1f}")]
    return rows


def _group_tables(result: dict) -> list[tuple[str, list]]:
    out = []
    for kind, title in GROUP_KINDS:
        rows = [_tally_row(k.split("=", 1)[1], t) for k, t in result["groups"].items() if k.startswith(kind + "=")]
        if rows:
            out.append((title, rows))
    return out


def _size_rows(result: dict) -> list[tuple]:
    rows = []
    for name, b in result["by_box_size"].items():
        med = f"{np.median(b['coverages']):.3f}" if b["coverages"] else "n/a"
        rows.append((name, b["vehicle_boxes"], b["found"], _fmt(b["recall"], pct=True), med))
    return rows


def _curve_rows(result: dict) -> list[tuple]:
    return [(f"{c['coverage']:.2f}", c["found"], _fmt(c["recall"], pct=True)) for c in result["recall_by_coverage"]]


def _context_rows(result: dict) -> list[tuple[str, str]]:
    m = result["model"]
    rows = [("model", f"{m['path']} ({m['arch']}, input {'x'.join(str(v) for v in m['input_size'])}), "
                      f"backend {m['backend']}"),
            ("data", result["data"]), ("part", result["part"]), ("held-out split", result["split"]["rule"]),
            ("folder split (frames)", ", ".join(f"{k} {result['split'][k]}" for k in ("pool", "held_out", "guard"))),
            ("rule", ", ".join(f"{k} {v}" for k, v in result["rule"].items())), ("batch size", result["batch_size"])]
    for key in ("match", "limit"):
        if result.get(key):
            rows.append((key, str(result[key])))
    if result["unreadable"]["count"]:
        rows.append(("unreadable images", ", ".join(result["unreadable"]["names"])))
    return rows


def write_report(result: dict, figures: dict[str, Path], out_dir: Path, prefix: str = "",
                 title: str = "carla-seg evaluate-boxes") -> tuple[Path, Path]:
    """Write ``{prefix}report.md`` (figures linked) and ``{prefix}report.html`` (figures embedded)."""
    out_dir = Path(out_dir)
    summary, groups, context = _summary_rows(result), _group_tables(result), _context_rows(result)
    size_header, curve_header = ("box size", "boxes", "found", "recall", "median coverage"), \
        ("coverage threshold", "found", "recall")

    md = [f"# {title}", "", _md_table(("score", "value"), summary), ""]
    for heading, rows in groups:
        md += [f"## {heading}", "", _md_table(GROUP_HEADER, rows), ""]
    md += ["## Per box size", "", _md_table(size_header, _size_rows(result)), "",
           "## Recall against the coverage threshold", "", _md_table(curve_header, _curve_rows(result)), ""]
    md += figure_markdown(figures, FIGURE_TITLES)
    md += ["## Run", "", _md_table(("item", "value"), context), ""]
    md_path = out_dir / f"{prefix}report.md"
    md_path.write_text("\n".join(md))

    def img(key):
        return embedded_figure(figures, key, FIGURE_TITLES)

    parts = ["<div class='grid'><div><h2>Summary</h2>", _html_table(("score", "value"), summary)]
    for heading, rows in groups:
        parts += [f"<h2>{html.escape(heading)}</h2>", _html_table(GROUP_HEADER, rows)]
    parts += ["<h2>Per box size</h2>", _html_table(size_header, _size_rows(result)), "</div><div>",
              img("recall_curve_png") if "recall_curve_png" in figures else "",
              img("coverage_by_size_png") if "coverage_by_size_png" in figures else "",
              "<h2>Recall against the coverage threshold</h2>", _html_table(curve_header, _curve_rows(result)),
              "</div></div>"]
    if "samples_png" in figures:
        parts.append(img("samples_png"))
    html_path = out_dir / f"{prefix}report.html"
    html_path.write_text(html_page(title, parts, context))
    return md_path, html_path
