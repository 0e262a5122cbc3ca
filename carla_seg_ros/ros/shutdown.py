"""Shutdown on SIGINT/SIGTERM for the package's nodes: the signal only sets a flag, the main loop sees it within
0.1 s and the node shuts down in order (so a report or the last outputs are written, and no traceback appears)."""
from __future__ import annotations

import signal
import sys
import threading
from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions

from carla_seg_ros.ros.seg_params import StartupError


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
        ignore_late_signals()


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


def run_node(make_node: Callable, label: str, argv: list[str], on_signal: str = "shutting down") -> int:
    """Build the node, spin it until SIGINT/SIGTERM, then shut down in order; 2 when the node cannot start.

    rclpy's own signal handler is off: it would chain to Python's default one and raise KeyboardInterrupt anywhere,
    once per signal. ``node.close()`` runs first (it joins worker threads, writes reports), before anything ROS is
    torn down. After an external shutdown the context is gone and destroying entities may raise: there is nothing
    left to free then, so each step only says so briefly.
    """
    stop = ShutdownSignals()
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = make_node()
    except StartupError as exc:
        print(f"[{label}] startup failed: {exc}", file=sys.stderr, flush=True)
        rclpy.try_shutdown()
        return 2
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        spin_until_signal(executor, stop)
        if stop.signal_name:
            node.get_logger().info(f"{stop.signal_name}: {on_signal}")
    finally:
        for what, step in (("close", node.close), ("executor", lambda: executor.shutdown(timeout_sec=1.0)),
                           ("destroy", node.destroy_node)):
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - see the docstring
                print(f"[{label}] shutdown ({what}): {type(exc).__name__}: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        ignore_late_signals()
    return 0
