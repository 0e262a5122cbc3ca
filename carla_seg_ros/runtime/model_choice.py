"""Which model file a backend runs when ``model_path`` is not set: the int8 file for the CPU runtimes, else fp32.

The rule (``choose_model``), applied at startup to the files in ``models/``:

* TensorRT and the torch backends run the fp32 file (TensorRT builds its own FP16/INT8 engines from it; torch
  loads the .safetensors beside it).
* The CPU runtimes (``INT8_BACKENDS``: OpenVINO, ONNX Runtime) run ``carla_unet_int8.onnx`` when it is there and
  passes its accuracy check, else the fp32 file. The check is the record ``carla-seg quantize`` writes into the
  int8 file (metadata key ``QUANT_KEY``): it must say the val mIoU drop was within ``MAX_MIOU_DROP`` and name the
  fp32 file it was made from by SHA-256, so a retrained fp32 model is never paired with a stale int8 file. An int8
  file without a record (made before quantize wrote one) is accepted only if its carla_seg metadata (classes,
  input size, training settings) equals the fp32 file's, and the choice says it is unverified.
* An explicit ``model_path`` always wins (the node does not call this then).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from carla_seg_ros.paths import DEFAULT_MODEL_NAME, models_dir

INT8_MODEL_NAME = "carla_unet_int8.onnx"
QUANT_KEY = "carla_seg_quantization"
MAX_MIOU_DROP = 0.005          # mIoU points as a fraction: 0.5 points
# int8 beats fp32 on both CPU runtimes in `carla-seg bench model --also` (docs/history/performance.md).
INT8_BACKENDS = ("openvino", "onnxruntime")


@dataclass(frozen=True)
class ModelChoice:
    path: Path
    reason: str

    @property
    def is_int8(self) -> bool:
        return self.path.name == INT8_MODEL_NAME


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def onnx_metadata(path: Path) -> dict:
    """metadata_props of an ONNX file (ValueError if it cannot be read)."""
    import onnx
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types for truncated files
        raise ValueError(f"{path} is not a readable ONNX model ({exc})") from exc
    return {p.key: p.value for p in model.metadata_props}


def int8_verdict(fp32: Path, meta8: dict) -> str | None:
    """None if the int8 file whose metadata is ``meta8`` may stand in for ``fp32``; otherwise why not."""
    if QUANT_KEY in meta8:
        try:
            record = json.loads(meta8[QUANT_KEY])
            drop = float(record["fp32_miou"]) - float(record["int8_miou"])
            source = record["source_sha256"]
        except (ValueError, KeyError, TypeError) as exc:
            return f"unreadable {QUANT_KEY} record ({exc})"
        if drop > MAX_MIOU_DROP + 1e-9:
            return f"its {record.get('check_split', 'val')} mIoU drop {drop * 100:.2f} pt exceeds " \
                   f"{MAX_MIOU_DROP * 100:.1f} pt"
        if source != sha256(fp32):
            return f"it was quantised from another {fp32.name} (re-run carla-seg quantize)"
        return None
    try:
        meta32 = onnx_metadata(fp32)
    except ValueError as exc:
        return str(exc)
    if meta8.get("carla_seg") != meta32.get("carla_seg"):
        return f"no accuracy record and its metadata differs from {fp32.name} (re-run carla-seg quantize)"
    return None


def choose_model(backend: str, directory: Path | None = None) -> ModelChoice:
    """The model file ``backend`` runs by default (``backend`` as requested; auto = the runtime it resolves to)."""
    directory = Path(directory) if directory is not None else models_dir()
    fp32, int8 = directory / DEFAULT_MODEL_NAME, directory / INT8_MODEL_NAME
    if backend == "auto":
        from carla_seg_ros.runtime.backends import resolve_auto
        backend = resolve_auto()[0]
    if backend not in INT8_BACKENDS:
        return ModelChoice(fp32, f"fp32: {backend} runs the fp32 model")
    if not int8.is_file():
        return ModelChoice(fp32, f"fp32: no {INT8_MODEL_NAME} in {directory}")
    if not fp32.is_file():
        return ModelChoice(int8, f"int8: {backend} (no {DEFAULT_MODEL_NAME} to check it against)")
    try:
        meta8 = onnx_metadata(int8)         # read once: the verdict and the reason both need it
    except ValueError as exc:
        return ModelChoice(fp32, f"fp32: {INT8_MODEL_NAME} not used: {exc}")
    why_not = int8_verdict(fp32, meta8)
    if why_not is not None:
        return ModelChoice(fp32, f"fp32: {INT8_MODEL_NAME} not used: {why_not}")
    verified = QUANT_KEY in meta8
    return ModelChoice(int8, f"int8: {backend} runs the int8 model "
                             + ("(val check recorded by carla-seg quantize)" if verified else
                                "(unverified: no accuracy record, same metadata as the fp32 model)"))
