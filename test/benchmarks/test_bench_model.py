"""`carla-seg bench model`: every CPU runtime and further models (--also) timed in one run against the same
baseline."""
import json
import shutil

from carla_seg_ros.benchmarks import bench_model


def test_bench_model_times_further_models_in_one_run(tmp_path, model_path, capsys):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not onnx")
    out = tmp_path / "bench.json"
    other = tmp_path / "other_model.onnx"    # any second model (the committed model has no int8 file)
    shutil.copyfile(model_path, other)
    assert bench_model.main(["--model", str(model_path), "--also", str(other), "--also", str(corrupt),
                             "--iters", "3", "--warmup", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"openvino", "onnxruntime", "torch", "openvino [other_model]", "onnxruntime [other_model]"}
    assert all(r["p50_ms"] > 0 for r in results.values())
    assert "openvino [corrupt]: skipped" in printed and "vs torch" in printed      # a bad file costs one line
    baseline = json.loads(out.read_text())["machine_baseline"]          # the machine's own jitter, same run
    assert 0 < baseline["p50_ms"] <= baseline["p99_ms"] <= baseline["max_ms"] and "machine baseline" in printed


def test_paced_calls_start_on_the_rate_grid():
    """--rate: calls start 1/rate apart (the runtime idles in between), so N calls take about N/rate seconds."""
    import time

    import numpy as np
    import pytest

    class Backend:
        def infer(self, batch):
            time.sleep(0.002)

    start = time.perf_counter()
    ms = bench_model.time_backend(Backend(), np.zeros((1, 2, 2, 3), np.uint8), iters=10, warmup=0, rate=50.0)
    elapsed = time.perf_counter() - start
    assert len(ms) == 10 and (ms >= 2.0).all()
    assert elapsed == pytest.approx(9 / 50.0 + 0.002, abs=0.05)      # 10 calls starting 20 ms apart
    with pytest.raises(SystemExit):
        bench_model.main(["--rate", "-1"])


def test_bench_model_times_each_camera_aspect_at_its_input_size(tmp_path, model_path, capsys):
    """--cameras: one row per backend and camera size, at the input size the model's policy gives it."""
    from carla_seg_ros.runtime.model_info import read_onnx_info
    if read_onnx_info(model_path).input_policy != "keep_aspect":
        import pytest
        pytest.skip("the committed model has a fixed shape")
    out = tmp_path / "bench.json"
    assert bench_model.main(["--model", str(model_path), "--backends", "onnxruntime,torch",
                             "--cameras", "800x600,1280x720,1382x512", "--shapes", "448x288,400x288",
                             "--iters", "2", "--warmup", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    results = report["results"]
    assert {label: r["input"] for label, r in results.items()} == {
        f"{b}{suffix}": size for b in ("onnxruntime", "torch") for suffix, size in (
            (" @448x288", [448, 288]), (" @384x288 (800x600 camera)", [384, 288]),
            (" @512x288 (1280x720 camera)", [512, 288]), (" @768x288 (1382x512 camera)", [768, 288]))}
    assert report["inputs"] == [[448, 288], [384, 288], [512, 288], [768, 288]]
    assert "onnxruntime @400x288: skipped" in printed          # not a multiple of 32: the model does not take it
    assert "fastest at 768x288" in printed


def test_bench_model_times_every_rung_of_the_ladder_and_says_which_auto_would_run(tmp_path, model_path, capsys):
    """--models accurate,fast: the rung files of --models-dir (a missing one is skipped), every backend on each, and
    per backend the rung model: auto would choose from those timings (consistent with them and the budget)."""
    from carla_seg_ros.runtime.model_ladder import budget_ms
    shutil.copyfile(model_path, tmp_path / "carla_unet.onnx")
    out = tmp_path / "bench.json"
    assert bench_model.main(["--models", "accurate,fast", "--models-dir", str(tmp_path), "--backends", "onnxruntime",
                             "--iters", "3", "--warmup", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "fast: skipped" in printed and "model ladder at 20 Hz" in printed
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"onnxruntime [accurate]"}
    verdict = report["ladder"]["onnxruntime"]
    assert verdict["rung"] == "accurate" and verdict["budget_ms"] == budget_ms(20.0)
    assert verdict["fits"] == (verdict["timings_ms"]["accurate"] <= verdict["budget_ms"])


def test_interleaved_rows_are_timed_round_by_round():
    """--interleave: one call of each row per round (warm-up rounds untimed), so a slow spell hits every row."""
    import numpy as np
    calls = []

    class Backend:
        def __init__(self, name):
            self.name = name

        def infer(self, batch):
            calls.append(self.name)

    ms = bench_model.time_interleaved_rows([(Backend("a"), None), (Backend("b"), None)], iters=3, warmup=1)
    assert calls == ["a", "b"] * 4
    assert len(ms) == 2 and all(len(m) == 3 and (np.asarray(m) >= 0).all() for m in ms)


def test_bench_model_times_openvino_with_and_without_its_f32_layout(tmp_path, model_path, capsys):
    """--openvino-f32-layout on,off: one OpenVINO row each, in one interleaved run; other runtimes keep one row.
    Bad modes and --interleave with --rate are refused."""
    import pytest
    pytest.importorskip("openvino")
    out = tmp_path / "bench.json"
    assert bench_model.main(["--model", str(model_path), "--backends", "openvino,onnxruntime", "--interleave",
                             "--openvino-f32-layout", "on,off", "--iters", "3", "--warmup", "1",
                             "--json", str(out)]) == 0
    assert "interleaved" in capsys.readouterr().out
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"openvino (f32 layout on)", "openvino (f32 layout off)", "onnxruntime"}
    assert all(r["p50_ms"] > 0 for r in results.values())
    for bad in (["--openvino-f32-layout", "yes"], ["--interleave", "--rate", "20"]):
        with pytest.raises(SystemExit):
            bench_model.main(bad)
