"""The fold table: box scores per leave-one-stretch-out fold, their mean and spread, and the rule that says whether a
new recipe beats an old one.

One row per fold (``evaluation/folds.py``): vehicle box recall at the rule's coverage (25 %), per box class (car /
truck), per size bucket (< 2,000 px, 2,000-8,000, >= 8,000 visible pixels), per lighting (night: mean grey < 40, the
only day / night mark the boxed source has), Car precision, the Car share, and where the false-positive Car pixels
lie (``false_positives.py``). The summary takes the mean, sample standard deviation, minimum and maximum of every
score over the **stretch folds** (the own folds of unboxed sources, such as ahvmousavi, have no recall and are
listed apart); ``pooled`` adds all boxes of all folds up.

The comparison (``compare_tables``): the new table wins only when its mean over the stretch folds beats the base's
by more than ``min_mean_gain`` **and** no fold loses more than ``max_fold_loss`` (points of the score, 0.03 = 3
points). A recipe that gains on average by overfitting one stretch and losing another does not win.
"""
from __future__ import annotations

import numpy as np

from carla_seg_ros.evaluation.boxes import BoxRule, BoxScores, size_bucket
from carla_seg_ros.evaluation.false_positives import BANDS, FP_KEYS, false_positive_counts
from carla_seg_ros.unlabelled import UnlabelledFrame

TABLE_KIND = "carla-seg fold table"
TOP_FP_FRAMES = 5        # per fold: the frames with the most Car pixels outside every box, for a look
SIZE_EDGES = ((0, "small"), (2000, "medium"), (8000, "large"))     # visible px: < 2k, 2k-8k, >= 8k
# (key, column label): the recall scores, each with a box count, then the pixel scores.
RECALLS = (("recall", "vehicles"), ("recall_car", "car"), ("recall_truck", "truck"), ("recall_small", "<2k px"),
           ("recall_medium", "2k-8k px"), ("recall_large", ">=8k px"), ("recall_night", "night"),
           ("recall_day", "day"))
PIXEL_SCORES = (("car_precision", "Car precision"), ("car_share", "Car share"))
FP_SHARES = tuple((f"fp_share_{b}", f"FP {b}") for b in BANDS) + (
    ("fp_share_speckle", "FP speckle"), ("fp_share_car_sized_small", "FP blob <0.5 %"),
    ("fp_share_car_sized_large", "FP blob >=0.5 %"))
SCORES = tuple(k for k, _ in RECALLS + PIXEL_SCORES + FP_SHARES)


def fold_row(name: str, scores: BoxScores, fp_counts: dict[str, int] | None = None, stretch: bool = True,
             top_fp_frames: list | None = None) -> dict:
    """One fold's row from its BoxScores (every frame of the fold added) and summed false-positive counts."""
    counts = {k: [0, 0] for k, _ in RECALLS}          # key -> [found, boxes]
    coverage = scores.rule.coverage
    for frame in scores.per_frame:
        night = "lighting=dark" in frame["groups"]
        lit = "lighting=lit" in frame["groups"]
        for cls, area, cov in zip(frame["box_classes"], frame["box_areas"], frame["coverages"]):
            keys = ["recall", f"recall_{cls}", f"recall_{size_bucket(area, SIZE_EDGES)}"]
            keys += ["recall_night"] if night else ["recall_day"] if lit else []
            for key in keys:
                if key in counts:
                    counts[key][0] += cov >= coverage
                    counts[key][1] += 1
    total = scores.total.as_dict()
    row = {"fold": name, "stretch": stretch, "frames": total["frames"], "boxed_frames": total["boxed_frames"]}
    for key, (found, boxes) in counts.items():
        row[key] = found / boxes if boxes else None
        row[f"{key}_found"], row[f"{key}_boxes"] = int(found), int(boxes)
    row.update(car_precision=total["car_precision"], car_share=total["car_share"],
               car_pixels=total["car_pixels"], car_pixels_in_boxes=total["car_pixels_in_boxes"],
               pixels=scores.total.pixels, car_pixels_all=scores.total.car_pixels_all)
    # Car share per weather and lighting: the one score of a fold without boxes (ahvmousavi day / night / rain / fog)
    row["car_share_by_group"] = {k: t.as_dict()["car_share"] for k, t in sorted(scores.groups.items())
                                 if k.startswith(("weather=", "lighting="))}
    fp = {k: int(v) for k, v in (fp_counts or dict.fromkeys(FP_KEYS, 0)).items()}
    row.update(fp)
    for key, _ in FP_SHARES:
        part = fp.get("fp_" + key[len("fp_share_"):], 0)
        row[key] = part / fp["fp_pixels"] if fp.get("fp_pixels") else None
    row["fp_of_car_pixels"] = fp.get("fp_pixels", 0) / total["car_pixels"] if total["car_pixels"] else None
    if top_fp_frames is not None:
        row["top_fp_frames"] = top_fp_frames
    return row


class FoldScorer:
    """Adds up one fold's predicted masks: box scores, false-positive counts, the frames with the most of them."""

    def __init__(self, name: str, stretch: bool, car_id: int, rule: BoxRule = BoxRule()):
        self.name, self.stretch, self.car_id, self.rule = name, stretch, car_id, rule
        self.scores = BoxScores(car_id, rule)
        self.fp = dict.fromkeys(FP_KEYS, 0)
        self.fp_frames: list[tuple[float, str]] = []

    def add(self, pred_ids: np.ndarray, frame: UnlabelledFrame, rgb: np.ndarray | None = None,
            image_size: tuple[int, int] | None = None) -> None:
        """One mask; ``rgb`` (any size) gives the frame's lighting, ``image_size`` the size its boxes refer to."""
        self.scores.add(pred_ids, frame, rgb, image_size=image_size)
        counts = false_positive_counts(pred_ids, frame, self.car_id, self.rule, image_size)
        for k, v in counts.items():
            self.fp[k] += v
        if counts["fp_pixels"]:
            self.fp_frames.append((counts["fp_pixels"] / pred_ids.size, frame.name))

    def row(self) -> dict:
        top = [{"name": n, "fp_share_of_frame": round(s, 4)} for s, n in sorted(self.fp_frames)[::-1][:TOP_FP_FRAMES]]
        return fold_row(self.name, self.scores, self.fp, self.stretch, top)


def pooled_row(rows: list[dict]) -> dict:
    """All boxes and pixels of the stretch folds added up (a micro average, beside the folds' mean)."""
    stretch = [r for r in rows if r["stretch"]]
    out = {"fold": "pooled", "stretch": False, "frames": sum(r["frames"] for r in stretch),
           "boxed_frames": sum(r.get("boxed_frames", 0) for r in stretch)}
    for key, _ in RECALLS:
        found = sum(r.get(f"{key}_found", 0) for r in stretch)
        boxes = sum(r.get(f"{key}_boxes", 0) for r in stretch)
        out[key], out[f"{key}_found"], out[f"{key}_boxes"] = (found / boxes if boxes else None), found, boxes
    for key in ("car_pixels", "car_pixels_in_boxes", "pixels", "car_pixels_all") + FP_KEYS:
        out[key] = sum(r.get(key, 0) for r in stretch)
    out["car_precision"] = out["car_pixels_in_boxes"] / out["car_pixels"] if out["car_pixels"] else None
    out["car_share"] = out["car_pixels_all"] / out["pixels"] if out["pixels"] else None
    for key, _ in FP_SHARES:
        part = out.get("fp_" + key[len("fp_share_"):], 0)
        out[key] = part / out["fp_pixels"] if out["fp_pixels"] else None
    return out


def summarise(rows: list[dict]) -> dict:
    """score -> {mean, std (sample, 0 with one fold), min, max, worst_fold, folds} over the stretch folds."""
    out = {}
    for key in SCORES:
        values = [(r["fold"], r[key]) for r in rows if r["stretch"] and r.get(key) is not None]
        if not values:
            out[key] = None
            continue
        v = np.array([x for _, x in values], np.float64)
        out[key] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                    "min": float(v.min()), "max": float(v.max()), "worst_fold": values[int(v.argmin())][0],
                    "folds": len(v)}
    return out


def make_table(rows: list[dict], plan: dict, extra: dict | None = None) -> dict:
    """The JSON-ready fold table (what `evaluate-boxes --folds` and `self-train --cv` write)."""
    return {"kind": TABLE_KIND, **(extra or {}), "plan": plan, "folds": rows, "pooled": pooled_row(rows),
            "summary": summarise(rows)}


def check_table(table: dict, where: str = "table") -> dict:
    if not isinstance(table, dict) or table.get("kind") != TABLE_KIND or "folds" not in table:
        raise ValueError(f"{where} is not a fold table (written by evaluate-boxes --folds or self-train --cv)")
    return table


def compare_tables(base: dict, new: dict, score: str = "recall", max_fold_loss: float = 0.03,
                   min_mean_gain: float = 0.0) -> dict:
    """Does ``new`` beat ``base`` on ``score``? Only folds present in both (by name) with a value in both count."""
    base_rows = {r["fold"]: r for r in check_table(base, "base")["folds"] if r["stretch"]}
    new_rows = {r["fold"]: r for r in check_table(new, "new")["folds"] if r["stretch"]}
    common = [f for f in base_rows if f in new_rows and base_rows[f].get(score) is not None
              and new_rows[f].get(score) is not None]
    if not common:
        raise ValueError(f"the two tables share no stretch fold with a {score!r} value")
    deltas = {f: new_rows[f][score] - base_rows[f][score] for f in common}
    base_mean = float(np.mean([base_rows[f][score] for f in common]))
    new_mean = float(np.mean([new_rows[f][score] for f in common]))
    worst_fold = min(deltas, key=deltas.get)
    mean_gain = new_mean - base_mean
    reasons = []
    if not mean_gain > min_mean_gain:
        reasons.append(f"mean {score} gain {mean_gain:+.4f} is not above {min_mean_gain:+.4f}")
    if deltas[worst_fold] < -max_fold_loss:
        reasons.append(f"fold {worst_fold} loses {-deltas[worst_fold]:.4f} > {max_fold_loss:.4f}")
    missing = sorted((set(base_rows) | set(new_rows)) - set(common))
    return {"score": score, "wins": not reasons, "base_mean": base_mean, "new_mean": new_mean,
            "mean_gain": mean_gain, "fold_deltas": deltas, "worst_fold": worst_fold,
            "worst_delta": deltas[worst_fold], "max_fold_loss": max_fold_loss, "min_mean_gain": min_mean_gain,
            "folds_compared": common, "folds_not_compared": missing, "reasons": reasons}


def _cell(row: dict, key: str) -> str:
    v = row.get(key)
    if v is None:
        return "–"
    text = f"{v:.3f}"
    if f"{key}_boxes" in row:
        text += f" ({row[f'{key}_found']}/{row[f'{key}_boxes']})"
    return text


def format_table(table: dict, columns=RECALLS + PIXEL_SCORES) -> str:
    """Markdown: one line per fold, then pooled, mean ± std and the worst fold of every score."""
    header = ["fold", "frames"] + [label for _, label in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table["folds"] + [table["pooled"]]:
        lines.append("| " + " | ".join([row["fold"], str(row["frames"])] + [_cell(row, k) for k, _ in columns])
                     + " |")
    summary = table["summary"]

    def stat(key, fn):
        s = summary.get(key)
        return "–" if not s else fn(s)

    lines.append("| mean ± std (stretch folds) | | " + " | ".join(
        stat(k, lambda s: f"{s['mean']:.3f} ± {s['std']:.3f}") for k, _ in columns) + " |")
    lines.append("| worst fold | | " + " | ".join(
        stat(k, lambda s: f"{s['min']:.3f} ({s['worst_fold']})") for k, _ in columns) + " |")
    return "\n".join(lines)


def format_comparison(verdict: dict, base_label: str = "base", new_label: str = "new") -> str:
    lines = [f"{verdict['score']}: {base_label} mean {verdict['base_mean']:.4f} -> {new_label} mean "
             f"{verdict['new_mean']:.4f} ({verdict['mean_gain']:+.4f}) over {len(verdict['folds_compared'])} folds"]
    lines += [f"  {f:<12} {d:+.4f}" + ("  <- worst" if f == verdict["worst_fold"] else "")
              for f, d in verdict["fold_deltas"].items()]
    if verdict["folds_not_compared"]:
        lines.append(f"  not compared (missing in one table): {', '.join(verdict['folds_not_compared'])}")
    lines.append(f"{new_label} WINS" if verdict["wins"] else
                 f"{new_label} does not win: " + "; ".join(verdict["reasons"]))
    return "\n".join(lines)

