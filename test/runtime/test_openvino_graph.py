"""OpenVINO's f32 layout: the class reductions rewritten channels-last return what the .onnx returns elsewhere, a
graph of another shape is left alone, and the backend makes the f32 choices in f32 only."""
import numpy as np
import pytest

ov = pytest.importorskip("openvino")

from carla_seg_ros.datasets import find_pairs, read_rgb  # noqa: E402
from carla_seg_ros.paths import default_model  # noqa: E402
from carla_seg_ros.runtime.backends import create_backend  # noqa: E402
from carla_seg_ros.runtime.backends.openvino_graph import class_reductions_channels_last  # noqa: E402
from carla_seg_ros.runtime.cpu_info import openvino_precision_hint  # noqa: E402
from carla_seg_ros.runtime.input_size import KEEP_ASPECT  # noqa: E402
from carla_seg_ros.runtime.preprocess import resize_image  # noqa: E402

RUNGS = ["carla_unet_large.onnx", "carla_unet.onnx", "carla_unet_fast.onnx"]


def _frames(data_dir, backend, camera_wh, count=6):
    """Val frames at the input size ``backend``'s model gives a camera of ``camera_wh``."""
    size = backend.input_size_for(camera_wh)
    return np.stack([resize_image(read_rgb(p.rgb), size) for p in find_pairs(data_dir, "val")[:count]])


@pytest.mark.parametrize("name", RUNGS)
@pytest.mark.parametrize("camera", [(800, 600), (1280, 720)])
def test_channels_last_reductions_return_what_onnx_runtime_returns(data_dir, monkeypatch, name, camera):
    """Same class ids on every pixel of real val frames; the confidence byte may differ by one where f32 sums the
    13 exponentials in another order (a handful of pixels, never more than 0.1 %)."""
    path = default_model().with_name(name)
    if not path.is_file():
        pytest.skip(f"{name} is not committed")
    monkeypatch.setenv("CARLA_SEG_OPENVINO_PRECISION", "f32")
    openvino = create_backend("openvino", path)
    assert openvino.channels_last_classes, "the exported graph's tail was not recognised"
    reference = create_backend("onnxruntime", path)
    frames = _frames(data_dir, openvino, camera)
    for batch in (frames[:1], frames):
        ids, conf = openvino.infer(batch)
        ref_ids, ref_conf = reference.infer(batch)
        assert np.array_equal(ids, ref_ids)
        off = np.abs(conf.astype(int) - ref_conf)
        assert off.max() <= 1 and np.count_nonzero(off) <= off.size // 1000


def test_a_graph_without_the_exported_tail_is_left_alone(tmp_path):
    """A model whose outputs are not DeployModel's argmax and confidence (here: a softmax output) is not touched."""
    from openvino import opset13 as ops
    image = ops.parameter([1, 3, 8, 8], np.float32, name="image")
    model = ov.Model([ops.softmax(image, 1)], [image], "other")
    before = [op.get_type_name() for op in model.get_ordered_ops()]
    assert class_reductions_channels_last(model) is False
    assert [op.get_type_name() for op in model.get_ordered_ops()] == before


def test_rewriting_twice_changes_nothing_more(model_path):
    model = ov.Core().read_model(str(model_path))
    assert class_reductions_channels_last(model) is True
    ops = [op.get_type_name() for op in model.get_ordered_ops()]
    assert class_reductions_channels_last(model) is False
    assert [op.get_type_name() for op in model.get_ordered_ops()] == ops
    assert [sorted(o.get_names()) for o in model.outputs] == [["class_ids"], ["confidence"]]


@pytest.mark.parametrize("precision, f32_layout", [("f32", True), ("bf16", False)])
def test_the_backend_makes_the_f32_choices_in_f32_only(model_path, monkeypatch, precision, f32_layout):
    """f32: a batch of one runs a model with the batch static and the class reductions channels-last; bf16 keeps the
    batch dynamic and the graph as exported (both are slower there). A batch of two always takes the dynamic model,
    with the same class ids as the batch of one."""
    if precision == "bf16":
        # bf16 only where OpenVINO chooses it itself: forced under an AVX2 cap of oneDNN (--emulate-avx2) the plugin
        # crashes at the first inference (runtime/cpu_info.py), and a CPU without AVX512-BF16 / AMX has no bf16.
        monkeypatch.delenv("CARLA_SEG_OPENVINO_PRECISION", raising=False)
        if openvino_precision_hint() is not None or \
                ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").to_string() != "bf16":
            pytest.skip("OpenVINO does not compute in bf16 on this CPU (or under this oneDNN cap)")
    else:
        monkeypatch.setenv("CARLA_SEG_OPENVINO_PRECISION", precision)
    backend = create_backend("openvino", model_path)
    if backend.info.input_policy != KEEP_ASPECT:
        pytest.skip("the committed model has a fixed shape")
    assert backend.precision == precision
    assert backend.f32_layout is f32_layout and backend.channels_last_classes is f32_layout
    one = (384, 1) if f32_layout else (384, None)
    assert backend.compiled_shapes == [one] and backend.compilations == 1
    frame = np.random.default_rng(3).integers(0, 256, (1, 288, 384, 3), dtype=np.uint8)
    ids_one, conf_one = backend.infer(frame)
    ids_two, conf_two = backend.infer(np.concatenate([frame, frame]))
    assert backend.compiled_shapes == ([one, (384, None)] if f32_layout else [one])
    assert backend.compiled_widths == [384]
    assert np.array_equal(ids_two[0], ids_one[0]) and np.array_equal(ids_two[1], ids_one[0])
    off = np.abs(conf_two[0].astype(int) - conf_one[0])
    assert off.max() <= 1 and np.count_nonzero(off) <= off.size // 1000
