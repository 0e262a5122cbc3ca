"""The model ladder: the rung choice from timings (no timing here), the budget, and rung discovery from a folder."""
from __future__ import annotations

import shutil

import pytest

from carla_seg_ros.paths import models_dir
from carla_seg_ros.runtime.model_ladder import (FAST_MODEL_NAME, budget_ms, choose_rung, discover,
                                                parse_frame_size)


def test_budget_is_the_fraction_of_the_frame_period():
    assert budget_ms(20.0) == pytest.approx(30.0)          # 60 % of 50 ms
    assert budget_ms(10.0, 0.5) == pytest.approx(50.0)
    for bad in ((0.0, 0.6), (20.0, 0.0), (20.0, 1.5)):
        with pytest.raises(ValueError):
            budget_ms(*bad)


def test_the_most_accurate_rung_that_fits_is_chosen():
    choice = choose_rung({"accurate": 17.0, "fast": 9.0}, 30.0)
    assert choice.rung == "accurate" and choice.fits
    assert "accurate=17.0" in choice.reason and "fast=9.0" in choice.reason and "budget 30.0 ms" in choice.reason
    choice = choose_rung({"accurate": 41.0, "fast": 22.0}, 30.0)
    assert choice.rung == "fast" and choice.fits and "most accurate rung that fits" in choice.reason


def test_when_none_fits_the_fastest_runs_and_the_reason_says_so():
    choice = choose_rung({"accurate": 60.0, "fast": 35.0}, 30.0)
    assert choice.rung == "fast" and not choice.fits and "no rung fits" in choice.reason


def test_a_ladder_of_one_rung():
    choice = choose_rung({"accurate": 17.0}, 30.0)
    assert choice.rung == "accurate" and choice.fits and "only rung" in choice.reason
    choice = choose_rung({"accurate": 45.0}, 30.0)
    assert choice.rung == "accurate" and not choice.fits and "only rung" in choice.reason


def test_ties_go_to_the_more_accurate_rung():
    assert choose_rung({"accurate": 30.0, "fast": 30.0}, 30.0).rung == "accurate"     # equal to the budget fits
    choice = choose_rung({"accurate": 40.0, "fast": 40.0}, 30.0)
    assert choice.rung == "accurate" and not choice.fits


def test_a_rung_that_could_not_be_timed_is_passed_over():
    choice = choose_rung({"accurate": None, "fast": 9.0}, 30.0)
    assert choice.rung == "fast" and "accurate could not be timed" in choice.reason and "accurate=failed" in \
        choice.reason
    with pytest.raises(ValueError):
        choose_rung({"accurate": None}, 30.0)
    with pytest.raises(ValueError):
        choose_rung({}, 30.0)


def test_discovery_finds_the_rungs_by_file_name_and_skips_a_corrupt_one(tmp_path):
    shutil.copy(models_dir() / "carla_unet.onnx", tmp_path / "carla_unet.onnx")
    ladder = discover("onnxruntime", tmp_path)
    assert [r.name for r in ladder.rungs] == ["accurate"] and not ladder.skipped     # no fast file: one rung
    shutil.copy(models_dir() / "carla_unet.onnx", tmp_path / FAST_MODEL_NAME)
    ladder = discover("onnxruntime", tmp_path)
    assert [r.name for r in ladder.rungs] == ["accurate", "fast"]
    assert ladder.get("fast").path == tmp_path / FAST_MODEL_NAME
    (tmp_path / FAST_MODEL_NAME).write_bytes(b"\x08\x07not an onnx model" * 50)
    ladder = discover("onnxruntime", tmp_path)
    assert [r.name for r in ladder.rungs] == ["accurate"]
    assert [(name, path.name) for name, path, _ in ladder.skipped] == [("fast", FAST_MODEL_NAME)]


def test_frame_size_parsing():
    assert parse_frame_size("") is None and parse_frame_size(" 800x600 ") == (800, 600)
    for bad in ("800", "0x600", "axb"):
        with pytest.raises(ValueError):
            parse_frame_size(bad)
