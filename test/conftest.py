"""Shared fixtures: the dataset location and the committed model."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from carla_seg_ros.paths import default_data_dir, default_model, default_modern_data_dir, default_unlabelled_dir

REPO = Path(__file__).resolve().parent.parent


def _require(path, what):
    if path is None or not Path(path).is_dir():
        pytest.skip(f"{what} not found: set CARLA_SEG_DATA or place it at ../shared/data/carla_seg "
                    "(the Kaggle lyft-udacity-challenge download works too, see docs/reference/cli.md, Data folders)")
    return Path(path)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return _require(default_data_dir(), "dataset")


@pytest.fixture(scope="session")
def modern_dir() -> Path:
    return _require(default_modern_data_dir(), "modern CARLA set (carla_seg_modern)")


@pytest.fixture(scope="session")
def unlabelled_dir() -> Path:
    path = default_unlabelled_dir()
    if path is None or not (Path(path) / "rgb").is_dir():
        pytest.skip("unlabelled frames not found: set CARLA_SEG_UNLABELLED or place them at "
                    "../shared/data/carla_unlabelled")
    return Path(path)


@pytest.fixture(scope="session")
def model_path() -> Path:
    path = default_model()
    assert path.is_file(), f"committed model {path} is missing"
    return path


@pytest.fixture(autouse=True)
def _quiet_threads(monkeypatch):
    # Keep numeric libraries from oversubscribing the 2 CI cores when tests start subprocesses.
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))
