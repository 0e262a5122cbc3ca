"""`carla-seg bench transport`: the DDS transport floor for 800x600 camera frames, per Fast DDS configuration.

For every pairing of publisher configuration x echo configuration (``--configs``, default: default and
large_frames, so four pairings), two processes, each with its own environment:

* the bridge stand-in (this command, re-run as a child with the publisher's configuration): publishes 800x600
  bgra8 frames RELIABLE / KEEP_LAST 10 at ``--rate`` Hz, like the CARLA ROS bridge;
* echo_node (with the echo's configuration): subscribes like seg_node and republishes a 480 KB mono8 image.

Printed per pairing: frames sent / received, latency p50 / p99 (stamp -> echo received, wall clock). A pairing
that never matches within ``--ready-timeout`` is reported as not compatible. Configurations: see
carla_seg_ros/ros/playback/dds.py and config/fastdds_large_frames.xml.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from carla_seg_ros.ros.playback.dds import DDS_CONFIGS, dds_env
from carla_seg_ros.runtime.cpu_info import add_cpu_option, apply_cpu_option

ECHO = "carla_seg_ros.ros.echo_node"


def synthetic_frames(count: int = 8, size_wh=(800, 600)):
    """Distinct bgra8 frames (content does not matter to DDS; random bytes defeat nothing and need no data)."""
    import numpy as np
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (size_wh[1], size_wh[0], 4), dtype=np.uint8) for _ in range(count)]


def player_side(args) -> int:
    """Child: runs with the publisher's configuration, starts the echo with its own, writes the figures."""
    from sensor_msgs.msg import Image

    from carla_seg_ros.ros.playback import CAMERA_TOPIC, NodeFailed, NodeProcess, Player, node_argv, paced

    result = {"publisher": args.pub_config, "echo": args.echo_config}
    player = Player(name="transport_player")
    stream = player.watch("/echo_node/mask", Image)
    proc = NodeProcess(f"echo_node [{args.echo_config}]", node_argv(ECHO, "echo_node", {}, {"image": CAMERA_TOPIC}),
                       env=dds_env(args.echo_config))
    try:
        proc.start()
        messages = [player.image_message(f) for f in synthetic_frames(size_wh=(args.width, args.height))]
        result["ready_s"] = player.wait_ready(proc, messages[0], timeout=args.ready_timeout)
        for msg in paced(itertools.islice(itertools.cycle(messages), args.frames), args.rate):
            player.send(msg, time.time_ns())
        player.drain(proc)
        result.update(player.stream_summary(stream, args.rate))
    except NodeFailed as exc:
        result["error"] = str(exc).splitlines()[0]
    finally:
        proc.close()
        player.close()
    Path(args.out).write_text(json.dumps(result), encoding="utf-8")
    return 0


def run_pairing(pub: str, echo: str, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "carla_seg_ros.benchmarks.bench_transport", "--player-side", "--pub-config", pub,
               "--echo-config", echo, "--out", str(out), "--frames", str(args.frames), "--rate", str(args.rate),
               "--width", str(args.width), "--height", str(args.height),
               "--ready-timeout", str(args.ready_timeout)]
        proc = subprocess.run(cmd, env=dds_env(pub), capture_output=True, text=True,
                              timeout=args.ready_timeout + args.frames / args.rate + 60)
        if not out.is_file():
            return {"publisher": pub, "echo": echo, "error": (proc.stderr or proc.stdout)[-400:]}
        return json.loads(out.read_text())


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def print_table(results: list[dict]) -> None:
    print(f"{'publisher':<14}{'echo':<14}{'sent':>6}{'recv':>6}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}{'ready s':>9}")
    print("-" * 73)
    for r in results:
        if "error" in r:
            print(f"{r['publisher']:<14}{r['echo']:<14}  NOT COMPATIBLE / FAILED: {r['error'][:160]}")
            continue
        lat = r["latency_ms"]
        print(f"{r['publisher']:<14}{r['echo']:<14}{r['frames_sent']:>6}{r['frames_received']:>6}"
              f"{_fmt(lat['p50']):>8}{_fmt(lat['p99']):>8}{_fmt(lat['max']):>8}{_fmt(r.get('ready_s')):>9}")
    print("\n(publisher: the bridge stand-in's Fast DDS configuration; echo: echo_node's; latency: frame stamp -> "
          "echo's 480 KB mono8 reply received by the publisher process, wall clock)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="carla-seg bench transport", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=list(DDS_CONFIGS), choices=list(DDS_CONFIGS),
                        help="Fast DDS configurations to pair (default: all)")
    parser.add_argument("--frames", type=int, default=200, help="measured frames per pairing (default: 200)")
    parser.add_argument("--rate", type=float, default=20.0, help="publish rate in Hz (default: 20)")
    parser.add_argument("--width", type=int, default=800)
    parser.add_argument("--height", type=int, default=600)
    parser.add_argument("--ready-timeout", type=float, default=30.0,
                        help="seconds a pairing may take to match and answer (default: 30)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--player-side", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pub-config", default="default", help=argparse.SUPPRESS)
    parser.add_argument("--echo-config", default="default", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    add_cpu_option(parser)
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.frames < 2:
        parser.error("--rate must be > 0 and --frames >= 2")
    if args.player_side:
        return player_side(args)
    cpu = apply_cpu_option(args)

    load = os.getloadavg()
    print(f"bench transport: {args.frames} frames {args.width}x{args.height} bgra8 per pairing at {args.rate:g} Hz, "
          f"RELIABLE depth 10; ROS_DOMAIN_ID={os.environ.get('ROS_DOMAIN_ID', '0')}; {os.cpu_count()} CPUs, "
          f"load average {load[0]:.2f}", flush=True)
    from tqdm import tqdm
    pairings = list(itertools.product(args.configs, args.configs))
    results = []
    for pub, echo in tqdm(pairings, desc="pairings", unit="pairing", leave=False):
        results.append(run_pairing(pub, echo, args))
    print_table(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rate_hz": args.rate, "frames": args.frames, "cpu": cpu,
                                         "pairings": results}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
