"""bench_gpu on any machine: the clear no-GPU exit, and its pipeline helpers run with a real CPU runtime."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from carla_seg_ros.benchmarks import bench_gpu
from carla_seg_ros.runtime.backends import create_backend
from carla_seg_ros.runtime.preprocess import resize_image
from carla_seg_ros.image_codec import decode_rgb


@pytest.mark.skipif(bench_gpu.cuda_device() is not None, reason="a CUDA GPU is present: the no-GPU exit is moot")
def test_without_gpu_it_says_so_and_exits_zero():
    out = subprocess.run([sys.executable, "-m", "carla_seg_ros.benchmarks.bench_gpu"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "no CUDA GPU" in out.stdout and "nothing to measure" in out.stdout


def test_bgra8_message_round_trips_through_the_node_decoder(data_dir):
    rgb = bench_gpu.camera_frames(data_dir, 1)[0]
    assert rgb.shape == (600, 800, 3), "fullres frames are the 800x600 camera size of the benchmark"
    msg = bench_gpu.bgra8_message(rgb)
    assert (msg.encoding, msg.width, msg.height, msg.step, len(msg.data)) == ("bgra8", 800, 600, 3200, 800 * 600 * 4)
    np.testing.assert_array_equal(decode_rgb(msg), rgb)


def test_helpers_measure_a_real_backend(model_path, data_dir):
    backend = create_backend("onnxruntime", model_path, threads=1)
    cameras = bench_gpu.camera_frames(data_dir, 2)
    frames = np.stack([resize_image(c, backend.input_size) for c in cameras])
    assert bench_gpu.model_fps(backend, frames, 2, iters=1, warmup=0) > 0
    lat = bench_gpu.pipeline_ms(backend, [bench_gpu.bgra8_message(c) for c in cameras], iters=2, warmup=0)
    assert lat.shape == (2,) and (lat > 0).all()
