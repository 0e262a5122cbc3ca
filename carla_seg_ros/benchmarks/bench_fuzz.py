"""`carla-seg bench fuzz`: seg_node under a stream of malformed sensor_msgs/Image messages.

Starts seg_node as its own process and sends ``--malformed`` bad Image messages (unknown, 16-bit and float
encodings, random characters in the encoding, big-endian flag, zero and huge sizes, step too small, absurd steps,
truncated and over-long buffers), a valid 800x600 bgra8 frame after every ``--every`` of them. Prints: whether the
node stayed up, the valid frames it answered, every malformed kind sent against the count the node reports per
rejection reason in /diagnostics, and the node's RSS after the warm-up and at the end. Targets (printed): 0
crashes, every malformed message counted under its reason, RSS growth < 5 %.

The bad messages go out on their own RELIABLE KEEP_LAST 1000 writer on the camera topic and are paced at
``--rate`` messages per second, so none is overwritten before the node has taken it: what was sent is what the
node must have counted.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter

import numpy as np

from carla_seg_ros.image_codec import REJECT_REASONS
from carla_seg_ros.runtime.cpu_info import add_cpu_option, apply_cpu_option
from carla_seg_ros.benchmarks.endurance import (add_node_options, growth, memory_line, node_diagnostics, node_run,
                                           note_end_of_run, note_memory, rss_mb, start, write_json)

TARGET_RSS_GROWTH = 0.05
W, H = 800, 600


def _image(encoding="bgra8", width=W, height=H, step=None, size=None, bigendian=0):
    from sensor_msgs.msg import Image
    msg = Image()
    msg.encoding, msg.width, msg.height, msg.is_bigendian = encoding, width, height, bigendian
    msg.step = width * 4 if step is None else step
    msg.data = bytes(msg.step * height if size is None else size)
    return msg


def malformed_kinds(rng: np.random.Generator) -> list[tuple[str, str, object]]:
    """(kind, expected rejection reason, factory) for every kind of bad message sent."""
    def random_encoding():
        chars = rng.integers(33, 0x2FF, int(rng.integers(1, 24)))
        return "".join(map(chr, chars)) + "~"          # never one of the valid encodings
    return [
        ("16-bit mono16", "unknown_encoding", lambda: _image("mono16", 64, 48, 128)),
        ("16-bit rgb16", "unknown_encoding", lambda: _image("rgb16", 64, 48, 384)),
        ("float 32FC1", "unknown_encoding", lambda: _image("32FC1", 64, 48, 256)),
        ("random encoding", "unknown_encoding", lambda: _image(random_encoding(), 64, 48, 256)),
        ("empty encoding", "unknown_encoding", lambda: _image("", 64, 48, 256)),
        ("big-endian flag", "big_endian", lambda: _image("bgra8", 64, 48, bigendian=1)),
        ("zero width", "zero_size", lambda: _image("bgra8", 0, 48, 0, 0)),
        ("zero height", "zero_size", lambda: _image("bgra8", 64, 0, 256, 0)),
        ("huge size", "too_large", lambda: _image("bgra8", 2 ** 31 - 1, 2 ** 31 - 1, 4, 64)),
        ("step too small", "step_too_small", lambda: _image("bgra8", 64, 48, 64 * 4 - 1, 64 * 4 * 48)),
        ("absurd step", "buffer_size", lambda: _image("bgra8", 64, 48, 2 ** 32 - 1, 64 * 4 * 48)),
        ("truncated buffer", "buffer_size", lambda: _image("bgra8", W, H, size=W * 4 * H // 2)),
        ("over-long buffer", "buffer_size", lambda: _image("bgra8", W, H, size=W * 4 * H + 4096)),
        ("random step", "buffer_size", lambda: _image("bgra8", 64, 48, int(rng.integers(257, 10 ** 6)), 256 * 48)),
    ]


def settle(player, diagnostics, expected: int, timeout: float = 20.0) -> None:
    """Wait until the node reports every message sent as received, or its count stops moving."""
    last, still = -1, 0
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        received = int(node_diagnostics(player, diagnostics).get("frames_received", 0))
        if received >= expected:
            return
        still = still + 1 if received == last else 0
        if still >= 3:
            return
        last = received


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="carla-seg bench fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--malformed", type=int, default=10000, help="malformed messages (default: 10000)")
    parser.add_argument("--every", type=int, default=25, help="a valid frame after this many bad ones (default: 25)")
    parser.add_argument("--rate", type=float, default=400.0, help="messages per second (default: 400)")
    parser.add_argument("--warmup", type=int, default=1000,
                        help="messages before the warm-up RSS is taken (default: 1000; the node's DDS reader history "
                             "fills its --depth slots with the largest messages first)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--depth", type=int, default=10, help="seg_node's qos_depth (default: 10, its own default)")
    add_node_options(parser)
    add_cpu_option(parser)
    args = parser.parse_args(argv)
    cpu = apply_cpu_option(args)
    if args.malformed < 1 or args.every < 1 or args.rate <= 0 or not 0 <= args.warmup < args.malformed:
        parser.error("--malformed, --every and --rate must be positive, 0 <= --warmup < --malformed")
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from tqdm import tqdm

    from carla_seg_ros.ros.playback import CAMERA_TOPIC, paced
    from carla_seg_ros.benchmarks.bench_transport import synthetic_frames

    rng = np.random.default_rng(args.seed)
    kinds = malformed_kinds(rng)
    print(f"bench fuzz: {args.malformed} malformed messages of {len(kinds)} kinds, a valid 800x600 frame after "
          f"every {args.every}, {args.rate:g} msg/s; backend {args.backend}; "
          f"ROS_DOMAIN_ID={os.environ.get('ROS_DOMAIN_ID', '0')}; load {os.getloadavg()[0]:.2f}", flush=True)
    # qos_depth 1000: the node's reader keeps every bad message until its executor takes it (depth 10 would let a
    # burst overwrite some before the node ever sees them, and those could not be counted).
    player, proc, masks, diagnostics = start(args, {"qos_depth": args.depth})
    bad_pub = player.node.create_publisher(Image, CAMERA_TOPIC, QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=1000, reliability=ReliabilityPolicy.RELIABLE))
    sent_kinds: Counter = Counter()
    sent_reasons: Counter = Counter()
    valid_sent = 0
    samples: list = []
    report: dict = {"malformed": args.malformed, "every": args.every, "cpu": cpu}
    with node_run(report, proc, player):
        proc.start()
        valid = player.image_message(synthetic_frames(1)[0])
        report["ready_s"] = player.wait_ready(proc, valid, timeout=args.ready_timeout)
        report["rss_start_mb"] = rss_mb(proc.proc.pid)
        total = args.malformed + args.malformed // args.every
        with tqdm(total=total, desc="fuzz", unit="msg") as bar:
            for i in paced(range(total), args.rate):
                if (i + 1) % (args.every + 1) == 0:
                    player.send(valid, time.time_ns())
                    valid_sent += 1
                else:
                    kind, reason, make = kinds[int(rng.integers(len(kinds)))]
                    bad_pub.publish(make())
                    sent_kinds[kind] += 1
                    sent_reasons[reason] += 1
                bar.update()
                if i == args.warmup:
                    note_memory(report, proc.proc.pid, "warm")
                if i % 500 == 0:
                    proc.check()
                    samples.append(rss_mb(proc.proc.pid))
                    bar.set_postfix(rss_mb=samples[-1], refresh=False)
        player.drain(proc)
        settle(player, diagnostics, valid_sent + sum(sent_reasons.values()))
        note_end_of_run(report, proc, player, diagnostics)
    report.update(rss_samples_mb=samples, valid_sent=valid_sent, valid_answered=len(masks.received),
                  sent_by_kind=dict(sent_kinds),
                  sent_by_reason=dict(sent_reasons))
    print_report(report)
    write_json(args.json, report)
    return 1 if "error" in report else 0


def print_report(r: dict) -> None:
    values = r.get("node_diagnostics") or {}
    counted = {reason: int(values.get(f"rejected_{reason}", -1)) for reason in REJECT_REASONS}
    r["counted_by_reason"] = counted
    received = int(values.get("frames_received", -1))
    handled = sum(int(values.get(k, 0)) for k in ("frames_rejected", "frames_processed", "frames_dropped",
                                                   "frames_failed"))
    # Every message the node took is accounted for: rejected under a reason, or processed / dropped / failed.
    r["all_counted"] = received == handled and sum(counted.values()) == int(values.get("frames_rejected", -2))
    r["none_lost"] = all(counted[reason] == r["sent_by_reason"].get(reason, 0) for reason in REJECT_REASONS)
    r["received"] = received
    r["rss_growth"] = growth(r.get("rss_warm_mb"), r.get("rss_end_mb"))
    if "error" in r:
        print(f"FAILED: {r['error'][:2000]}", file=sys.stderr)
    print(f"\nseg_node alive at the end: {'yes' if r['alive_at_end'] else 'NO'}; valid frames answered "
          f"{r['valid_answered']} of {r['valid_sent']}; frames_received {values.get('frames_received', '-')}, "
          f"rejected {values.get('frames_rejected', '-')}, failed {values.get('frames_failed', '-')}")
    print(f"{'reason':<18}{'sent':>8}{'counted':>9}")
    for reason in REJECT_REASONS:
        print(f"{reason:<18}{r['sent_by_reason'].get(reason, 0):>8}{counted[reason]:>9}")
    print(f"every message the node received counted (rejected per reason + processed + dropped + failed = "
          f"received): {'yes' if r['all_counted'] else 'NO'}; every malformed message sent reached the node: "
          f"{'yes' if r['none_lost'] else 'no (its KEEP_LAST reader history overwrote some in bursts)'}")
    g = r["rss_growth"]
    print(f"seg_node RSS: {r.get('rss_start_mb') or 0:.1f} MB when ready, {r.get('rss_warm_mb') or 0:.1f} MB after "
          f"warm-up -> {r.get('rss_end_mb') or 0:.1f} MB at the "
          f"end ({'-' if g is None else f'{100 * g:+.1f}'} %, target < {TARGET_RSS_GROWTH:.0%}: "
          f"{'ok' if g is not None and g < TARGET_RSS_GROWTH else 'MISSED'}); every 500 messages: "
          + " ".join(f"{v:.0f}" for v in r.get("rss_samples_mb", []) if v is not None))

    print(f"memory parts (/proc status, warm-up -> end): {memory_line(r)}")


if __name__ == "__main__":
    raise SystemExit(main())
