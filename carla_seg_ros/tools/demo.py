"""`carla-seg demo` (`make demo`): seg_node on real CARLA frames over ROS 2, end to end, with a scored summary.

Starts seg_node as a separate process with ``model: auto`` (the most accurate rung of the model ladder whose
startup-timed call fits the play rate's frame budget, runtime/model_ladder.py; ``--model`` picks a rung or a file),
plays the 800x600 frames of ``<data>/fullres`` at
20 Hz as bgra8 on /carla/ego_vehicle/rgb_front/image exactly like the CARLA ROS bridge (RELIABLE, KEEP_LAST 10,
frame_id ego_vehicle/rgb_front, stamps advancing by exactly 1/rate like simulation time), records what the node
publishes and writes to ``--out`` (default out/demo):

* ``overlays/NAME.png``: the node's ~/overlay for every frame it answered;
* ``summary.json`` (also printed): frames sent/received, dropped, latency p50/p99 (frame sent -> mask received, wall
  clock), and pixel accuracy / mIoU of the received masks against the labels (ego-hood rule as in training);
* ``seg_node.log``: the node's console output.

Data, the first that applies: --data, $CARLA_SEG_DATA, ../shared/data/carla_seg beside the checkout, else 40
frames with labels fetched once from their public origin (a 2018 Lyft-challenge CARLA drive on GitHub, pinned to a
commit and checked file by file against config/demo_frames.json; not redistributed by carla_seg_ros) into
$XDG_CACHE_HOME/carla_seg_ros/demo (default ~/.cache/carla_seg_ros/demo); $CARLA_SEG_DEMO_BASE_URL points that fetch
at a mirror. The Kaggle "lyft-udacity-challenge" download works too: pass the folder holding the CameraRGB/CameraSeg
folders (or one of dataA..dataE) with --data (``make demo DATA=...``); it has no ``fullres`` split, so every pair
below the folder is played (--split dataA picks one sub-folder).
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from carla_seg_ros.runtime.backends import BACKEND_CHOICES
from carla_seg_ros.datasets import HoodRule, Pair, find_pairs, read_label, read_rgb
from carla_seg_ros.ros.playback.dds import DEFAULT_DDS_CONFIG, apply_in_this_process, dds_env
from carla_seg_ros.runtime.cpu_info import add_cpu_option, apply_cpu_option, cpu_line
from carla_seg_ros.runtime.model_ladder import MODEL_CHOICES
from carla_seg_ros.ros.playback import NO_DATA_HELP, resolve_split
from carla_seg_ros.tools import demo_data

NODE_NAME = "seg_node"
PRELOAD_FRAMES = 100    # a play this short (800x600 bgra8: 1.9 MB a frame) is decoded before the clock starts

class Recorder:
    """Scores received masks and writes received overlays after the play, so the node being measured keeps the CPU.

    Messages only queue until ``close()``, which does the work in the calling thread. While ``playing`` is set, a
    backlog beyond ``HOLD_LIMIT`` messages (about 2 MB each) is worked off by a thread at the lowest CPU priority.
    Only that: an idle-priority thread gets no CPU on a machine busy with other work (an interrupted demo took 32 s
    to exit with both cores loaded when the work after the play ran there too)."""

    HOLD_LIMIT = 200

    def __init__(self, out_dir: Path, num_classes: int, hood: HoodRule):
        self.overlay_dir = out_dir / "overlays"
        self.overlay_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.overlay_dir.glob("*.png"):   # this run's overlays only: frames it dropped have none
            stale.unlink()
        self.num_classes = num_classes
        self.hood = hood
        self.frames: dict[int, Pair] = {}
        self.cm = np.zeros((num_classes, num_classes), np.int64)
        self.scored = 0
        self.overlays_written = 0
        self.size_mismatches = 0
        self.errors: list[str] = []
        self.playing = threading.Event()
        self._closing = threading.Event()
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._work_off_backlog, name="demo-recorder", daemon=True)
        self._thread.start()

    def expect(self, key: int, pair: Pair) -> None:
        self.frames[key] = pair

    def on_mask(self, key, msg, _now) -> None:
        self._queue.put(("mask", key, msg))

    def on_overlay(self, key, msg, _now) -> None:
        self._queue.put(("overlay", key, msg))

    def _work_off_backlog(self) -> None:
        lowest_priority()
        while not self._closing.wait(0.05):
            while self.playing.is_set() and self._queue.qsize() > self.HOLD_LIMIT:
                self._handle(self._queue.get_nowait())      # the only consumer until close() has joined it

    def _handle(self, item) -> None:
        kind, key, msg = item
        try:
            (self._score if kind == "mask" else self._write_overlay)(self.frames[key], msg)
        except Exception as exc:  # noqa: BLE001 - reported in the summary, the demo goes on
            self.errors.append(f"{kind} of {self.frames[key].name if key in self.frames else key}: {exc}")

    def _score(self, pair: Pair, msg) -> None:
        from carla_seg_ros.evaluation.metrics import confusion_matrix
        from carla_seg_ros.image_codec import pixels

        pred = pixels(msg)[..., 0]
        label = read_label(pair, self.hood)
        if pred.shape != label.shape:
            self.size_mismatches += 1
            return
        self.cm += confusion_matrix(label, pred, self.num_classes)
        self.scored += 1

    def _write_overlay(self, pair: Pair, msg) -> None:
        import cv2

        from carla_seg_ros.image_codec import decode_rgb

        bgr = np.ascontiguousarray(decode_rgb(msg)[..., ::-1])
        if not cv2.imwrite(str(self.overlay_dir / f"{pair.name}.png"), bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
            raise OSError(f"cannot write {self.overlay_dir / pair.name}.png")
        self.overlays_written += 1

    def close(self) -> None:
        """The play is over: the queued work, in the calling thread at its own priority."""
        self.playing.clear()
        self._closing.set()
        self._thread.join()
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            self._handle(item)


def lowest_priority() -> None:
    """The calling thread runs only when the CPU is otherwise idle (Linux SCHED_IDLE; else nice 10)."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))    # 0: the calling thread on Linux
    except (AttributeError, OSError):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (AttributeError, OSError):
            pass


def run(args) -> dict:
    """Play the frames through seg_node and return the summary (also when interrupted part-way)."""
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from carla_seg_ros.classes import num_classes
    from carla_seg_ros.ros.playback import CAMERA_TOPIC, NodeFailed, NodeProcess, Player, node_argv

    data_dir = Path(args.data)
    split = resolve_split(data_dir, args.split)
    pairs = find_pairs(data_dir, split)
    if args.max_frames:
        pairs = pairs[:args.max_frames]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    hood = HoodRule()
    recorder = Recorder(out, num_classes(), hood)
    apply_in_this_process(DEFAULT_DDS_CONFIG)  # both processes on the large-frame profile (docs/concepts/pipeline.md)
    player = Player(name="carla_bridge_demo")
    masks = player.watch(f"/{NODE_NAME}/mask", Image, recorder.on_mask)
    overlays = player.watch(f"/{NODE_NAME}/overlay", Image, recorder.on_overlay)
    label_info = player.watch_latest(f"/{NODE_NAME}/label_info", String)
    diagnostics = player.watch_latest("/diagnostics", DiagnosticArray)
    # The rungs are timed at the frames' own size and against the play rate's budget (runtime/model_ladder.py).
    height, width = read_rgb(pairs[0].rgb).shape[:2]
    params = {"backend": args.backend, "model": args.model, "target_rate": min(max(float(args.rate), 0.1), 1000.0),
              "timing_frame_size": f"{width}x{height}"}
    proc = NodeProcess(NODE_NAME, node_argv("carla_seg_ros.ros.seg_node", NODE_NAME, params, {"image": CAMERA_TOPIC}),
                       log_path=out / "seg_node.log", env=dds_env(DEFAULT_DDS_CONFIG))
    summary = {"data_dir": str(data_dir), "split": split, "frames_planned": len(pairs), "model": params["model"],
               "backend_requested": args.backend, "rate_hz": args.rate, "topic": CAMERA_TOPIC,
               "interrupted": False, "error": None, "cpu": getattr(args, "cpu", None)}
    print(f"demo: {len(pairs)} frames from {data_dir} (split {split}) -> seg_node [{args.backend}, model "
          f"{args.model}] on "
          f"{CAMERA_TOPIC} at {args.rate:g} Hz; output in {out}/", flush=True)
    try:
        play(player, proc, pairs, recorder, masks, diagnostics, args, summary)
    except KeyboardInterrupt:
        summary["interrupted"] = True
        print("\ninterrupted: stopping seg_node, writing what was recorded", file=sys.stderr)
    except NodeFailed as exc:
        summary["error"] = str(exc)
    finally:
        proc.close()
        player.close()
        recorder.close()

    summary["interrupted"] = summary["interrupted"] or STOP_REQUESTED.is_set()
    summary.update(results(player, masks, overlays, label_info, diagnostics, recorder, hood, args.rate, out))
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def play(player, proc, pairs, recorder, masks, diagnostics, args, summary: dict) -> None:
    """Start the node, prove it answers, play every frame at the rate, and wait for the last replies."""
    from tqdm import tqdm

    from carla_seg_ros.ros.playback import load_frame, paced

    proc.start()
    summary["startup_s"] = player.wait_ready(proc, player.image_message(load_frame(pairs[0]).bgra),
                                             timeout=args.ready_timeout, status=lambda m: print(m, flush=True))
    frames = frames_to_play(pairs)         # decoded before the line below: "playing" means frames are being sent
    print(f"seg_node answered its warm-up frames after {summary['startup_s']:.1f} s; playing {len(pairs)} frames",
          flush=True)
    recorder.playing.set()
    with tqdm(total=len(pairs), desc="demo", unit="frame") as bar:
        # Stamps advance by exactly 1/rate like sim time; starting at the wall clock keeps the node's own
        # wall-clock latency diagnostics meaningful.
        start_ns = time.time_ns()
        for i, frame in enumerate(paced(frames, args.rate)):
            key = start_ns + round(i * 1e9 / args.rate)
            recorder.expect(key, frame.pair)
            player.send(player.image_message(frame.bgra), key)
            bar.update()
            bar.set_postfix(received=len(masks.received), refresh=False)
            if STOP_REQUESTED.is_set():
                raise KeyboardInterrupt
            if i % 10 == 0:
                proc.check()
    player.drain(proc)
    player.wait_latest(diagnostics, timeout=1.5, newer_than=diagnostics.count)   # 1 Hz: one after the end
    recorder.playing.clear()


def frames_to_play(pairs: list):
    """Decoding PNGs while playing takes CPU from the node: a short play is decoded first, a long one read ahead."""
    from tqdm import tqdm

    from carla_seg_ros.ros.playback import iter_frames, load_frame

    if len(pairs) > PRELOAD_FRAMES:
        return iter_frames(pairs)
    return [load_frame(pair) for pair in tqdm(pairs, desc="decoding", unit="frame", leave=False)]


def results(player, masks, overlays, label_info, diagnostics, recorder, hood, rate: float, out: Path) -> dict:
    """Delivery, latency and accuracy figures of what came back."""
    from carla_seg_ros.classes import class_names
    from carla_seg_ros.evaluation.metrics import summarize
    from carla_seg_ros.ros.playback import diagnostics_of, latency_stats

    mask_summary = player.stream_summary(masks, rate)
    metrics = summarize(recorder.cm, class_names()) if recorder.scored else None
    return {
        "frames_sent": mask_summary["frames_sent"],
        "frames_received": mask_summary["frames_received"],
        "overlays_received": len(overlays.received),
        "dropped": mask_summary["dropped"],
        "send_rate_hz": mask_summary["send_rate_hz"],
        "output_rate_hz": mask_summary["output_rate_hz"],
        "latency_ms": latency_stats(player.latencies(masks)),
        "frames_scored": recorder.scored,
        "pixel_accuracy": metrics["pixel_accuracy"] if metrics else None,
        "mean_iou": metrics["mean_iou"] if metrics else None,
        "iou": metrics["iou"] if metrics else None,
        "hood": {"mode": hood.mode, "row_fraction": hood.row_fraction},
        "label_info_received": label_info.message is not None,
        "node_diagnostics": diagnostics_of(diagnostics.message, NODE_NAME),
        "overlays_dir": str(recorder.overlay_dir),
        "overlays_written": recorder.overlays_written,
        "size_mismatches": recorder.size_mismatches,
        "recorder_errors": recorder.errors[:20],
        "log": str(out / "seg_node.log"),
    }


def _f(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_summary(s: dict, out: Path) -> None:
    lat = s["latency_ms"]
    values = (s.get("node_diagnostics") or {}).get("values") or {}
    backend = values.get("backend", s["backend_requested"])
    print(f"\nseg_node [{backend}] on {s['frames_sent']} frames at {s['rate_hz']:g} Hz:")
    if s.get("cpu"):
        print(f"  {cpu_line(s['cpu'])}")
    if values.get("kernels"):
        print(f"  runtime       {values['kernels']}")
    if values.get("model_file"):
        print(f"  model         {values['model_file']}: {values.get('model_choice', '?')}")
    print(f"  received      {s['frames_received']}/{s['frames_sent']} masks, {s['overlays_received']} overlays, "
          f"{s['dropped']} dropped; output {_f(s['output_rate_hz'], '.1f')} Hz")
    print(f"  latency       p50 {_f(lat['p50'], '.1f')} ms, p99 {_f(lat['p99'], '.1f')} ms "
          f"(frame sent -> mask received, wall clock)")
    print(f"  accuracy      pixel accuracy {_f(s['pixel_accuracy'], '.4f')}, mIoU {_f(s['mean_iou'], '.4f')} "
          f"over {s['frames_scored']} received masks (hood rule: {s['hood']['mode']})")
    print(f"  written       {out}/summary.json, {s['overlays_written']} overlays in {s['overlays_dir']}/")
    if s["recorder_errors"]:
        print(f"  recorder errors: {s['recorder_errors'][:3]}")


# Set by Ctrl-C / SIGTERM as well as raising KeyboardInterrupt: a KeyboardInterrupt raised while Python runs a
# destructor or a callback is printed as "Exception ignored" and lost, and the demo would then play on and exit 0.
# The playing loop and the summary also look at the flag, so an interrupt is never lost.
STOP_REQUESTED = threading.Event()


def _interrupt(_signum, _frame):
    STOP_REQUESTED.set()
    raise KeyboardInterrupt


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="carla-seg demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None,
                        help="dataset folder (default: $CARLA_SEG_DATA, ../shared/data/carla_seg, else the demo "
                             "frames fetched once into ~/.cache/carla_seg_ros/demo; Kaggle works)")
    parser.add_argument("--split", default=None,
                        help="split or sub-folder to play (default: fullres, or all for a Kaggle/flat folder)")
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder (default: out/demo)")
    parser.add_argument("--rate", type=float, default=20.0, help="publish rate in Hz (default: 20)")
    parser.add_argument("--backend", default="auto", choices=list(BACKEND_CHOICES),
                        help="seg_node inference backend (default: auto)")
    parser.add_argument("--model", default="auto",
                        help="seg_node's model parameter: auto (default: the most accurate rung of the model ladder "
                             "that fits the --rate's frame budget, timed at startup), large, accurate, fast, or an "
                             ".onnx file")
    parser.add_argument("--max-frames", type=int, default=None, help="play only the first N frames")
    parser.add_argument("--ready-timeout", type=float, default=120.0,
                        help="seconds seg_node may take to start and answer (default: 120)")
    add_cpu_option(parser)
    args = parser.parse_args(argv)
    if args.rate <= 0:
        parser.error("--rate must be > 0")
    args.cpu = apply_cpu_option(args)        # --emulate-avx2 reaches seg_node through its environment
    if args.max_frames is not None and args.max_frames < 1:
        parser.error("--max-frames must be >= 1")
    if args.model not in MODEL_CHOICES:
        if not Path(args.model).is_file():
            print(f"carla-seg demo: model {args.model} not found (auto, large, accurate, fast or an .onnx file)",
                  file=sys.stderr)
            return 2
        args.model = str(Path(args.model).resolve())
    try:
        args.data = demo_data.locate(args.data)
    except demo_data.DownloadError as exc:      # one line: the URL, and the way round it
        print(f"carla-seg demo: {exc}; {demo_data.DATA_HINT}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ncarla-seg demo: interrupted; the next run resumes the download", file=sys.stderr)
        return 130
    try:
        find_pairs(args.data, resolve_split(Path(args.data), args.split))
    except FileNotFoundError as exc:
        print(f"carla-seg demo: {exc}\n\n{NO_DATA_HELP}", file=sys.stderr)
        return 2

    STOP_REQUESTED.clear()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _interrupt)
        signal.signal(signal.SIGTERM, _interrupt)   # `kill` gets the same clean stop and partial summary as Ctrl-C
    summary = run(args)
    print_summary(summary, args.out)
    if summary["error"]:
        print(f"\ncarla-seg demo: seg_node failed: {summary['error']}", file=sys.stderr)
        return 1
    if summary["interrupted"]:
        return 130
    if summary["frames_received"] == 0:
        print("carla-seg demo: no mask came back from seg_node", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
