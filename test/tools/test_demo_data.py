"""The demo's frames: the lookup order, and the pinned fetch against a real HTTP server on 127.0.0.1.

The server serves real frames of ../shared/data/carla_seg at the origin's paths, under a manifest of their own
hashes (the shared copies are re-encoded, so their bytes differ from the origin's); it can cut a transfer part-way,
ignore Range requests, or serve corrupt bytes. Nothing here reaches the internet.
"""
from __future__ import annotations

import csv
import hashlib
import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from carla_seg_ros.datasets import find_pairs, read_label, HoodRule
from carla_seg_ros.tools import demo, demo_data
from carla_seg_ros.tools.demo_data import DemoFrames, DownloadError

REPO = Path(__file__).resolve().parents[2]
FRAMES = ("0461", "0462", "0499")        # in the committed manifest and in ../shared's fullres split


class Origin(BaseHTTPRequestHandler):
    """GET of files under ``root``, with the faults a test asks for (set on a subclass per server)."""

    root: Path
    honour_range = True
    cut_after: dict[str, int] = {}       # path -> bytes sent before the connection is closed (first request only)
    corrupt: set[str] = set()            # paths served with one byte flipped
    requests: list[tuple[str, str | None]]

    def do_GET(self):  # noqa: N802 - http.server's name
        path = self.path.lstrip("/")
        self.requests.append((path, self.headers.get("Range")))
        file = self.root / path
        if not file.is_file():
            self.send_error(404, "Not Found")
            return
        body = bytearray(file.read_bytes())
        if path in self.corrupt:
            body[len(body) // 2] ^= 0xFF
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and self.honour_range:
            start = int(match.group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        cut = self.cut_after.pop(path, None)
        self.wfile.write(bytes(body[start:start + cut] if cut is not None else body[start:]))
        self.close_connection = True

    def log_message(self, *_args):
        pass


@pytest.fixture()
def origin(data_dir, tmp_path):
    """(server factory, manifest): real shared frames laid out as the origin repository lays them out."""
    root = tmp_path / "origin"
    files = []
    for number in FRAMES:
        for kind, sub in (("CameraRGB", "rgb"), ("CameraSeg", "label")):
            source = Path(data_dir) / "fullres" / sub / f"pohsu_stream1_000_{number}.png"
            if not source.is_file():
                pytest.skip(f"{source} not found (../shared/data/carla_seg with its fullres split is needed)")
            path = f"images/stream1/{kind}/000_{number}.png"
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            data = source.read_bytes()
            (root / path).write_bytes(data)
            files.append({"path": path, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
    manifest = tmp_path / "demo_frames.json"
    manifest.write_text(json.dumps({"repository": "https://example.invalid/origin", "commit": "0" * 40,
                                    "base_url": "http://127.0.0.1:9/unused/", "files": files}))
    servers = []

    def serve(**faults):
        handler = type("Faulty", (Origin,), {"root": root, "requests": [], "cut_after": {}, "corrupt": set(),
                                             **faults})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/", handler

    yield serve, DemoFrames.load(manifest)
    for server in servers:
        server.shutdown()
        server.server_close()


def dead_url() -> str:
    """A port on 127.0.0.1 with nothing listening (bound, read, released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}/"


def fetch(frames, cache, url, **kw):
    return demo_data.locate(None, env={}, shared=None, cache=cache, frames=frames, base_url=url, say=lambda _m: None,
                            progress=False, **kw)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_good_files_arrive_verified_and_the_demo_can_read_them(origin, tmp_path):
    serve, frames = origin
    url, handler = serve()
    cache = tmp_path / "cache"
    assert fetch(frames, cache, url) == cache
    for remote in frames.files:
        assert sha256(cache / remote.path) == remote.sha256
    assert not list(cache.rglob("*.part"))
    pairs = find_pairs(cache, "all")
    assert [p.name for p in pairs] == [f"stream1_000_{n}" for n in FRAMES]
    assert read_label(pairs[0], HoodRule()).shape == (600, 800)
    served = len(handler.requests)
    assert served == len(frames.files)
    assert fetch(frames, cache, url) == cache           # in place: nothing fetched again
    assert len(handler.requests) == served


def test_a_corrupt_file_is_refused_and_removed(origin, tmp_path):
    serve, frames = origin
    bad = frames.files[2].path
    url, _ = serve(corrupt={bad})
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="sha256 .* is not the pinned .*refused and removed") as err:
        fetch(frames, cache, url)
    assert url + bad in str(err.value)
    assert not (cache / bad).exists() and not (cache / (bad + ".part")).exists()
    assert (cache / frames.files[0].path).is_file()     # the good ones before it stay
    assert not demo_data.is_complete(frames, cache)


def test_a_missing_file_is_a_clear_404(origin, tmp_path):
    serve, frames = origin
    url, _ = serve()
    missing = demo_data.RemoteFile("images/stream1/CameraRGB/000_9999.png", "0" * 64, 10)
    frames = DemoFrames(frames.repository, frames.commit, frames.base_url, (missing,))
    with pytest.raises(DownloadError) as err:
        fetch(frames, tmp_path / "cache", url)
    assert str(err.value) == f"{url}{missing.path}: HTTP 404 Not Found"


@pytest.mark.parametrize("honour_range", [True, False], ids=["resumed", "restarted"])
def test_an_interrupted_transfer_ends_with_the_right_file(origin, tmp_path, honour_range):
    serve, frames = origin
    target = frames.files[0]
    cut = target.size // 3
    url, handler = serve(honour_range=honour_range, cut_after={target.path: cut})
    cache = tmp_path / "cache"
    fetch(frames, cache, url)
    assert sha256(cache / target.path) == target.sha256
    asked = [rng for path, rng in handler.requests if path == target.path]
    assert asked == [None, f"bytes={cut}-"]             # cut once, then asked for the rest
    assert len(handler.requests) == len(frames.files) + 1


def test_a_part_file_left_by_an_earlier_run_is_resumed(origin, tmp_path):
    serve, frames = origin
    target = frames.files[0]
    url, handler = serve()
    cache = tmp_path / "cache"
    part = cache / (target.path + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes((Path(handler.root) / target.path).read_bytes()[:1000])
    fetch(frames, cache, url)
    assert sha256(cache / target.path) == target.sha256 and not part.exists()
    assert [rng for path, rng in handler.requests if path == target.path] == ["bytes=1000-"]


def test_offline_is_one_line_naming_the_url(origin, tmp_path):
    _, frames = origin
    url = dead_url()
    with pytest.raises(DownloadError) as err:
        fetch(frames, tmp_path / "cache", url)
    message = str(err.value)
    assert message.startswith(f"cannot reach {url}{frames.files[0].path} (") and "\n" not in message


def test_the_demo_command_offline_ends_with_one_line_and_no_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("CARLA_SEG_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv(demo_data.BASE_URL_ENV, dead_url())
    monkeypatch.setattr(demo_data, "shared_data_dir", lambda: None)   # a fresh clone: nothing beside it
    assert demo.main(["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1].split("\r")[-1].strip()     # after the progress bar's own line
    assert re.fullmatch(r"carla-seg demo: cannot reach http://127\.0\.0\.1:\d+/images/stream1/CameraRGB/000_0460\.png "
                        r"\(.+\); pass a dataset with --data DIR \(`make demo DATA=DIR`\) or set CARLA_SEG_DATA", last)
    assert not (tmp_path / "out").exists()


def test_lookup_order_data_then_env_then_shared_then_cache(origin, tmp_path):
    serve, frames = origin
    url, handler = serve()
    cache = tmp_path / "cache"
    fetch(frames, cache, url)                           # a complete cache
    shared, empty = tmp_path / "shared", tmp_path / "empty"
    (shared / "fullres" / "rgb").mkdir(parents=True)
    (shared / "fullres" / "label").mkdir(parents=True)
    empty.mkdir()
    for remote in frames.files[:2]:                     # one prepared-layout pair
        sub = "rgb" if "CameraRGB" in remote.path else "label"
        (shared / "fullres" / sub / "a.png").write_bytes((cache / remote.path).read_bytes())
    offline = dead_url()                                # any fetch below would fail loudly

    def where(data=None, env=None, shared_dir=None):
        return demo_data.locate(data, env=env or {}, shared=shared_dir, cache=cache, frames=frames,
                                base_url=offline, say=lambda _m: None, progress=False)

    assert where(data=tmp_path / "given", env={"CARLA_SEG_DATA": str(empty)}, shared_dir=shared) == tmp_path / "given"
    assert where(env={"CARLA_SEG_DATA": str(empty)}, shared_dir=shared) == empty   # as given: a wrong one errs later
    assert where(shared_dir=shared) == shared
    assert where(shared_dir=empty) == cache             # ../shared without frames does not count
    assert where() == cache
    served = len(handler.requests)
    (cache / frames.files[-1].path).unlink()            # an incomplete cache is completed, and only that file
    assert demo_data.locate(None, env={demo_data.BASE_URL_ENV: url}, shared=None, cache=cache, frames=frames,
                            say=lambda _m: None, progress=False) == cache
    assert [p for p, _ in handler.requests[served:]] == [frames.files[-1].path]


def test_cache_follows_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert demo_data.demo_cache_dir() == tmp_path / "carla_seg_ros" / "demo"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")       # the XDG spec: only absolute paths count
    assert demo_data.demo_cache_dir() == Path.home() / ".cache" / "carla_seg_ros" / "demo"


def test_the_committed_manifest_lists_40_pairs_at_the_pinned_commit():
    frames = DemoFrames.load()
    assert frames.base_url == f"https://raw.githubusercontent.com/pohsu/Lyft-Challenge/{frames.commit}/"
    assert frames.commit == "c2824c17d480339ff1ae315e4165bd277e06d444"
    rgb = [f for f in frames.files if "/CameraRGB/" in f.path]
    seg = {f.path for f in frames.files if "/CameraSeg/" in f.path}
    assert len(rgb) == 40 and len(frames.files) == 80
    assert seg == {f.path.replace("/CameraRGB/", "/CameraSeg/") for f in rgb}
    assert all(re.fullmatch(r"[0-9a-f]{64}", f.sha256) and f.size > 0 for f in frames.files)


def test_the_committed_rgb_hashes_are_the_origin_hashes_the_data_readme_recorded(data_dir):
    """../shared's manifest.csv holds the sha256 of each origin RGB git blob (the shared copies are re-encoded, so
    their own bytes differ); the labels' pins come from the same blobs and have no second record to check against."""
    rgb = [f for f in DemoFrames.load().files if "/CameraRGB/" in f.path]
    recorded = Path(data_dir) / "manifest.csv"
    if not recorded.is_file():
        pytest.skip(f"{recorded} not found")
    with open(recorded, newline="") as handle:
        origin_sha = {row["source_path"]: row["sha256_original_rgb"] for row in csv.DictReader(handle)
                      if row["source_repo"] == "pohsu/Lyft-Challenge"}
    assert {f.path: f.sha256 for f in rgb} == {f.path: origin_sha[f.path] for f in rgb}
