"""`carla-seg bench swap`: masks answered while seg_node's model is swapped live under a camera stream.

    carla-seg bench swap --seconds 30 --rate 20 --json runs/bench/swap.json

Starts a real seg_node (model A), plays frames at --rate (bridge QoS), swaps the model through the parameter
service (ros/model_swap_client.py: what `ros2 param set /seg_node model B` does) at the end of each third of the
run, A -> B -> A, and counts the frames answered with a mask by window: the first third (no swap: the baseline of
the same run), and --window seconds from each swap request. A newest-frame node drops frames when inference is
slower than the camera, so the baseline is what the machine gives without a swap; a swap should cost nothing
beyond it (the new model loads on a thread of its own and switches between two frames).
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

from carla_seg_ros.paths import default_data_dir, models_dir
from carla_seg_ros.runtime.cpu_info import add_cpu_option, apply_cpu_option


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="carla-seg bench swap", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-a", type=Path, default=models_dir() / "carla_unet.onnx", help="model at start")
    p.add_argument("--model-b", type=Path, default=models_dir() / "carla_unet_fast.onnx", help="model swapped in")
    p.add_argument("--backend", default="onnxruntime", help="seg_node backend (default: %(default)s)")
    p.add_argument("--rate", type=float, default=20.0, help="camera rate, Hz (default: %(default)s)")
    p.add_argument("--seconds", type=float, default=30.0, help="length of the run (default: %(default)s)")
    p.add_argument("--window", type=float, default=5.0, help="seconds counted from each swap request")
    p.add_argument("--size", default="800x600", help="camera frame WxH (default: %(default)s)")
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--log-dir", type=Path, help="keep the node's log here")
    add_cpu_option(p)
    return p


def camera_frame(size: tuple[int, int]) -> np.ndarray:
    """A real CARLA frame (the dataset's first val frame) at ``size`` as bgra8, else a fixed random image."""
    import cv2
    data = default_data_dir()
    if data is not None and (Path(data) / "val" / "rgb").is_dir():
        path = sorted((Path(data) / "val" / "rgb").glob("*.png"))[0]
        return cv2.cvtColor(cv2.resize(cv2.imread(str(path)), size), cv2.COLOR_BGR2BGRA)
    return np.random.default_rng(0).integers(0, 256, (size[1], size[0], 4), np.uint8)


def answered(sent: dict, received: dict, start: float, end: float) -> dict:
    keys = [k for k, t in sent.items() if start <= t < end]
    got = sum(1 for k in keys if k in received)
    return {"sent": len(keys), "answered": got, "fraction": got / len(keys) if keys else None}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cpu = apply_cpu_option(args)          # the CPU line first: figures compare only within one CPU
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from carla_seg_ros.ros.playback import CAMERA_TOPIC, NodeFailed, NodeProcess, Player, node_argv, paced

    for model in (args.model_a, args.model_b):
        if not model.is_file():
            print(f"carla-seg bench swap: no model {model}", file=sys.stderr)
            return 2
    w, h = (int(v) for v in args.size.lower().split("x"))
    node_name = "bench_swap_seg"
    player = Player(name="bench_swap_player")
    masks = player.watch(f"/{node_name}/mask", Image)
    tables = player.watch_latest(f"/{node_name}/label_info", String, required=True)
    log = args.log_dir / f"{node_name}.log" if args.log_dir else None
    if args.log_dir:
        args.log_dir.mkdir(parents=True, exist_ok=True)
    proc = NodeProcess("seg_node", node_argv("carla_seg_ros.ros.seg_node", node_name,
                                             {"model": str(args.model_a), "backend": args.backend},
                                             {"image": CAMERA_TOPIC}), log_path=log)
    swaps = []
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter
    # In this process, on the player's node (spun by its executor): what `ros2 param set` sends, without the
    # start-up of a second Python process competing for the two cores inside the measured window.
    client = player.node.create_client(SetParameters, f"/{node_name}/set_parameters")

    def swap(model: Path) -> None:
        t = time.time()
        future = client.call_async(SetParameters.Request(
            parameters=[Parameter("model", value=str(model)).to_parameter_msg()]))
        while not future.done() and time.time() - t < 30:
            time.sleep(0.01)
        reply = future.result().results[0] if future.done() else None
        swaps.append({"model": str(model), "requested": t, "answered_s": time.time() - t,
                      "rc": 0 if reply is not None and reply.successful else 1,
                      "output": reply.reason if reply is not None else "no answer within 30 s"})

    result = {"cpu": cpu, "rate_hz": args.rate, "seconds": args.seconds, "size": [w, h], "backend": args.backend}
    try:
        proc.start()
        msg = player.image_message(camera_frame((w, h)))
        result["ready_s"] = player.wait_ready(proc, msg)
        if not client.wait_for_service(timeout_sec=30.0):
            raise NodeFailed(f"no parameter service /{node_name}/set_parameters")
        tables_at_start = tables.count
        start = time.time()
        n = int(args.seconds * args.rate)
        plan = {n // 3: args.model_b, 2 * n // 3: args.model_a}
        threads = []
        for i, _ in enumerate(paced(range(n), args.rate)):
            if i in plan:
                threads.append(threading.Thread(target=swap, args=(plan[i],), daemon=True))
                threads[-1].start()
            player.send(msg, time.time_ns())
            if i % 20 == 0:
                proc.check()
        for t in threads:
            t.join(timeout=60)
        player.drain(proc)
        proc.check()
        with player._lock:
            sent = {k: v for k, v in player.sent.items()}
            received = dict(masks.received)
        result["baseline_first_third"] = answered(sent, received, start, start + args.seconds / 3)
        result["swaps"] = [dict(s, window=answered(sent, received, s["requested"], s["requested"] + args.window))
                           for s in swaps]
        result["whole_run"] = answered(sent, received, start, time.time())
        result["per_second"] = [answered(sent, received, start + i, start + i + 1)["answered"]
                                for i in range(int(args.seconds))]
        result["label_info_republished"] = tables.count - tables_at_start
    except NodeFailed as exc:
        print(f"carla-seg bench swap: {exc}", file=sys.stderr)
        return 1
    finally:
        proc.close()
        player.close()
    print(f"swap benchmark: {args.rate:g} Hz, {w}x{h}, {args.backend}")

    def pct(part):
        if part["fraction"] is None:
            return "n/a"
        return f"{part['fraction'] * 100:.1f} % ({part['answered']}/{part['sent']})"
    print(f"  baseline (first third, no swap): {pct(result['baseline_first_third'])}")
    for s in result["swaps"]:
        print(f"  swap to {Path(s['model']).name} (rc {s['rc']}, answered in {s['answered_s']:.1f} s): "
              f"{args.window:g} s window {pct(s['window'])}")
    print(f"  whole run: {pct(result['whole_run'])}; label_info republished {result['label_info_republished']}x")
    print(f"  masks per second: {' '.join(str(n) for n in result['per_second'])}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return 0 if all(s["rc"] == 0 for s in result["swaps"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
