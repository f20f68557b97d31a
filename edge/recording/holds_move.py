"""The one-time move of legal holds from where older versions kept them (the clip index and the request store)
into the hold store's own file."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
from datetime import datetime
from pathlib import Path

from edge import layout
from edge.clock import Clock, parse_rfc3339, rfc3339
from edge.crashpoints import crash_point
from edge.errors import StorageError
from edge.fsutil import fsync_dir
from edge.layout import StateLayout
from edge.permissions import private_file
from edge.recording.holds import schema
from edge.recording.rawstream import to_us

log = logging.getLogger(__name__)

MOVED_NAME = layout.HOLDS_MOVED  # edge.layout's name, kept for the tests that import it here
READ_TIMEOUT_S = 30.0  # how long reading an old store waits out another process's write lock


def lost_message(path: Path) -> str:
    """What the owner is told when the hold file is gone although the holds were moved into it."""
    return (f"the hold store {path} is gone although the holds were moved there ({layout.HOLDS_MOVED}): "
            "nothing is deleted until it is restored from a backup (docs/recording.md, Legal holds)")


def ensure_moved(state_dir: Path, clock: Clock) -> None:
    """Make sure <state_dir>/holds.sqlite3 exists, moving the old holds into it the first time. The new file is
    built under a temporary name, fsync'd and renamed (a SIGKILL leaves either no hold file, so the next open
    moves again from the untouched old tables, or the complete one), then marked moved. The old tables are left
    as they were (readable by the previous version; never read again once moved).

    StorageError when the move cannot be made now (an old store cannot be read: retried at the next call, no
    marker written) or when the hold file was lost after the move (never replaced by an empty one: that would
    lift every hold)."""
    paths = StateLayout.of(state_dir)
    path = paths.holds
    marker = paths.holds_moved  # written once the hold file is durable: from then on a missing hold file is a loss
    if path.exists():
        if not marker.exists():
            _mark(marker)
        return
    lock_path = private_file(paths.holds_lock)
    fd = os.open(lock_path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # two processes opening an old state dir at once: one moves, one waits
        if path.exists():
            return
        if marker.exists():
            raise StorageError(lost_message(path))
        _build(state_dir, path, clock.now())
        _mark(marker)
    except OSError as exc:
        raise StorageError(f"cannot create the hold store {path}: {exc}") from exc
    finally:
        os.close(fd)


def _build(state_dir: Path, path: Path, now: datetime) -> None:
    tmp = path.with_name(f"{path.name}.new")
    tmp.unlink(missing_ok=True)  # a build a crash interrupted: started again from the old tables
    private_file(tmp)
    try:
        db = sqlite3.connect(tmp, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=DELETE")  # one self-contained file to rename; WAL once in place
            db.executescript(schema("main"))
            db.execute("BEGIN IMMEDIATE")
            moved = fill(db, "main", state_dir, now)
            db.execute("INSERT INTO hold_meta VALUES ('created', ?)", (rfc3339(now),))
            db.execute("INSERT INTO hold_meta VALUES ('moved_holds', ?)", (str(moved),))
            db.execute("COMMIT")
        finally:
            db.close()
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        crash_point("holds-move:before-rename")
        os.replace(tmp, path)
        fsync_dir(path.parent)
        crash_point("holds-move:after-rename")
    except sqlite3.Error as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot build the hold store {path}: {exc}") from exc
    except BaseException:  # an old store that cannot be read now: no half-built file left; moved again later
        tmp.unlink(missing_ok=True)
        raise
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
    finally:
        db.close()
    log.info("%d legal hold(s) moved from the clip index and the request store into %s", moved, path)


def _mark(marker: Path) -> None:
    fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, f"holds live in {layout.HOLDS}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(marker.parent)


def fill(db: sqlite3.Connection, s: str, state_dir: Path, now: datetime) -> int:
    """Copy the holds an older version kept into the hold tables of schema `s` (inside the caller's transaction):
    the clip index's holds as they are, then the request store's holds the index did not have (lost with a
    rebuilt index, or a preservation hold that named no clip). Returns how many holds were copied."""
    count = 0
    paths = StateLayout.of(state_dir)
    for hold, clips, cams in _index_holds(paths.clip_index):
        db.execute(f"INSERT OR IGNORE INTO {s}.holds VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", hold)
        db.executemany(f"INSERT OR IGNORE INTO {s}.hold_clips VALUES (?, ?)", [(hold[0], c) for c in clips])
        db.executemany(f"INSERT OR IGNORE INTO {s}.hold_cameras VALUES (?, ?)", [(hold[0], c) for c in cams])
        count += 1
    # the request store kept its own copy of preservation holds
    for request, hold_id, until, clips_json, ended in _request_holds(paths.footage_requests):
        if db.execute(f"SELECT 1 FROM {s}.holds WHERE id = ?", (hold_id,)).fetchone() is not None:
            continue
        try:
            clip_ids = [str(c) for c in json.loads(clips_json)]
            until_us = to_us(parse_rfc3339(str(until)))
            ended_us = to_us(parse_rfc3339(str(ended))) if ended else None
        except (ValueError, TypeError) as exc:
            log.error("hold %s of request %s in the request store is unreadable (%s); not moved", hold_id, request, exc)
            continue
        # The request store's end of a hold: an expiry when `until` had passed, else the owner's release.
        expired = ended_us if ended_us is not None and until_us <= ended_us else None
        released = ended_us if ended_us is not None and expired is None else None
        db.execute(f"INSERT INTO {s}.holds VALUES (?, ?, ?, ?, ?, 1, NULL, NULL, ?, ?)",
                   (hold_id, to_us(now), until_us, "preservation request", str(request), released, expired))
        db.executemany(f"INSERT OR IGNORE INTO {s}.hold_clips VALUES (?, ?)", [(hold_id, c) for c in clip_ids])
        count += 1
    return count


def _index_holds(path: Path) -> list[tuple[tuple[object, ...], list[str], list[str]]]:
    """The holds an older clip index kept (none when it has no hold tables, or is corrupt: recovery rebuilds such
    an index, whose holds are lost as before the hold store; the request store's copies still come). Any other
    error (locked, I/O) is a StorageError: the move stops unmarked and is made again at the next open."""
    from edge.sqlitetx import is_corrupt

    if not path.exists():
        return []
    try:
        src = _read(path)
        try:
            if src.execute("SELECT 1 FROM sqlite_master WHERE name = 'holds'").fetchone() is None:
                return []
            holds = src.execute(
                "SELECT id, created_us, until_us, reason, reference, all_cameras, window_start_us, window_end_us, "
                "released_us, expired_us FROM holds ORDER BY created_us, id").fetchall()
            clips = src.execute("SELECT hold_id, clip_id FROM hold_clips ORDER BY clip_id").fetchall()
            cams = src.execute("SELECT hold_id, camera FROM hold_cameras ORDER BY camera").fetchall()
        finally:
            src.close()
    except sqlite3.Error as exc:
        if not is_corrupt(exc):
            raise StorageError(f"cannot read the holds in the clip index {path} to move them (tried again at "
                               f"the next start): {exc}") from exc
        log.error("the clip index %s is corrupt (%s): its own copy of the legal holds cannot be moved and is "
                  "lost; moving the request store's preservation holds only", path, exc)
        return []
    return [(tuple(h), [c for hid, c in clips if hid == h[0]], [c for hid, c in cams if hid == h[0]])
            for h in holds]


def _request_holds(path: Path) -> list[tuple[str, str, str, str, str | None]]:
    """(request, hold_id, until, clips JSON, expired_at) of the request store's old hold table."""
    if not path.exists():
        return []
    try:
        src = _read(path)
        try:
            columns = {row[1] for row in src.execute("PRAGMA table_info(holds)")}
            if not {"request", "hold_id", "until", "clips", "expired_at"} <= columns:
                return []
            return [tuple(r) for r in src.execute(  # type: ignore[misc]
                "SELECT request, hold_id, until, clips, expired_at FROM holds ORDER BY rowid")]
        finally:
            src.close()
    except sqlite3.Error as exc:
        raise StorageError(f"cannot read the preservation holds in {path} to move them (tried again at "
                           f"every sweep; nothing is deleted until then): {exc}") from exc


def _read(path: Path) -> sqlite3.Connection:
    """An old store opened for reading on a writable state dir: waits out a writer, never opens a stale
    (immutable) view as edge.diskfaults.connect_readonly may on a read-only mount."""
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=READ_TIMEOUT_S)
    try:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except BaseException:
        db.close()
        raise
    return db
