"""Test frames for `carla-seg adapt`: the shared 13-tag frames under a fixed strong appearance shift (a simulated
"new town": thick fog), their labels re-coded into CARLA's 13-, 23- or 29-tag ids, written
as a recorded folder and, with `carla-seg make-bag`, as a bridge bag."""
from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

from carla_seg_ros import classes
from carla_seg_ros.datasets import HoodRule, read_rgb, read_tag_ids
from carla_seg_ros.evaluation import bag_make

PREFIX = {"tags13": "", "tags23": "t23_", "tags29": "t29_"}


def fog_shift(rgb: np.ndarray) -> np.ndarray:
    """Thick fog: contrast to a fifth, everything lifted to a blue-grey; the same for every frame (a fixed domain,
    not an augmentation). The shipped model loses about a third of its mIoU on it (0.72 -> 0.48 on 12 frames)."""
    x = rgb.astype(np.float32) * 0.22 + np.array([170, 172, 178], np.float32)
    return np.clip(x, 0, 255).astype(np.uint8)


def recode(tags13: np.ndarray, coding: str) -> np.ndarray:
    """13-tag ids -> the smallest tag of ``coding`` that the model's classes read back as the same class."""
    if coding == "tags13":
        return tags13
    lut = np.zeros(256, np.uint8)
    mapping = classes.tag_maps("lyft13")[coding]
    for c in range(13):
        lut[c] = min(int(t) for t, k in mapping.items() if k == c)
    return lut[tags13]


def write_folder(pairs, out: Path, coding: str, shift=fog_shift, first_stamp_s: int = 1) -> Path:
    """A recorded folder (rgb/ label/ manifest.csv with stamps in order) of ``pairs`` shifted and re-coded. The
    hood rule is applied first (hood pixels -> Unlabeled), as the 23/29-tag codings come from hood-less CARLA."""
    (out / "rgb").mkdir(parents=True)
    (out / "label").mkdir()
    with open(out / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["name", "stamp_ns", "coding"])
        w.writeheader()
        for k, p in enumerate(pairs):
            name = f"{PREFIX[coding]}{first_stamp_s + k:010d}_000000000"
            tags = recode(HoodRule().apply(read_tag_ids(p.label)), coding)
            cv2.imwrite(str(out / "rgb" / f"{name}.png"), cv2.cvtColor(shift(read_rgb(p.rgb)), cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(out / "label" / f"{name}.png"), tags)
            w.writerow({"name": name, "stamp_ns": (first_stamp_s + k) * 10**9, "coding": coding})
    return out


def make_bag(folder: Path, out: Path, coding: str, start_time: float) -> Path:
    assert bag_make.main(["--data", str(folder), "--split", "all", "--out", str(out), "--coding", coding,
                          "--start-time", str(start_time)]) == 0
    return out


def make_rgb_bag(paths, out: Path, topic: str = "/carla/ego_vehicle/rgb_front/image", rate: float = 10.0) -> Path:
    """A bag with only a camera topic (bgra8, as the bridge publishes it): frames of ``paths`` in order."""
    from carla_seg_ros.image_codec import from_rgb
    store = bag_make.typestore()
    make = bag_make.MessageFactory(store)
    with bag_make.open_writer(out, "mcap") as writer:
        conn = writer.add_connection(topic, "sensor_msgs/msg/Image", typestore=store)
        for i, path in enumerate(paths):
            ns = bag_make.stamp_ns(i, rate, 1.0)
            rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
            msg = make.image(from_rgb(rgb, "bgra8"), "bgra8", make.header(ns, "ego_vehicle/rgb_front"))
            writer.write(conn, ns, make.serialize(msg))
    return out
