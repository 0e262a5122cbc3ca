"""The model ladder: the rung choice from timings, the budget, the interleaved timing rounds, and rung discovery from
a folder."""
from __future__ import annotations

import shutil

import pytest

from carla_seg_ros.paths import models_dir
from carla_seg_ros.runtime.model_ladder import (FAST_MODEL_NAME, LARGE_MODEL_NAME, budget_ms, choose_rung, discover,
                                                parse_frame_size, time_interleaved)


def test_budget_is_the_fraction_of_the_frame_period():
    assert budget_ms(20.0) == pytest.approx(25.0)          # half of 50 ms
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


def test_three_rungs_the_large_one_where_it_fits_and_the_next_elsewhere():
    timings = {"large": 24.0, "accurate": 14.0, "fast": 10.0}
    assert choose_rung(timings, 25.0).rung == "large"                   # a fast CPU or a GPU
    assert choose_rung({**timings, "large": 31.0}, 25.0).rung == "accurate"  # an AMX Xeon: today's rung
    assert choose_rung({"large": 80.0, "accurate": 40.0, "fast": 22.0}, 25.0).rung == "fast"   # an AVX2 CPU


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
    shutil.copy(models_dir() / "carla_unet.onnx", tmp_path / LARGE_MODEL_NAME)      # the large rung comes first
    ladder = discover("onnxruntime", tmp_path)
    assert [r.name for r in ladder.rungs] == ["large", "accurate"]


def test_frame_size_parsing():
    assert parse_frame_size("") is None and parse_frame_size(" 800x600 ") == (800, 600)
    for bad in ("800", "0x600", "axb"):
        with pytest.raises(ValueError):
            parse_frame_size(bad)


class RecordingRung:
    """Stands in for a backend in the timing rounds only: records the order of its calls and their frame shapes."""

    def __init__(self, name, calls, input_size=(64, 48), fail_on=None):
        self.name, self.calls, self.input_size, self.fail_on = name, calls, input_size, fail_on

    def input_size_for(self, frame_wh):
        return (frame_wh[0] // 10, frame_wh[1] // 10)

    def infer(self, frame):
        self.calls.append((self.name, frame.shape))
        if self.fail_on is not None and len([c for c in self.calls if c[0] == self.name]) == self.fail_on:
            raise RuntimeError("out of memory")


def test_timing_rounds_interleave_the_rungs_and_keep_their_order():
    calls = []
    rungs = {"accurate": RecordingRung("accurate", calls), "fast": RecordingRung("fast", calls)}
    timings = time_interleaved(rungs, (800, 600), batch=2, warmup=2, calls=3)
    assert list(timings) == ["accurate", "fast"] and all(isinstance(ms, float) and ms >= 0 for ms in timings.values())
    assert [name for name, _ in calls] == ["accurate", "fast"] * 5                 # one call of each per round
    assert {shape for _, shape in calls} == {(2, 60, 80, 3)}                       # batch, the camera's timing size
    calls.clear()
    time_interleaved({"accurate": RecordingRung("accurate", calls)}, None, warmup=1, calls=1)
    assert calls == [("accurate", (1, 48, 64, 3))] * 2                             # no frame size: the rung's own


def test_a_rung_failing_in_the_rounds_is_reported_and_leaves_them():
    calls = []
    rungs = {"accurate": RecordingRung("accurate", calls, fail_on=2), "fast": RecordingRung("fast", calls)}
    timings = time_interleaved(rungs, None, warmup=1, calls=3)
    assert list(timings) == ["accurate", "fast"]
    assert isinstance(timings["accurate"], RuntimeError) and isinstance(timings["fast"], float)
    assert [name for name, _ in calls].count("accurate") == 2 and [name for name, _ in calls].count("fast") == 4
