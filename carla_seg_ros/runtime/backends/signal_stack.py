"""A permanent alternate signal stack for each thread that compiles OpenVINO models.

Why: OpenVINO's CPU plugin (``ov::intel_cpu::SigAltStackSetup``, Linux) gives every compiled model its own alternate
signal stack: at creation it saves the thread's current one and installs its own; when the model is destroyed it
re-installs the saved one and unmaps its own. That is only correct when models die in the reverse order of their
creation. The model ladder times two rungs and keeps the second (``auto`` choosing the fast rung); the shape cache
evicts its oldest width. Out of order, the destructor re-installs a stack that has already been unmapped, and the next
signal handled on that thread (Ctrl-C / SIGINT: CPython installs its handlers with SA_ONSTACK) kills the process
with SIGSEGV before Python sees it (measured: a managed seg_node that configured twice, then got SIGINT).

The fix: before each compile, install a stack of our own that lives as long as the process. Every compiled model then
saves ours, every destructor re-installs ours, in any order. It is larger than the plugin's (64 KiB against
AT_MINSIGSTKSZ + SIGSTKSZ), so a signal frame with AMX state still fits, which is why the plugin sets one at all.
"""
from __future__ import annotations

import ctypes
import os
import sys
import threading

STACK_BYTES = 64 * 1024
SS_DISABLE = 2        # <signal.h>, Linux

_stacks: dict[int, ctypes.Array] = {}       # native thread id -> its buffer, never freed (threads may share it later)
_lock = threading.Lock()


class _StackT(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def current_signal_stack() -> tuple[int, int, bool]:
    """The calling thread's alternate signal stack: (address, size, enabled); (0, 0, False) where not Linux."""
    if not sys.platform.startswith("linux"):
        return 0, 0, False
    now = _StackT()
    if _libc().sigaltstack(None, ctypes.byref(now)) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return int(now.ss_sp or 0), int(now.ss_size), not now.ss_flags & SS_DISABLE


def install_permanent_signal_stack() -> None:
    """Make the calling thread's alternate signal stack one that is never freed (call before compiling a model).

    Linux only; a no-op elsewhere. Errors are ignored: without it the process still runs, as before."""
    if not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    with _lock:
        buffer = _stacks.get(tid)
        if buffer is None:
            buffer = _stacks[tid] = ctypes.create_string_buffer(STACK_BYTES)
    stack = _StackT(ctypes.cast(buffer, ctypes.c_void_p), 0, STACK_BYTES)
    try:
        _libc().sigaltstack(ctypes.byref(stack), None)     # a non-zero return (e.g. EPERM) is ignored too
    except (AttributeError, OSError):       # no libc or no such symbol: nothing to protect against
        pass
