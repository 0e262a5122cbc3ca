"""`carla-seg demo` end to end: seg_node in its own process, real frames over real DDS, a scored summary; and the
node is always stopped, also when the demo is interrupted."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOMAIN_ID = "53"


def demo_env(marker: str = "") -> dict:
    # The marker is inherited by the node the demo starts, so a leftover process can be found by it afterwards.
    return dict(os.environ, ROS_DOMAIN_ID=DOMAIN_ID, CARLA_SEG_TEST_MARKER=marker)


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if f"CARLA_SEG_TEST_MARKER={marker}".encode() in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def demo_cmd(data_dir, out, *extra) -> list[str]:
    return [sys.executable, "-m", "carla_seg_ros", "demo", "--data", str(data_dir), "--out", str(out), *extra]


def test_demo_plays_frames_and_writes_a_scored_summary(data_dir, tmp_path):
    pytest.importorskip("rclpy")
    out = tmp_path / "demo"
    marker = uuid.uuid4().hex
    proc = subprocess.run(demo_cmd(data_dir, out, "--max-frames", "8"), cwd=ROOT, env=demo_env(marker),
                          capture_output=True, text=True, timeout=400)
    print(proc.stdout[-3000:], proc.stderr[-3000:])
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["split"] == "fullres"
    assert summary["frames_sent"] == 8
    assert 1 <= summary["frames_received"] <= 8
    assert summary["dropped"] == 8 - summary["frames_received"]
    lat = summary["latency_ms"]
    assert 0 < lat["p50"] <= lat["p99"] < 10_000
    assert summary["frames_scored"] == summary["frames_received"]
    assert 0.0 <= summary["pixel_accuracy"] <= 1.0 and 0.0 <= summary["mean_iou"] <= 1.0
    assert summary["label_info_received"]
    overlays = sorted((out / "overlays").glob("*.png"))
    assert len(overlays) == summary["overlays_written"] >= 1
    assert "pixel accuracy" in proc.stdout and "p99" in proc.stdout
    assert not processes_with(marker), "seg_node outlived the demo"


def test_demo_interrupted_stops_the_node_and_keeps_what_it_recorded(data_dir, tmp_path):
    pytest.importorskip("rclpy")
    out = tmp_path / "demo"
    marker = uuid.uuid4().hex
    proc = subprocess.Popen(demo_cmd(data_dir, out, "--rate", "5"), cwd=ROOT, env=demo_env(marker),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in proc.stdout:   # printed when the measured frames start (40 frames at 5 Hz take 8 s)
            if "playing" in line:
                break
        time.sleep(2.0)
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 130, f"an interrupted demo exits with 130, got {rc}"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True
    assert 0 < summary["frames_sent"] < 40
    deadline = time.monotonic() + 5
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not processes_with(marker), "seg_node outlived the interrupted demo"


def test_demo_without_data_says_how_to_get_it(tmp_path):
    proc = subprocess.run(demo_cmd(tmp_path / "nowhere", tmp_path / "out"), cwd=ROOT, env=demo_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr
    assert "lyft-udacity-challenge" in proc.stderr and "--data" in proc.stderr


def test_demo_plays_a_kaggle_lyft_udacity_layout(data_dir, tmp_path):
    """The Kaggle download's layout (dataA/CameraRGB + CameraSeg, class id in the label's red channel) needs no
    conversion: rebuilt here from three real fullres pairs."""
    pytest.importorskip("rclpy")
    import cv2
    import numpy as np

    from carla_seg_ros.datasets import find_pairs, read_tag_ids

    kaggle = tmp_path / "lyft-udacity-challenge"
    for sub in ("CameraRGB", "CameraSeg"):
        (kaggle / "dataA" / sub).mkdir(parents=True)
    for pair in find_pairs(data_dir, "fullres")[:3]:
        (kaggle / "dataA" / "CameraRGB" / pair.rgb.name).write_bytes(pair.rgb.read_bytes())
        ids = read_tag_ids(pair.label)
        bgr = np.zeros(ids.shape + (3,), np.uint8)
        bgr[..., 2] = ids                                   # red channel, as in the Kaggle CameraSeg PNGs
        cv2.imwrite(str(kaggle / "dataA" / "CameraSeg" / pair.label.name), bgr)
    out = tmp_path / "demo"
    proc = subprocess.run(demo_cmd(kaggle, out), cwd=ROOT, env=demo_env(), capture_output=True, text=True,
                          timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["split"] == "all" and summary["frames_sent"] == 3
    assert summary["frames_scored"] == summary["frames_received"] >= 1


def test_demo_killed_outright_takes_the_node_with_it(data_dir, tmp_path):
    """SIGKILL leaves the demo no chance to clean up: the node must still go (parent-death signal)."""
    pytest.importorskip("rclpy")
    marker = uuid.uuid4().hex
    proc = subprocess.Popen(demo_cmd(data_dir, tmp_path / "demo", "--rate", "5"), cwd=ROOT, env=demo_env(marker),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in proc.stdout:
            if "warming up" in line:
                break
        assert len(processes_with(marker)) >= 2, "expected the demo and its seg_node to be running"
        proc.kill()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 15
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not processes_with(marker), "seg_node outlived a killed demo"


def test_recorder_holds_its_work_while_playing_and_does_it_after(data_dir, tmp_path):
    """Scoring and PNG writing wait for the end of the play (the node keeps the CPU), then every message is done."""
    from carla_seg_ros.datasets import HoodRule, find_pairs, read_rgb
    from carla_seg_ros.image_codec import to_image
    from carla_seg_ros.tools.demo import PRELOAD_FRAMES, Recorder, frames_to_play

    pair = find_pairs(data_dir, "fullres")[0]
    recorder = Recorder(tmp_path, 13, HoodRule())
    recorder.playing.set()
    recorder.expect(1, pair)
    recorder.on_overlay(1, to_image(read_rgb(pair.rgb), "rgb8"), None)
    time.sleep(0.5)
    assert recorder.overlays_written == 0            # held while playing
    recorder.close()                                   # the play ended: the held work is done before it returns
    assert recorder.overlays_written == 1 and (tmp_path / "overlays" / f"{pair.name}.png").is_file()
    assert recorder.errors == []

    short = frames_to_play([pair] * 3)                 # a short play is decoded up front, a long one read ahead
    assert isinstance(short, list) and len(short) == 3 and short[0].bgra.shape[2] == 4
    assert not isinstance(frames_to_play([pair] * (PRELOAD_FRAMES + 1)), list)
