"""Save and load model weights as safetensors with the model config in the header (no pickle anywhere)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from carla_seg_ros.networks.models import build_model


def save_weights(model: torch.nn.Module, model_config: dict, path: Path, extra: dict | None = None) -> None:
    save_state(model.state_dict(), model_config, path, extra)


def save_state(state: dict, model_config: dict, path: Path, extra: dict | None = None) -> None:
    """Tensors by name, the model config (and ``extra`` as run_info) in the header: the file load_model reads."""
    meta = {"model_config": json.dumps(model_config)}
    if extra:
        meta["run_info"] = json.dumps(extra)
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(path), metadata=meta)


def read_metadata(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return {k: json.loads(v) for k, v in meta.items()}


def load_model(path: Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild the network from the config stored in the file and load its weights (eval mode)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model weights {path} not found")
    try:
        meta = read_metadata(path)
        model = build_model(meta["model_config"])
        model.load_state_dict(load_file(str(path), device=str(device)))
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse error means a corrupt or foreign file
        raise ValueError(f"cannot load model weights from {path}: {exc}") from exc
    return model.to(device).eval(), meta
