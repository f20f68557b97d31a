"""glibc malloc tuning for a small board: few arenas, and frame-sized buffers returned to the OS when freed."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from pathlib import Path

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


MADV_DONTNEED = 4  # <sys/mman.h> on Linux


def release_mapped_file(path: Path) -> int:
    """Drop this process's resident pages of a read-only file mapping; returns the bytes of address space advised.

    TFLite maps a model file and XNNPACK packs its weights into buffers of its own while the interpreter is
    built, after which the mapped weights are never read again; their pages would otherwise stay resident
    (about 8 MB for the three face models). The mapping stays valid: a page touched again is read back
    from the page cache. Does nothing (returns 0) where /proc/self/maps or madvise is unavailable.
    """
    target = str(path.resolve())
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        madvise = libc.madvise
    except (OSError, AttributeError, TypeError):
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    released = 0
    for line in lines:
        fields = line.split(maxsplit=5)
        # only mappings nobody can have written to: shared or private, but without write permission
        if len(fields) < 6 or fields[5] != target or "w" in fields[1]:
            continue
        start, end = (int(v, 16) for v in fields[0].split("-"))
        if madvise(start, end - start, MADV_DONTNEED) == 0:
            released += end - start
    log.debug("released %d mapped bytes of %s", released, path.name)
    return released
