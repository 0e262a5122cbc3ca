"""`carla-seg bench model`: every CPU runtime and further models (--also) timed in one run against the same
baseline."""
import json
import shutil

from carla_seg_ros.tools import bench_model


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
