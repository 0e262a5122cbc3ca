"""`carla-seg bench node` runs its pipelines one after the other and reports comparable figures for each.

A short run (seg_node on ONNX Runtime + the echo baseline, 30 frames); the performance targets themselves are
printed by the benchmark, not asserted here: this 2-core machine's timings depend on what else runs.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOMAIN_ID = "54"


def test_bench_node_reports_seg_node_and_echo_baseline(data_dir, tmp_path):
    pytest.importorskip("rclpy")
    out = tmp_path / "bench.json"
    plot = tmp_path / "cdf.png"
    cmd = [sys.executable, "-m", "carla_seg_ros", "bench", "node", "--data", str(data_dir), "--frames", "30",
           "--backends", "onnxruntime", "--json", str(out), "--plot", str(plot), "--log-dir", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, ROS_DOMAIN_ID=DOMAIN_ID), capture_output=True,
                          text=True, timeout=500)
    print(proc.stdout[-4000:], proc.stderr[-2000:])
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    labels = [p["pipeline"] for p in report["pipelines"]]
    assert labels == ["seg_node [onnxruntime]", "echo_node"]
    for p in report["pipelines"]:
        assert p["frames_sent"] == 30
        assert p["frames_received"] >= 1 and p["dropped"] == 30 - p["frames_received"]
        assert 0 < p["latency_ms"]["p50"] <= p["latency_ms"]["p99"]
        assert len(p["latencies_ms"]) == p["frames_received"]
    seg = report["pipelines"][0]
    assert seg["p50_above_echo_ms"] == pytest.approx(
        seg["latency_ms"]["p50"] - report["pipelines"][1]["latency_ms"]["p50"])
    assert "p50 - echo_node p50" in proc.stdout
    # model: auto runs the most accurate rung that fits this machine's budget: which one depends on its speed
    assert re.search(r"seg_node \[onnxruntime\] rung: (accurate|fast) \(", proc.stdout), proc.stdout[-2000:]
    assert plot.is_file() and plot.stat().st_size > 0


def test_occupancy_option_pairs_each_backend_with_a_grid_pipeline_and_reports_the_difference(capsys):
    """--occupancy: CameraInfo to every seg_node, a '+ occupancy' twin right after each, and the p50 difference."""
    from carla_seg_ros.benchmarks.bench_node import pipelines_for
    from carla_seg_ros.benchmarks.node_report import occupancy_lines

    pipelines = pipelines_for(["auto", "torch"], Path("m.onnx"), True, {}, occupancy=True)
    assert [p.label for p in pipelines] == ["seg_node [auto]", "seg_node [auto] + occupancy", "seg_node [torch]",
                                            "seg_node [torch] + occupancy", "echo_node"]
    assert [p.camera_info for p in pipelines] == [True, True, True, True, False]
    assert [p.occupancy for p in pipelines] == [False, True, False, True, False]
    assert len({p.node_name for p in pipelines}) == 5
    assert not any(p.camera_info for p in pipelines_for(["auto"], Path("m.onnx"), True, {}))
    repeated = pipelines_for(["auto", "auto", "auto"], Path("m.onnx"), False, {}, occupancy=True)
    assert len({p.node_name for p in repeated}) == 6
    assert [p.baseline for p in repeated[1::2]] == [p.node_name for p in repeated[0::2]]

    assert [p.baseline for p in pipelines] == [None, "seg_node", None, "seg_node_torch", None]

    def result(node, proc, baseline=None):
        return {"pipeline": f"seg_node [{node}]", "node": node, "baseline": baseline, "targets": {},
                "node_diagnostics": {"values": {"processing_p50_ms": proc, "occupancy_p50_ms": "0.9"}},
                "grids": [{"topic": "/seg_node_occupancy/occupancy", "frames_received": 9, "frames_sent": 10}]}
    results = [result("a", "30.0"), result("a + occupancy", "31.5", "a"), result("b", "30.0"),
               result("b + occupancy", "34.0", "b")]
    lines = occupancy_lines(results)
    assert len(lines) == 3
    assert "+1.5 ms (target <= 3 ms): ok" in lines[0] and "occupancy 9/10" in lines[0]
    assert "+4.0 ms (target <= 3 ms): MISSED" in lines[1]
    assert lines[2].startswith("occupancy over 2 pairs: median +2.8 ms") and lines[2].endswith("ok")
    assert results[1]["occupancy_added_ms"] == pytest.approx(1.5) and results[3]["targets"]["occupancy_added"] is False


def test_stage_lines_say_what_lies_outside_the_model_call():
    from carla_seg_ros.benchmarks.node_report import stage_lines

    def result(label, processing, inference):
        values = {"processing_p50_ms": processing, "preprocess_p50_ms": "2.5", "handoff_p50_ms": "0.1",
                  "inference_p50_ms": inference, "publish_p50_ms": "1.9"}
        return {"pipeline": label, "node": label, "targets": {}, "node_diagnostics": {"values": values}}
    results = [result("fast", "22.5", "18.1"), result("slow", "27.0", "19.0"),
               {"pipeline": "echo_node", "node": "echo", "is_echo": True, "targets": {}},
               result("old node", "27.0", "n/a")]
    lines = stage_lines(results)
    assert len(lines) == 2                      # the echo node and a node without stage figures give no line
    assert "preprocess 2.5 + handoff 0.1 + inference 18.1 + publish 1.9 ms" in lines[0]
    assert lines[0].endswith("outside the model call 4.4 ms (target <= 5 ms): ok")
    assert lines[1].endswith("outside the model call 8.0 ms (target <= 5 ms): MISSED")
    assert results[0]["targets"]["outside_model"] is True and results[1]["targets"]["outside_model"] is False


def test_camera_size_option_runs_every_pipeline_per_size_against_its_own_echo(capsys):
    """--camera-size: frames cropped to each camera's aspect and resized; every pipeline per size, labelled @WxH,
    with its own node name, and compared with the echo node of the same size."""
    import numpy as np

    from carla_seg_ros.ros.playback import camera_frame
    from carla_seg_ros.benchmarks.bench_node import at_camera_size, build_parser, pipelines_for
    from carla_seg_ros.benchmarks.node_report import print_table

    assert build_parser().parse_args(["--camera-size", "1280x720", "--camera-size", "1382x512"]).camera_size == \
        [(1280, 720), (1382, 512)]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--camera-size", "1280by720"])
    pipelines = [at_camera_size(p, (1280, 720)) for p in pipelines_for(["auto"], None, True, {})]
    assert [(p.label, p.node_name) for p in pipelines] == [("seg_node [auto] @1280x720", "seg_node_1280x720"),
                                                           ("echo_node @1280x720", "echo_node_1280x720")]
    again = at_camera_size(pipelines_for(["auto"], None, False, {})[0], (1280, 720), repeat=1)
    assert (again.label, again.node_name) == ("seg_node [auto] @1280x720 #2", "seg_node_1280x720_2")
    frame = np.zeros((600, 800, 4), np.uint8)
    frame[:, 400:] = 255                              # right half white: the crop keeps the centre
    wide = camera_frame(frame, (1280, 720))
    assert wide.shape == (720, 1280, 4) and wide[:, :600].max() == 0 and wide[:, 700:].min() == 255
    assert camera_frame(frame, (400, 600)).shape == (600, 400, 4)      # portrait: columns cropped

    def row(label, size, p50, echo=False):
        return {"pipeline": label, "node": label, "frame_size": size, "is_echo": echo, "frames_sent": 10,
                "frames_received": 10, "dropped": 0, "send_rate_hz": 20.0, "output_rate_hz": 20.0, "ready_s": 1.0,
                "latency_ms": {"p50": p50, "p99": p50, "max": p50}, "targets": {}}
    lines = print_table([row("seg @800x600", [800, 600], 40.0), row("echo @800x600", [800, 600], 10.0, True),
                         row("seg @1280x720", [1280, 720], 50.0), row("echo @1280x720", [1280, 720], 15.0, True)],
                        20.0)
    assert lines[:2] == ["seg @800x600 p50 - echo_node p50 = 30.0 ms (target <= 25 ms): MISSED",
                         "seg @1280x720 p50 - echo_node p50 = 35.0 ms (target <= 25 ms): MISSED"]
