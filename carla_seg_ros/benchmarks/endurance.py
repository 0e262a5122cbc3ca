"""Shared by `carla-seg bench soak` and `bench fuzz`: seg_node in its own process, its memory, its diagnostics."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from carla_seg_ros.ros.playback.dds import DDS_CONFIGS, DEFAULT_DDS_CONFIG, apply_in_this_process, dds_env

NODE_NAME = "seg_node"


def memory_mb(pid: int) -> dict:
    """VmRSS and its parts (RssAnon: heap; RssFile: libraries; RssShmem: mapped DDS shared-memory segments) in MB
    from /proc/PID/status; empty where there is no /proc."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(value.split()[0]) / 1024.0
    except OSError:
        return {}
    return out


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes so far (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])      # utime, stime (fields 14 and 15 of stat)
    return total / tick


def host_cpu_ticks() -> tuple[int, int] | None:
    """(all, steal) CPU ticks of the whole machine so far, from the first line of /proc/stat; None without it.

    Steal is time the hypervisor gave this VM's CPUs to someone else: a benchmark that slows down while steal
    rises was slowed from outside, not by the code under test.
    """
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return sum(fields[:8]), fields[7] if len(fields) > 7 else 0     # user..steal; guest is inside user already


def steal_fraction(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """Share of the machine's CPU time stolen by the hypervisor between two host_cpu_ticks() readings."""
    if before is None or after is None or after[0] <= before[0]:
        return None
    return (after[1] - before[1]) / (after[0] - before[0])


def rss_mb(pid: int) -> float | None:
    """Resident set size of a process in MB (VmRSS of /proc/PID/status); None where there is no /proc."""
    return memory_mb(pid).get("VmRSS")


def note_memory(report: dict, pid: int, when: str) -> None:
    """``rss_<when>_mb`` and its parts ``memory_<when>_mb`` in the report, from one read of /proc/PID/status."""
    parts = memory_mb(pid)
    report[f"rss_{when}_mb"] = parts.get("VmRSS")
    report[f"memory_{when}_mb"] = parts


def note_end_of_run(report: dict, proc, player, diagnostics, node: str = NODE_NAME) -> None:
    """After the last frame: the node must still be up; its memory and its last diagnostics go in the report."""
    proc.check()
    note_memory(report, proc.proc.pid, "end")
    report["node_diagnostics"] = node_diagnostics(player, diagnostics) if node == NODE_NAME else {}


def add_node_options(parser) -> None:
    parser.add_argument("--backend", default="auto", help="seg_node backend (default: auto)")
    parser.add_argument("--model", type=Path, default=None,
                        help="model_path for seg_node (default: the node's own per-backend choice)")
    parser.add_argument("--publisher-dds", choices=DDS_CONFIGS, default="default",
                        help="Fast DDS configuration of the publishing process (default: default)")
    parser.add_argument("--node-dds", choices=DDS_CONFIGS, default=DEFAULT_DDS_CONFIG,
                        help=f"Fast DDS configuration of seg_node (default: {DEFAULT_DDS_CONFIG})")
    parser.add_argument("--ready-timeout", type=float, default=120.0, help="seconds seg_node may take to answer")
    parser.add_argument("--log", type=Path, default=None, help="keep seg_node's console log here")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")


NODE_MODULES = {"seg_node": "carla_seg_ros.ros.seg_node", "echo_node": "carla_seg_ros.ros.echo_node"}


def start(args, extra_params: dict | None = None, node: str = NODE_NAME):
    """(player, node process, mask stream, diagnostics) with the configurations of ``args``; the caller closes.

    ``node`` is seg_node, or echo_node for the transport alone (same subscription, a mono8 copy back, no model).
    """
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    from carla_seg_ros.ros.playback import CAMERA_TOPIC, NodeProcess, Player, node_argv

    apply_in_this_process(args.publisher_dds)        # before this process's first participant
    player = Player(name="endurance_player")
    masks = player.watch(f"/{node}/mask", Image)
    diagnostics = player.watch_latest("/diagnostics", DiagnosticArray)
    params = {}
    if node == NODE_NAME:
        params = {"backend": args.backend, **(extra_params or {})}
        if args.model is not None:
            params["model"] = str(Path(args.model).resolve())
    proc = NodeProcess(node, node_argv(NODE_MODULES[node], node, params, {"image": CAMERA_TOPIC}),
                       log_path=args.log, env=dds_env(args.node_dds, dict(os.environ, PYTHONUNBUFFERED="1")))
    return player, proc, masks, diagnostics


@contextmanager
def node_run(report: dict, proc, player):
    """The body of a soak or fuzz run: a NodeFailed raised in it becomes ``report["error"]``; whatever happens,
    ``report["alive_at_end"]`` says whether the node was still up, then the node and the player are closed."""
    from carla_seg_ros.ros.playback import NodeFailed
    try:
        yield
    except NodeFailed as exc:
        report["error"] = str(exc)
    finally:
        report["alive_at_end"] = proc.alive
        proc.close()
        player.close()


def node_diagnostics(player, diagnostics, timeout: float = 3.0) -> dict:
    """The node's newest /diagnostics values (strings), after waiting for a fresh one."""
    from carla_seg_ros.ros.playback import diagnostics_of
    player.wait_latest(diagnostics, timeout=timeout, newer_than=diagnostics.count)
    status = diagnostics_of(diagnostics.message, NODE_NAME)
    return (status or {}).get("values", {})


def growth(before: float | None, after: float | None) -> float | None:
    """Relative growth (0.05 = +5 %), None without both figures."""
    if not before or after is None:
        return None
    return (after - before) / before


def write_json(path: Path | None, report: dict) -> None:
    if path is None:
        return
    import json
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"figures written to {path}")


def memory_line(r: dict) -> str:
    """'VmRSS a -> b MB, RssAnon ..., RssShmem ...' from a report's memory_warm_mb / memory_end_mb."""
    warm, end = r.get("memory_warm_mb") or {}, r.get("memory_end_mb") or {}
    parts = []
    for key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
        if key in warm and key in end:
            parts.append(f"{key} {warm[key]:.1f} -> {end[key]:.1f} MB ({end[key] - warm[key]:+.1f})")
    return "; ".join(parts)
