"""`carla-seg bench model`: every CPU runtime and the int8 model timed in one run against the same baseline."""
import json

from carla_seg_ros.tools import bench_model


def test_bench_model_times_fp32_and_int8_in_one_run(tmp_path, model_path, capsys):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not onnx")
    out = tmp_path / "bench.json"
    int8 = model_path.with_name("carla_unet_int8.onnx")
    assert bench_model.main(["--model", str(model_path), "--also", str(int8), "--also", str(corrupt),
                             "--iters", "3", "--warmup", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"openvino", "onnxruntime", "torch", "openvino [carla_unet_int8]",
                            "onnxruntime [carla_unet_int8]"}
    assert all(r["p50_ms"] > 0 for r in results.values())
    assert "openvino [corrupt]: skipped" in printed and "vs torch" in printed      # a bad file costs one line
