"""The ONNX rewrite for TensorRT: uint8 only at the network I/O, and bit-identical results (ONNX Runtime)."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from carla_seg_ros.datasets import find_pairs, read_rgb
from carla_seg_ros.runtime.model_info import INPUT_NAME, OUTPUT_NAMES, read_onnx_info
from carla_seg_ros.runtime.preprocess import resize_image
from carla_seg_ros.runtime.tensorrt.onnx_rewrite import (FLOAT_TYPES, _elem_types, tensorrt_compatible,
                                                         tensorrt_onnx_bytes)


def uint8_tensors(model):
    """Names of every uint8 tensor and, for each non-Cast node touching one, the node (TensorRT forbids those)."""
    types = _elem_types(model)
    bad = []
    for node in model.graph.node:
        touches = [n for n in list(node.input) + list(node.output) if types.get(n) == TensorProto.UINT8]
        if not touches:
            continue
        if node.op_type != "Cast":
            bad.append(f"{node.op_type} on {touches}")
            continue
        other = node.input[0] if types.get(node.output[0]) == TensorProto.UINT8 else node.output[0]
        if types.get(other) not in FLOAT_TYPES:
            bad.append(f"Cast uint8 <-> {TensorProto.DataType.Name(types.get(other, 0))}")
    return bad


def session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_exported_model_violates_tensorrt_uint8_rules(model_path):
    """Documents why the rewrite exists: if this starts failing, the export changed and the rewrite may go."""
    assert uint8_tensors(onnx.load(str(model_path)))


def test_rewrite_keeps_uint8_only_at_io(model_path):
    model = tensorrt_compatible(onnx.load(str(model_path)))
    assert uint8_tensors(model) == []
    io = {v.name: v.type.tensor_type.elem_type for v in list(model.graph.input) + list(model.graph.output)}
    assert io == {INPUT_NAME: TensorProto.UINT8, OUTPUT_NAMES[0]: TensorProto.UINT8,
                  OUTPUT_NAMES[1]: TensorProto.UINT8}
    # The metadata (class table, input size) survives: engines' sidecars copy it.
    assert {p.key for p in model.metadata_props} == {p.key for p in onnx.load(str(model_path)).metadata_props}


def test_rewrite_is_bit_identical_on_real_frames(model_path, data_dir):
    info = read_onnx_info(model_path)
    frames = np.stack([resize_image(read_rgb(p.rgb), info.input_size) for p in find_pairs(data_dir, "val")[:4]])
    noise = np.random.default_rng(0).integers(0, 256, frames.shape, dtype=np.uint8)  # every byte value
    batch = np.concatenate([frames, noise, np.zeros_like(frames[:1]), np.full_like(frames[:1], 255)])
    original = session(onnx.load(str(model_path))).run(list(OUTPUT_NAMES), {INPUT_NAME: batch})
    rewritten = onnx.load_from_string(tensorrt_onnx_bytes(model_path))
    ours = session(rewritten).run(list(OUTPUT_NAMES), {INPUT_NAME: batch})
    for a, b in zip(original, ours):
        assert a.dtype == b.dtype == np.uint8 and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def test_rewrite_refuses_arithmetic_on_the_uint8_input():
    """Moving a cast past arithmetic would change results (uint8 wraps around): refuse instead."""
    x = helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 4])
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ValueError, match="Add"):
        tensorrt_compatible(model)
