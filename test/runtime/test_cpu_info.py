"""The CPU behind every benchmark figure (model, ISA flags) and the AVX2 emulation, checked to take effect."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from carla_seg_ros.runtime import cpu_info

ROOT = Path(__file__).resolve().parents[2]

# Two logical CPUs of a Sapphire Rapids VM (AMX) and one of an AVX2-only Zen 2, as /proc/cpuinfo writes them.
SAPPHIRE_RAPIDS = """\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512dq avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8 avx_vnni
bogomips\t: 4000.00

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512dq avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8 avx_vnni
"""
ZEN2 = """\
processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse sse2 avx avx2 fma bmi2 sha_ni
"""


def test_parse_cpuinfo_reads_model_flags_and_count():
    parsed = cpu_info.parse_cpuinfo(SAPPHIRE_RAPIDS)
    assert parsed["model"] == "Intel(R) Xeon(R) Platinum 8480+" and parsed["logical_cpus"] == 2
    assert {"avx512_bf16", "amx_tile", "avx_vnni"} <= parsed["flags"]


def test_report_and_line_name_every_flag_the_runtimes_dispatch_on(monkeypatch):
    for key in cpu_info.AVX2_EMULATION:
        monkeypatch.delenv(key, raising=False)
    amx = cpu_info.cpu_report(SAPPHIRE_RAPIDS)
    assert amx["flags"] == {flag: True for flag in cpu_info.FLAGS} and amx["emulation"] == {}
    zen2 = cpu_info.cpu_report(ZEN2)
    assert zen2["model"] == "AMD EPYC 7B12" and zen2["logical_cpus"] == 1
    assert zen2["flags"] == {"avx2": True, "avx512f": False, "avx512_bf16": False, "amx_bf16": False,
                             "amx_tile": False, "avx512_vnni": False, "avx_vnni": False}
    line = cpu_info.cpu_line(zen2)
    assert line.startswith("CPU: AMD EPYC 7B12, 1 logical CPUs; avx2 yes, avx512f no, avx512_bf16 no")
    assert "emulating" not in line
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert "emulating AVX2: ONEDNN_MAX_CPU_ISA=AVX2" in cpu_info.cpu_line(cpu_info.cpu_report(ZEN2))


def test_this_machine_has_a_cpu_line():
    report = cpu_info.cpu_report()
    assert report["model"] and report["logical_cpus"] >= 1 and set(report["flags"]) == set(cpu_info.FLAGS)


@pytest.mark.parametrize("env, hint", [({}, None), ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, "f32"),
                                       ({"ONEDNN_MAX_CPU_ISA": "avx512_core_vnni"}, "f32"),
                                       ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}, None),
                                       ({"ONEDNN_MAX_CPU_ISA": "AVX2", "CARLA_SEG_OPENVINO_PRECISION": "bf16"}, "bf16"),
                                       ({"CARLA_SEG_OPENVINO_PRECISION": "f32"}, "f32")])
def test_openvino_precision_follows_the_emulation(monkeypatch, env, hint):
    # OpenVINO picks bf16 from the CPU's flags even when oneDNN is capped at AVX2, and then crashes (SIGSEGV)
    # at the first inference: under a cap without bf16 the backend asks for f32 itself.
    for key in ("ONEDNN_MAX_CPU_ISA", "CARLA_SEG_OPENVINO_PRECISION"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert cpu_info.openvino_precision_hint() == hint


def _bench_model(tmp_path, *extra) -> dict:
    out = tmp_path / f"bench{len(extra)}.json"
    env = {k: v for k, v in os.environ.items() if k not in cpu_info.AVX2_EMULATION}
    proc = subprocess.run([sys.executable, "-m", "carla_seg_ros", "bench", "model", "--backends", "openvino,torch",
                           "--iters", "2", "--warmup", "1", "--json", str(out), *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.startswith("CPU: ") and "avx512_bf16" in proc.stdout
    return json.loads(out.read_text())


@pytest.mark.skipif(not cpu_info.cpu_report()["flags"]["avx2"], reason="no AVX2 on this CPU")
def test_emulate_avx2_takes_effect_in_openvino_and_pytorch(tmp_path):
    """--emulate-avx2: OpenVINO runs f32 with AVX2 convolutions, PyTorch's ATen dispatches AVX2 (what is observable)."""
    pytest.importorskip("openvino")
    pytest.importorskip("torch")
    report = _bench_model(tmp_path, "--emulate-avx2")
    assert report["cpu"]["emulation"] == cpu_info.AVX2_EMULATION
    ov = report["results"]["openvino"]["execution"]
    assert ov["inference_precision"] == "f32", ov
    assert ov["conv_kernels"] and set(ov["conv_kernels"]) <= {"avx2", "avx", "sse41", "uni", "ref"}, ov
    assert report["results"]["torch"]["execution"]["kernel_isa"] == "AVX2"
    # Without the emulation the same run reports the machine's own choice (bf16 where the CPU has AVX512-BF16).
    native = _bench_model(tmp_path)
    assert native["cpu"]["emulation"] == {}
    flags = native["cpu"]["flags"]
    expected = "bf16" if flags["avx512_bf16"] or flags["amx_bf16"] else "f32"
    assert native["results"]["openvino"]["execution"]["inference_precision"] == expected
    if flags["avx512f"]:
        assert "avx512" in native["results"]["openvino"]["execution"]["conv_kernels"]
