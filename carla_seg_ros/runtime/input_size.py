"""The model input size for a camera frame: the one place that decides it (node, Segmenter, tools, TensorRT).

Two policies, stated in the model's metadata (``ModelInfo.input_policy``):

* ``fixed`` (models exported before keep_aspect, e.g. with ``carla-seg export --input-policy fixed``): every frame
  is resized to the model's ``input_width`` x ``input_height``, whatever its aspect (a 1382x512 frame is squashed).
* ``keep_aspect``: the height is the model's and the width follows the frame's aspect,
  ``width = round(input_height * W / H / width_multiple) * width_multiple``, clamped to
  [``min_width``, ``max_width``]. The export sets ``min_width`` to the model's width (4:3 at 384x288: a 4:3 frame
  runs exactly as before, and narrower or portrait frames are widened to it) and ``max_width`` to the 8:3 width
  (768 at height 288), so 16:9 (512), 21:9 (672) and the 1382x512 camera (2.7:1 -> 768) keep their aspect, and only
  wider panoramas are squashed to 8:3. ``width_multiple`` is 32, the network's largest stride.

The rounding is half-up (not Python's half-to-even), so a size never depends on the parity of a quotient.
"""
from __future__ import annotations

import math
from typing import Protocol


class ModelInfo(Protocol):
    """The fields of model_info.ModelInfo this module reads (model_info imports this module, not the reverse)."""
    input_width: int
    input_height: int
    input_policy: str
    min_width: int
    max_width: int
    width_multiple: int

    @property
    def input_size(self) -> tuple[int, int]: ...

FIXED = "fixed"
KEEP_ASPECT = "keep_aspect"
POLICIES = (FIXED, KEEP_ASPECT)
WIDTH_MULTIPLE = 32
MAX_ASPECT = 8 / 3          # default max_width of an export: 768 at height 288
TENSORRT_OPT_ASPECT = 4 / 3  # the optimisation profile's opt width: CARLA's default 800x600 camera


def parse_size(text: str) -> tuple[int, int]:
    """``"800x600"`` -> (800, 600): the one reader of WIDTHxHEIGHT options and parameters; ValueError otherwise."""
    text = text.strip().lower()
    try:
        w, h = (int(v) for v in text.split("x"))
    except ValueError:
        raise ValueError(f"{text!r} is not WIDTHxHEIGHT (e.g. 800x600)") from None
    if w <= 0 or h <= 0:
        raise ValueError(f"{text!r}: width and height must be positive")
    return w, h


def width_for_aspect(height: int, aspect: float, multiple: int = WIDTH_MULTIPLE) -> int:
    """``height * aspect`` rounded half-up to a multiple of ``multiple`` (never below one multiple)."""
    return max(multiple, int(math.floor(height * aspect / multiple + 0.5)) * multiple)


def input_size_for(frame_wh: tuple[int, int], info: ModelInfo) -> tuple[int, int]:
    """(width, height) the model runs a ``frame_wh`` = (W, H) frame at, under ``info``'s policy."""
    if info.input_policy != KEEP_ASPECT:
        return info.input_size
    frame_w, frame_h = int(frame_wh[0]), int(frame_wh[1])
    if frame_w <= 0 or frame_h <= 0:
        raise ValueError(f"frame size must be positive, got {frame_w}x{frame_h}")
    width = width_for_aspect(info.input_height, frame_w / frame_h, info.width_multiple)
    return min(max(width, info.min_width), info.max_width), info.input_height


def accepts(size_wh: tuple[int, int], info: ModelInfo) -> bool:
    """Whether the model takes (width, height) inputs: its own size, or any policy width at its height."""
    width, height = size_wh
    if info.input_policy != KEEP_ASPECT:
        return (width, height) == info.input_size
    return height == info.input_height and info.min_width <= width <= info.max_width \
        and width % info.width_multiple == 0


def width_range(info: ModelInfo) -> tuple[int, int]:
    """(smallest, largest) input width the model is run at."""
    if info.input_policy != KEEP_ASPECT:
        return info.input_width, info.input_width
    return info.min_width, info.max_width


def check_policy(info: ModelInfo) -> None:
    """ValueError when the metadata's policy fields cannot describe a model (read from a file or about to be
    written by the export)."""
    if info.input_policy not in POLICIES:
        raise ValueError(f"unknown input_policy {info.input_policy!r} (known: {', '.join(POLICIES)})")
    if info.input_policy == KEEP_ASPECT:
        m = info.width_multiple
        if m < 1 or not (0 < info.min_width <= info.input_width <= info.max_width):
            raise ValueError(f"keep_aspect needs 0 < min_width <= input_width <= max_width and width_multiple >= 1, "
                             f"got {info.min_width} <= {info.input_width} <= {info.max_width}, multiple {m}")
        if info.min_width % m or info.max_width % m or info.input_width % m:
            raise ValueError(f"keep_aspect widths must be multiples of {m}: min {info.min_width}, "
                             f"model {info.input_width}, max {info.max_width}")


def keep_aspect_fields(input_width: int, input_height: int, max_aspect: float = MAX_ASPECT,
                       multiple: int = WIDTH_MULTIPLE) -> dict:
    """The ModelInfo policy fields an export writes for a model trained at input_width x input_height."""
    max_width = max(input_width, width_for_aspect(input_height, max_aspect, multiple))
    return {"input_policy": KEEP_ASPECT, "min_width": int(input_width), "max_width": int(max_width),
            "width_multiple": int(multiple)}


def tensorrt_width_profile(info: ModelInfo, opt_width: int | None = None) -> tuple[int, int, int]:
    """(min, opt, max) input width of a TensorRT optimisation profile for the model.

    keep_aspect: min_width .. max_width (4:3 to 8:3 at 384x288: 384 .. 768, which takes in 16:9 = 512 and
    21:9 = 672), tuned (opt) for the model's own 4:3 width, CARLA's default 800x600 camera, unless ``opt_width``
    says otherwise. fixed: the model's width three times.
    """
    lo, hi = width_range(info)
    if info.input_policy != KEEP_ASPECT:
        return lo, lo, lo
    opt = width_for_aspect(info.input_height, TENSORRT_OPT_ASPECT, info.width_multiple) if opt_width is None \
        else int(opt_width)
    opt = min(max(opt, lo), hi)
    if opt_width is not None and not accepts((opt_width, info.input_height), info):
        raise ValueError(f"opt width {opt_width} is not an input width of the model ({lo}..{hi}, "
                         f"multiple of {info.width_multiple})")
    return lo, opt, hi
