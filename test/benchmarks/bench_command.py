"""Run one `carla-seg bench ...` command as its own process on this package's test domain and return its JSON."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOMAIN_ID = "44"


def run_bench(args: list[str], tmp_path: Path, timeout: float = 240) -> dict:
    out = tmp_path / "figures.json"
    env = dict(os.environ, ROS_DOMAIN_ID=DOMAIN_ID, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    proc = subprocess.run([sys.executable, "-m", "carla_seg_ros", "bench", *args, "--json", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)
    print(proc.stdout[-3000:], proc.stderr[-2000:])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())
