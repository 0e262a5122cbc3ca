"""Shutdown on SIGINT/SIGTERM for the package's nodes: the signal only sets a flag, the main loop sees it within
0.1 s and the node shuts down in order (so a report or the last outputs are written, and no traceback appears)."""
from __future__ import annotations

import signal
import threading

from rclpy.executors import ExternalShutdownException


class ShutdownSignals:
    """SIGINT/SIGTERM handler that only records the signal: a second or third Ctrl-C (a terminal and `ros2
    launch` both signal the process group) can then never raise KeyboardInterrupt inside the shutdown path.

    After the first signal both are ignored: Python's finalisation resets handlers it installed to SIG_DFL (but
    leaves SIG_IGN alone), so a late Ctrl-C would otherwise kill the exiting process (exit code -2)."""

    def __init__(self):
        self.event = threading.Event()
        self.signal_name = ""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self)

    def __call__(self, signum, _frame) -> None:
        self.signal_name = self.signal_name or signal.Signals(signum).name
        self.event.set()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)


def spin_until_signal(executor, stop: ShutdownSignals) -> None:
    # Short spins so the main thread returns to Python often and the signal flag is seen within 0.1 s.
    try:
        while not stop.event.is_set() and executor.context.ok():
            executor.spin_once(timeout_sec=0.1)
    except ExternalShutdownException:
        pass


def ignore_late_signals() -> None:
    """Exiting now: a late Ctrl-C must not kill the process during Python's finalisation (see ShutdownSignals)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
