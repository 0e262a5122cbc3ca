"""`carla-seg bench soak`: seg_node answering a long 20 Hz stream; does it slow down or grow?

Starts seg_node (or, with ``--node echo_node``, the transport-only echo) as its own process, plays ``--frames``
800x600 bgra8 frames (dataset fullres frames cycled, or synthetic ones without a dataset) at ``--rate`` Hz like the
CARLA bridge, and prints: frames answered, latency p50/p99 (stamp -> mask received, wall clock) of the first and
the last ``--window`` frames, and the node's RSS (VmRSS) after the warm-up window and at the end, sampled along
the way. Targets (printed, not enforced): RSS growth < 5 % warm-up -> end, last-window p50 within 10 % of the
first window's.

A timeline follows: per ``--window`` frames, answered, p50/p99, the node's CPU and the share of the machine's CPU
time the hypervisor stole. It tells the three causes of a slowdown apart: the node working harder per frame (its
CPU up), frames arriving late (latency up while its CPU falls: the transport), or the VM slowed from outside (steal
up).
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path

from carla_seg_ros.runtime.cpu_info import add_cpu_option, apply_cpu_option
from carla_seg_ros.benchmarks.endurance import (add_node_options, cpu_seconds, growth, host_cpu_ticks, memory_line,
                                           node_run, note_end_of_run, note_memory, rss_mb, start, steal_fraction,
                                           write_json)

TARGET_RSS_GROWTH = 0.05
TARGET_P50_DRIFT = 0.10


def frames_to_play(data: Path | None, count: int = 40):
    from carla_seg_ros.datasets import find_pairs
    from carla_seg_ros.paths import default_data_dir
    from carla_seg_ros.ros.playback import load_frame
    from carla_seg_ros.benchmarks.bench_transport import synthetic_frames
    data = data or default_data_dir()
    try:
        return [load_frame(p).bgra for p in find_pairs(data, "fullres")[:count]], f"{data}/fullres"
    except (FileNotFoundError, TypeError, OSError):
        return synthetic_frames(), "synthetic frames (no dataset)"


def window_stats(player, stream, keys: list[int]) -> dict:
    from carla_seg_ros.ros.playback import latency_stats
    with player._lock:
        lat = [stream.received[k] - player.sent[k] for k in keys if k in stream.received]
    stats = latency_stats(lat)
    stats["answered"] = len(lat)
    stats["sent"] = len(keys)
    return stats


def checkpoint(pid: int, frame: int) -> dict:
    """Where the run stands before frame ``frame`` is sent: time, the node's CPU seconds, the host's CPU ticks."""
    try:
        node_cpu = cpu_seconds([pid])
    except OSError:             # the node is gone: the run reports that on its own
        node_cpu = None
    return {"frame": frame, "t": time.monotonic(), "node_cpu_s": node_cpu, "host": host_cpu_ticks()}


def timeline(player, stream, keys: list[int], checkpoints: list[dict]) -> list[dict]:
    """One row per stretch between two checkpoints: window_stats + seconds since the start, node CPU (1.0 = one
    core) and the host's stolen share over that stretch."""
    rows = []
    for a, b in zip(checkpoints, checkpoints[1:]):
        row = window_stats(player, stream, keys[a["frame"]:b["frame"]])
        seconds = b["t"] - a["t"]
        row.update(first_frame=a["frame"], end_frame=b["frame"], t_s=b["t"] - checkpoints[0]["t"],
                   node_cpu=(b["node_cpu_s"] - a["node_cpu_s"]) / seconds
                   if seconds > 0 and None not in (a["node_cpu_s"], b["node_cpu_s"]) else None,
                   steal=steal_fraction(a["host"], b["host"]))
        rows.append(row)
    return rows


def arrival_step(rows: list[dict]) -> dict | None:
    """The first stretch whose p50 is 1.5x the first stretch's while the node used less CPU than then: frames that
    arrive late, not a node that works harder."""
    if not rows or not rows[0]["p50"] or not rows[0]["node_cpu"]:
        return None
    for row in rows[1:]:
        if row["p50"] and row["node_cpu"] is not None and row["p50"] > 1.5 * rows[0]["p50"] \
                and row["node_cpu"] < 0.8 * rows[0]["node_cpu"]:
            return row
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="carla-seg bench soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=10000, help="frames to play (default: 10000)")
    parser.add_argument("--rate", type=float, default=20.0, help="publish rate in Hz (default: 20)")
    parser.add_argument("--window", type=int, default=1000, help="frames in the first/last window (default: 1000)")
    parser.add_argument("--data", type=Path, default=None, help="dataset folder (default: $CARLA_SEG_DATA)")
    parser.add_argument("--node", choices=("seg_node", "echo_node"), default="seg_node",
                        help="node under test: seg_node, or echo_node for the transport alone (no model; the "
                             "baseline for a seg_node soak's timeline)")
    add_node_options(parser)
    add_cpu_option(parser)
    args = parser.parse_args(argv)
    if args.frames < 2 * args.window or args.window < 10 or args.rate <= 0:
        parser.error("need --window >= 10, --frames >= 2 x --window and --rate > 0")
    cpu = apply_cpu_option(args)          # --emulate-avx2 reaches the node through its environment
    from tqdm import tqdm

    from carla_seg_ros.ros.playback import paced

    bgra, source = frames_to_play(args.data)
    backend = args.backend if args.node == "seg_node" else "-"
    print(f"bench soak: {args.node}, {args.frames} frames at {args.rate:g} Hz from {source}, windows of "
          f"{args.window}; backend {backend}; Fast DDS publisher {args.publisher_dds}, node {args.node_dds}; "
          f"ROS_DOMAIN_ID={os.environ.get('ROS_DOMAIN_ID', '0')}; load {os.getloadavg()[0]:.2f}", flush=True)
    player, proc, masks, diagnostics = start(args, node=args.node)
    report = {"node": args.node, "frames": args.frames, "rate_hz": args.rate, "window": args.window,
              "backend": args.backend, "publisher_dds": args.publisher_dds, "node_dds": args.node_dds,
              "cpu": cpu, "rss_samples_mb": []}
    keys: list[int] = []
    checkpoints: list[dict] = []
    with node_run(report, proc, player):
        proc.start()
        messages = [player.image_message(f) for f in bgra]
        report["ready_s"] = player.wait_ready(proc, messages[0], timeout=args.ready_timeout)
        next_sample = 0.0
        with tqdm(total=args.frames, desc="soak", unit="frame") as bar:
            for i, msg in enumerate(paced(itertools.islice(itertools.cycle(messages), args.frames), args.rate)):
                if i % args.window == 0:
                    checkpoints.append(checkpoint(proc.proc.pid, i))
                key = time.time_ns()
                keys.append(key)
                player.send(msg, key)
                bar.update()
                if i == args.window:
                    note_memory(report, proc.proc.pid, "warm")
                if time.monotonic() >= next_sample:
                    proc.check()
                    report["rss_samples_mb"].append(rss_mb(proc.proc.pid))
                    bar.set_postfix(answered=len(masks.received), rss_mb=report["rss_samples_mb"][-1])
                    next_sample = time.monotonic() + 5.0
        checkpoints.append(checkpoint(proc.proc.pid, len(keys)))
        player.drain(proc)
        note_end_of_run(report, proc, player, diagnostics, node=args.node)
    report["answered"] = len(masks.received)
    report["first"] = window_stats(player, masks, keys[:args.window])
    report["last"] = window_stats(player, masks, keys[-args.window:])
    report["timeline"] = timeline(player, masks, keys, checkpoints)
    print_report(report)
    write_json(args.json, report)
    return 1 if "error" in report else 0


def print_report(r: dict) -> None:
    def f(v, spec=".1f"):
        return "-" if v is None else format(v, spec)

    if "error" in r:
        print(f"FAILED: {r['error'][:2000]}", file=sys.stderr)
    sent = r["frames"]
    print(f"\nanswered {r['answered']} of {sent} frames ({100 * r['answered'] / sent:.1f} %)")
    values = r.get("node_diagnostics") or {}
    if values.get("model_file"):         # which model ran, and with model: auto which rung and why
        rung = f"; rung {values['model_rung']} ({values.get('rung_choice', '')})" if values.get("model_rung") else ""
        print(f"{r['node']} ran {values['model_file']}{rung}")
    for name in ("first", "last"):
        w = r[name]
        print(f"{name:>5} {w['sent']} frames: answered {w['answered']}, p50 {f(w['p50'])} ms, p99 {f(w['p99'])} ms")
    drift = growth(r["first"]["p50"], r["last"]["p50"])
    rss = growth(r.get("rss_warm_mb"), r.get("rss_end_mb"))
    samples = [s for s in r["rss_samples_mb"] if s is not None]
    print(f"p50 last vs first: {f(None if drift is None else 100 * drift, '+.1f')} % (target within "
          f"{TARGET_P50_DRIFT:.0%}): {'ok' if drift is not None and abs(drift) <= TARGET_P50_DRIFT else 'MISSED'}")
    print(f"{r['node']} RSS: {f(r.get('rss_warm_mb'))} MB after the first window -> {f(r.get('rss_end_mb'))} MB at the "
          f"end ({f(None if rss is None else 100 * rss, '+.1f')} %, target < {TARGET_RSS_GROWTH:.0%}: "
          f"{'ok' if rss is not None and rss < TARGET_RSS_GROWTH else 'MISSED'}); max sampled "
          f"{f(max(samples) if samples else None)} MB")
    r["p50_drift"], r["rss_growth"] = drift, rss

    print(f"memory parts (/proc status, warm-up -> end): {memory_line(r)}")
    print_timeline(r["timeline"], r["node"])


def print_timeline(rows: list[dict], node: str = "seg_node") -> None:
    def f(v, spec):
        return "-" if v is None else format(v, spec)

    print(f"\ntimeline (latency: stamp -> mask received; node CPU: {node}'s utime + stime, 100 % = one core; "
          "steal: the machine's CPU time taken by the hypervisor)")
    print(f"{'frames':>13} {'t s':>6} {'answered':>9} {'p50 ms':>7} {'p99 ms':>7} {'node CPU':>9} {'steal':>6}")
    for row in rows:
        print(f"{row['first_frame']:>6}-{row['end_frame']:<6} {row['t_s']:6.0f} {row['answered']:>4}/{row['sent']:<4} "
              f"{f(row['p50'], '7.1f')} {f(row['p99'], '7.1f')} "
              f"{f(None if row['node_cpu'] is None else 100 * row['node_cpu'], '7.0f')} % "
              f"{f(None if row['steal'] is None else 100 * row['steal'], '5.1f')}%")
    step = arrival_step(rows)
    if step is not None:
        compare = "--publisher-dds large_frames" if node == "echo_node" else \
            "--node echo_node (the transport alone) and with --publisher-dds large_frames"
        print(f"latency stepped up from frame {step['first_frame']} while {node} used less CPU: the frames arrived "
              f"late (the transport, not the node). Compare with {compare} (docs/concepts/pipeline.md, Transport "
              "and QoS).")


if __name__ == "__main__":
    raise SystemExit(main())
