"""The frames `carla-seg demo` plays: found on this machine, or fetched once from their public origin.

Lookup order: ``--data``, then ``$CARLA_SEG_DATA`` (both taken as given: a wrong folder is an error, never a
download), then ``../shared/data/carla_seg``, then the per-user cache ``$XDG_CACHE_HOME/carla_seg_ros/demo``
(default ``~/.cache/carla_seg_ros/demo``). When neither of the last two has frames, the 40 frames and labels listed in
config/demo_frames.json are fetched into the cache from the repository they were published in, pinned to one commit,
each checked against its pinned sha256. carla_seg_ros does not redistribute them.

A transfer is written to ``NAME.part`` and renamed only once its sha256 matches, so a file under its final name is
always a verified one; an interrupted transfer resumes from the ``.part`` with an HTTP Range request where the server
honours it, and starts again where it does not. ``$CARLA_SEG_DEMO_BASE_URL`` points the fetch at another server
holding the same paths (a mirror, or the tests' local server).
"""
from __future__ import annotations

import http.client
import json
import os
import re
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from carla_seg_ros.datasets import find_pairs
from carla_seg_ros.paths import config_path, shared_data_dir, user_cache_dir
from carla_seg_ros.runtime.model_choice import sha256 as sha256_of

BASE_URL_ENV = "CARLA_SEG_DEMO_BASE_URL"
DATA_ENV = "CARLA_SEG_DATA"
MANIFEST_NAME = "demo_frames.json"
CHUNK = 1 << 16
ATTEMPTS = 4            # per file: the first transfer and three resumes (or restarts) after a cut connection
TIMEOUT_S = 30.0        # per socket operation, not per file
DATA_HINT = "pass a dataset with --data DIR (`make demo DATA=DIR`) or set CARLA_SEG_DATA"


class DownloadError(RuntimeError):
    """A fetch that cannot complete; the message is one line naming the URL."""


@dataclass(frozen=True)
class RemoteFile:
    path: str           # relative to the base URL, and to the cache folder
    sha256: str
    size: int


@dataclass(frozen=True)
class DemoFrames:
    repository: str
    commit: str
    base_url: str
    files: tuple[RemoteFile, ...]

    @classmethod
    def load(cls, path: str | Path | None = None) -> "DemoFrames":
        raw = json.loads(Path(path or config_path(MANIFEST_NAME)).read_text(encoding="utf-8"))
        files = tuple(RemoteFile(f["path"], f["sha256"].lower(), int(f["size"])) for f in raw["files"])
        return cls(raw["repository"], raw["commit"], raw["base_url"], files)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def demo_cache_dir() -> Path:
    return user_cache_dir() / "demo"


def has_frames(folder: Path | None) -> bool:
    """Whether ``folder`` holds playable pairs in any layout the demo reads (prepared, flat or Kaggle)."""
    if folder is None or not Path(folder).is_dir():
        return False
    folder = Path(folder)
    split = "fullres" if (folder / "fullres" / "rgb").is_dir() else "all"
    try:
        return bool(find_pairs(folder, split))
    except FileNotFoundError:
        return False


def is_complete(frames: DemoFrames, folder: Path) -> bool:
    """Every listed file is in place at its size (a file gets its final name only after its sha256 matched)."""
    for remote in frames.files:
        local = folder / remote.path
        if not local.is_file() or local.stat().st_size != remote.size:
            return False
    return True


def locate(data: Path | None, *, env: dict | None = None, shared: Path | None | bool = True,
           cache: Path | None = None, frames: DemoFrames | None = None, base_url: str | None = None,
           say: Callable[[str], None] = print, progress: bool = True) -> Path:
    """The folder to play, in the lookup order of the module docstring; fetches the demo frames when needed.

    ``shared=True`` looks for ../shared beside the checkout; tests pass a folder, or None for a machine without it.
    """
    env = os.environ if env is None else env
    if data is not None:
        return Path(data)
    if env.get(DATA_ENV):
        return Path(env[DATA_ENV])
    shared_dir = shared_data_dir() if shared is True else shared
    if has_frames(shared_dir):
        return Path(shared_dir)
    frames = frames or DemoFrames.load()
    cache = Path(cache) if cache is not None else demo_cache_dir()
    if not is_complete(frames, cache):
        base_url = base_url or env.get(BASE_URL_ENV) or frames.base_url
        say(f"demo: no dataset given (--data, CARLA_SEG_DATA) or at ../shared/data/carla_seg; fetching "
            f"{len(frames.files) // 2} CARLA frames and their labels "
            f"({frames.total_bytes / 1e6:.1f} MB, once) into {cache}/")
        say(f"demo: source {frames.repository} at commit {frames.commit[:12]} (a 2018 Lyft-challenge drive); "
            f"the frames are not redistributed by carla_seg_ros, see config/{MANIFEST_NAME}")
        fetch_all(frames, cache, base_url, progress=progress)
        say(f"demo: {len(frames.files)} files in place, each matching its pinned sha256")
    return cache


def fetch_all(frames: DemoFrames, folder: Path, base_url: str, *, timeout: float = TIMEOUT_S,
              progress: bool = True) -> None:
    """Every listed file into ``folder``, verified; files already in place are kept."""
    from tqdm import tqdm

    base_url = base_url if base_url.endswith("/") else base_url + "/"
    with tqdm(total=frames.total_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc="demo frames",
              disable=not progress, leave=False) as bar:
        for remote in frames.files:
            local = folder / remote.path
            if not (local.is_file() and local.stat().st_size == remote.size):
                fetch_file(base_url + remote.path, local, remote.sha256, remote.size, timeout=timeout,
                           on_bytes=bar.update)
            else:
                bar.update(remote.size)


def fetch_file(url: str, dest: Path, sha256: str, size: int, *, timeout: float = TIMEOUT_S,
               attempts: int = ATTEMPTS, on_bytes: Callable[[int], None] = lambda _n: None) -> None:
    """``url`` to ``dest`` through ``dest.part``: resumed after a cut connection, renamed once its sha256 matches.

    ``on_bytes`` gets every change of the bytes held, negative when a transfer starts again from zero.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    held = part.stat().st_size if part.is_file() else 0
    if held > size:                        # not a prefix of this file: start again
        part.unlink()
        held = 0
    on_bytes(held)
    for _ in range(attempts):
        if held == size:
            break
        try:
            held = _transfer(url, part, held, size, timeout, on_bytes)
        except _Cut:
            held = part.stat().st_size if part.is_file() else 0
    if held != size:
        raise DownloadError(f"{url}: the connection was cut {attempts} times ({held} of {size} bytes received; "
                            f"run the demo again to resume)")
    got = sha256_of(part)
    if got != sha256:
        part.unlink()
        on_bytes(-held)
        raise DownloadError(f"{url}: sha256 {got} is not the pinned {sha256}; the file was refused and removed")
    os.replace(part, dest)                 # atomic on one file system: a reader sees the whole file or none


class _Cut(Exception):
    """The body stopped short; what arrived is in the .part file."""


def _transfer(url: str, part: Path, held: int, size: int, timeout: float, on_bytes) -> int:
    """One HTTP request appending to ``part`` from byte ``held``; returns the bytes held afterwards."""
    request = urllib.request.Request(url, headers={"User-Agent": "carla_seg_ros-demo"})
    if held:
        request.add_header("Range", f"bytes={held}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)   # noqa: S310 - http(s) URLs of the manifest
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and held:       # the server disowns our prefix: start again from zero
            part.unlink()
            on_bytes(-held)
            raise _Cut from None
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(f"cannot reach {url} ({_reason(exc)})") from None
    with response:
        resumed = held > 0 and response.status == 206 and _range_start(response) == held
        if held and not resumed:           # no Range support (a 200 is the whole file): start again from zero
            on_bytes(-held)
            held = 0
        try:
            with open(part, "ab" if resumed else "wb") as out:
                while held <= size:
                    chunk = response.read(CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    held += len(chunk)
                    on_bytes(len(chunk))
        except (http.client.IncompleteRead, ConnectionError, socket.timeout, TimeoutError):
            raise _Cut from None
    if held > size:
        part.unlink()
        on_bytes(-held)
        raise DownloadError(f"{url}: the server sent more than the pinned {size} bytes; the file was refused "
                            "and removed")
    if held < size:
        raise _Cut
    return held


def _range_start(response) -> int | None:
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    return str(reason) or type(reason).__name__


