"""glibc takes the heap bounds seg_node sets at startup (in a child process: mallopt is process-wide)."""
import subprocess
import sys

import pytest


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_bound_heap_growth_is_accepted_by_glibc():
    code = ("from carla_seg_ros.runtime.memory import bound_heap_growth as b; "
            "print(b(), b(mmap_threshold=256 * 1024))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]
