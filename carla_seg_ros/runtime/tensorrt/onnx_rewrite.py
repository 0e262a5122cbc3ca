"""Make the exported ONNX graph acceptable to TensorRT 10 without changing its I/O contract or its results.

The exported graph takes uint8 NHWC and returns uint8 masks. TensorRT (since 8.5) accepts UINT8 network inputs and
outputs, but with two documented restrictions (TensorRT 10 `DataType.UINT8` and onnx-tensorrt `operators.md`):
"UINT8 is only supported as network input or output tensor types", and a uint8 conversion exists only to or from
FLOAT/HALF ("uint8 conversions are not supported for {int8, int32, bool}"). Our graph breaks both:

* the input goes through ``Transpose`` *before* its ``Cast`` to float (a uint8 layer inside the network);
* ``class_ids`` is ``Cast(ArgMax(...), to=UINT8)``: an INT64 -> UINT8 conversion.

``tensorrt_compatible`` rewrites a copy: the uint8 input is cast to FLOAT first (its consumers then see exact
float copies of the bytes), and any cast to a uint8 output from a non-float type goes through FLOAT first (class
ids 0..255 are exact in float). The result is bit-identical in ONNX Runtime (test_engine_graph.py checks that); the
engine keeps uint8 I/O, so the node copies 1 byte per pixel in and out of the GPU, not 4.
"""
from __future__ import annotations

import onnx
from onnx import TensorProto, helper

FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16)
# Ops that only move or select values: running them on float copies of the bytes changes nothing.
VALUE_PRESERVING = {"Transpose", "Reshape", "Identity", "Slice", "Squeeze", "Unsqueeze", "Cast", "Flatten"}


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        types[vi.name] = vi.type.tensor_type.elem_type
    for init in inferred.graph.initializer:
        types[init.name] = init.data_type
    return types


def tensorrt_compatible(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose uint8 tensors are only network I/O converted to/from float (see module doc)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    types = _elem_types(out)
    new_nodes = []

    for inp in graph.input:
        if inp.type.tensor_type.elem_type != TensorProto.UINT8:
            continue
        consumers = [n for n in graph.node if inp.name in n.input]
        bad = sorted({n.op_type for n in consumers} - VALUE_PRESERVING)
        if bad:
            raise ValueError(f"uint8 input {inp.name!r} feeds {bad}: cannot move its cast to float safely")
        as_float = f"{inp.name}__trt_float"
        for node in consumers:
            node.input[:] = [as_float if name == inp.name else name for name in node.input]
        new_nodes.append(helper.make_node("Cast", [inp.name], [as_float], to=TensorProto.FLOAT,
                                          name=f"{inp.name}__trt_cast_in"))

    outputs = {o.name for o in graph.output if o.type.tensor_type.elem_type == TensorProto.UINT8}
    for node in graph.node:
        if node.op_type != "Cast" or node.output[0] not in outputs:
            continue
        src = node.input[0]
        if types.get(src) in FLOAT_TYPES:
            continue
        via = f"{node.output[0]}__trt_float"
        new_nodes.append(helper.make_node("Cast", [src], [via], to=TensorProto.FLOAT,
                                          name=f"{node.output[0]}__trt_cast_via_float"))
        node.input[0] = via

    # Prepend: the input cast must come before its consumers, and the via-float casts only need their source,
    # which topological order puts earlier; sort to keep the graph valid regardless.
    nodes = new_nodes + list(graph.node)
    del graph.node[:]
    graph.node.extend(_topological(nodes, {i.name for i in graph.input} | {i.name for i in graph.initializer}))
    onnx.checker.check_model(out)
    return out


def _topological(nodes, available: set[str]):
    available = set(available)
    pending = list(nodes)
    ordered = []
    while pending:
        progressed = False
        rest = []
        for node in pending:
            if all(not name or name in available for name in node.input):
                ordered.append(node)
                available.update(node.output)
                progressed = True
            else:
                rest.append(node)
        if not progressed:
            missing = sorted({n for node in rest for n in node.input if n and n not in available})
            raise ValueError(f"graph has unresolved inputs after the TensorRT rewrite: {missing[:5]}")
        pending = rest
    return ordered


def tensorrt_onnx_bytes(path) -> bytes:
    """The model file at ``path``, rewritten for TensorRT and serialized (what the ONNX parser reads)."""
    return tensorrt_compatible(onnx.load(str(path))).SerializeToString()
