"""Which CPU a figure came from: its model, the instruction-set flags the runtimes dispatch on, and the AVX2 emulation.

Every benchmark prints ``cpu_line()`` and stores ``cpu_report()`` in its JSON, because the same model runs 2-4x
apart on an AVX2-only CPU and on one with AVX-512 / AVX512-BF16 / AMX (OpenVINO even changes its precision: bf16
where AVX512-BF16 or AMX is present, f32 otherwise).

``--emulate-avx2`` (``emulate_avx2()``) makes an AVX-512 machine behave like an AVX2-only one as far as it can be
done from the environment; it sets, for this process and every process it starts:

* ``ONEDNN_MAX_CPU_ISA=AVX2``: oneDNN's dispatcher (inside OpenVINO's CPU plugin and inside PyTorch) uses AVX2
  kernels at most. OpenVINO's compiled model then lists ``brgconv_avx2_*`` convolutions instead of
  ``brgconv_avx512_*`` (``Backend.execution_info()`` counts them). OpenVINO's own JIT kernels (a few eltwise /
  interpolate nodes) ignore it and stay AVX-512;
* ``CARLA_SEG_OPENVINO_PRECISION=f32``: OpenVINO's INFERENCE_PRECISION_HINT, as on a CPU without AVX512-BF16.
  OpenVINO decides bf16 from the CPU's own flags, not from oneDNN's limit, and with ``ONEDNN_MAX_CPU_ISA=AVX2`` and
  bf16 it crashes (segmentation fault) at the first inference, so the OpenVINO backend also picks f32 by itself
  whenever ``ONEDNN_MAX_CPU_ISA`` names an ISA without bf16;
* ``ATEN_CPU_CAPABILITY=avx2``: PyTorch's own (ATen) kernels.

ONNX Runtime's MLAS kernels pick their ISA from CPUID at load time and offer no switch: under the emulation ONNX
Runtime still runs its AVX-512 kernels, so its figures are not AVX2 figures.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

# The flags that decide which kernels the runtimes use (names as in /proc/cpuinfo).
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni", "avx_vnni")

AVX2_EMULATION = {"ONEDNN_MAX_CPU_ISA": "AVX2", "CARLA_SEG_OPENVINO_PRECISION": "f32",
                  "ATEN_CPU_CAPABILITY": "avx2"}
# ONEDNN_MAX_CPU_ISA values (oneDNN's names, case-insensitive) that leave out bf16 instructions.
ISAS_WITHOUT_BF16 = {"sse41", "avx", "avx2", "avx2_vnni", "avx2_vnni_2", "avx512_core", "avx512_core_vnni"}


def parse_cpuinfo(text: str) -> dict:
    """Model name, flags and logical CPU count from the text of /proc/cpuinfo (x86 layout; others: what is there)."""
    model, flags, cpus = None, None, 0
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "processor":
            cpus += 1
        elif key in ("model name", "Model", "cpu model") and model is None:
            model = value
        elif key in ("flags", "Features") and flags is None:
            flags = set(value.split())
    return {"model": model, "flags": flags or set(), "logical_cpus": cpus}


def cpu_report(cpuinfo: str | None = None) -> dict:
    """What the JSON of a benchmark holds about the CPU: model, the FLAGS (true/false), the emulation in force."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    parsed = parse_cpuinfo(cpuinfo)
    return {"model": parsed["model"] or platform.processor() or platform.machine() or "unknown",
            "logical_cpus": parsed["logical_cpus"] or os.cpu_count(),
            "flags": {flag: flag in parsed["flags"] for flag in FLAGS},
            "emulation": emulation_in_force()}


def emulation_in_force() -> dict:
    """The AVX2-emulation variables set in this process's environment (empty: none)."""
    return {k: os.environ[k] for k in AVX2_EMULATION if os.environ.get(k)}


def cpu_line(report: dict | None = None) -> str:
    """One line for a benchmark's header, e.g. 'CPU: AMD EPYC, 2 logical CPUs; avx2 yes, avx512f yes, ...'."""
    r = report or cpu_report()
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in r["flags"].items())
    emulation = r.get("emulation") or {}
    extra = ("; emulating AVX2: " + " ".join(f"{k}={v}" for k, v in emulation.items())) if emulation else ""
    return f"CPU: {r['model']}, {r['logical_cpus']} logical CPUs; {flags}{extra}"


def emulate_avx2() -> None:
    """Set AVX2_EMULATION in this process's environment (children inherit it). Call it before a runtime loads."""
    os.environ.update(AVX2_EMULATION)


def add_cpu_option(parser) -> None:
    parser.add_argument("--emulate-avx2", action="store_true",
                        help="behave like an AVX2-only CPU: " + " ".join(f"{k}={v}" for k, v in AVX2_EMULATION.items())
                        + " for this process and the nodes it starts (oneDNN in OpenVINO and PyTorch; ONNX "
                        "Runtime's MLAS cannot be limited: docs/benchmarks.md)")


def apply_cpu_option(args) -> dict:
    """After parsing: start the emulation if asked, print the CPU line; returns cpu_report() for the JSON."""
    if getattr(args, "emulate_avx2", False):
        emulate_avx2()
    report = cpu_report()
    print(cpu_line(report), flush=True)
    return report


def openvino_precision_hint() -> str | None:
    """The INFERENCE_PRECISION_HINT the OpenVINO backend should ask for; None: OpenVINO's own choice.

    ``CARLA_SEG_OPENVINO_PRECISION`` when set; else f32 when ``ONEDNN_MAX_CPU_ISA`` caps oneDNN below bf16 (OpenVINO
    would still choose bf16 from the CPU's flags and crash at the first inference).
    """
    explicit = os.environ.get("CARLA_SEG_OPENVINO_PRECISION", "").strip()
    if explicit:
        return explicit
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().lower() in ISAS_WITHOUT_BF16:
        return "f32"
    return None


def execution_line(info: dict) -> str:
    """'precision bf16; kernels avx512 64, uni 56; convolutions avx512 53' from a Backend.execution_info()."""
    def counts(v):
        return ", ".join(f"{k} {n}" for k, n in v.items()) if isinstance(v, dict) else str(v)
    parts = [f"precision {info.get('inference_precision', '?')}"]
    if "kernel_isa" in info:
        parts.append(f"kernels {counts(info['kernel_isa'])}")
    if info.get("conv_kernels"):
        parts.append(f"convolutions {counts(info['conv_kernels'])}")
    return "; ".join(parts)
