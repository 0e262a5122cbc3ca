"""OpenVINO on the CPU, reading the same .onnx file.

A fixed-shape model is compiled once, as it is (its batch axis stays dynamic). A keep_aspect model (dynamic width,
runtime/input_size.py) is compiled once per input width, with the width made static and the batch dynamic, because
OpenVINO's CPU plugin plans and picks kernels for static shapes far better than for dynamic ones. The compiled
models are kept in a small LRU cache (``SHAPE_CACHE`` shapes; the model's own width is compiled at load): a node
serving one camera compiles one extra width on its first frame, a rig of cameras a few; an evaluation over frames
of many aspects recompiles only when more than ``SHAPE_CACHE`` widths alternate.

When the plugin computes in f32 (AVX2-only CPUs, and ``--emulate-avx2``), two layout choices that are faster there
and slower in bf16 are made (``f32_layout``; measured on the AMD EPYC Zen 5, OpenVINO 2026.4, both rungs, the
variants interleaved):

* a batch of one gets a model of its own with the batch static too: 0.89-0.93x of the dynamic batch's time with
  AVX2 convolutions (``ONEDNN_MAX_CPU_ISA=AVX2``), 0.81-0.84x with AVX-512 ones; in bf16 static is 1.2-1.3x slower;
* the class reductions at the end of the graph run channels-last (openvino_graph.py): a further 0.85x.
"""
from __future__ import annotations

import collections
import re
import threading
from collections import Counter

import numpy as np

from carla_seg_ros.runtime.backends.base import Backend, BackendError
from carla_seg_ros.runtime.backends.openvino_graph import class_reductions_channels_last
from carla_seg_ros.runtime.backends.signal_stack import install_permanent_signal_stack
from carla_seg_ros.runtime.cpu_info import openvino_precision_hint
from carla_seg_ros.runtime.input_size import KEEP_ASPECT

SHAPE_CACHE = 4     # compiled widths kept (each holds its own plan and buffers, a few MB for the committed model)
_ISA = re.compile(r"(avx512|avx2|avx|sse42|sse41|amx|uni|ref)")


class OpenVinoBackend(Backend):
    name = "openvino"

    def __init__(self, model_path, info=None, threads: int = 0, f32_layout: bool | None = None):
        """``f32_layout``: None makes the f32 layout choices when the plugin computes in f32 (module doc); True /
        False force them (``carla-seg bench model --openvino-f32-layout on,off`` times both in one run)."""
        super().__init__(model_path, info, threads)
        try:
            import openvino as ov
        except ImportError as exc:
            raise BackendError(f"openvino is not installed ({exc})") from exc
        self.ov = ov
        self.core = ov.Core()
        self.config = {"PERFORMANCE_HINT": "LATENCY"}
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = threads
        precision = openvino_precision_hint()      # None: OpenVINO's choice (bf16 where the CPU has AVX512-BF16)
        if precision:
            self.config["INFERENCE_PRECISION_HINT"] = precision
        # The precision the plugin will compute in: the hint, else its own default for this CPU.
        self.precision = precision or _type_name(self.core.get_property("CPU", "INFERENCE_PRECISION_HINT"))
        self.f32_layout = self.precision == "f32" if f32_layout is None else f32_layout
        self._lock = threading.Lock()
        # (width, batch) -> (compiled, request); batch 1 for a static batch of one, None for a dynamic batch
        self._compiled: collections.OrderedDict = collections.OrderedDict()
        self.compilations = 0
        self._execution_info = None
        try:
            self.model = self.core.read_model(str(self.model_path))
            # False for a graph whose tail is not the exported one (it then runs as it is)
            self.channels_last_classes = self.f32_layout and class_reductions_channels_last(self.model)
            if self.info.input_policy == KEEP_ASPECT:
                self._for_shape(self.info.input_width, 1)
            else:
                self._compile((None, None), self.model)
        except Exception as exc:  # noqa: BLE001
            raise BackendError(f"OpenVINO cannot compile {self.model_path}: {exc}") from exc

    @property
    def compiled_widths(self) -> list:
        """Widths with a compiled model in the cache, least recently used first (``[None]``: fixed shape)."""
        return list(dict.fromkeys(width for width, _ in reversed(self._compiled)))[::-1]

    @property
    def compiled_shapes(self) -> list:
        """(width, batch) of the cached models, least recently used first; batch None: dynamic."""
        return list(self._compiled)

    def _for_shape(self, width, batch):
        key = (width, 1 if batch == 1 and self.f32_layout else None)
        entry = self._compiled.get(key)
        if entry is not None:
            self._compiled.move_to_end(key)
            return entry
        batch_dim = self.ov.Dimension(key[1]) if key[1] else self.ov.Dimension()
        self.model.reshape({self.model.input(0): self.ov.PartialShape([batch_dim, self.info.input_height, width, 3])})
        entry = self._compile(key, self.model)
        while len(self._compiled) > SHAPE_CACHE:
            self._compiled.popitem(last=False)
        return entry

    def _compile(self, key, source):
        """Compile ``source`` (the model, reshaped to ``key``'s shape if it has one); cache it with its request."""
        install_permanent_signal_stack()    # the plugin's own stacks break when models die out of order
        compiled = self.core.compile_model(source, "CPU", self.config)
        entry = self._compiled[key] = (compiled, compiled.create_infer_request())
        self.compilations += 1
        return entry

    def _infer(self, images: np.ndarray):
        with self._lock:
            fixed = self._compiled.get((None, None))
            compiled, request = fixed or self._for_shape(images.shape[2], images.shape[0])
            result = request.infer({0: images})
            return result[compiled.output(0)], result[compiled.output(1)]

    def execution_info(self) -> dict:
        """The precision the compiled model runs in and its kernels per ISA, read from OpenVINO's execution graph.

        ``inference_precision``: the compiled model's INFERENCE_PRECISION_HINT (bf16 / f32 / f16) as it resolved it;
        ``kernel_isa``: how many nodes run a kernel of each ISA (from each node's ``primitiveType``, e.g.
        ``brgconv_avx512_1x1_bf16``); ``conv_kernels``: the same for the convolutions alone, the bulk of the time.
        """
        if self._execution_info is not None:        # every width compiles with the same config: read it once
            return self._execution_info
        with self._lock:
            compiled = next(reversed(self._compiled.values()))[0]
        info = {"inference_precision": _type_name(compiled.get_property("INFERENCE_PRECISION_HINT"))}
        try:
            isa, conv = Counter(), Counter()
            for op in compiled.get_runtime_model().get_ordered_ops():
                rt = op.get_rt_info()
                primitive = rt["primitiveType"].astype(str) if "primitiveType" in rt else "unknown"
                if primitive.startswith("unknown"):       # constants, inputs, reshapes: no kernel
                    continue
                found = _ISA.search(primitive)
                name = found.group(1) if found else "other"
                isa[name] += 1
                if "conv" in primitive:
                    conv[name] += 1
            info["kernel_isa"], info["conv_kernels"] = dict(isa.most_common()), dict(conv.most_common())
        except Exception as exc:  # noqa: BLE001 - the execution graph is informative only
            info["kernel_isa_error"] = f"{type(exc).__name__}: {exc}"
        self._execution_info = info
        return info


def _type_name(value) -> str:
    """OpenVINO's element type as its short name: <Type: 'bfloat16'> -> 'bf16'."""
    try:
        return value.to_string()
    except AttributeError:
        return str(value)
