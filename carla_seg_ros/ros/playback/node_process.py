"""A ROS 2 node under test, in its own process, that is always stopped (and dies with its parent)."""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

READY_TIMEOUT_S = 120.0     # PyTorch import + weights on a busy 2-core machine can take a minute


class NodeFailed(RuntimeError):
    """The node under test exited, or never became ready; the message carries the tail of its log."""


def ros_param(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def node_argv(module: str, node_name: str, params: dict | None = None, remaps: dict | None = None) -> list[str]:
    """`python -m MODULE --ros-args -r __node:=NAME -p k:=v ... -r from:=to ...` with this interpreter."""
    argv = [sys.executable, "-m", module, "--ros-args", "-r", f"__node:={node_name}"]
    for key, value in (params or {}).items():
        argv += ["-p", f"{key}:={ros_param(value)}"]
    for src, dst in (remaps or {}).items():
        argv += ["-r", f"{src}:={dst}"]
    return argv


try:   # loaded here, in the parent: the child must not dlopen between fork and exec (other threads may hold locks)
    _LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
except OSError:
    _LIBC = None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child before exec: if this process is killed outright, the node gets SIGTERM instead of lingering.
    _LIBC.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


class NodeProcess:
    """A ROS 2 node in its own process that is always stopped: SIGINT (clean rclpy shutdown), then SIGTERM, SIGKILL.

    Use as a context manager; its stdout/stderr go to ``log_path`` (or a temporary file) for error messages.
    """

    def __init__(self, label: str, argv: list[str], log_path: Path | None = None, env: dict | None = None):
        self.label = label
        self.argv = argv
        self.log_path = Path(log_path) if log_path else None
        self.env = env
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self) -> "NodeProcess":
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "w+b")
        else:
            self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=self.env, preexec_fn=_die_with_parent if _LIBC is not None else None)
        return self

    def __enter__(self) -> "NodeProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check(self) -> None:
        """Raise NodeFailed if the node has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise NodeFailed(f"{self.label} exited with code {self.proc.returncode}:\n{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        if self._log is None or self._log.closed:
            return ""
        self._log.flush()
        self._log.seek(0, os.SEEK_END)
        size = self._log.tell()
        self._log.seek(max(0, size - chars))
        return self._log.read().decode("utf-8", "replace")

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            if self.proc.poll() is not None:
                break
            try:
                self.proc.send_signal(sig)
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
            except ProcessLookupError:
                break
        return self.proc.poll()

    def close(self) -> None:
        self.stop()
        if self._log is not None and not self._log.closed:
            self._log.close()
