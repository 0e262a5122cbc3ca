"""ONNX export: metadata, graph contract, and parity with PyTorch."""
import numpy as np
import onnx
import pytest
import torch

from carla_seg_ros.learning import export
from carla_seg_ros.runtime.backends import create_backend
from carla_seg_ros.datasets import find_pairs, read_rgb
from carla_seg_ros.runtime.model_info import INPUT_NAME, OUTPUT_NAMES, read_onnx_info
from carla_seg_ros.networks.models import build_model
from carla_seg_ros.runtime.preprocess import resize_image
from carla_seg_ros.networks.weights import load_model, save_weights


def test_export_contract(tmp_path):
    net = build_model({"arch": "fast_unet", "num_classes": 13}).eval()
    weights = tmp_path / "w.safetensors"
    save_weights(net, {"arch": "fast_unet", "num_classes": 13}, weights,
                 extra={"input_size": [96, 64], "hood_mode": "ignore", "hood_row_fraction": 0.8, "args": {}})
    out = tmp_path / "m.onnx"
    assert export.main(["--weights", str(weights), "--out", str(out), "--no-parity"]) == 0
    model = onnx.load(str(out))
    assert model.opset_import[0].version >= 17
    assert [i.name for i in model.graph.input] == [INPUT_NAME]
    assert [o.name for o in model.graph.output] == list(OUTPUT_NAMES)
    info = read_onnx_info(out)
    assert info.input_size == (96, 64) and info.num_classes == 13 and info.hood_mode == "ignore"
    assert (info.input_policy, info.min_width, info.max_width, info.width_multiple) == ("keep_aspect", 96, 160, 32)
    assert (tmp_path / "m.safetensors").is_file(), "weights are copied beside the ONNX for the torch backends"
    backend = create_backend("onnxruntime", out)
    ids, conf = backend.infer(np.zeros((3, 64, 96, 3), np.uint8))   # dynamic batch
    assert ids.shape == conf.shape == (3, 64, 96) and ids.dtype == conf.dtype == np.uint8
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 64, "width", 3], "height fixed at the model's, batch and width dynamic"


def test_fixed_policy_exports_the_old_fixed_shape(tmp_path):
    """--input-policy fixed: the graph takes the model's size only and every frame is squashed to it."""
    from carla_seg_ros.runtime.inference import Segmenter
    net = build_model({"arch": "fast_unet", "num_classes": 13}).eval()
    weights = tmp_path / "w.safetensors"
    save_weights(net, {"arch": "fast_unet", "num_classes": 13}, weights, extra={"input_size": [96, 64], "args": {}})
    out = tmp_path / "m.onnx"
    assert export.main(["--weights", str(weights), "--out", str(out), "--no-parity", "--input-policy", "fixed"]) == 0
    info = read_onnx_info(out)
    assert info.input_policy == "fixed"
    dims = [d.dim_param or d.dim_value for d in onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 64, 96, 3]
    backend = create_backend("onnxruntime", out)
    with pytest.raises(ValueError, match="expected uint8"):
        backend.infer(np.zeros((1, 64, 128, 3), np.uint8))
    ids, _ = Segmenter(backend).segment(np.zeros((120, 320, 3), np.uint8))    # 8:3, squashed to 96x64 and back
    assert ids.shape == (120, 320)


@pytest.mark.parametrize("backend_name", ["onnxruntime", "openvino"])
def test_dynamic_width_onnx_equals_pytorch_at_two_widths(tmp_path, backend_name):
    """A keep_aspect export run by ONNX Runtime and OpenVINO at the model's width and a wider one gives PyTorch's
    class ids (the EfficientNet-Lite U-Net: its TensorFlow SAME padding is traced once and must hold at every width
    that is a multiple of 32)."""
    pytest.importorskip(backend_name)
    from carla_seg_ros.networks.efficientnet_lite import LITE_MEAN, LITE_STD
    from carla_seg_ros.networks.models import DeployModel
    config = {"arch": "efficientnet_lite_unet", "num_classes": 13, "encoder": "lite0",
              "mean": list(LITE_MEAN), "std": list(LITE_STD)}
    torch.manual_seed(0)
    net = build_model(config).eval()
    weights = tmp_path / "lite.safetensors"
    save_weights(net, config, weights, extra={"input_size": [128, 96], "args": {"preset": "pretrained"}})
    out = tmp_path / "lite.onnx"
    assert export.main(["--weights", str(weights), "--out", str(out), "--no-parity"]) == 0
    backend = create_backend(backend_name, out)
    assert backend.info.input_policy == "keep_aspect" and backend.info.max_width == 256
    rng = np.random.default_rng(0)
    deploy = DeployModel(load_model(weights)[0]).eval()
    for width in (128, 224):
        images = rng.integers(0, 256, (2, 96, width, 3), dtype=np.uint8)
        ids, conf = backend.infer(images)
        with torch.no_grad():
            ref_ids, ref_conf = deploy(torch.from_numpy(images))
        assert ids.shape == (2, 96, width)
        # OpenVINO computes in bf16 on CPUs with AVX512-BF16: near-ties of an untrained net may flip.
        assert (ids == ref_ids.numpy()).mean() >= (export.PARITY_MIN if backend_name == "onnxruntime" else 0.97)


def test_corrupt_or_foreign_onnx_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(ValueError, match="not a readable ONNX model|no 'carla_seg' metadata"):
        read_onnx_info(bad)
    with pytest.raises(FileNotFoundError):
        read_onnx_info(tmp_path / "missing.onnx")


def test_committed_model_parity_on_val(model_path, data_dir):
    """ONNX Runtime's class ids agree with PyTorch's argmax on >= 99.9 % of val pixels, at the model's width and
    at the 16:9 and widest widths of its keep_aspect policy."""
    net, _ = load_model(model_path.with_suffix(".safetensors"))
    info = read_onnx_info(model_path)
    assert info.input_policy == "keep_aspect", "the committed model runs frames at the camera's aspect"
    assert export.parity_widths(info) == [384, 512, 768]
    frames = [read_rgb(p.rgb) for p in find_pairs(data_dir, "val")][::3]
    for width in export.parity_widths(info):
        images = np.stack([resize_image(f, (width, info.input_height)) for f in frames])
        with torch.no_grad():
            agreement = export.parity(net, model_path, images)
        print(f"argmax agreement ONNX Runtime vs PyTorch on val at width {width}: {agreement * 100:.4f} %")
        assert agreement >= export.PARITY_MIN


def test_export_of_the_pretrained_encoder_model_normalises_as_its_weights_expect(tmp_path):
    """The Lite U-Net's own mean/std go into the graph and the metadata; ONNX Runtime matches PyTorch."""
    from carla_seg_ros.networks.efficientnet_lite import LITE_MEAN, LITE_STD
    from carla_seg_ros.networks.models import DeployModel
    config = {"arch": "efficientnet_lite_unet", "num_classes": 13, "encoder": "lite0",
              "mean": list(LITE_MEAN), "std": list(LITE_STD)}
    net = build_model(config).eval()
    weights = tmp_path / "lite.safetensors"
    save_weights(net, config, weights, extra={"input_size": [128, 96], "args": {"preset": "pretrained"}})
    out = tmp_path / "lite.onnx"
    assert export.main(["--weights", str(weights), "--out", str(out), "--no-parity"]) == 0
    info = read_onnx_info(out)
    assert info.arch == "efficientnet_lite_unet" and info.input_size == (128, 96)
    assert info.mean == list(LITE_MEAN) and info.std == list(LITE_STD)
    images = np.random.default_rng(0).integers(0, 256, (2, 96, 128, 3), dtype=np.uint8)
    ids, _ = create_backend("onnxruntime", out).infer(images)
    with torch.no_grad():
        ref, _ = DeployModel(load_model(weights)[0])(torch.from_numpy(images))
    assert (ids == ref.numpy()).mean() >= export.PARITY_MIN


def test_rung_and_input_height_export_a_fast_rung_at_a_lower_height(tmp_path, monkeypatch, data_dir):
    """--rung fast writes the fast rung's file name; --input-height exports the same weights at another height (width
    4:3, multiples of 32), and the parity check runs at that height."""
    from carla_seg_ros.runtime.model_ladder import FAST_MODEL_NAME
    net = build_model({"arch": "fast_unet", "num_classes": 13}).eval()
    weights = tmp_path / "w.safetensors"
    save_weights(net, {"arch": "fast_unet", "num_classes": 13}, weights, extra={"input_size": [128, 96], "args": {}})
    monkeypatch.chdir(tmp_path)
    assert export.main(["--weights", str(weights), "--rung", "fast", "--input-height", "64", "--data", str(data_dir),
                        "--split", "val"]) == 0
    out = tmp_path / "models" / FAST_MODEL_NAME
    info = read_onnx_info(out)
    assert info.input_size == (96, 64) and info.input_policy == "keep_aspect" and info.min_width == 96
    ids, _ = create_backend("onnxruntime", out).infer(np.zeros((1, 64, 96, 3), np.uint8))
    assert ids.shape == (1, 64, 96)
    with pytest.raises(SystemExit):
        export.main(["--weights", str(weights), "--input-height", "16"])
