"""glibc malloc tuning for a small board: few arenas, and frame-sized buffers returned to the OS when freed."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

# mallopt() parameters from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


def tune_malloc(arena_max: int = 2, mmap_threshold: int = 128 * 1024) -> bool:
    """Limit per-thread arenas and pin the mmap threshold so freed frames do not linger in the heap.

    glibc raises its mmap threshold dynamically after large frees, after which every 900 KB frame lives in
    a heap arena and fragments it; each of our threads would also get its own arena. Returns False where
    this is not glibc (nothing is changed there).
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = all(
        mallopt(param, value) == 1
        for param, value in (
            (M_ARENA_MAX, arena_max),
            (M_MMAP_THRESHOLD, mmap_threshold),
            (M_TRIM_THRESHOLD, mmap_threshold),
        )
    )
    log.debug("malloc tuned: arenas<=%d, mmap threshold %d bytes (%s)", arena_max, mmap_threshold, ok)
    return ok
