"""Disk faults: the space reserve kept for the event journal and audit log, and reading a read-only state dir."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from edge import layout
from edge.layout import StateLayout

log = logging.getLogger(__name__)

RESERVE_NAME = layout.SPACE_RESERVE  # edge.layout's name, kept for the tests that import it here
# Enough for thousands of events and audit records (a row is ~1 KiB, the journal's WAL reuses its pages
# once checkpointed), small next to any SD card; the recorder keeps it free as part of its own floor.
RESERVE_BYTES = 4 * 1024 * 1024

T = TypeVar("T")


class SpaceReserve:
    """A preallocated file in the state directory. When the disk is full, the journal or the audit log
    deletes it and retries, so the event that says "disk full" (and the ones after it) are still written.
    The recorder re-creates it once there is room again and never records into its space."""

    _lock = threading.Lock()

    def __init__(self, state_dir: Path, size: int = RESERVE_BYTES) -> None:
        self.path = StateLayout.of(state_dir).space_reserve
        self.size = size

    def present(self) -> bool:
        try:
            return self.path.stat().st_blocks * 512 >= self.size
        except OSError:
            return False

    def ensure(self) -> bool:
        """Create (or complete) the reserve; False when the disk has no room for it or is read-only."""
        with self._lock:
            if self.present():
                return True
            tmp = self.path.with_name(self.path.name + ".tmp")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    os.posix_fallocate(fd, 0, self.size)  # real blocks, not a sparse file
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, self.path)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    tmp.unlink(missing_ok=True)
                if exc.errno not in (errno.ENOSPC, errno.EROFS, errno.EDQUOT):
                    log.warning("cannot create the space reserve %s: %s", self.path, exc)
                return False
            log.info("space reserve %s: %d KiB kept for the event journal and the audit log", self.path,
                     self.size // 1024)
            return True

    def release(self, why: str) -> bool:
        """Delete the reserve to free its space; True when there was one to release."""
        with self._lock:
            try:
                self.path.unlink()
            except FileNotFoundError:
                return False
            except OSError as exc:
                log.error("cannot release the space reserve %s: %s", self.path, exc)
                return False
        log.error("disk full: released the %d KiB space reserve %s for %s", self.size // 1024, self.path, why)
        return True


def is_disk_full(exc: BaseException) -> bool:
    """True for ENOSPC/EDQUOT and SQLite's SQLITE_FULL."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code == sqlite3.SQLITE_FULL or "database or disk is full" in str(exc)
    return False


def with_reserve(reserve: SpaceReserve, why: str, step: Callable[[], T]) -> T:
    """Run `step`; on a full disk release the reserve and run it once more (its error then propagates)."""
    try:
        return step()
    except (OSError, sqlite3.Error) as exc:
        if not is_disk_full(exc) or not reserve.release(why):
            raise
    return step()


def is_read_only(path: Path) -> bool:
    """True when `path` is on a read-only mount (a root process can write to any writable mount)."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def connect_readonly(path: Path, timeout: float = 30.0) -> sqlite3.Connection:
    """Open a SQLite file for reading only, even on a read-only mount where a WAL database's -shm cannot
    be created: `mode=ro` first, then `immutable=1` (which cannot see changes still in an orphaned -wal,
    so that case is logged)."""
    uri = Path(path).resolve().as_uri()
    try:
        db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=timeout)
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return db
    except sqlite3.OperationalError:
        pass
    wal = Path(f"{path}-wal")
    if wal.exists() and wal.stat().st_size > 0:
        log.warning("%s is on a read-only disk with an unmerged write-ahead log: its newest changes are not shown",
                    path)
    return sqlite3.connect(f"{uri}?immutable=1", uri=True, timeout=timeout)
