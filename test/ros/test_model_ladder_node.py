"""seg_node's `model` parameter over real DDS: `auto` times the rungs of a models folder at startup and runs one,
reporting the rung, the timings and the budget in /diagnostics and its ready line.

The verdicts never depend on this machine's speed: the rung the node reports must be the one the rule gives for the
timings and the budget it reports (runtime/model_ladder.choose_rung), whichever that is.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pytest

rclpy = pytest.importorskip("rclpy", reason="ROS 2 wheels (extra `ros`) are not installed")
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402

from carla_seg_ros.runtime.model_ladder import FAST_MODEL_NAME, RUNGS, choose_rung  # noqa: E402
from seg_probe import REPO, Probe, node_env, start_node, stop_node, wait_for  # noqa: E402

NS = "/ladder_test"          # its own namespace: nothing else on the test domain answers for this node
NODE = f"{NS}/seg_node"
START_TIMEOUT_S = 180.0


@pytest.fixture(scope="module")
def ladder_dir(tmp_path_factory, model_path):
    """A models folder with the committed model and a small fast rung: the committed weights exported at input
    height 160 (213 -> 224 wide at 4:3), so the test needs no second trained model."""
    folder = tmp_path_factory.mktemp("models")
    shutil.copyfile(model_path, folder / "carla_unet.onnx")
    result = subprocess.run([sys.executable, "-m", "carla_seg_ros", "export", "--weights",
                             str(model_path.with_suffix(".safetensors")), "--rung", "fast", "--out",
                             str(folder / FAST_MODEL_NAME), "--input-height", "160", "--no-parity"],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return folder


@pytest.fixture()
def probe():
    p = Probe("ladder_test_probe")
    yield p
    p.close()


def parse_timings(text: str) -> dict:
    """``accurate=17.2, fast=9.1`` -> {"accurate": 17.2, "fast": 9.1} (``failed`` -> None), in the node's order."""
    out = {}
    for item in filter(None, (i.strip() for i in text.split(","))):
        name, _, ms = item.partition("=")
        out[name] = None if ms == "failed" else float(ms)
    return out


def node_diagnostics(probe: Probe, timeout: float = 15.0, node: str = NODE) -> dict:
    got = []

    def cb(msg):
        for status in msg.status:
            if status.name.startswith(f"{node}:"):
                level = int.from_bytes(status.level, "little") if isinstance(status.level, bytes) else status.level
                got.append({kv.key: kv.value for kv in status.values} | {"_level": level,
                                                                          "_message": status.message})
    sub = probe.node.create_subscription(DiagnosticArray, "/diagnostics", cb, 10)
    try:
        wait_for(lambda: got, timeout, "seg_node's /diagnostics")
        return got[-1]
    finally:
        probe.node.destroy_subscription(sub)


def test_auto_runs_the_rung_its_timings_and_budget_give_and_answers_frames(ladder_dir, probe, tmp_path):
    log = tmp_path / "seg_node.log"
    mask = probe.record(f"{NODE}/mask")
    camera = probe.camera(f"{NS}/camera/image")
    proc = start_node(log, "-r", f"__ns:={NS}", "-r", f"image:={NS}/camera/image", "-p", "model:=auto",
                      "-p", f"models_dir:={ladder_dir}", "-p", "timing_frame_size:=800x600")
    try:
        wait_for(lambda: camera.get_subscription_count() >= 1 and mask.get_publisher_count() >= 1,
                 START_TIMEOUT_S, "seg_node to subscribe", proc, log)
        send_until_answered(probe, camera, f"{NODE}/mask", proc, log)
        (frame_id, width, height), = list(probe.got(f"{NODE}/mask").values())[:1]
        assert (frame_id, width, height) == ("camera", 800, 600)
        values = node_diagnostics(probe)
    finally:
        stop_node(proc)
    timings, budget = parse_timings(values["rung_timings_ms"]), float(values["rung_budget_ms"])
    in_folder = [r for r in RUNGS if r != "large"]                  # the fixture has no large rung
    assert list(timings) == in_folder and all(ms is not None and ms > 0 for ms in timings.values()), values
    assert budget == pytest.approx(25.0, abs=0.05)                  # half of 50 ms at the default 20 Hz
    expected = choose_rung(timings, budget)        # the rule, applied to what the node itself measured
    assert values["model_rung"] == expected.rung, values
    assert values["model_file"].endswith("carla_unet.onnx" if expected.rung == "accurate" else FAST_MODEL_NAME)
    assert values["rung_choice"] in values["model_choice"]
    assert values["rung_fits"] == ("true" if expected.fits else "false")
    if not expected.fits:          # none fits: the status says so (WARN) once frames come
        assert values["_level"] == 1 and "over the frame budget" in values["_message"], values
    text = log.read_text()
    assert f"model ladder: rung {values['model_rung']}:" in text and "seg_node ready" in text
    assert f"budget {budget:.1f} ms" in text      # the ready log names timings and budget too


def send_until_answered(probe: Probe, camera, mask_topic: str, proc, log) -> None:
    stamp = 1_000_000_000
    deadline = time.monotonic() + 60.0
    while not probe.got(mask_topic) and time.monotonic() < deadline:   # a frame may precede discovery
        camera.publish(Probe.frame(800, 600, "camera", stamp))
        stamp += 50_000_000
        time.sleep(0.5)
    assert probe.got(mask_topic), f"no mask came back:\n{log.read_text()[-3000:]}"


def test_a_corrupt_fast_rung_is_skipped_and_auto_runs_the_only_rung_left(model_path, probe, tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copyfile(model_path, folder / "carla_unet.onnx")
    (folder / FAST_MODEL_NAME).write_bytes(b"\x08\x07not an onnx model" * 100)
    log = tmp_path / "seg_node.log"
    ns = f"{NS}_corrupt"
    mask = probe.record(f"{ns}/seg_node/mask")
    camera = probe.camera(f"{ns}/camera/image")
    # A budget no machine meets (0.05 ms): with one rung left, auto still runs it, warns, and /diagnostics says so.
    proc = start_node(log, "-r", f"__ns:={ns}", "-r", f"image:={ns}/camera/image", "-p", "model:=auto",
                      "-p", f"models_dir:={folder}", "-p", "target_rate:=1000.0", "-p", "budget_fraction:=0.05")
    try:
        wait_for(lambda: camera.get_subscription_count() >= 1 and mask.get_publisher_count() >= 1,
                 START_TIMEOUT_S, "seg_node to subscribe", proc, log)
        send_until_answered(probe, camera, f"{ns}/seg_node/mask", proc, log)
        values = node_diagnostics(probe, node=f"{ns}/seg_node")
    finally:
        stop_node(proc)
    text = log.read_text()
    assert f"fast rung {folder / FAST_MODEL_NAME} skipped" in text, text
    assert "rung accurate: the only rung in the models folder, over the budget" in text, text
    assert values["model_rung"] == "accurate" and values["rung_fits"] == "false", values
    assert list(parse_timings(values["rung_timings_ms"])) == ["accurate"]
    assert values["_level"] == 1 and values["_message"].startswith("model rung accurate over the frame budget"), values


@pytest.mark.parametrize("params, expected", [
    (["model:=sometimes"], "parameter model"),
    (["model:=fast", "models_dir:={empty}"], "no usable fast rung"),
    (["model:=auto", "models_dir:={empty}"], "auto found no usable rung"),
    (["model:=accurate", "model_path:={model}"], "both set"),
    (["models_dir:=/nonexistent/models"], "parameter models_dir"),
    (["timing_frame_size:=800"], "parameter timing_frame_size"),
    (["target_rate:=0.0"], "target_rate"),
    (["budget_fraction:=1.5"], "budget_fraction"),
])
def test_bad_model_parameters_stop_startup_with_a_message_naming_them(params, expected, tmp_path, model_path):
    (tmp_path / "empty").mkdir()
    params = [p.format(empty=tmp_path / "empty", model=model_path) for p in params]
    cmd = [sys.executable, "-m", "carla_seg_ros.ros.seg_node", "--ros-args", "--params-file",
           str(REPO / "config" / "seg.yaml"), "-r", f"__ns:={NS}_bad"]
    for p in params:
        cmd += ["-p", p]
    result = subprocess.run(cmd, env=node_env(), capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "startup failed" in output and expected in output, output


def test_model_path_still_works_with_a_deprecation_line_and_model_takes_a_path(model_path, tmp_path):
    for params, said in ((["model_path:=" + str(model_path)], "model_path parameter"),
                         (["model:=" + str(model_path)], "model parameter")):
        log = tmp_path / f"{said.split()[0]}.log"
        args = [arg for p in params for arg in ("-p", p)]
        proc = start_node(log, "-r", f"__ns:={NS}_path", "-p", "backend:=onnxruntime", *args)
        try:
            wait_for(lambda: "seg_node ready" in log.read_text(), START_TIMEOUT_S, "the node to start", proc, log)
        finally:
            stop_node(proc)
        text = log.read_text()
        assert f"model {model_path} ({said})" in text, text
        assert ("model_path is deprecated" in text) == (said == "model_path parameter"), text
