"""The clip index's SQLite file: its schema and additions, and connections with the hold file attached."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from edge.diskfaults import connect_readonly
from edge.errors import StorageError
from edge.layout import StateLayout
from edge.permissions import private_file
from edge.recording.holds import schema
from edge.sqlitetx import immediate, is_corrupt

if TYPE_CHECKING:
    from edge.recording.holds import HoldStore

log = logging.getLogger(__name__)

HOLDS_AS = "h"  # the hold store's file, attached to every index connection under this name
_H = HOLDS_AS
UNREADABLE_HOLD = "unreadable-holds"  # the one hold attached in place of a hold file that cannot be read
_I64 = (-(2**63), 2**63 - 1)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS clips (
    id TEXT PRIMARY KEY,
    camera TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('recording', 'complete')),
    start_us INTEGER NOT NULL,
    end_us INTEGER NOT NULL,
    path TEXT NOT NULL,
    codec TEXT NOT NULL,
    sha256 TEXT,
    size INTEGER NOT NULL DEFAULT 0,
    frames INTEGER NOT NULL DEFAULT 0,
    truncated INTEGER NOT NULL DEFAULT 0,
    klass TEXT NOT NULL DEFAULT 'motion',
    created_us INTEGER NOT NULL,
    trusted INTEGER NOT NULL DEFAULT 1,
    age_from_us INTEGER
);
CREATE INDEX IF NOT EXISTS clips_by_time ON clips (camera, start_us);
CREATE TABLE IF NOT EXISTS clip_frames (
    clip_id TEXT NOT NULL REFERENCES clips (id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    ts_us INTEGER NOT NULL,
    PRIMARY KEY (clip_id, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS clip_events (
    clip_id TEXT NOT NULL REFERENCES clips (id) ON DELETE CASCADE,
    event_id TEXT NOT NULL,
    type TEXT NOT NULL,
    ts_us INTEGER NOT NULL,
    PRIMARY KEY (clip_id, event_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots (
    event_id TEXT PRIMARY KEY,
    clip_id TEXT NOT NULL REFERENCES clips (id) ON DELETE CASCADE,
    camera TEXT NOT NULL,
    ts_us INTEGER NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL
);
"""
# Holds live in their own file (edge.recording.holds); an index written before keeps its old hold tables,
# moved from and never read again.



class IndexFile:
    """Opens the index (creating or extending it) and hands out connections, one per call (SQLite WAL), each with
    the hold file attached as `h`; an unreadable index is noted in `problem`, not raised, so the daemon starts.

    A hold file that cannot be read (damaged, lost, or the old holds not moved into it yet) does not stop the
    clip index: in its place a connection gets one hold on every clip of every camera for ever (fail closed:
    nothing is deleted) and a note in hold_meta refusing new holds; the next connection tries the file again."""

    def __init__(self, path: Path, holds: HoldStore, state_dir: Path, readonly: bool,
                 now: Callable[[], datetime]) -> None:
        self.path = path
        self.holds = holds
        self.holds_path = holds.path
        self.state_dir = state_dir
        self.readonly = readonly
        self._now = now
        self.problem: str | None = None

    def open(self) -> None:
        """Create the index (or add what an older one lacks); an unreadable one is noted in index_problem."""
        try:
            private_file(self.path)  # 0600 before SQLite makes it (its -wal/-shm copy the mode)
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
                _migrate(db)
            finally:
                db.close()
        except sqlite3.DatabaseError as exc:
            if not is_corrupt(exc):
                raise StorageError(f"cannot open clip index {self.path}: {exc}") from exc
            self.problem = f"clip index {self.path} is unreadable: {exc}"
            log.error("%s; the recorder keeps it aside and rebuilds the index from the clip files", self.problem)

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        try:
            if self.readonly:
                db = connect_readonly(self.path)
            else:  # a URI connection: the hold file is attached by URI (mode=rw never creates it)
                db = sqlite3.connect(self.path.resolve().as_uri(), uri=True, timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open clip index {self.path}: {exc}") from exc
        try:
            self._attach_holds(db)
            if not self.readonly:
                db.execute("PRAGMA foreign_keys=ON")
                db.execute("PRAGMA synchronous=FULL")
                db.execute(f"PRAGMA {_H}.synchronous=FULL")
            yield db
        except sqlite3.Error as exc:
            holds_problem = self.holds.problem() if is_corrupt(exc) else None
            if holds_problem is not None:
                raise StorageError(f"{holds_problem} (the clip index {self.path.name} is not at fault; "
                                   "docs/recording.md, Legal holds)") from exc
            hint = " (the daemon moves an unreadable index aside at its next start)" if is_corrupt(exc) else ""
            raise StorageError(f"clip index {self.path}: {exc}{hint}") from exc
        finally:
            db.close()

    def _attach_holds(self, db: sqlite3.Connection) -> None:
        from edge.recording.holds_move import fill, lost_message

        path = self.holds_path
        if path.exists():
            try:
                self._attach_file(db, path)
                return
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    db.execute(f"DETACH DATABASE {_H}")
                problem = f"the hold store {path} cannot be read: {exc}"
        elif StateLayout.of(self.state_dir).holds_moved.exists():
            problem = lost_message(path)  # deleted under us: never attached (that would make it again, empty)
        elif self.readonly:  # a read-only state dir of an older version: its holds, read where that version kept them
            db.execute(f"ATTACH DATABASE ':memory:' AS {_H}")
            db.executescript(schema(_H))
            fill(db, _H, self.state_dir, self._now())
            return
        else:
            problem = (f"the legal holds are not moved into {path} yet: "
                       f"{self.holds.move_problem or 'the move is tried again at the next sweep'}")
        log.debug("%s: every clip counts as held on this connection", problem)
        db.execute(f"ATTACH DATABASE ':memory:' AS {_H}")
        db.executescript(schema(_H))
        db.execute(f"INSERT INTO {_H}.holds VALUES (?, 0, ?, ?, 'none', 1, ?, ?, NULL, NULL)",
                   (UNREADABLE_HOLD, _I64[1], "the hold store cannot be read", _I64[0], _I64[1]))
        db.execute(f"INSERT INTO {_H}.hold_meta VALUES ('unreadable', ?)", (problem,))

    def _attach_file(self, db: sqlite3.Connection, path: Path) -> None:
        uri = path.resolve().as_uri()
        if not self.readonly:
            db.execute(f"ATTACH DATABASE ? AS {_H}", (f"{uri}?mode=rw",))
        else:  # as connect_readonly: mode=ro, else immutable (a WAL file's -shm cannot be made)
            try:
                db.execute(f"ATTACH DATABASE ? AS {_H}", (f"{uri}?mode=ro",))
                db.execute(f"SELECT count(*) FROM {_H}.sqlite_master").fetchone()
            except sqlite3.OperationalError:
                with contextlib.suppress(sqlite3.OperationalError):
                    db.execute(f"DETACH DATABASE {_H}")
                db.execute(f"ATTACH DATABASE ? AS {_H}", (f"{uri}?immutable=1",))
        tables = {r[0] for r in db.execute(f"SELECT name FROM {_H}.sqlite_master WHERE type = 'table'")}
        if not {"holds", "hold_clips", "hold_cameras", "hold_meta"} <= tables:
            raise sqlite3.DatabaseError("it has no hold tables (replaced by an empty file?)")

    def unreadable_holds(self, db: sqlite3.Connection) -> str | None:
        """Why this connection's hold file could not be attached (its `h` is the fail-closed stand-in), or None."""
        row = db.execute(f"SELECT value FROM {_H}.hold_meta WHERE key = 'unreadable'").fetchone()
        return None if row is None else str(row[0])

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; BEGIN IMMEDIATE takes the write lock of the index and of the hold file, so a
        hold and a deletion never cross."""
        with self.connect() as db, immediate(db):
            yield db


def _migrate(db: sqlite3.Connection) -> None:
    """Columns added since the first index format; an old index file gains them (its clips count as trusted)."""
    have = {row[1] for row in db.execute("PRAGMA table_info(clips)")}
    if "trusted" not in have:
        db.execute("ALTER TABLE clips ADD COLUMN trusted INTEGER NOT NULL DEFAULT 1")
    if "age_from_us" not in have:
        db.execute("ALTER TABLE clips ADD COLUMN age_from_us INTEGER")
