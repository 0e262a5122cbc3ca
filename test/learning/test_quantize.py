"""`carla-seg quantize`: int8 ONNX from the committed fp32 model, and the committed int8 model's accuracy.

Model v2 (EfficientNet-Lite0 encoder) loses 0.62 points of val mIoU in int8 even with percentile activation ranges
(6.94 with min/max; the depthwise convolutions were not the cause), so `carla-seg quantize` refuses it and no int8
file is committed; the int8 accuracy test then skips.
"""
import json

import numpy as np
import onnx
import pytest

from carla_seg_ros.evaluation import evaluate
from carla_seg_ros.learning import quantize
from carla_seg_ros.runtime.backends import create_backend
from carla_seg_ros.datasets import find_pairs, read_rgb
from carla_seg_ros.runtime.model_info import read_onnx_info
from carla_seg_ros.runtime.preprocess import resize_image

from test_model_targets import CARD_MEAN_IOU, CARD_PIXEL_ACCURACY


def test_quantize_writes_a_standard_int8_graph_that_keeps_metadata_and_reports_its_check(tmp_path, data_dir,
                                                                                          model_path, capsys):
    out = tmp_path / "int8.onnx"
    # 8 calibration frames keep the test short; the committed model used 46
    rc = quantize.main(["--model", str(model_path), "--out", str(out), "--data", str(data_dir),
                        "--calibration-every", "46"])
    captured = capsys.readouterr()
    printed = captured.out + captured.err                         # a failed check is reported on stderr
    assert rc in (0, 1) and ("-> OK" in printed) == (rc == 0) and ("-> FAILED" in printed) == (rc == 1)
    graph = onnx.load(str(out)).graph
    ops = {(n.domain, n.op_type) for n in graph.node}
    assert ("", "QuantizeLinear") in ops and ("", "DequantizeLinear") in ops
    assert all(domain in ("", "ai.onnx") for domain, _ in ops), "only standard ONNX ops: OpenVINO must read it"
    assert read_onnx_info(out) == read_onnx_info(model_path)          # class table, input size, hood rule
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    record = json.loads(props[quantize.QUANT_KEY])                     # what seg_node's model choice reads
    assert record["source_sha256"] == quantize.sha256(model_path) and record["passed"] == (rc == 0)
    assert (record["fp32_miou"] - record["int8_miou"] <= quantize.MAX_MIOU_DROP) == (rc == 0)

    info = read_onnx_info(model_path)
    frames = np.stack([resize_image(read_rgb(p.rgb), info.input_size) for p in find_pairs(data_dir, "val")[:4]])
    ref, _ = create_backend("onnxruntime", model_path).infer(frames)
    for backend in ("onnxruntime", "openvino"):
        ids, conf = create_backend(backend, out).infer(frames)
        assert ids.dtype == np.uint8 and conf.shape == ids.shape == ref.shape
        if rc == 0:     # the check passed: int8 and fp32 must agree almost everywhere
            assert (ids == ref).mean() > 0.98, f"{backend}: int8 class ids disagree with fp32 on too many pixels"


def test_quantize_refuses_missing_and_corrupt_models_with_one_line(tmp_path, data_dir, capsys):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07 not a protobuf")
    for model, why in ((tmp_path / "nope.onnx", "not found"), (corrupt, "not a readable ONNX model")):
        with pytest.raises(SystemExit) as exc:
            quantize.main(["--model", str(model), "--out", str(tmp_path / "x.onnx"), "--data", str(data_dir)])
        assert exc.value.code == 2 and why in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_committed_int8_model_keeps_the_fp32_card_figures_on_test(tmp_path, data_dir, model_path):
    """int8 accuracy budget: int8 is allowed if mIoU drops by less than 0.5 points against the fp32 model."""
    int8 = model_path.with_name("carla_unet_int8.onnx")
    if not int8.is_file():
        pytest.skip(f"no committed int8 model ({int8.name}): v2's and v3's int8 files fail quantize's 0.5-point "
                    "check (v3: 0.61 points; models/README.md)")
    out = tmp_path / "test.json"
    assert evaluate.main(["--data", str(data_dir), "--split", "test", "--model", str(int8), "--backend", "openvino",
                          "--samples", "0", "--json", str(out)]) == 0
    m = json.loads(out.read_text())["metrics"]
    print(f"int8 (OpenVINO) on test: pixel accuracy {m['pixel_accuracy']:.4f}, mIoU {m['mean_iou']:.4f}")
    assert m["mean_iou"] > CARD_MEAN_IOU - 0.005
    assert m["pixel_accuracy"] > CARD_PIXEL_ACCURACY - 0.005


def test_quantize_is_a_carla_seg_command_with_help():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "carla_seg_ros.cli", "quantize", "--help"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "--calibration-every" in out.stdout


def test_depthwise_convolutions_are_found_by_their_groups(model_path):
    """What --keep-depthwise-float leaves in float: the convolutions whose filters see one input channel each."""
    names = quantize.depthwise_convs(model_path)
    graph = onnx.load(str(model_path)).graph
    shapes = {t.name: tuple(t.dims) for t in graph.initializer}
    one_channel = {n.name for n in graph.node if n.op_type == "Conv" and shapes.get(n.input[1], (0, 0))[1] == 1}
    assert set(names) == one_channel and len(names) == len(set(names))
    assert 0 < len(names) < sum(n.op_type == "Conv" for n in graph.node), \
        "an EfficientNet encoder has depthwise and ordinary convolutions"
