"""Keep a long-running node's heap bounded under big, short-lived buffers (camera frames, malformed messages).

What `carla-seg bench fuzz` showed (6,000 malformed messages of mixed sizes up to 1.9 MB, 2-core machine): seg_node's
RSS rises by 20-25 MB in the first few hundred messages and is then flat to the end (+0.5-0.9 % from there). The
rise is the node's DDS reader history filling its KEEP_LAST slots with the largest messages and glibc's per-thread
arenas (DDS receive threads, executor, inference thread) each keeping some freed frame buffers; it is not a leak.
An earlier +16 % "growth" over 40,000 messages was that warm-up measured from a node that had seen only 3 frames.

``bound_heap_growth`` caps glibc at 2 arenas (M_ARENA_MAX), which lowered the plateau by ~8 MB (381 -> 373 MB).
Fixing the mmap threshold as well (every frame buffer mmapped and returned on free) saved another ~9 MB but costs a
page-fault pass over every 1.9 MB frame in the executor thread, so it is off by default (``mmap_threshold``).
It must run before the process starts its threads (first thing in main); a no-op without glibc's mallopt.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


def bound_heap_growth(mmap_threshold: int | None = None, arena_max: int = 2) -> bool:
    """True if glibc took the settings (``mmap_threshold`` None: keep glibc's dynamic threshold)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(M_ARENA_MAX, arena_max) == 1
    if mmap_threshold is not None:
        ok &= mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1
        ok &= mallopt(M_TRIM_THRESHOLD, 2 * mmap_threshold) == 1
    return bool(ok)
