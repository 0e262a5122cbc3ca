"""OpenVINO models released out of creation order must leave a usable alternate signal stack, so Ctrl-C still works.

Real OpenVINO, the committed rungs, in a fresh process each (signal stacks are per thread and per process): two
models compiled on one thread, the first released before the second (the model ladder keeping the fast rung), then
SIGINT to a Python handler. Without runtime/backends/signal_stack.py this process dies with SIGSEGV (checked on
OpenVINO 2026.4 by disabling the guard: rc -11, no output after the release).
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("openvino", reason="OpenVINO (extra `cpu`) is not installed")
if not sys.platform.startswith("linux"):
    pytest.skip("the plugin's per-model signal stacks exist on Linux only", allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]
SCRIPT = textwrap.dedent("""
    import gc, os, signal, sys
    from carla_seg_ros.runtime.backends.openvino_backend import OpenVinoBackend
    from carla_seg_ros.runtime.backends.signal_stack import STACK_BYTES, current_signal_stack
    caught = []
    signal.signal(signal.SIGINT, lambda *_: caught.append(1))
    for release_first in sys.argv[1:]:
        models = {"accurate": OpenVinoBackend("models/carla_unet.onnx"),
                  "fast": OpenVinoBackend("models/carla_unet_fast.onnx")}
        del models[release_first]
        gc.collect()
        models.clear()
        gc.collect()
    address, size, enabled = current_signal_stack()
    print("stack", enabled, size == STACK_BYTES, flush=True)
    reuse = [bytearray(1 << 16) for _ in range(1000)]    # the freed stacks' pages go back into use
    os.kill(os.getpid(), signal.SIGINT)
    print("caught", len(caught), flush=True)
""")


@pytest.mark.parametrize("order", [["accurate"], ["fast", "accurate"], ["accurate", "accurate"]],
                         ids=["first-released-first", "lifo-then-fifo", "fifo-twice"])
def test_sigint_is_handled_after_models_are_released_out_of_order(order):
    for path in ("models/carla_unet.onnx", "models/carla_unet_fast.onnx"):
        if not (REPO / path).is_file():
            pytest.skip(f"{path} is not in the checkout")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *order], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"rc {proc.returncode}\n{proc.stdout}\n{proc.stderr[-2000:]}"
    assert "stack True True" in proc.stdout, proc.stdout      # our permanent stack is the one left installed
    assert "caught 1" in proc.stdout, proc.stdout
