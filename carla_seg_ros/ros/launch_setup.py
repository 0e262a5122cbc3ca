"""What launch/seg.launch.py computes, as plain functions (no `launch` import) so tests call the same code.

Parameter precedence, the ROS convention: an explicitly given launch argument wins; otherwise the params file's
value; otherwise the launch default (``LAUNCH_DEFAULTS``, e.g. use_sim_time true next to the CARLA bridge);
otherwise the node's own default. A launch argument left at "" counts as not given.

Params file sections are matched like rcl does (``/**``, ``/**/seg_node``, ``/ns/seg_node``, ``*`` and ``**``
wildcards), except that a key without a leading ``/`` (``seg_node:``, seg.yaml's old style) is taken relative to the
launch namespace, so a file written for ``/seg_node`` keeps working under ``namespace:=/perception``. The merged
result goes to the node as one generated ``/**`` params file.

Generated files (params, RViz config) go to one per-user cache folder (``launch_cache_dir``) under names made from
a hash of their text: a launch with the same arguments overwrites its own files, one with other arguments writes
others beside them, and nothing piles up in the temp directory.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

import yaml

NODE_NAME = "seg_node"
LAUNCH_DEFAULTS = {"use_sim_time": True}          # when neither the params file nor a launch argument sets it
BOOL_ARGS = ("use_sim_time",)
OVERRIDABLE = ("backend", "model", "use_sim_time")  # launch arguments that map to node parameters
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
RVIZ_PACKAGE = "rviz2"


def rviz_missing_message(distro: str | None = None) -> str:
    """One line saying rviz2 is missing and how to get it, with the real distro's package name where it is known
    (``$ROS_DISTRO``, set by every ROS 2 setup script)."""
    distro = (os.environ.get("ROS_DISTRO", "") if distro is None else distro).strip()
    package = f"ros-{distro}-rviz2" if distro else "the rviz2 package of your ROS 2 distro (ros-<distro>-rviz2)"
    return f"rviz:=true, but the package rviz2 is not installed: install it (sudo apt install {package}) or " \
           f"launch with rviz:=false"


def parse_bool(name: str, text: str) -> bool:
    value = str(text).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"launch argument {name}:={text!r} is not a boolean (true/false)")


def full_name(namespace: str, node_name: str = NODE_NAME) -> str:
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    return f"{ns}/{node_name}"


def _key_regex(key: str, namespace: str) -> re.Pattern:
    if not key.startswith("/"):
        key = (full_name(namespace, "").rstrip("/") + "/" + key) if namespace.strip("/") else "/" + key
    parts = []
    for token in key.strip("/").split("/"):
        if token == "**":
            parts.append(r"(/[^/]+)*")
        elif token == "*":
            parts.append(r"/[^/]+")
        else:
            parts.append("/" + re.escape(token).replace(r"\*", "[^/]*"))
    return re.compile("".join(parts) or "/")


def file_parameters(params_file: str | Path, namespace: str = "", node_name: str = NODE_NAME) -> dict:
    """The parameters a params file gives this node (sections in file order, later ones win)."""
    path = Path(params_file)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ValueError(f"params_file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"params_file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"params_file {path}: expected `<node>: {{ros__parameters: {{...}}}}` sections")
    target = full_name(namespace, node_name)
    merged = {}
    for key, section in data.items():
        if isinstance(section, dict) and _key_regex(str(key), namespace).fullmatch(target):
            merged.update(section.get("ros__parameters") or {})
    return merged


def resolve_parameters(params_file: str | Path, launch_args: dict, namespace: str = "",
                       node_name: str = NODE_NAME) -> dict:
    """The node's parameters after the precedence rule; ``launch_args`` maps OVERRIDABLE names to their text."""
    params = {k: v for k, v in LAUNCH_DEFAULTS.items()}
    params.update(file_parameters(params_file, namespace, node_name))
    for name in OVERRIDABLE:
        text = str(launch_args.get(name, "") or "").strip()
        if text:
            params[name] = parse_bool(name, text) if name in BOOL_ARGS else text
    return params


def camera_topics(cameras: str, role_name: str) -> list[tuple[str, str]]:
    """``cameras:=rgb_front,rgb_left`` (or ``[rgb_front, rgb_left]``) -> [(camera, /carla/<role>/<camera>/image)].

    An entry starting with ``/`` is a full topic, named after its camera segment as the node names it.
    """
    out = []
    for entry in (c.strip().strip("'\"") for c in str(cameras).strip().strip("[]").split(",")):
        if entry.startswith("/"):
            parts = [p for p in entry.split("/") if p]
            out.append((parts[-2] if len(parts) >= 2 and parts[-1] == "image" else parts[-1], entry))
        elif entry:
            out.append((entry, f"/carla/{role_name}/{entry}/image"))
    return out


def require_rviz(get_package_prefix=None) -> None:
    """Raise RuntimeError(rviz_missing_message()) when the ament index has no rviz2 package.

    Called before the launch file returns any action: launch_ros looks rviz2 up only when it starts it, after
    seg_node is running, and that failure left seg_node behind without a parent. ``get_package_prefix`` is
    ament_index_python's (the lookup launch_ros does) unless one is given.
    """
    if get_package_prefix is None:
        from ament_index_python.packages import get_package_prefix
    try:
        get_package_prefix(RVIZ_PACKAGE)
    except LookupError:                   # ament_index_python's PackageNotFoundError is a KeyError
        raise RuntimeError(rviz_missing_message()) from None


def launch_cache_dir() -> Path:
    """$XDG_CACHE_HOME/carla_seg_ros/launch (default ~/.cache/...): one folder per user for generated files."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(base) if os.path.isabs(base) else Path.home() / ".cache") / "carla_seg_ros" / "launch"


def _write_generated(text: str, name: str, directory: str | Path | None) -> Path:
    """``text`` as ``directory/name``; without a directory, in launch_cache_dir() as ``<stem>-<hash><suffix>``
    (the same text: the same file, rewritten; other text: another file, so concurrent launches never clobber each
    other). Written to a temporary name and renamed, so a node never reads a half-written file."""
    if directory:
        out_dir, path_name = Path(directory), name
    else:
        stem, suffix = os.path.splitext(name)
        path_name = f"{stem}-{hashlib.sha256(text.encode()).hexdigest()[:16]}{suffix}"
        out_dir = launch_cache_dir()      # (ros2 launch itself needs a writable home, for ~/.ros/log)
        out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / path_name
    handle, scratch = tempfile.mkstemp(prefix=f".{path_name}.", suffix=".tmp", dir=out_dir)
    with os.fdopen(handle, "w") as out:
        out.write(text)
    os.replace(scratch, path)
    return path


def write_params_file(params: dict, directory: str | Path | None = None, node_name: str = NODE_NAME) -> Path:
    """One ``/**`` section (applies under any namespace); the file the node is started with. Every node of the
    package's launch files gets its parameters this way: a plain dict handed to launch_ros becomes a
    /tmp/launch_params_* file that nothing ever deletes."""
    text = yaml.safe_dump({"/**": {"ros__parameters": params}}, sort_keys=False)
    return _write_generated(text, f"{node_name}_params.yaml", directory)


def rviz_config(template: str, cameras: list[tuple[str, str]], node_ns: str) -> str:
    """config/seg.rviz with its displays (Camera, Segmentation overlay, Colour mask, and the Occupancy map)
    rebuilt for each (camera name, camera topic); ``node_ns`` is the node's full name, e.g. /perception/seg_node.
    A camera name "" means the single-camera outputs (``<node>/overlay``). The fixed frame is the vehicle of a
    bridge topic (/carla/<role>/...), the grids' frame."""
    config = yaml.safe_load(template)
    manager = config["Visualization Manager"]
    by_name = {d["Name"]: d for d in manager["Displays"]}
    sources = (("Camera", None), ("Segmentation overlay", "overlay"), ("Colour mask", "mask_color"),
               ("Occupancy", "occupancy"))
    displays, geometry = [], {k: v for k, v in config.get("Window Geometry", {}).items() if k not in by_name}
    for camera, topic in cameras:
        for title, output in sources:
            display = yaml.safe_load(yaml.safe_dump(by_name[title]))        # a deep copy
            display["Name"] = f"{title} {camera}" if camera else title
            prefix = f"{node_ns}/{camera}" if camera else node_ns
            display["Topic"]["Value"] = topic if output is None else f"{prefix}/{output}"
            # seg_node publishes whole grids only; a stale "Update Topic" would override rviz2's own
            # <topic>_updates default, so the key is left out.
            display.pop("Update Topic", None)
            displays.append(display)
            geometry[display["Name"]] = {"collapsed": False}
    manager["Displays"] = displays
    # rviz2 reads both keys unconditionally (visualization_frame.cpp loadWindowGeometry): missing, it passes an
    # uninitialised bool to hideLeftDock / hideRightDock.
    geometry.setdefault("Hide Left Dock", False)
    geometry.setdefault("Hide Right Dock", False)
    config["Window Geometry"] = geometry
    roles = {parts[1] for _, topic in cameras if len(parts := [p for p in topic.split("/") if p]) > 2
             and parts[0] == "carla"}
    if len(roles) == 1:
        manager["Global Options"]["Fixed Frame"] = roles.pop()
    return "# Generated by seg.launch.py from config/seg.rviz\n" + yaml.safe_dump(config, sort_keys=False)


def write_rviz_config(template_path: str | Path, cameras: list[tuple[str, str]], node_ns: str,
                      directory: str | Path | None = None) -> Path:
    return _write_generated(rviz_config(Path(template_path).read_text(), cameras, node_ns), "seg.rviz", directory)
