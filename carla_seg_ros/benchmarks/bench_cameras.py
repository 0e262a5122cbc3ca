"""`carla-seg bench cameras`: N cameras in ONE seg_node (``cameras`` parameter, one batched inference per round)
against N separate single-camera seg_node processes, measured in the same run.

For each N in ``--cameras`` (default 1 2 4) a CARLA-bridge-like publisher (bgra8 800x600 from ``<data>/fullres``,
RELIABLE, KEEP_LAST 10) sends ``--frames`` frames on each of N camera topics at ``--rate`` Hz, all cameras on the
same tick like CARLA's synchronous sensors. Printed per configuration: frames answered, per-camera latency p50/p99
(input stamp -> mask received, wall clock; p50 = median over cameras of each camera's p50, p99 = the worst
camera's) and the CPU the node processes used during the measured frames (from /proc/<pid>/stat, 100 % = one core).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path

import numpy as np

from carla_seg_ros.datasets import find_pairs
from carla_seg_ros.paths import default_data_dir, default_model
from carla_seg_ros.runtime.backends import BACKEND_CHOICES
from carla_seg_ros.benchmarks.bench_node import parse_size
from carla_seg_ros.benchmarks.endurance import cpu_seconds
from carla_seg_ros.runtime.cpu_info import add_cpu_option, apply_cpu_option

CAMERA_TOPIC = "/bench/cam{}/image"
SEG_NODE_MODULE = "carla_seg_ros.ros.seg_node"


def layouts(n: int, model: Path, node_params: dict) -> dict:
    """``one``: one node with N cameras; ``separate``: N single-camera nodes. -> (argv list, output topics)."""
    from carla_seg_ros.ros.playback import node_argv

    base = {"model": str(model), **node_params}
    topics = [CAMERA_TOPIC.format(i) for i in range(n)]
    one = ([node_argv(SEG_NODE_MODULE, "seg_node", {**base, "cameras": "[" + ",".join(topics) + "]"})],
           [f"/seg_node/cam{i}/mask" for i in range(n)])
    separate = ([node_argv(SEG_NODE_MODULE, f"seg_node_{i}", base, {"image": topics[i]}) for i in range(n)],
                [f"/seg_node_{i}/mask" for i in range(n)])
    return {"one node": one, "separate": separate}


def run_config(label: str, argvs: list, outputs: list[str], frames: list, args, log_dir: Path | None) -> dict:
    from sensor_msgs.msg import Image
    from tqdm import tqdm

    from carla_seg_ros.ros.playback import NodeFailed, NodeProcess, latency_stats, paced
    from carla_seg_ros.benchmarks.bench_cameras_player import MultiPlayer

    n = len(outputs)
    result = {"config": label, "cameras": n, "processes": len(argvs)}
    player = MultiPlayer([CAMERA_TOPIC.format(i) for i in range(n)], name="bench_cameras_player")
    streams = [player.watch(topic, Image) for topic in outputs]
    procs = [NodeProcess(f"{label} #{i}", argv, log_path=(log_dir / f"{label.replace(' ', '_')}_{n}_{i}.log"
                                                          if log_dir else None)) for i, argv in enumerate(argvs)]
    try:
        for proc in procs:
            proc.start()
        messages = [player.image_message(bgra) for bgra in frames]
        result["ready_s"] = player.wait_all_ready(procs, messages[0], args.ready_timeout)
        pids = [p.proc.pid for p in procs]
        cpu0, t0 = cpu_seconds(pids), time.monotonic()
        ticks = itertools.islice(itertools.cycle(messages), args.frames)
        for msg in tqdm(paced(ticks, args.rate), total=args.frames, desc=f"{label} x{n}", unit="tick", leave=False):
            now = time.time_ns()
            for cam in range(n):
                player.send_camera(cam, msg, now + cam)       # distinct stamps per camera
        # CPU over the sending window (the load a steady stream makes); the drain after it would dilute it with idle.
        cpu1, t1 = cpu_seconds(pids), time.monotonic()
        player.drain(procs[0] if len(procs) == 1 else None)     # until every camera's newest frame is answered
        for proc in procs:
            proc.check()
        per_cam = []
        for cam, stream in enumerate(streams):
            lat = latency_stats(player.latencies(stream))
            per_cam.append({"topic": stream.topic, "sent": len(player.sent_by_camera[cam]),
                            "received": len(stream.received), "p50_ms": lat["p50"], "p99_ms": lat["p99"]})
        result["per_camera"] = per_cam
        result["cpu_percent"] = 100.0 * (cpu1 - cpu0) / (t1 - t0)
        p50s = [c["p50_ms"] for c in per_cam if c["p50_ms"] is not None]
        p99s = [c["p99_ms"] for c in per_cam if c["p99_ms"] is not None]
        result["p50_ms"] = float(np.median(p50s)) if p50s else None
        result["p99_ms"] = max(p99s) if p99s else None
        result["sent"] = sum(c["sent"] for c in per_cam)
        result["received"] = sum(c["received"] for c in per_cam)
    except NodeFailed as exc:
        result["error"] = str(exc)
    finally:
        for proc in procs:
            proc.close()
        player.close()
    return result


def _fmt(value, spec=".1f") -> str:
    return "-" if value is None else format(value, spec)


def print_table(results: list[dict], rate: float) -> None:
    header = (f"{'cameras':>7}  {'layout':<10}{'procs':>6}{'sent':>7}{'recv':>7}{'p50 ms':>9}{'p99 ms':>9}"
              f"{'CPU %':>8}{'CPU %/cam':>11}")
    print(header)
    print("-" * len(header))
    for r in results:
        if "error" in r:
            print(f"{r['cameras']:>7}  {r['config']:<10}  FAILED: {r['error'].splitlines()[0]}")
            continue
        print(f"{r['cameras']:>7}  {r['config']:<10}{r['processes']:>6}{r['sent']:>7}{r['received']:>7}"
              f"{_fmt(r['p50_ms']):>9}{_fmt(r['p99_ms']):>9}{_fmt(r['cpu_percent']):>8}"
              f"{_fmt(r['cpu_percent'] / r['cameras']):>11}")
    print(f"\n(each camera at {rate:g} Hz; latency: input stamp -> mask received, wall clock, p50 = median of the "
          "cameras' p50s, p99 = worst camera; CPU: utime+stime of the node processes while the frames were sent, "
          "100 % = one core; recv < sent = frames replaced by a newer one while inference was busy)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="carla-seg bench cameras", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None,
                        help="dataset folder (default: $CARLA_SEG_DATA or ../shared/data/carla_seg)")
    parser.add_argument("--split", default=None, help="split to play (default: fullres)")
    parser.add_argument("--model", type=Path, default=None, help="ONNX model (default: the committed model)")
    parser.add_argument("--cameras", type=int, nargs="+", default=[1, 2, 4], help="camera counts (default 1 2 4)")
    parser.add_argument("--rate", type=float, default=20.0, help="publish rate per camera in Hz (default: 20)")
    parser.add_argument("--frames", type=int, default=100, help="measured frames per camera (default: 100)")
    parser.add_argument("--camera-size", type=parse_size, default=None, metavar="WxH",
                        help="play the frames as cameras of this size see them (centred crop to the aspect, resized; "
                             "default: the data's own size, 800x600)")
    parser.add_argument("--backend", default="auto", choices=list(BACKEND_CHOICES), help="seg_node backend")
    parser.add_argument("--node-param", action="append", default=[], metavar="KEY=VALUE",
                        help="extra seg_node parameter for every node (repeatable)")
    parser.add_argument("--ready-timeout", type=float, default=180.0, help="seconds for nodes to answer warm-up")
    parser.add_argument("--json", type=Path, default=None, help="write all figures here")
    parser.add_argument("--log-dir", type=Path, default=None, help="keep each node's console log here")
    add_cpu_option(parser)
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.frames < 2 or min(args.cameras) < 1:
        parser.error("--rate must be > 0, --frames >= 2, --cameras >= 1")
    cpu = apply_cpu_option(args)

    from carla_seg_ros.ros.playback import NO_DATA_HELP, load_frame, resolve_split
    from carla_seg_ros.benchmarks.bench_node import parse_params

    data_dir = args.data or default_data_dir()
    if data_dir is None:
        parser.error(NO_DATA_HELP)
    split = resolve_split(Path(data_dir), args.split)
    model = args.model or default_model()
    try:
        frames = [load_frame(p).bgra for p in find_pairs(data_dir, split)[:20]]
    except FileNotFoundError as exc:
        parser.error(str(exc))
    if args.camera_size:
        from carla_seg_ros.ros.playback import camera_frame
        frames = [camera_frame(f, args.camera_size) for f in frames]
    h, w = frames[0].shape[:2]
    load = os.getloadavg()
    print(f"bench cameras: {w}x{h} bgra8 frames from {data_dir}/{split}; {args.frames} frames per camera at "
          f"{args.rate:g} Hz; backend {args.backend}; {os.cpu_count()} CPUs, load average {load[0]:.2f}", flush=True)
    params = {"backend": args.backend, **parse_params(args.node_param)}
    results = []
    try:
        for n in args.cameras:
            for label, (argvs, outputs) in layouts(n, Path(model), params).items():
                print(f"-> {n} camera(s), {label}", flush=True)
                results.append(run_config(label, argvs, outputs, frames, args, args.log_dir))
    except KeyboardInterrupt:
        print("\ninterrupted: figures of the configurations that finished:")
    print()
    print_table(results, args.rate)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rate_hz": args.rate, "frames_per_camera": args.frames, "frame_size": [w, h],
                                         "load_average_start": load, "cpu": cpu, "results": results}, indent=2)
                             + "\n")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
