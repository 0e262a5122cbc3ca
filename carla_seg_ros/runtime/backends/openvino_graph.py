"""Rewrite the exported graph's class reductions channels-last, for OpenVINO's CPU plugin computing in f32.

The exported graph (networks/models.DeployModel) ends in three reductions over the class axis of the full-resolution
logits (N, C, H, W): the argmax (ONNX ArgMax, OpenVINO TopK), the maximum and the sum of exponentials of the
max-softmax confidence. In f32 the plugin keeps those logits in a channel-blocked layout, where a reduction over the
channels strides through memory; its TopK alone took 2.9 of 19 ms of the fast rung under AVX2 emulation.
``class_reductions_channels_last`` recomputes both outputs from a channels-last transpose of the logits (N, H, W, C),
where each pixel's classes are contiguous: 0.85x of the model's time in f32 (both rungs, AVX2 emulation, static
batch of one). The arithmetic is DeployModel's, op for op: the class ids are the same, and the confidence byte
differs by one at most, on a few pixels in 100,000 where the 13 exponentials are summed in another order (checked
against ONNX Runtime on the same file in test_openvino_graph.py).

The rewrite is not applied in bf16: there the plugin already runs the tail channels-last, and the explicit
transpose made the model 1.4-1.8x slower (dynamic batch). It is an edit of the plugin's in-memory model only; the
.onnx file, and what every other runtime runs, is unchanged.
"""
from __future__ import annotations

import numpy as np

CLASS_AXIS = 1          # of the network's (N, C, H, W) logits


def _constant_values(output):
    node = output.get_node()
    return node.get_data().tolist() if node.get_type_name() == "Constant" else None


def _reduces_classes(node) -> bool:
    axes = _constant_values(node.input_value(1))
    return axes is not None and [a % 4 for a in np.atleast_1d(axes)] == [CLASS_AXIS]


def _find_tail(model):
    """(logits output, ids Result, confidence Result) when the model ends the way DeployModel exports it, else None.

    Checked: exactly one TopK (k = 1, mode max, over the class axis of a rank-4 tensor) and one ReduceSum over the
    class axis of Exp(logits - ReduceMax(logits over the class axis)), both on the same logits; two Results."""
    ops = model.get_ordered_ops()
    topks = [op for op in ops if op.get_type_name() == "TopK"]
    sums = [op for op in ops if op.get_type_name() == "ReduceSum"]
    results = model.get_results()
    if len(topks) != 1 or len(sums) != 1 or len(results) != 2:
        return None
    topk, total = topks[0], sums[0]
    attrs = topk.get_attributes()
    logits = topk.input_value(0)
    rank = logits.get_partial_shape().rank
    if (attrs.get("mode") != "max" or int(attrs.get("axis", -1)) % 4 != CLASS_AXIS or not rank.is_static
            or rank.get_length() != 4 or _constant_values(topk.input_value(1)) not in (1, [1])):
        return None
    exp = total.input_value(0).get_node()
    sub = exp.input_value(0).get_node() if exp.get_type_name() == "Exp" else None
    if sub is None or sub.get_type_name() != "Subtract" or not _reduces_classes(total):
        return None
    top = sub.input_value(1).get_node()
    if (sub.input_value(0) != logits or top.get_type_name() != "ReduceMax" or top.input_value(0) != logits
            or not _reduces_classes(top)):
        return None
    return logits, results[0], results[1]


def class_reductions_channels_last(model) -> bool:
    """Rewrite ``model`` (an openvino.Model read from our .onnx) in place; False, and untouched, when its tail is not
    DeployModel's (see ``_find_tail``)."""
    from openvino import opset13 as ops
    tail = _find_tail(model)
    if tail is None:
        return False
    logits, ids_result, confidence_result = tail

    def const(values, dtype):
        return ops.constant(np.array(values, dtype))

    last = const([3], np.int64)
    pixels = ops.transpose(logits, const([0, 2, 3, 1], np.int64))                 # (N, H, W, C)
    top = ops.reduce_max(pixels, last, keep_dims=True)
    total = ops.reduce_sum(ops.exp(ops.subtract(pixels, top)), last, keep_dims=False)
    # DeployModel: round(255 / sum(exp(logits - max))) as uint8; ONNX Round and torch.round both round half to even.
    confidence = ops.round(ops.multiply(ops.divide(const(1.0, np.float32), total), const(255.0, np.float32)),
                           "half_to_even")
    # stable TopK: the first of equal maxima, as ONNX ArgMax and torch.argmax
    ids = ops.topk(pixels, const(1, np.int64), 3, "max", "value", "i64", stable=True).output(1)
    ids = ops.squeeze(ids, last)
    for result, new in ((ids_result, ops.convert(ids, "u8")), (confidence_result, ops.convert(confidence, "u8"))):
        old = result.input_value(0)
        names = old.get_names()
        old.get_tensor().set_names(set())         # the output keeps its tensor name ("class_ids", "confidence")
        new.output(0).get_tensor().set_names(names)
        result.input(0).replace_source_output(new.output(0))
    model.validate_nodes_and_infer_types()
    return True
