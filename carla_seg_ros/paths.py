"""Where the package's data files live: the colcon install's share directory, or the source tree.

colcon installs `config/`, `models/`, `launch/` under `share/carla_seg_ros/`; a pip or editable install (and the
tests) run from the source tree, where the same folders sit beside the Python package.
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE = "carla_seg_ros"
_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def share_dir() -> Path:
    """The folder holding config/, models/ and launch/."""
    if (_SOURCE_ROOT / "package.xml").is_file() and (_SOURCE_ROOT / "config").is_dir():
        return _SOURCE_ROOT
    try:  # installed by colcon (apt ROS or PyPI ROS wheels both ship ament_index_python)
        from ament_index_python.packages import get_package_share_directory
        return Path(get_package_share_directory(PACKAGE))
    except Exception:  # noqa: BLE001 - PackageNotFoundError or no ament_index at all
        return _SOURCE_ROOT


def config_path(name: str) -> Path:
    return share_dir() / "config" / name


def models_dir() -> Path:
    return share_dir() / "models"


DEFAULT_MODEL_NAME = "carla_unet.onnx"


def default_model() -> Path:
    return models_dir() / DEFAULT_MODEL_NAME


def default_data_dir() -> Path | None:
    """`$CARLA_SEG_DATA`, else `../shared/data/carla_seg` beside the source checkout, if it exists.

    The Kaggle "lyft-udacity-challenge" download (folders holding CameraRGB/ and CameraSeg/) works too: pass its
    folder with --data or set CARLA_SEG_DATA.
    """
    env = os.environ.get("CARLA_SEG_DATA")
    if env:
        return Path(env)
    return shared_data_dir()


def shared_data_dir() -> Path | None:
    """`../shared/data/carla_seg` beside the source checkout or the working directory, if it exists."""
    for candidate in (_SOURCE_ROOT.parent / "shared" / "data" / "carla_seg",
                      Path.cwd().parent / "shared" / "data" / "carla_seg"):
        if candidate.is_dir():
            return candidate
    return None


def user_cache_dir() -> Path:
    """$XDG_CACHE_HOME/carla_seg_ros (default ~/.cache/carla_seg_ros): one folder per user for fetched files."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(base) if os.path.isabs(base) else Path.home() / ".cache") / PACKAGE


def default_modern_data_dir() -> Path | None:
    base = default_data_dir()
    if base is None:
        return None
    candidate = base.parent / "carla_seg_modern"
    return candidate if candidate.is_dir() else None


def default_unlabelled_dir() -> Path | None:
    """`$CARLA_SEG_UNLABELLED`, else `carla_unlabelled` beside the labelled dataset, else
    `../shared/data/carla_unlabelled` beside the source checkout or the working directory, if it exists."""
    env = os.environ.get("CARLA_SEG_UNLABELLED")
    if env:
        return Path(env)
    base = default_data_dir()
    candidates = [base.parent / "carla_unlabelled"] if base is not None else []
    candidates += [_SOURCE_ROOT.parent / "shared" / "data" / "carla_unlabelled",
                   Path.cwd().parent / "shared" / "data" / "carla_unlabelled"]
    return next((c for c in candidates if c.is_dir()), None)
