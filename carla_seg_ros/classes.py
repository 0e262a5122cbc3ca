"""CARLA tag tables (13/23/29-tag codings), palettes, remaps to the model's classes and palette decoding.

All data comes from `config/classes.yaml`; this module only reads and vectorises it.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
import yaml

from carla_seg_ros.paths import config_path

IGNORE_INDEX = 255
CODINGS = ("tags13", "tags23", "tags29")


@dataclass(frozen=True)
class Coding:
    name: str
    description: str
    ids: tuple[int, ...]
    names: tuple[str, ...]
    colors: np.ndarray          # (num_tags, 3) uint8 RGB, row i = tag ids[i]
    to_model: np.ndarray        # (256,) uint8 lookup table: tag id -> model class id, IGNORE_INDEX if unknown

    @property
    def num_tags(self) -> int:
        return len(self.ids)

    def palette_lut(self) -> np.ndarray:
        """(256, 3) uint8: tag id -> RGB colour (black for ids outside the table)."""
        lut = np.zeros((256, 3), np.uint8)
        lut[list(self.ids)] = self.colors
        return lut

    def ids_to_model(self, tag_ids: np.ndarray) -> np.ndarray:
        """Remap raw tag ids to model class ids (unknown ids become IGNORE_INDEX)."""
        return self.to_model[tag_ids]

    def colors_to_ids(self, rgb: np.ndarray) -> tuple[np.ndarray, int]:
        """Decode palette colours (H, W, 3 RGB uint8) to tag ids.

        Returns (ids, unmatched): colours not in the palette become IGNORE_INDEX and are counted, never guessed.
        One lookup per pixel in a table over all 2^24 colours (built once per coding, 16 MB): 3 ms for an 800x600
        frame, against 29 ms for the binary search over the palette it replaced.
        """
        ids = self._color_lut[_pack(rgb)]
        return ids, int(np.count_nonzero(ids == IGNORE_INDEX))

    def unmatched_colors(self, rgb: np.ndarray) -> int:
        """Pixels whose colour is not in this palette, without building the lookup table (for telling codings
        apart on a few frames)."""
        return int(np.count_nonzero(~np.isin(_pack(rgb), _pack(self.colors))))

    @cached_property
    def _color_lut(self) -> np.ndarray:
        lut = np.full(1 << 24, IGNORE_INDEX, np.uint8)    # tag ids are < 255, so IGNORE_INDEX means "no tag"
        lut[_pack(self.colors)] = np.asarray(self.ids, np.uint8)
        lut.flags.writeable = False
        return lut


def _pack(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> (...) uint32 0xRRGGBB."""
    rgb = np.asarray(rgb)
    keys = rgb[..., 0].astype(np.uint32) << 16
    keys |= rgb[..., 1].astype(np.uint32) << 8
    keys |= rgb[..., 2]
    return keys


@lru_cache(maxsize=None)
def _load(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


@lru_cache(maxsize=None)
def load_coding(name: str, path: Path | None = None) -> Coding:
    """The coding ``name`` from classes.yaml; one shared (immutable) object per name, so its colour lookup table
    is built once per process."""
    raw = _load(str(path or config_path("classes.yaml")))
    if name not in raw["codings"]:
        raise ValueError(f"unknown CARLA coding {name!r}; known: {sorted(raw['codings'])}")
    entry = raw["codings"][name]
    ids, names, colors = zip(*entry["tags"])
    to_model = np.full(256, IGNORE_INDEX, np.uint8)
    for tag, cls in entry["to_model"].items():
        to_model[int(tag)] = int(cls)
    colors = np.asarray(colors, np.uint8)
    colors.flags.writeable = to_model.flags.writeable = False     # shared by every caller
    return Coding(name, entry.get("description", ""), tuple(int(i) for i in ids), tuple(names), colors, to_model)


def model_coding() -> Coding:
    """The coding the default class set (lyft13) predicts: the 13 Lyft/CARLA-0.8 classes."""
    return load_coding(_load(str(config_path("classes.yaml")))["model_coding"])


DEFAULT_CLASS_SET = "lyft13"


def class_set_names() -> list[str]:
    """The class sets a model can be trained for (classes.yaml ``class_sets``)."""
    return sorted(_load(str(config_path("classes.yaml")))["class_sets"])


def _class_set_entry(name: str) -> dict:
    sets = _load(str(config_path("classes.yaml")))["class_sets"]
    if name not in sets:
        raise ValueError(f"unknown class set {name!r}; known: {sorted(sets)}")
    return sets[name]


def class_table(class_set: str = DEFAULT_CLASS_SET) -> list[dict]:
    """A class set's classes as plain dicts (id, name, color) for YAML/JSON metadata (default: the 13 classes)."""
    entry = _class_set_entry(class_set)
    if "coding" in entry:
        c = load_coding(entry["coding"])
        rows = zip(c.ids, c.names, c.colors)
    else:
        rows = entry["classes"]
    return [{"id": int(i), "name": str(n), "color": [int(v) for v in rgb]} for i, n, rgb in rows]


def class_names(class_set: str = DEFAULT_CLASS_SET) -> list[str]:
    return [c["name"] for c in class_table(class_set)]


def num_classes(class_set: str = DEFAULT_CLASS_SET) -> int:
    return len(class_table(class_set))


def tag_maps(class_set: str = DEFAULT_CLASS_SET) -> dict[str, dict[str, int]]:
    """{coding: {tag id (str): class id}} of a class set, for every coding (the model metadata's ``tag_maps``;
    JSON keys are strings). Tags not listed are ignored (IGNORE_INDEX)."""
    entry = _class_set_entry(class_set)
    if "coding" in entry:      # lyft13: each coding's own to_model
        raw = _load(str(config_path("classes.yaml")))["codings"]
        return {c: {str(k): int(v) for k, v in raw[c]["to_model"].items()} for c in CODINGS}
    return {c: {str(k): int(v) for k, v in entry["from"][c].items()} for c in CODINGS if c in entry["from"]}


def colors_for(names: list[str] | None = None) -> np.ndarray:
    """(N, 3) uint8 colours of a model's classes given their names: the class set with exactly these names (any
    set of classes.yaml), else the default set's colours, extended with grey for classes it does not have."""
    if names is not None:
        for name in class_set_names():
            table = class_table(name)
            if [c["name"] for c in table] == list(names):
                return np.asarray([c["color"] for c in table], np.uint8)
    colors = np.asarray([c["color"] for c in class_table()], np.uint8)
    if names is not None and len(names) > len(colors):
        colors = np.concatenate([colors, np.full((len(names) - len(colors), 3), 128, np.uint8)])
    return colors[:len(names)] if names is not None else colors


def lut_from_map(mapping: dict) -> np.ndarray:
    """(256,) uint8 lookup table tag id -> class id from a {tag: class} map (tags not in it -> IGNORE_INDEX)."""
    lut = np.full(256, IGNORE_INDEX, np.uint8)
    for tag, cls in mapping.items():
        lut[int(tag)] = int(cls)
    lut.flags.writeable = False
    return lut


@lru_cache(maxsize=None)
def tag_lut(coding: str, class_set: str = DEFAULT_CLASS_SET) -> np.ndarray:
    """(256,) uint8: raw tag id of ``coding`` -> class id of ``class_set`` (IGNORE_INDEX where not mapped)."""
    maps = tag_maps(class_set)
    if coding not in maps:
        raise ValueError(f"class set {class_set!r} has no map from coding {coding!r}")
    return lut_from_map(maps[coding])


def colorize(class_ids: np.ndarray) -> np.ndarray:
    """Class-id mask (H, W) -> RGB palette image (H, W, 3) in the default class set's colours."""
    return model_coding().palette_lut()[class_ids]
