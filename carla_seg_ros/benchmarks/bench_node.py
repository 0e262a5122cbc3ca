"""`carla-seg bench node`: end-to-end ROS 2 latency and throughput of seg_node, against baselines in the same run.

Plays 800x600 bgra8 frames (``<data>/fullres``, cycled) at a fixed rate as a CARLA-bridge-like publisher
(RELIABLE, KEEP_LAST 10, wall-clock stamps) to each pipeline in turn, every one a separate process:

* ``seg_node [BACKEND]`` for each ``--backends`` entry (default: auto = the fastest CPU runtime, then torch =
  PyTorch eager on the same weights);
* ``echo_node``: subscribes like seg_node and only republishes a mono8 image (the transport floor).

and prints frames sent/received, output rate, latency p50/p99 (input stamp -> mask received, wall clock) and drops,
plus seg_node's p50 minus the echo node's, against the targets: >= 20 Hz sustained, p99 <= 100 ms, seg_node p50 at
most 25 ms above echo's.

``--camera-size WxH`` (repeatable) plays the frames as cameras of those sizes see them (centred crop to the
aspect, resized) and runs every pipeline at each size, labelled ``@WxH``: the per-camera-size cost of a keep_aspect
model, which runs a 16:9 camera at 512x288 and a 1382x512 one at 768x288 (runtime/input_size.py).

``--occupancy`` publishes a bridge-style CameraInfo beside every frame to every seg_node pipeline and adds, right
after each one, ``seg_node [BACKEND] + occupancy``, which also subscribes ``~/occupancy`` and every
``~/occupancy/<group>`` grid. The difference of the two pipelines' processing p50 (the node's own receive ->
publish time) is the grids' cost, against the target: at most 3 ms at the default grid size.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


from carla_seg_ros.runtime import input_size
from carla_seg_ros.runtime.backends import BACKEND_CHOICES
from carla_seg_ros.runtime.cpu_info import add_cpu_option, apply_cpu_option
from carla_seg_ros.runtime.model_ladder import MODEL_CHOICES
from carla_seg_ros.datasets import find_pairs
from carla_seg_ros.paths import default_data_dir
from carla_seg_ros.ros.playback.dds import DDS_CONFIGS, DEFAULT_DDS_CONFIG, apply_in_this_process, dds_env
from carla_seg_ros.benchmarks.node_report import (TARGET_OCCUPANCY_MS, TARGET_OUTSIDE_MODEL_MS, TARGET_P50_ABOVE_ECHO_MS,
                                                TARGET_P99_MS, check_targets, plot_cdf, print_table)

TARGET_RATE_HZ = 20.0
DISTINCT_FRAMES = 40      # frames kept in memory and cycled (fullres has exactly 40)
OCCUPANCY_GROUPS = ("drivable", "vehicles", "pedestrians", "static_obstacles")   # config/occupancy.yaml


@dataclass
class Pipeline:
    label: str
    module: str
    node_name: str
    params: dict = field(default_factory=dict)
    is_echo: bool = False
    camera_info: bool = False         # publish CameraInfo beside the frames
    occupancy: bool = False           # subscribe the occupancy grids too
    local_map: bool = False           # publish odometry; subscribe ~/local_map and ~/points
    baseline: str | None = None       # node name of the pipeline this one is compared with (no grids)

    @property
    def output_topic(self) -> str:
        return f"/{self.node_name}/mask"


def pipelines_for(backends: list[str], model: str | None, echo: bool, node_params: dict,
                  occupancy: bool = False, local_map: bool = False) -> list[Pipeline]:
    """One seg_node per backend (model None: the node's own model parameter, auto: the ladder's timed choice,
    runtime/model_ladder.py), then echo."""
    out = []
    for i, backend in enumerate(backends):
        # Distinct node names keep each run's topics apart from any leftover of the previous process.
        name = "seg_node" if i == 0 else f"seg_node_{backend}"
        if any(p.node_name == name for p in out):        # the same backend twice: repeat runs
            name = f"{name}_{i}"
        params = {"backend": backend, **({"model": str(model)} if model else {}), **node_params}
        label = f"seg_node [{backend}]"
        out.append(Pipeline(label, "carla_seg_ros.ros.seg_node", name, params, camera_info=occupancy or local_map))
        if local_map:
            out.append(Pipeline(f"{label} + local map", "carla_seg_ros.ros.seg_node", f"{name}_local_map", params,
                                camera_info=True, local_map=True, baseline=name))
        if occupancy:
            out.append(Pipeline(f"{label} + occupancy", "carla_seg_ros.ros.seg_node", f"{name}_occupancy", params,
                                camera_info=True, occupancy=True, baseline=name))
    if echo:
        out.append(Pipeline("echo_node", "carla_seg_ros.ros.echo_node", "echo_node", is_echo=True))
    return out


def run_pipeline(pipeline: Pipeline, messages_bgra: list, args, log_dir: Path | None) -> dict:
    """One pipeline: start its process, prove it answers, play ``args.frames`` frames, collect the figures."""
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image
    from tqdm import tqdm

    from carla_seg_ros.ros.playback import (CAMERA_INFO_TOPIC, CAMERA_TOPIC, ODOMETRY_TOPIC, NodeFailed, NodeProcess,
                                            Player, diagnostics_of, node_argv, paced)

    result = {"pipeline": pipeline.label, "node": pipeline.node_name, "params": pipeline.params,
              "baseline": pipeline.baseline}
    player = Player(name="bench_player", camera_info_topic=CAMERA_INFO_TOPIC if pipeline.camera_info else None,
                    odometry_topic=ODOMETRY_TOPIC if pipeline.local_map else None)
    stream = player.watch(pipeline.output_topic, Image)
    grids = []
    if pipeline.occupancy:
        from nav_msgs.msg import OccupancyGrid
        grids = [player.watch(f"/{pipeline.node_name}/{topic}", OccupancyGrid)
                 for topic in ("occupancy", *(f"occupancy/{g}" for g in OCCUPANCY_GROUPS))]
    if pipeline.local_map:      # the map fused every frame, published at its rate, and the points of every frame
        from nav_msgs.msg import OccupancyGrid
        from sensor_msgs.msg import PointCloud2
        grids = [player.watch(f"/{pipeline.node_name}/local_map", OccupancyGrid),
                 player.watch(f"/{pipeline.node_name}/points", PointCloud2)]
    diagnostics = player.watch_latest("/diagnostics", DiagnosticArray)
    log_path = log_dir / f"{pipeline.node_name}.log" if log_dir else None
    remaps = {"image": CAMERA_TOPIC, "camera_info": CAMERA_INFO_TOPIC, "odometry": ODOMETRY_TOPIC}
    proc = NodeProcess(pipeline.label, node_argv(pipeline.module, pipeline.node_name, pipeline.params, remaps),
                       log_path=log_path, env=dds_env(args.node_dds))
    try:
        proc.start()
        messages = [player.image_message(bgra) for bgra in messages_bgra]
        result["ready_s"] = player.wait_ready(proc, messages[0], timeout=args.ready_timeout)
        frames = itertools.islice(itertools.cycle(messages), args.frames)
        with tqdm(total=args.frames, desc=pipeline.label, unit="frame", leave=False) as bar:
            for msg in paced(frames, args.rate):
                player.send(msg, time.time_ns())   # wall-clock stamps: latency = arrival - stamp
                bar.update()
                if bar.n % 20 == 0:
                    proc.check()
                    bar.set_postfix(received=len(stream.received))
        player.drain(proc)
        proc.check()
        if not pipeline.is_echo:   # the node's own view: processing time and its drops, one report after the end
            player.wait_latest(diagnostics, timeout=5.0, newer_than=diagnostics.count)   # 1 Hz; slow when loaded
            result["node_diagnostics"] = diagnostics_of(diagnostics.message, pipeline.node_name)
        result.update(player.stream_summary(stream, args.rate))
        if grids:
            result["grids"] = [player.stream_summary(g, args.rate) for g in grids]
        result["latencies_ms"] = sorted(float(v) * 1000 for v in player.latencies(stream))
    except NodeFailed as exc:
        result["error"] = str(exc)
    finally:
        proc.close()
        player.close()
    return result


def parse_size(text: str) -> tuple[int, int]:
    """'1280x720' -> (1280, 720), for argparse (runtime/input_size.parse_size)."""
    try:
        return input_size.parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def at_camera_size(pipeline: Pipeline, size: tuple[int, int] | None, repeat: int = 0) -> Pipeline:
    """The pipeline run on frames of camera ``size``: labelled @WxH, its own node name (``repeat`` > 0: the size's
    n-th repetition, e.g. sizes alternated to see a busy machine's drift, labelled #n+1)."""
    if size is None:
        return pipeline
    w, h = size
    tag = f"_{w}x{h}" + (f"_{repeat + 1}" if repeat else "")
    return dataclasses.replace(pipeline, label=f"{pipeline.label} @{w}x{h}" + (f" #{repeat + 1}" if repeat else ""),
                               node_name=f"{pipeline.node_name}{tag}",
                               baseline=f"{pipeline.baseline}{tag}" if pipeline.baseline else None)


def parse_params(items: list[str]) -> dict:
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"carla-seg bench node: --node-param needs KEY=VALUE, got {item!r}")
        params[key] = value
    return params


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="carla-seg bench node", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None,
                        help="dataset folder (default: $CARLA_SEG_DATA or ../shared/data/carla_seg)")
    parser.add_argument("--split", default=None,
                        help="split or sub-folder to play (default: fullres, or all for a Kaggle/flat folder)")
    parser.add_argument("--model", default=None,
                        help="every seg_node's model parameter: auto, large, accurate, fast or an .onnx file "
                             "(default: the node's own, auto: the most accurate rung of the model ladder that fits --rate, timed "
                             "at startup; each run prints the rung it chose)")
    parser.add_argument("--rate", type=float, default=TARGET_RATE_HZ, help="publish rate in Hz (default: 20)")
    parser.add_argument("--frames", type=int, default=200, help="measured frames per pipeline (default: 200)")
    parser.add_argument("--camera-size", action="append", default=None, type=parse_size, metavar="WxH",
                        help="play the frames as a camera of this size sees them (centred crop to its aspect, then "
                             "resized); repeatable: every pipeline runs at each size, labelled @WxH (default: the "
                             "data's own size, 800x600)")
    parser.add_argument("--backends", nargs="+", default=["auto", "torch"],
                        choices=list(BACKEND_CHOICES),
                        help="a seg_node pipeline per backend (default: auto torch)")
    parser.add_argument("--no-echo", action="store_true", help="skip the echo-node baseline")
    parser.add_argument("--occupancy", action="store_true",
                        help="publish CameraInfo beside the frames and add a pipeline per backend that also "
                             "subscribes the occupancy grids (their cost: processing p50 against the same node "
                             "without them, in the same run)")
    parser.add_argument("--local-map", action="store_true",
                        help="publish odometry and CameraInfo beside the frames and add a pipeline per backend that "
                             "also subscribes ~/local_map and ~/points (their cost against the same node without)")
    parser.add_argument("--node-param", action="append", default=[], metavar="KEY=VALUE",
                        help="extra seg_node parameter for every seg_node pipeline (repeatable)")
    parser.add_argument("--ready-timeout", type=float, default=120.0,
                        help="seconds a node may take to start and answer its warm-up frames (default: 120)")
    parser.add_argument("--publisher-dds", choices=DDS_CONFIGS, default="default",
                        help="Fast DDS configuration of the bridge stand-in (default: default, a bridge as installed)")
    parser.add_argument("--node-dds", choices=DDS_CONFIGS, default=DEFAULT_DDS_CONFIG,
                        help=f"Fast DDS configuration of seg_node and echo_node (default: {DEFAULT_DDS_CONFIG}, what "
                             "the launch file applies)")
    parser.add_argument("--json", type=Path, default=None, help="write all figures (and latencies) here")
    parser.add_argument("--plot", type=Path, default=None, help="write a latency CDF plot (PNG) here")
    parser.add_argument("--log-dir", type=Path, default=None, help="keep each node's console log here")
    add_cpu_option(parser)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.frames < 2:
        parser.error("--rate must be > 0 and --frames >= 2")
    cpu = apply_cpu_option(args)         # --emulate-avx2 reaches the nodes through their environment

    from carla_seg_ros.ros.playback import NO_DATA_HELP, load_frame, resolve_split

    data_dir = args.data or default_data_dir()
    if data_dir is None:
        parser.error(NO_DATA_HELP)
    args.split = resolve_split(Path(data_dir), args.split)
    model = args.model
    if model is not None and model not in MODEL_CHOICES:
        if not Path(model).is_file():
            parser.error(f"model {model} not found (auto, large, accurate, fast or an .onnx file)")
        model = str(Path(model).resolve())
    try:
        pairs = find_pairs(data_dir, args.split)[:DISTINCT_FRAMES]
    except FileNotFoundError as exc:
        parser.error(str(exc))

    apply_in_this_process(args.publisher_dds)    # before this process's first DDS participant (the Player)
    frames = [load_frame(p).bgra for p in pairs]
    h, w = frames[0].shape[:2]
    sizes = args.camera_size or [None]
    if args.camera_size:
        from carla_seg_ros.ros.playback import camera_frame
        print(f"camera sizes {', '.join(f'{cw}x{ch}' for cw, ch in sizes)}: the {w}x{h} frames cropped to each "
              "aspect and resized", flush=True)
    load = os.getloadavg()
    print(f"bench node: {len(frames)} distinct {w}x{h} bgra8 frames from {data_dir}/{args.split}, cycled; "
          f"{args.frames} frames per pipeline at {args.rate:g} Hz; RELIABLE depth 10 publisher; Fast DDS: publisher "
          f"{args.publisher_dds}, nodes {args.node_dds}; "
          f"ROS_DOMAIN_ID={os.environ.get('ROS_DOMAIN_ID', '0')}; {os.cpu_count()} CPUs, load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)

    results = []
    interrupted = False
    try:
        runs = [(size, at_camera_size(pipeline, size, sizes[:i].count(size))) for i, size in enumerate(sizes)
                for pipeline in pipelines_for(args.backends, model, not args.no_echo,
                                              {"target_rate": min(max(float(args.rate), 0.1), 1000.0),
                                               **parse_params(args.node_param)}, args.occupancy,
                                 args.local_map)]
        played = {size: frames if size is None else [camera_frame(f, size) for f in frames] for size in sizes}
        for size, pipeline in runs:
            print(f"-> {pipeline.label}", flush=True)
            r = run_pipeline(pipeline, played[size], args, args.log_dir)   # stops its node whatever happens
            r["frame_size"] = list(size) if size else [w, h]
            r["is_echo"] = pipeline.is_echo
            if "error" not in r:
                r["targets"] = check_targets(r, args.rate)
            else:
                print(f"   {pipeline.label} failed:\n{r['error']}", file=sys.stderr, flush=True)
            results.append(r)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: figures of the pipelines that finished:", file=sys.stderr)
    print()
    print_table(results, args.rate)
    for r in results:
        values = (r.get("node_diagnostics") or {}).get("values") or {}
        if "model_file" in values:
            print(f"{r['pipeline']} ran {values['model_file']} ({values.get('model_choice', '?')}); "
                  f"{values.get('kernels', 'precision ' + values.get('inference_precision', '?'))}")
        if values.get("model_rung"):      # the model ladder's choice: which rung, from which timings and budget
            print(f"{r['pipeline']} rung: {values['model_rung']} ({values.get('rung_choice', '')})")

    report = {"publisher_dds": args.publisher_dds, "node_dds": args.node_dds,
              "data_dir": str(data_dir), "split": args.split, "model": str(model) if model else "node default (auto)",
              "rate_hz": args.rate,
              "frames_per_pipeline": args.frames, "frame_size": [w, h], "cpus": os.cpu_count(), "cpu": cpu,
              "load_average_start": load, "load_average_end": os.getloadavg(),
              "targets": {"rate_hz": args.rate, "p99_ms": TARGET_P99_MS,
                          "p50_above_echo_ms": TARGET_P50_ABOVE_ECHO_MS, "occupancy_added_ms": TARGET_OCCUPANCY_MS,
                          "outside_model_ms": TARGET_OUTSIDE_MODEL_MS},
              "pipelines": results}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"figures written to {args.json}")
    if args.plot:
        plot_cdf(results, args.plot)
        print(f"latency CDF written to {args.plot}")
    if interrupted:
        return 130
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
