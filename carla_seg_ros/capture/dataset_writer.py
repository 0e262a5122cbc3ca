"""Camera/ground-truth pairs -> a dataset folder that `carla-seg train`, `evaluate` and `make-bag` read as is.

Shared by `carla-seg record` (live ROS 2 topics), `carla-seg bag-to-dataset` (a rosbag2) and `carla-seg carla
--record` (the CARLA client's own sensors). The folder is the flat layout of datasets.py:

* ``rgb/NAME.png``    the camera image (3-channel PNG);
* ``label/NAME.png``  the raw CARLA tag ids of the ground truth's coding, single channel; NAME starts with ``t23_``
  or ``t29_`` for those codings (datasets.py reads the coding from that prefix; 13-tag names have none);
* ``manifest.csv``    one row per written pair: name, stamp, topics, coding, frame ids, camera_info K and size, and
  where the source knows it (``carla --record``) the ego vehicle's pose and twist (``ego_*``, evaluation/ego_motion.py);
* ``depth/NAME.npy``  where the sample has one (``carla --record --depth``): the depth camera, float32 metres;
* ``record_summary.json`` at the end: counts of everything that happened to every pair.

NAME is ``[prefix][tag_]SSSSSSSSSS_NNNNNNNNN`` from the header stamp (seconds, nanoseconds), so the same frames give
the same names whether they were recorded live or read from a bag.

Selection (``every``, ``min_change``, ``max_frames``) is decided in ``offer`` on the caller's thread (cheap: a
counter and a 1/16-size grey thumbnail); decoding the ground truth and encoding/writing the PNGs happen on one
writer thread (or ``threads`` of them) behind a bounded queue. A live caller never waits: a pair that finds the
queue full is counted as ``dropped_writer``. A bag reader or the CARLA client passes ``block=True`` and waits, so
nothing is dropped. Each file is written under a
temporary name and renamed, the label before the image and the manifest row last, so a pair is either complete
or absent (an orphan label without its image is never listed by datasets.find_pairs). A write that fails
(unwritable folder, full disk) stops the writer with one error that names the folder (``error``).
"""
from __future__ import annotations

import csv
import json
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from carla_seg_ros.evaluation.bag_reading import Counters
from carla_seg_ros.evaluation.ego_motion import DEPTH_DIR, EGO_FIELDS, EgoState, depth_path
from carla_seg_ros.image_codec import ImageRejected

MANIFEST = "manifest.csv"
SUMMARY = "record_summary.json"
MANIFEST_FIELDS = ("name", "stamp_ns", "stamp_s", "rgb_topic", "gt_topic", "coding", "rgb_frame_id", "gt_frame_id",
                   "width", "height", "info_width", "info_height", "fx", "fy", "cx", "cy", "source", *EGO_FIELDS)
CODING_PREFIX = {"tags13": "", "tags23": "t23_", "tags29": "t29_"}     # datasets._coding_from_name's inverse
THUMB_STEP = 4


def png_params(level: int, labels: bool) -> list[int]:
    """OpenCV PNG settings: zlib ``level``, plus the filter and strategy that are fastest for the content (measured
    on 800x600 CARLA frames: camera images with the Sub filter and Huffman-only coding take half the time of
    OpenCV's default at level 1 and are 13 % smaller; label images, long runs of one id, with Up + RLE: a third
    of the time, 10 kB). Older OpenCV without IMWRITE_PNG_FILTER gets the strategy alone."""
    import cv2
    params = [cv2.IMWRITE_PNG_COMPRESSION, int(level)]
    if level > 0:
        params += [cv2.IMWRITE_PNG_STRATEGY,
                   cv2.IMWRITE_PNG_STRATEGY_RLE if labels else cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY]
        if hasattr(cv2, "IMWRITE_PNG_FILTER"):
            params += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP if labels else cv2.IMWRITE_PNG_FILTER_SUB]
    return params


class DatasetWriteError(RuntimeError):
    """The output folder cannot be written (permissions, full disk...)."""


def frame_name(stamp_ns: int, coding: str, tag: str = "") -> str:
    sec, nsec = divmod(int(stamp_ns), 10**9)
    return f"{CODING_PREFIX[coding]}{tag + '_' if tag else ''}{sec:010d}_{nsec:09d}"


def thumbnail(pixels: np.ndarray) -> np.ndarray:
    """Grey (mean of the colour channels, 0-255) of every 4th pixel of every 4th row: for ``min_change``.

    Takes the first three channels of any (H, W, C) layout: the mean does not depend on their order."""
    small = pixels[::THUMB_STEP, ::THUMB_STEP]
    if small.ndim == 3:
        small = small[..., :3]
        return small.mean(axis=2, dtype=np.float32)
    return small.astype(np.float32)


def prepare_folder(out: Path) -> None:
    """Create ``out/rgb`` and ``out/label`` and prove a file can be written there; DatasetWriteError otherwise."""
    out = Path(out)
    try:
        for sub in ("rgb", "label"):
            (out / sub).mkdir(parents=True, exist_ok=True)
        probe = out / f".write_test_{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise DatasetWriteError(f"cannot write to output folder {out}: {exc.strerror or exc}") from exc


@dataclass
class Sample:
    """One camera/ground-truth pair to store.

    ``rgb``: (H, W, 3) RGB uint8, or a function returning it (run on the writer thread).
    ``tags``: a function returning (raw tag ids (H, W) uint8, coding name); may raise ImageRejected.
    ``meta``: manifest fields (topics, frame ids, camera_info K and size...).
    ``ego``: the ego vehicle's pose and twist at the frame, a function returning it (run on the writer thread
    after ``tags``), or None.
    ``depth``: (H, W) float32 metres at the camera's size, a function returning it, or None.
    """
    stamp_ns: int
    rgb: np.ndarray | Callable[[], np.ndarray]
    tags: Callable[[], tuple[np.ndarray, str]]
    meta: dict = field(default_factory=dict)
    tag: str = ""
    ego: EgoState | Callable[[], EgoState | None] | None = None
    depth: np.ndarray | Callable[[], np.ndarray] | None = None


@dataclass
class Counts:
    paired: int = 0            # pairs offered to the writer
    skipped_every: int = 0
    skipped_still: int = 0     # below --min-change
    skipped_max_frames: int = 0
    dropped_writer: int = 0    # the queue was full: the writer could not keep up
    failed_decode: int = 0     # the pair could not be decoded (reasons in Counters.skipped)
    written: int = 0


class DatasetWriter:
    def __init__(self, out: Path, every: int = 1, min_change: float = 0.0, max_frames: int = 0,
                 queue_size: int = 16, block: bool = False, png_level: int = 1, threads: int = 1, nice: int = 0,
                 counters: Counters | None = None, on_written: Callable[[str], None] | None = None):
        if every < 1:
            raise ValueError("every must be >= 1")
        if min_change < 0 or max_frames < 0 or queue_size < 1:
            raise ValueError("min_change and max_frames must be >= 0, queue_size >= 1")
        self.out = Path(out)
        prepare_folder(self.out)
        self.every, self.min_change, self.max_frames = every, float(min_change), max_frames
        self.block = block
        self.png_level = png_level
        self.nice = nice
        self._rgb_params, self._label_params = png_params(png_level, False), png_params(png_level, True)
        self.counters = counters or Counters()
        self.on_written = on_written
        self.counts = Counts()
        self.codings: dict[str, int] = {}
        self.error: str | None = None
        self._last_thumb: np.ndarray | None = None
        self._accepted = 0
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        manifest = self.out / MANIFEST
        new = not manifest.is_file() or manifest.stat().st_size == 0
        header = MANIFEST_FIELDS
        try:
            if not new:
                header = _upgrade_manifest(manifest)
            self._manifest_file = open(manifest, "a", newline="")
        except OSError as exc:
            raise DatasetWriteError(f"cannot write to output folder {self.out}: {exc.strerror or exc}") from exc
        self._manifest = csv.DictWriter(self._manifest_file, header, extrasaction="ignore")
        if new:
            self._manifest.writeheader()
            self._manifest_file.flush()
        # OpenCV encodes without the GIL, so a second thread uses a second core.
        self._threads = [threading.Thread(target=self._run, name=f"dataset-writer-{k}", daemon=True)
                         for k in range(max(1, threads))]
        for thread in self._threads:
            thread.start()

    # ------------------------------------------------------------------ producer side
    @property
    def full(self) -> bool:
        """--max-frames reached: every further pair is skipped."""
        return bool(self.max_frames) and self._accepted >= self.max_frames

    def offer(self, sample: Sample, thumb: np.ndarray | None = None) -> str:
        """Decide about one pair; returns what happened: queued, skipped_every, skipped_still, skipped_max_frames,
        dropped_writer or error. ``thumb`` (see ``thumbnail``) is needed for ``min_change``."""
        with self._lock:
            c = self.counts
            c.paired += 1
            if self.error is not None:
                return "error"
            if self.full:
                c.skipped_max_frames += 1
                return "skipped_max_frames"
            if (c.paired - 1) % self.every:
                c.skipped_every += 1
                return "skipped_every"
            if self.min_change > 0:
                if thumb is None:
                    rgb = sample.rgb() if callable(sample.rgb) else sample.rgb
                    sample.rgb = rgb
                    thumb = thumbnail(rgb)
                if self._last_thumb is not None and self._last_thumb.shape == thumb.shape and \
                        float(np.abs(thumb - self._last_thumb).mean()) < self.min_change:
                    c.skipped_still += 1
                    return "skipped_still"
            if not self.block:
                try:
                    self._queue.put_nowait(sample)
                except queue.Full:
                    c.dropped_writer += 1
                    return "dropped_writer"
            if thumb is not None:
                self._last_thumb = thumb
            self._accepted += 1
        if self.block:
            # Outside the lock: the writer threads take it to count a written pair, and they must be able to
            # finish the pair in hand and take the next one from the full queue while this waits.
            self._queue.put(sample)
        return "queued"

    # ------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        if self.nice:
            try:     # Linux: a thread's own nice value; the receiving (DDS, executor) threads then win the CPU
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) +
                               self.nice)
            except (AttributeError, OSError):
                pass
        while True:
            sample = self._queue.get()
            if sample is None:
                return
            if self.error is not None:
                continue      # drain: nothing more can be written
            try:
                self._write(sample)
            except ImageRejected as exc:
                with self._lock:
                    self.counts.failed_decode += 1
                side = "depth" if exc.reason.startswith("depth") else "gt"
                self.counters.skip(f"{side}:{exc.reason}", f"{'depth' if side == 'depth' else 'ground truth'} at "
                                                           f"t={sample.stamp_ns / 1e9:.3f}s: {exc.message}")
            except OSError as exc:
                self.error = (f"cannot write to output folder {self.out}: {exc.strerror or exc}"
                              f"{' (' + exc.filename + ')' if getattr(exc, 'filename', None) else ''}")
            except Exception as exc:  # noqa: BLE001 - one bad frame (a callback's bug) must not stop the writer
                with self._lock:
                    self.counts.failed_decode += 1
                self.counters.skip(f"error:{type(exc).__name__}", f"frame at t={sample.stamp_ns / 1e9:.3f}s: {exc}")

    def _write(self, sample: Sample) -> None:
        import cv2
        rgb = sample.rgb() if callable(sample.rgb) else sample.rgb
        tags, coding = sample.tags()
        if tags.shape[:2] != rgb.shape[:2]:
            raise ImageRejected("size_mismatch", f"camera {rgb.shape[1]}x{rgb.shape[0]} and ground truth "
                                                 f"{tags.shape[1]}x{tags.shape[0]} differ in size")
        name = frame_name(sample.stamp_ns, coding, sample.tag)
        depth = sample.depth() if callable(sample.depth) else sample.depth
        if depth is not None:
            if depth.shape != rgb.shape[:2] or depth.dtype != np.float32:
                raise ImageRejected("depth_mismatch", f"depth image {depth.dtype} {depth.shape} is not float32 "
                                                      f"{rgb.shape[0]}x{rgb.shape[1]} like the camera")
            (self.out / DEPTH_DIR).mkdir(exist_ok=True)
            _atomic_write(depth_path(self.out, name), _npy_bytes(depth))
        ok_label, label_png = cv2.imencode(".png", np.ascontiguousarray(tags, np.uint8), self._label_params)
        ok_rgb, rgb_png = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR),
                                       self._rgb_params)
        if not (ok_label and ok_rgb):
            raise ImageRejected("png_encode", f"OpenCV could not encode frame {name} as PNG")
        # Depth and label first, image last: datasets.find_pairs lists a pair by its image, so a pair is complete
        # or absent.
        _atomic_write(self.out / "label" / f"{name}.png", label_png)
        _atomic_write(self.out / "rgb" / f"{name}.png", rgb_png)
        ego = sample.ego() if callable(sample.ego) else sample.ego
        row = dict(sample.meta, name=name, stamp_ns=sample.stamp_ns, stamp_s=f"{sample.stamp_ns / 1e9:.9f}",
                   coding=coding, width=rgb.shape[1], height=rgb.shape[0], **(ego.to_row() if ego is not None else {}))
        with self._lock:
            self._manifest.writerow(row)
            self._manifest_file.flush()
            self.counts.written += 1
            self.codings[coding] = self.codings.get(coding, 0) + 1
        if self.on_written is not None:
            self.on_written(name)

    # ------------------------------------------------------------------ end
    def pending(self) -> int:
        return self._queue.qsize()

    def close(self, timeout: float | None = None) -> None:
        """Write everything queued, then stop the writer thread (idempotent)."""
        alive = [t for t in self._threads if t.is_alive()]
        for _ in alive:
            self._queue.put(None)
        for thread in alive:
            thread.join(timeout)
        if not self._manifest_file.closed:
            try:
                self._manifest_file.close()
            except OSError as exc:
                self.error = self.error or f"cannot write to output folder {self.out}: {exc.strerror or exc}"

    def summary(self, **extra) -> dict:
        with self._lock:
            counts = dict(vars(self.counts))
        return {"out": str(self.out), **counts, "codings": dict(self.codings),
                "skipped": dict(self.counters.skipped), "skip_messages": dict(self.counters.first_error),
                "unknown_color_pixels": self.counters.unknown_color_pixels,
                "unknown_id_pixels": self.counters.unknown_id_pixels,
                "options": {"every": self.every, "min_change": self.min_change, "max_frames": self.max_frames},
                "error": self.error, **extra}

    def write_summary(self, **extra) -> dict:
        summary = self.summary(**extra)
        summary["written_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        try:
            _atomic_write(self.out / SUMMARY, json.dumps(summary, indent=2).encode())
        except OSError as exc:
            self.error = self.error or f"cannot write to output folder {self.out}: {exc.strerror or exc}"
            summary["error"] = self.error
        return summary


def _upgrade_manifest(path: Path) -> tuple[str, ...]:
    """An older manifest (fewer columns) is rewritten with today's header before rows are appended to it, so every
    row lines up with the header; its rows keep their values and get the new columns empty. Returns the header."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = tuple(reader.fieldnames or ())
        extra = tuple(k for k in header if k not in MANIFEST_FIELDS)     # someone's own columns: kept at the end
        if header == MANIFEST_FIELDS + extra:
            return header
        rows = list(reader)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, MANIFEST_FIELDS + extra)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
    return MANIFEST_FIELDS + extra


def _npy_bytes(array: np.ndarray) -> bytes:
    import io
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _atomic_write(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(memoryview(data))
        os.replace(tmp, path)
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def format_counts(summary: dict) -> str:
    unpaired = summary.get("unpaired", {})
    skipped = (summary["skipped_every"] + summary["skipped_still"] + summary["skipped_max_frames"])
    return (f"paired {summary['paired']}, unpaired {sum(unpaired.values()) if unpaired else 0}"
            + (f" ({', '.join(f'{k} {v}' for k, v in unpaired.items())})" if unpaired else "")
            + f", skipped {skipped} (every {summary['skipped_every']}, still {summary['skipped_still']}, "
              f"max-frames {summary['skipped_max_frames']}), dropped_writer {summary['dropped_writer']}, "
              f"undecodable {summary['failed_decode'] + sum(summary.get('undecodable', {}).values())}, "
              f"written {summary['written']}")
