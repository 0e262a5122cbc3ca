"""GPU benchmark: model-only fps (batch 1 and 8) and node-like pipeline latency for torch_cuda and TensorRT.

    carla-seg bench gpu [--model models/carla_unet.onnx] [--iters 500] [--json out.json]

* model-only: ``backend.infer`` on uint8 frames already at the model's input size (host -> GPU -> host included,
  as the node sees it), frames per second at batch 1 and batch 8;
* pipeline: what seg_node does with one 800x600 ``bgra8`` sensor_msgs/Image: decode (``image_codec.pixels``, a view),
  resize to the input size in the message's channel order, reorder to RGB, infer, resize the class-id and the
  confidence masks back to 800x600; p50/p99 latency in ms.

Issue targets (H100): >= 1500 fps model-only at batch 1, <= 3 ms pipeline p50; printed next to the figures, not
asserted. Without a CUDA GPU it says so and exits 0 (nothing to measure); TensorRT is measured only when usable.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from carla_seg_ros.runtime.cpu_info import add_cpu_option, apply_cpu_option

TARGET_FPS_B1 = 1500.0
TARGET_PIPELINE_P50_MS = 3.0
CAMERA_WH = (800, 600)


def cuda_device() -> str | None:
    """The GPU's name, or None when PyTorch sees no CUDA device."""
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def bgra8_message(rgb: np.ndarray) -> SimpleNamespace:
    """The fields of a sensor_msgs/Image that the node reads, holding ``rgb`` as CARLA's bgra8 bytes."""
    h, w = rgb.shape[:2]
    bgra = np.concatenate([rgb[..., ::-1], np.full((h, w, 1), 255, np.uint8)], axis=2)
    return SimpleNamespace(encoding="bgra8", is_bigendian=0, width=w, height=h, step=w * 4,
                           data=np.ascontiguousarray(bgra).tobytes())


def model_fps(backend, frames: np.ndarray, batch: int, iters: int, warmup: int) -> float:
    x = np.ascontiguousarray(np.resize(frames, (batch,) + frames.shape[1:]))
    for _ in range(warmup):
        backend.infer(x)
    start = time.perf_counter()
    for _ in range(iters):
        backend.infer(x)
    return batch * iters / (time.perf_counter() - start)


def pipeline_ms(backend, messages: list, iters: int, warmup: int) -> np.ndarray:
    from carla_seg_ros.runtime.preprocess import resize_image, resize_mask
    from carla_seg_ros.image_codec import pixels, to_rgb

    def one(msg):
        native = pixels(msg)
        small = to_rgb(resize_image(native, backend.input_size_for((msg.width, msg.height))), msg.encoding)
        ids, conf = backend.infer(np.ascontiguousarray(small)[None])
        return resize_mask(ids[0], (msg.width, msg.height)), resize_mask(conf[0], (msg.width, msg.height))

    for i in range(warmup):
        one(messages[i % len(messages)])
    times = np.empty(iters)
    for i in range(iters):
        t0 = time.perf_counter()
        one(messages[i % len(messages)])
        times[i] = time.perf_counter() - t0
    return times * 1000.0


def camera_frames(data: Path | None, count: int = 8) -> list[np.ndarray]:
    """Real 800x600 CARLA frames (dataset ``fullres``) when available, else a fixed random frame."""
    from carla_seg_ros.datasets import find_pairs, read_rgb
    if data is not None:
        try:
            return [read_rgb(p.rgb) for p in find_pairs(data, "fullres")[:count]]
        except FileNotFoundError:
            pass
    w, h = CAMERA_WH
    return [np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)]


def build_parser() -> argparse.ArgumentParser:
    from carla_seg_ros.paths import default_data_dir, default_model
    p = argparse.ArgumentParser(prog="carla-seg bench gpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=default_model(), help="exported .onnx (default: %(default)s)")
    p.add_argument("--backends", default="torch_cuda,tensorrt", help="comma-separated (default: %(default)s)")
    p.add_argument("--iters", type=int, default=500, help="timed iterations per figure (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=50, help="untimed iterations first (default: %(default)s)")
    p.add_argument("--precision", default="fp16", help="TensorRT engine precision (default: %(default)s)")
    p.add_argument("--cache-dir", type=Path, default=None, help="TensorRT engine cache (default: the usual)")
    p.add_argument("--data", type=Path, default=default_data_dir(), help="dataset with fullres/ 800x600 frames")
    p.add_argument("--json", type=Path, help="also write the figures as JSON")
    add_cpu_option(p)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cpu = apply_cpu_option(args)         # the CPU side of the pipeline (decode, resize) runs on it
    gpu = cuda_device()
    if gpu is None:
        print("bench_gpu: no CUDA GPU visible to PyTorch on this machine: nothing to measure "
              "(CPU figures: `carla-seg bench model` / `carla-seg bench node`).")
        return 0
    import torch
    from carla_seg_ros.runtime.backends import BackendError, create_backend
    from carla_seg_ros.runtime.backends.tensorrt_backend import tensorrt_unusable_reason
    from carla_seg_ros.runtime.preprocess import resize_image

    cameras = camera_frames(args.data)
    messages = [bgra8_message(rgb) for rgb in cameras]
    results = {"gpu": gpu, "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
               "model": str(args.model), "iters": args.iters, "cpu": cpu, "backends": {}}
    print(f"GPU {gpu}, PyTorch {torch.__version__} (CUDA {torch.version.cuda}); {len(cameras)} camera frame(s) "
          f"{cameras[0].shape[1]}x{cameras[0].shape[0]}")
    for name in [b.strip() for b in args.backends.split(",") if b.strip()]:
        options = {}
        if name == "tensorrt":
            reason = tensorrt_unusable_reason()
            if reason:
                print(f"{name}: skipped ({reason})")
                results["backends"][name] = {"skipped": reason}
                continue
            options = {"precision": args.precision, "max_batch": 8}
            if args.cache_dir:
                options["cache_dir"] = str(args.cache_dir)
        try:
            backend = create_backend(name, args.model, **options)
        except BackendError as exc:
            print(f"{name}: skipped ({exc})")
            results["backends"][name] = {"skipped": str(exc)}
            continue
        size = backend.input_size_for((cameras[0].shape[1], cameras[0].shape[0]))    # the frames share one size
        frames = np.stack([resize_image(rgb, size) for rgb in cameras])
        fps1 = model_fps(backend, frames, 1, args.iters, args.warmup)
        fps8 = model_fps(backend, frames, 8, max(args.iters // 8, 10), max(args.warmup // 8, 3))
        lat = pipeline_ms(backend, messages, args.iters, args.warmup)
        p50, p99 = float(np.percentile(lat, 50)), float(np.percentile(lat, 99))
        results["backends"][name] = {"description": backend.description, "model_fps_batch1": round(fps1, 1),
                                     "model_fps_batch8": round(fps8, 1), "pipeline_p50_ms": round(p50, 3),
                                     "pipeline_p99_ms": round(p99, 3)}
        print(f"{backend.description}: model-only {fps1:.0f} fps at batch 1 (target >= {TARGET_FPS_B1:.0f} on an "
              f"H100), {fps8:.0f} fps at batch 8; pipeline 800x600 bgra8 p50 {p50:.2f} ms, p99 {p99:.2f} ms "
              f"(target p50 <= {TARGET_PIPELINE_P50_MS:.0f} ms)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
