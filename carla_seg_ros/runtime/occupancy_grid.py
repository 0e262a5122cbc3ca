"""Class-id mask -> bird's-eye-view grids: the free-space rule and per-group confidence (config/occupancy.yaml).

Per image column, the mask is read from the bottom (just above the ego hood) upwards. Ground classes (the free
space group plus ``see_through``) are flat, so their cells are seen; the first pixel of any other class is where a
vertical object meets the ground (its contact). Cells covering the contact row are occupied, and cells farther
along the column are unknown: an object is never projected onto the ground behind it, which a warp of every
pixel would do (a car 10 m ahead smeared into a wall reaching the horizon). See docs/concepts/occupancy.md.

All per-frame work is a few gathers on the precomputed ``CellLookup``; nothing here depends on ROS.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from carla_seg_ros.classes import class_names, class_set_names
from carla_seg_ros.paths import config_path
from carla_seg_ros.runtime.ground_projection import CellLookup

FREE, OCCUPIED, UNKNOWN = 0, 100, -1
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# uint8 confidence (probability x 255) -> percent, as OccupancyGrid's 0..100 scale
CONFIDENCE_PERCENT = np.round(np.arange(256) * 100.0 / 255.0).astype(np.int8)


@dataclass(frozen=True)
class OccupancyClasses:
    """Which class ids are free space, flat ground, and each group (boolean lookup tables over ids 0..255)."""
    free_space: str
    free: np.ndarray
    ground: np.ndarray
    groups: dict            # group name -> (256,) bool
    occupancy_table: np.ndarray = None     # int8 over ProjectedFrame codes (built in __post_init__)
    group_tables: dict = None

    def __post_init__(self):
        object.__setattr__(self, "occupancy_table", _code_table(np.where(self.free, FREE, OCCUPIED), False))
        object.__setattr__(self, "group_tables", {n: _code_table(t, True) for n, t in self.groups.items()})


def load_occupancy_config(path: Path | None = None, names: list[str] | None = None) -> OccupancyClasses:
    """Read config/occupancy.yaml (or ``path``); class names are resolved against ``names`` (the model's classes).

    Raises ValueError naming the problem (unknown class or group, a group name that cannot be a topic name).
    """
    path = Path(path) if path else config_path("occupancy.yaml")
    names = list(names) if names is not None else class_names()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read occupancy config {path}: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("groups"), dict) or not raw["groups"]:
        raise ValueError(f"{path}: needs a non-empty 'groups' mapping (group name -> list of class names)")

    # A name of another class set (classes.yaml class_sets) that this model does not predict is skipped, so one
    # file serves every class set (vehicles: [Car, LargeVehicle, TwoWheeler]); any other name is a mistake.
    known = {n for s in class_set_names() for n in class_names(s)}

    def lut(classes, where: str) -> np.ndarray:
        table = np.zeros(256, bool)
        for name in classes or []:
            if name not in names and name in known:
                continue
            if name not in names:
                raise ValueError(f"{path}: {where}: unknown class {name!r} (the model's classes: {', '.join(names)})")
            table[names.index(name)] = True
        return table

    groups = {}
    for group, classes in raw["groups"].items():
        if not _NAME.match(str(group)):
            raise ValueError(f"{path}: group name {group!r} is not a valid topic name token")
        groups[str(group)] = lut(classes, f"group {group}")
    free_space = raw.get("free_space", "drivable")
    if free_space not in groups:
        raise ValueError(f"{path}: free_space {free_space!r} is not one of the groups {', '.join(groups)}")
    free = groups[free_space]
    return OccupancyClasses(free_space, free, free | lut(raw.get("see_through"), "see_through"), groups)


def contact_rows(class_ids: np.ndarray, ground: np.ndarray, top_row: int = 0, hood_row: int | None = None) \
        -> np.ndarray:
    """Per column: the lowest row above the hood holding a non-ground class (an object's contact), else -1.

    Rows above ``top_row`` are not searched: no grid cell reads them, so a contact there changes no cell.
    """
    hood_row = class_ids.shape[0] if hood_row is None else hood_row
    if hood_row <= top_row:
        return np.full(class_ids.shape[1], -1, np.intp)
    # (row + 1) where the class is not ground, 0 where it is; the column maximum is then the lowest such row + 1.
    # A max over rows of a contiguous band is one vectorised pass (an argmax down reversed columns is 2x slower).
    not_ground = np.take((~ground).astype(np.uint8), class_ids[top_row:hood_row])
    dtype = np.int16 if hood_row < 2 ** 15 else np.int32
    rows = np.arange(top_row + 1, hood_row + 1, dtype=dtype)[:, None]
    return np.multiply(not_ground, rows, dtype=dtype).max(axis=0).astype(np.intp) - 1


SEEN_CODES = 256 * 256                        # class id x 256 + confidence; this value = not seen


def _code_table(values_by_class: np.ndarray, per_confidence: bool) -> np.ndarray:
    """int8 lookup over frame codes (class x 256 + confidence, plus the not-seen code)."""
    table = np.empty(SEEN_CODES + 1, np.int8)
    if per_confidence:   # values_by_class is a bool group table: the confidence where the group's class won
        table[:SEEN_CODES] = np.where(values_by_class[:, None], CONFIDENCE_PERCENT[None, :], 0).reshape(-1)
    else:
        table[:SEEN_CODES] = np.repeat(values_by_class.astype(np.int8), 256)
    table[SEEN_CODES] = UNKNOWN
    return table


@dataclass
class ProjectedFrame:
    """One frame on the grid: per cell, the class and confidence of the mask pixel it takes, or not seen.

    Every output is then a single table lookup over these codes (the tables come from ``OccupancyClasses``).
    """
    shape: tuple[int, int]  # (height, width) of the grid
    codes: np.ndarray       # intp per grid cell: class id x 256 + confidence, or SEEN_CODES where unseen

    def occupancy(self, classes: OccupancyClasses) -> np.ndarray:
        """(height, width) int8: 0 free, 100 occupied (an object's contact or non-drivable ground), -1 unknown."""
        return np.take(classes.occupancy_table, self.codes).reshape(self.shape)

    def group(self, classes: OccupancyClasses, name: str) -> np.ndarray:
        """(height, width) int8: the model's confidence (0..100) where a class of group ``name`` won, 0 where
        another class did, -1 where unseen."""
        return np.take(classes.group_tables[name], self.codes).reshape(self.shape)


def project_cells(lookup: CellLookup, class_ids: np.ndarray, classes: OccupancyClasses,
                  confidence: np.ndarray | None = None) -> np.ndarray:
    """The free-space rule on the lookup's own cells: intp codes aligned with ``lookup.cells`` (class id x 256 +
    confidence, SEEN_CODES where the cell is not seen). ``project`` spreads them over the grid; the local map
    (runtime/local_map.py) moves them into its own frame instead.

    A column whose object reaches the last row above the hood (a car right beside the camera, cut by the image's
    lower edge) has its real contact out of view, nearer than that row's ground: the whole column is then unseen
    instead of placing the object at the edge row's ground, metres behind itself.
    """
    if class_ids.shape != lookup.shape or (confidence is not None and confidence.shape != lookup.shape):
        raise ValueError(f"mask is {class_ids.shape}, the lookup was built for {lookup.shape}")
    contact = contact_rows(class_ids, classes.ground, lookup.top_row, lookup.hood_row)
    rc = np.take(contact, lookup.col)             # (np.take: faster than fancy indexing for 1-D gathers)
    at_contact = (lookup.row_far <= rc) & (rc <= lookup.row_near)
    seen = ((lookup.row > rc) | at_contact) & np.take(contact != lookup.hood_row - 1, lookup.col)
    # A cell covering the contact takes the contact pixel's class (the object's), so vehicles and pedestrians
    # land in their own group at the place they stand.
    pixel = np.where(at_contact, rc * lookup.shape[1] + lookup.col, lookup.pixel)
    code = np.take(class_ids.reshape(-1), pixel).astype(np.intp) << 8
    code += 255 if confidence is None else np.take(confidence.reshape(-1), pixel)
    return np.where(seen, code, SEEN_CODES)


def project(lookup: CellLookup, class_ids: np.ndarray, classes: OccupancyClasses,
            confidence: np.ndarray | None = None) -> ProjectedFrame:
    """Apply the free-space rule to a mask of lookup.shape (the mask the lookup was built for).

    ``confidence`` (uint8, probability x 255, same shape) feeds the group grids; None counts as certain.
    """
    codes = np.full(lookup.grid.height * lookup.grid.width, SEEN_CODES, np.intp)
    codes[lookup.cells] = project_cells(lookup, class_ids, classes, confidence)
    return ProjectedFrame((lookup.grid.height, lookup.grid.width), codes)
