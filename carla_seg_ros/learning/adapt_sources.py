"""Where `carla-seg adapt` gets its frames: a CARLA server, bridge bags, a recorded folder or unlabelled frames.

Each source becomes folders the rest of adapt reads: labelled sources a dataset folder of rgb/ + label/ (the
writer of `carla-seg record`), unlabelled ones a folder of rgb/ frames (datasets of `carla-seg self-train`).
The existing commands do the work, run as child processes through the `carla-seg` dispatcher (so adapt stays a
conductor and every stage is the command a user could run by hand): `carla-seg carla --record` for a server,
`carla-seg bag-to-dataset` for a bag. Problems a user can fix are ``SourceError``: one line, no traceback.
"""
from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
SEMANTIC_HINTS = ("semantic", "segmentation", "/seg")


class SourceError(RuntimeError):
    pass


def carla_seg(args: list[str], what: str) -> None:
    """Run `carla-seg ARGS` as a child process (its output and progress bars go to this terminal)."""
    code = subprocess.call([sys.executable, "-m", "carla_seg_ros.cli", *args])
    if code == 130 or code == -2:
        raise KeyboardInterrupt
    if code != 0:
        raise SourceError(f"{what} failed (carla-seg {args[0]} exited with {code}; its message is above)")


def parse_host(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":") if ":" in text else (text, "", "2000")
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        raise SourceError(f"--carla {text!r}: expected HOST or HOST:PORT") from None


def check_server(host: str, port: int, timeout: float = 3.0) -> None:
    """SourceError unless something listens on the CARLA RPC port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise SourceError(f"no CARLA server at {host}:{port} ({exc.strerror or exc}); start CarlaUE4.sh first, "
                          "or give --carla HOST:PORT") from None


def record_carla(address: str, out: Path, options: dict) -> Path:
    """Record labelled frames from a running server with `carla-seg carla --record` (its towns, weathers and
    frame options) into ``out``."""
    host, port = parse_host(address)
    check_server(host, port)
    args = ["carla", "--host", host, "--port", str(port), "--record", str(out)]
    for key in ("towns", "weathers"):
        if options.get(key):
            args += [f"--{key}", options[key]]
    for key in ("frames", "frames_per_town", "every", "max_frames"):
        if options.get(key):
            args += [f"--{key.replace('_', '-')}", str(options[key])]
    if options.get("min_change"):
        args += ["--min-change", str(options["min_change"])]
    carla_seg(args, f"recording from the CARLA server at {host}:{port}")
    return out


def bag_topics(bag: Path) -> dict[str, tuple[str, int]]:
    """topic -> (type, message count) of a bag; SourceError if it cannot be opened."""
    from carla_seg_ros.evaluation.bag_reading import BagError, open_bag
    try:
        reader = open_bag(bag)
    except BagError as exc:
        raise SourceError(str(exc)) from None
    try:
        return {t: (info.msgtype, info.msgcount) for t, info in reader.topics.items()}
    finally:
        reader.close()


def find_topics(bag: Path, rgb: str | None, gt: str | None, need_gt: bool = True) -> tuple[str, str | None]:
    """The camera and semantic topics of a bag: given, else found (image topics; the semantic one names
    semantic/segmentation, the camera one is the other image topic, preferring 'rgb')."""
    topics = bag_topics(bag)
    images = sorted(t for t, (kind, count) in topics.items() if kind in IMAGE_TYPES and count)
    listing = ", ".join(f"{t} ({kind})" for t, (kind, _) in sorted(topics.items())) or "no topics"
    for given in (rgb, gt):
        if given and given not in images:
            raise SourceError(f"bag {bag}: no image messages on {given} (it has: {listing})")
    semantic = [t for t in images if any(h in t.lower() for h in SEMANTIC_HINTS)]
    if need_gt and gt is None:
        if not semantic:
            raise SourceError(f"bag {bag}: no semantic camera topic (an image topic naming 'semantic' or "
                              f"'segmentation'; it has: {listing}); give it with --gt-topic, or use "
                              "--unlabelled for RGB-only bags")
        if len(semantic) > 1:
            raise SourceError(f"bag {bag}: several semantic topics ({', '.join(semantic)}); choose with --gt-topic")
        gt = semantic[0]
    if rgb is None:
        cameras = [t for t in images if t not in semantic and t != gt]
        rgbs = [t for t in cameras if "rgb" in t.lower()] or cameras
        if len(rgbs) != 1:
            raise SourceError(f"bag {bag}: " + ("no camera image topic" if not rgbs else
                                                f"several camera topics ({', '.join(rgbs)})")
                              + f"; choose with --rgb-topic (it has: {listing})")
        rgb = rgbs[0]
    return rgb, gt


def bag_to_folder(bag: Path, out: Path, options: dict) -> Path:
    """A bridge bag of RGB + semantic images -> a dataset folder (`carla-seg bag-to-dataset`)."""
    rgb, gt = find_topics(bag, options.get("rgb_topic"), options.get("gt_topic"))
    args = ["bag-to-dataset", str(bag), "--out", str(out), "--rgb-topic", rgb, "--gt-topic", gt,
            "--coding", options.get("coding", "auto")]
    if options.get("every"):
        args += ["--every", str(options["every"])]
    carla_seg(args, f"reading bag {bag}")
    return out


def unlabelled_bag_to_folder(bag: Path, out: Path, rgb_topic: str | None, every: int = 1) -> Path:
    """The camera frames of a bag (no ground truth needed) -> ``out/rgb/NAME.png`` in stamp order, for
    self-training. Names end in a frame number so unlabelled.split_unlabelled holds out whole blocks."""
    import cv2
    import numpy as np

    from carla_seg_ros.evaluation.bag_reading import BagError, decode_camera, iter_messages, open_bag
    rgb_topic, _ = find_topics(bag, rgb_topic, None, need_gt=False)
    (out / "rgb").mkdir(parents=True, exist_ok=True)
    try:
        reader = open_bag(bag)
    except BagError as exc:
        raise SourceError(str(exc)) from None
    written = 0
    try:
        conns = [c for c in reader.connections if c.topic == rgb_topic]
        for k, (conn, _, raw) in enumerate(iter_messages(reader, conns, bag)):
            if k % max(1, every):
                continue
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.msgtype.endswith("CompressedImage"):      # png/jpeg bytes: OpenCV decodes them to BGR
                bgr = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_COLOR)
                if bgr is None:
                    continue
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            else:
                rgb = decode_camera(msg)
            path = out / "rgb" / f"bag_{written:06d}.png"
            if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
                raise OSError(f"cannot write {path} (disk full or folder not writable)")
            written += 1
    except BagError as exc:
        raise SourceError(str(exc)) from None
    finally:
        reader.close()
    if written == 0:
        raise SourceError(f"bag {bag}: no frames on {rgb_topic}")
    return out
