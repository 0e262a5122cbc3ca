"""What `carla-seg adapt` keeps between stages and ships with a model: sample predictions and the model card stub.

The sample frames of the "before" stage are stored (npz of plain arrays, read back without pickle) so that a run
resumed after Ctrl-C still draws its before/after overlays without scoring the start model again.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def save_samples(path: Path, samples: dict) -> None:
    """{name: (rgb, prediction)} -> npz."""
    arrays = {"names": np.array(list(samples), dtype=str)}
    for i, (rgb, pred) in enumerate(samples.values()):
        arrays[f"rgb_{i}"], arrays[f"pred_{i}"] = rgb, pred
    np.savez_compressed(path, **arrays)


def load_samples(path: Path) -> dict:
    if not Path(path).is_file():
        return {}
    with np.load(path, allow_pickle=False) as data:
        return {str(n): (data[f"rgb_{i}"], data[f"pred_{i}"]) for i, n in enumerate(data["names"])}


def _fmt(part: dict, key: str) -> str:
    v = part.get(key)
    return "-" if v is None else f"{v:.4f}"


def card_text(name: str, record: dict) -> str:
    """A model card stub (Markdown): where the model came from, on what, and what was measured."""
    lines = [f"# {name}", "", "Made by `carla-seg adapt` (fill in what the table cannot say: towns, CARLA version, "
             "intended use).", "", f"* started from: `{record['start_model']}`",
             f"* class set: {record.get('class_set', '-')}", f"* command: `{record['command']}`",
             f"* source: `{json.dumps({k: v for k, v in record['source'].items() if v != 'None'})}`",
             f"* split: `{json.dumps(record['split'])}`", "", "## Before / after", "",
             "| frames | metric | start model | adapted |", "|---|---|---|---|"]
    for part, scores in record["metrics"].items():
        for key in ("miou", "pixel_accuracy", "vehicle_box_recall"):
            if key in scores["before"] or key in scores["after"]:
                lines.append(f"| {part} | {key} | {_fmt(scores['before'], key)} | {_fmt(scores['after'], key)} |")
    lines += ["", f"**{record['guard_note']}**", ""]
    return "\n".join(lines)
