"""`carla-seg bench record`: does `carla-seg record` keep up with a 20 Hz 800x600 camera pair?

Plays the 800x600 frames of ``fullres`` (cycled) as the CARLA ROS bridge would: the RGB camera as bgra8 and the
semantic camera as bgra8 palette colours, both stamped on the same tick, RELIABLE / KEEP_LAST 10, at ``--rate``.
Two receivers, each its own process, in the same run, one after the other:

* ``plain subscriber``: subscribes both topics with the recorder's QoS (KEEP_LAST 30) and Fast DDS configuration
  (large_frames) and only counts the messages (the transport floor: what any subscriber gets here);
* ``carla-seg record --every 1``: pairs, decodes the palette, writes both PNGs and the manifest for every pair.

The publisher (the bridge's side) runs Fast DDS defaults unless ``--publisher-dds large_frames``: a bridge on
defaults loses whole 1.9 MB messages in transport, which no subscriber can recover, so the plain subscriber's
figure in the same run tells the transport's losses from the recorder's.

Each receiver first gets ``--warmup`` pairs that are not counted (discovery, first allocations). Printed per
receiver: frames sent, received (both images of the tick), written (recorder), skipped = sent - kept,
as a share, against the target of < 1 %; the recorder's counts (unpaired, dropped_writer); and the CPU model.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from carla_seg_ros.paths import default_data_dir
from carla_seg_ros.ros.playback.dds import DDS_CONFIGS, apply_in_this_process
from carla_seg_ros.runtime.cpu_info import cpu_line, cpu_report
from carla_seg_ros.benchmarks.endurance import cpu_seconds

TARGET_SKIPPED = 0.01


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="carla-seg bench record", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=default_data_dir(), help="dataset with a fullres split")
    p.add_argument("--frames", type=int, default=400, help="camera pairs per receiver (default: %(default)s)")
    p.add_argument("--rate", type=float, default=20.0, help="Hz (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=20, help="pairs sent first and not counted (default: %(default)s)")
    p.add_argument("--out", type=Path, help="recorder output folder (default: a temporary folder, deleted)")
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--publisher-dds", choices=DDS_CONFIGS, default="default",
                   help="Fast DDS configuration of the publishing process, the bridge's side (default: default)")
    p.add_argument("--record-args", default="", help="extra `carla-seg record` options, e.g. '--writers 1'")
    p.add_argument("--plain-subscriber", nargs=2, metavar=("RGB", "GT"), help=argparse.SUPPRESS)
    return p


def plain_subscriber(rgb_topic: str, gt_topic: str) -> int:
    """Child: count the messages of both topics until SIGINT, then print {topic: [stamps]} as JSON."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import Image

    from carla_seg_ros.ros.playback.dds import DEFAULT_DDS_CONFIG, apply_in_this_process
    from carla_seg_ros.ros.shutdown import ShutdownSignals
    apply_in_this_process(DEFAULT_DDS_CONFIG)      # the recorder's default, so both receivers are set up alike
    stop = ShutdownSignals()
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("bench_plain_subscriber")
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=30, reliability=ReliabilityPolicy.RELIABLE)
    got = {rgb_topic: [], gt_topic: []}
    for topic in got:
        node.create_subscription(Image, topic, lambda msg, t=topic: got[t].append(
            msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec), qos)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    while not stop.event.is_set():
        executor.spin_once(timeout_sec=0.1)
    print(json.dumps(got), flush=True)
    return 0


def load_messages(data: Path, count: int = 40):
    from carla_seg_ros.classes import load_coding
    from carla_seg_ros.datasets import find_pairs, read_rgb, read_tag_ids
    from carla_seg_ros.image_codec import from_rgb, to_image
    pairs = find_pairs(data, "fullres")[:count]
    messages = []
    for pair in pairs:
        palette = load_coding(pair.coding).palette_lut()
        rgb = to_image(from_rgb(read_rgb(pair.rgb), "bgra8"), "bgra8")
        gt = to_image(from_rgb(palette[read_tag_ids(pair.label)], "bgra8"), "bgra8")
        rgb.header.frame_id, gt.header.frame_id = "ego_vehicle/rgb_front", "ego_vehicle/semantic_segmentation_front"
        messages.append((rgb, gt))
    return messages


def play(receiver: subprocess.Popen, player, topics, messages, frames: int, rate: float, warmup: int) -> dict:
    """``warmup`` pairs (not counted: discovery and the receiver's first allocations), then ``frames`` pairs;
    returns the stamps of the measured pairs."""
    from carla_seg_ros.ros.playback import paced, set_stamp
    deadline = time.monotonic() + 60
    while any(player.pubs[t].get_subscription_count() == 0 for t in topics):
        if receiver.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"receiver did not subscribe (exit {receiver.poll()})")
        time.sleep(0.05)
    time.sleep(0.5)
    start = time.monotonic()
    first = time.time_ns()
    stamps = []
    for k, (rgb, gt) in enumerate(paced(itertools.islice(itertools.cycle(messages), warmup + frames), rate)):
        stamp = first + int(k * 1e9 / rate)
        for topic, msg in zip(topics, (rgb, gt)):
            set_stamp(msg.header.stamp, stamp)
            player.publish(topic, msg)
        if k >= warmup:
            stamps.append(stamp)
    return {"sent": frames, "send_s": time.monotonic() - start, "stamps": set(stamps)}


def process_cpu_s(pid: int) -> float | None:
    """utime + stime of a process so far, seconds (endurance.cpu_seconds); None once it has gone."""
    try:
        return cpu_seconds([pid])
    except (OSError, IndexError, ValueError):
        return None


def stop(receiver: subprocess.Popen, timeout: float = 60.0) -> str:
    receiver.send_signal(signal.SIGINT)
    try:
        out, _ = receiver.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        receiver.kill()
        out, _ = receiver.communicate()
    return out


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.plain_subscriber:
        return plain_subscriber(*args.plain_subscriber)
    if args.data is None:
        print("carla-seg bench record: no dataset; pass --data DIR or set CARLA_SEG_DATA", file=sys.stderr)
        return 2
    from carla_seg_ros.ros.playback.bag_player import BagPlayer

    prefix = f"/bench_record{os.getpid()}"
    topics = (f"{prefix}/carla/ego_vehicle/rgb_front/image",
              f"{prefix}/carla/ego_vehicle/semantic_segmentation_front/image")
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1")
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    messages = load_messages(args.data)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_record_")) / "ds"
    results = {"cpu": cpu_line(cpu_report()), "frames": args.frames, "rate_hz": args.rate,
               "size": f"{messages[0][0].width}x{messages[0][0].height}", "publisher_dds": args.publisher_dds}
    print(f"carla-seg bench record: {args.frames} pairs of {results['size']} bgra8 at {args.rate:g} Hz per receiver; "
          f"publisher Fast DDS {args.publisher_dds}; {results['cpu']}", flush=True)
    apply_in_this_process(args.publisher_dds)        # before this process's first participant (the player)
    with BagPlayer(name="bench_record_player") as player:
        for topic in topics:
            player.publisher(topic, type(messages[0][0]))
        # 1. the plain subscriber
        proc = subprocess.Popen([sys.executable, "-m", "carla_seg_ros.benchmarks.bench_record", "--plain-subscriber",
                                 *topics], stdout=subprocess.PIPE, text=True, env=env)
        try:
            sent = play(proc, player, topics, messages, args.frames, args.rate, args.warmup)
            time.sleep(2.0)
        finally:
            got = json.loads(stop(proc).strip().splitlines()[-1])
        stamps = sent.pop("stamps")
        received = len(set(got[topics[0]]) & set(got[topics[1]]) & stamps)
        results["plain"] = dict(sent, received_pairs=received, skipped=args.frames - received)
        # 2. carla-seg record --every 1
        proc = subprocess.Popen([sys.executable, "-m", "carla_seg_ros.cli", "record", "--out", str(out),
                                 "--rgb-topic", topics[0], "--gt-topic", topics[1], "--camera-info-topic", "",
                                 "--every", "1", *args.record_args.split()], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env)
        try:
            sent = play(proc, player, topics, messages, args.frames, args.rate, args.warmup)
            summary_path = out / "record_summary.json"
            time.sleep(2.0)
            cpu_s = process_cpu_s(proc.pid)
        finally:
            log = stop(proc)
        try:
            summary = json.loads(summary_path.read_text())
        except (OSError, ValueError):
            print(f"carla-seg bench record: the recorder wrote no summary:\n{log[-3000:]}", file=sys.stderr)
            return 1
        import csv
        stamps = sent.pop("stamps")
        written = sum(int(row["stamp_ns"]) in stamps for row in csv.DictReader(open(out / "manifest.csv")))
        results["record"] = dict(sent, received_pairs="-", paired_with_warmup=summary["paired"],
                                 written=written, skipped=args.frames - written, unpaired=summary["unpaired"],
                                 dropped_writer=summary["dropped_writer"],
                                 undecodable=summary["undecodable"], cpu_s=cpu_s,
                                 options=f"--every 1 {args.record_args}".strip(), png_bytes=sum(
                                     p.stat().st_size for p in out.rglob("*.png")))
    if args.out is None:
        shutil.rmtree(out.parent, ignore_errors=True)
    print(f"{'receiver':<32}{'sent':>6}{'received':>10}{'written':>9}{'skipped':>9}{'share':>8}  verdict")
    for label, key in (("plain subscriber", "plain"), ("carla-seg record --every 1", "record")):
        r = results[key]
        share = r["skipped"] / r["sent"]
        r["skipped_share"] = share
        print(f"{label:<32}{r['sent']:>6}{r['received_pairs']:>10}{r.get('written', '-')!s:>9}{r['skipped']:>9}"
              f"{100 * share:>7.2f}%  {'ok' if share < TARGET_SKIPPED else 'MISSED'} (target < 1 %)")
    r = results["record"]
    cpu = "?" if r["cpu_s"] is None else f"{1000 * r['cpu_s'] / max(1, r['paired_with_warmup']):.0f} ms"
    print(f"recorder ({r['options']}; warm-up included): paired {r['paired_with_warmup']}, unpaired rgb "
          f"{r['unpaired']['rgb']} / gt {r['unpaired']['gt']}, dropped_writer {r['dropped_writer']}, CPU {cpu} per "
          f"pair (whole process), {r['png_bytes'] / max(1, r['written']) / 1e6:.2f} MB of PNG per pair; load "
          f"average {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
