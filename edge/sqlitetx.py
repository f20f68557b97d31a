"""What every SQLite store here shares: the one write-transaction shape (BEGIN IMMEDIATE: the write lock taken at
once, so a check and the write it decides are one step; ROLLBACK on any error, COMMIT otherwise), how a damaged
file is recognised, and how it is moved aside for the owner (never deleted)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from edge.fsutil import fsync_dir


@contextlib.contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction on `db` (opened with isolation_level=None)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def is_corrupt(exc: BaseException) -> bool:
    """SQLite says the file is not a database or is malformed (not: busy, locked, read-only, a full disk)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return (code is not None and code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)) or (
        type(exc) is sqlite3.DatabaseError and ("not a database" in str(exc) or "malformed" in str(exc))
    )


def set_aside(path: Path, when: datetime, suffixes: tuple[str, ...] = ("", "-wal", "-shm")) -> Path | None:
    """Rename `path` and its companions (the given suffixes: "" is the database itself) to
    <name>.unreadable-<UTC time>[-n][suffix], a name no earlier one has; the directory is synced. Returns the new
    name of the database itself when it was there (OSError when a rename fails)."""
    stamp = when.strftime("%Y%m%dT%H%M%SZ")
    base = path.with_name(f"{path.name}.unreadable-{stamp}")
    n = 1
    while any(Path(f"{base}{s}").exists() for s in ("", "-journal", "-wal", "-shm")):
        n += 1
        base = path.with_name(f"{path.name}.unreadable-{stamp}-{n}")
    kept = None
    for suffix in suffixes:
        with contextlib.suppress(FileNotFoundError):
            os.replace(f"{path}{suffix}", f"{base}{suffix}")
            if suffix == "":
                kept = base
    fsync_dir(path.parent)
    return kept
