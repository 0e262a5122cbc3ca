"""The metadata embedded in an exported model: everything a runtime needs besides the graph itself.

Stored as one JSON string under the ONNX metadata key ``carla_seg`` (and copied into TensorRT engine sidecars).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from carla_seg_ros.runtime.input_size import check_policy

METADATA_KEY = "carla_seg"
INPUT_NAME = "image"
OUTPUT_NAMES = ("class_ids", "confidence")


@dataclass
class ModelInfo:
    input_width: int
    input_height: int
    classes: list            # [{"id", "name", "color"}]
    mean: list
    std: list
    input_format: str = "uint8 RGB NHWC; normalised inside the graph: (x / 255 - mean) / std"
    outputs: str = "class_ids uint8 (N,H,W); confidence uint8 (N,H,W) = round(255 * max softmax)"
    hood_mode: str = "background"
    hood_row_fraction: float = 495 / 600
    arch: str = ""
    training: dict = field(default_factory=dict)
    # Input size policy (runtime/input_size.py). Files without these fields (exported before keep_aspect) are
    # "fixed": every frame is resized to input_width x input_height, as they always were.
    input_policy: str = "fixed"      # fixed | keep_aspect
    min_width: int = 0               # keep_aspect: widths min_width..max_width in steps of width_multiple
    max_width: int = 0
    width_multiple: int = 32
    # The class set (config/classes.yaml class_sets) and its maps {coding: {tag id: class id}} from CARLA's tags to
    # these classes, so ground truth of any coding is scored in the model's own classes. Files without them
    # (exported before class sets) predict the 13 lyft13 classes.
    class_set: str = "lyft13"
    tag_maps: dict = field(default_factory=dict)

    @property
    def input_size(self) -> tuple[int, int]:
        return self.input_width, self.input_height

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def tag_lut(self, coding: str):
        """(256,) uint8: raw tag id of ``coding`` -> this model's class id (IGNORE_INDEX where not mapped): from
        the model's own tag_maps, else from classes.yaml for its class set."""
        from carla_seg_ros.classes import lut_from_map, tag_lut
        cache = self.__dict__.setdefault("_tag_luts", {})       # not a dataclass field: not in the JSON
        if coding not in cache:
            cache[coding] = (lut_from_map(self.tag_maps[coding]) if coding in self.tag_maps
                             else tag_lut(coding, self.class_set or "lyft13"))
        return cache[coding]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelInfo":
        data = json.loads(text)
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        info = cls(**known)
        check_policy(info)
        return info


def read_onnx_info(path: str | Path) -> ModelInfo:
    """Read the ModelInfo of an exported ONNX file, with a clear error for missing, corrupt or foreign files."""
    import onnx
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} not found")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types for truncated files
        raise ValueError(f"{path} is not a readable ONNX model ({exc})") from exc
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise ValueError(f"{path} has no '{METADATA_KEY}' metadata: export it with `carla-seg export`")
    return ModelInfo.from_json(props[METADATA_KEY])
