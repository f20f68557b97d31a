"""Legal holds: their own SQLite file beside the clip index (<state_dir>/holds.sqlite3) and their one expiry sweep."""

from __future__ import annotations

import builtins
import contextlib
import logging
import secrets
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from edge import layout
from edge.clock import Clock, SystemClock, rfc3339
from edge.diskfaults import connect_readonly, is_read_only
from edge.errors import StorageError
from edge.layout import StateLayout
from edge.recording.rawstream import from_us, to_us
from edge.sqlitetx import immediate

if TYPE_CHECKING:
    from edge.recording.refs import TimeGuard

log = logging.getLogger(__name__)

HOLDS_NAME = layout.HOLDS  # edge.layout's name, kept for the code and tests that import it here
EMPTY_PREFIX = "none-"  # a preservation hold whose request named no clip: it holds nothing but keeps its time

SCHEMA = """
CREATE TABLE IF NOT EXISTS {s}.holds (
    id TEXT PRIMARY KEY,
    created_us INTEGER NOT NULL,
    until_us INTEGER NOT NULL,
    reason TEXT NOT NULL,
    reference TEXT NOT NULL,
    all_cameras INTEGER NOT NULL,
    window_start_us INTEGER,
    window_end_us INTEGER,
    released_us INTEGER,
    expired_us INTEGER
);
-- No foreign key to clips (another file): a hold's history outlives the clips it once covered.
CREATE TABLE IF NOT EXISTS {s}.hold_clips (hold_id TEXT NOT NULL, clip_id TEXT NOT NULL,
                                           PRIMARY KEY (hold_id, clip_id));
CREATE INDEX IF NOT EXISTS {s}.hold_clips_by_clip ON hold_clips (clip_id);
CREATE TABLE IF NOT EXISTS {s}.hold_cameras (hold_id TEXT NOT NULL, camera TEXT NOT NULL,
                                             PRIMARY KEY (hold_id, camera));
CREATE TABLE IF NOT EXISTS {s}.hold_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_COLUMNS = ("id, created_us, until_us, reason, reference, all_cameras, window_start_us, window_end_us, released_us, "
            "expired_us")


def schema(name: str) -> str:
    """The hold tables, created in the attached database `name` ("main" for the hold file itself)."""
    return SCHEMA.format(s=name)


def held_sql(s: str) -> str:
    """SQL true while an unreleased hold with a future `until` (`:now`) names clip `c` or has a window it overlaps
    (on its camera); the hold tables are in schema `s`. Computed at query time, so a window hold also covers clips
    recorded after it was made."""
    return f"""(
    EXISTS (SELECT 1 FROM {s}.hold_clips hc JOIN {s}.holds h ON h.id = hc.hold_id
            WHERE hc.clip_id = c.id AND h.released_us IS NULL AND h.until_us > :now)
    OR EXISTS (SELECT 1 FROM {s}.holds h
               WHERE h.window_start_us IS NOT NULL AND h.released_us IS NULL AND h.until_us > :now
                 AND c.start_us < h.window_end_us AND c.end_us > h.window_start_us
                 AND (h.all_cameras = 1 OR EXISTS (SELECT 1 FROM {s}.hold_cameras x
                                                   WHERE x.hold_id = h.id AND x.camera = c.camera)))
)"""


class UnknownHold(StorageError, KeyError):
    """No hold has this id."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown hold"


@dataclass(frozen=True)
class Hold:
    """A legal hold: explicit clips and/or a time window (on some cameras, or all), kept until `until`."""

    id: str
    created: datetime
    until: datetime
    reason: str
    reference: str
    clip_ids: tuple[str, ...]
    cameras: tuple[str, ...] | None  # None: every camera (window holds only)
    window: tuple[datetime, datetime] | None
    released: datetime | None
    expired: datetime | None
    active: bool


def check_hold(
    now: datetime,
    *,
    clip_ids: Iterable[str] | None,
    cameras: Iterable[str] | None,
    window: tuple[datetime, datetime] | None,
    until: datetime,
    reason: str,
    reference: str,
    empty: bool = False,
) -> None:
    """Raise StorageError naming what is wrong with a hold about to be placed. `empty`: it may name nothing."""
    if until.tzinfo is None:
        raise StorageError("hold 'until' must be a timezone-aware datetime")
    if until <= now:
        raise StorageError(f"hold 'until' {rfc3339(until)} is not in the future (now {rfc3339(now)})")
    if not reason or not reason.strip():
        raise StorageError("a hold needs a reason")
    if not reference or not reference.strip():
        raise StorageError("a hold needs a reference (warrant or case number)")
    if not empty and not clip_ids and window is None:
        raise StorageError("a hold needs clip_ids, a window, or both")
    if cameras is not None and window is None:
        raise StorageError("cameras only narrow a window hold; give a window")
    if cameras is not None and not list(cameras):
        raise StorageError("cameras is empty; leave it out to cover every camera")
    if window is not None:
        if window[0].tzinfo is None or window[1].tzinfo is None:
            raise StorageError("hold window bounds must be timezone-aware datetimes")
        if window[0] >= window[1]:
            raise StorageError(f"hold window start {rfc3339(window[0])} is not before its end")


def insert_hold(
    db: sqlite3.Connection,
    s: str,
    hold_id: str,
    created: datetime,
    *,
    clip_ids: Iterable[str] | None,
    cameras: Iterable[str] | None,
    window: tuple[datetime, datetime] | None,
    until: datetime,
    reason: str,
    reference: str,
) -> None:
    """Write one checked hold into the hold tables of schema `s`, inside the caller's transaction."""
    db.execute(
        f"INSERT INTO {s}.holds (id, created_us, until_us, reason, reference, all_cameras, window_start_us, "
        "window_end_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (hold_id, to_us(created), to_us(until), reason, reference, int(cameras is None),
         to_us(window[0]) if window else None, to_us(window[1]) if window else None),
    )
    db.executemany(f"INSERT INTO {s}.hold_clips VALUES (?, ?)", [(hold_id, c) for c in dict.fromkeys(clip_ids or [])])
    db.executemany(f"INSERT INTO {s}.hold_cameras VALUES (?, ?)", [(hold_id, c) for c in dict.fromkeys(cameras or [])])


def new_hold_id(empty: bool = False) -> str:
    return (EMPTY_PREFIX + secrets.token_hex(4)) if empty else ("hold-" + secrets.token_hex(8))


class HoldStore:
    """Every legal hold of the device, in one file that losing the clip index cannot take with it. Safe from
    several threads and processes (SQLite WAL, one connection per call). Opening it the first time moves the
    holds older versions kept in the clip index and the request store into it (edge.recording.holds_move); a
    move that fails is noted in move_problem and tried again by every later call. A hold file that cannot be
    read, or is gone, is a StorageError naming it (never made again, empty); problem() says why."""

    def __init__(
        self, state_dir: Path, clock: Clock | None = None, time_guard: TimeGuard | None = None, *,
        readonly: bool = False,
    ) -> None:
        from edge.recording.holds_move import ensure_moved

        self.state_dir = Path(state_dir)
        self.path = StateLayout.of(self.state_dir).holds
        self.clock = clock or SystemClock()
        if time_guard is None:
            from edge.service.timesync import FileTimeGuard

            time_guard = FileTimeGuard(self.state_dir, self.clock)
        self.time_guard = time_guard  # holds are judged at its hold_time() (docs/time.md)
        # Read only: a read-only mount, a state dir not made yet, or a caller that must change nothing.
        self.readonly = readonly or not self.state_dir.exists() or is_read_only(self.state_dir)
        self.move_problem: str | None = None  # why the first move failed (retried by every later open and check)
        if not self.readonly:
            try:
                ensure_moved(self.state_dir, self.clock)
            except StorageError as exc:  # the daemon runs on; retention deletes nothing until it works (problem())
                self.move_problem = str(exc)

    def problem(self) -> str | None:
        """Why the holds cannot be read now, or None: the move of the old holds failed (tried again here), the
        hold file was lost after the move, or SQLite finds it damaged (its quick_check). While there is one,
        retention deletes nothing and no hold can be placed (docs/recording.md, Legal holds)."""
        from edge.recording.holds_move import ensure_moved, lost_message

        try:
            if not self.readonly:
                ensure_moved(self.state_dir, self.clock)
                self.move_problem = None
            elif not self.path.exists():
                moved = StateLayout.of(self.state_dir).holds_moved.exists()
                return lost_message(self.path) if moved else None  # None: an older version's state dir
            db = connect_readonly(self.path)
            try:
                result = db.execute("PRAGMA quick_check").fetchone()
                tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            finally:
                db.close()
        except StorageError as exc:
            return str(exc)
        except sqlite3.Error as exc:
            return f"the hold store {self.path} cannot be read: {exc}"
        if result is None or result[0] != "ok":
            return f"the hold store {self.path} is damaged: {result[0] if result else 'no answer'}"
        if not {"holds", "hold_clips", "hold_cameras"} <= tables:
            return f"the hold store {self.path} has no hold tables (replaced by an empty file?)"
        return None

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        from edge.recording.holds_move import ensure_moved, fill, lost_message

        if not self.path.exists():
            if not self.readonly:
                ensure_moved(self.state_dir, self.clock)  # StorageError: not movable yet, or lost
            elif StateLayout.of(self.state_dir).holds_moved.exists():
                raise StorageError(lost_message(self.path))
        try:
            if not self.readonly:
                # mode=rw: a hold file deleted under a running daemon is never silently made again, empty
                db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=rw", uri=True, timeout=30,
                                     isolation_level=None)
                db.execute("PRAGMA synchronous=FULL")
            elif self.path.exists():
                db = connect_readonly(self.path)
            else:  # a read-only state dir of an older version: its holds, read where that version kept them
                db = sqlite3.connect(":memory:", isolation_level=None)
                db.executescript(schema("main"))
                fill(db, "main", self.state_dir, self.clock.now())
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the hold store {self.path}: {exc}") from exc
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            yield db
        except sqlite3.Error as exc:
            raise StorageError(f"hold store {self.path}: {exc}") from exc
        finally:
            db.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        if self.readonly:
            raise StorageError(f"hold store {self.path} is on a read-only file system: no hold can change")
        with self._connect() as db, immediate(db):
            yield db

    def hold_now(self) -> datetime:
        """The time holds are judged at: the wall clock, except during a clock-jump grace period (docs/time.md)."""
        return self.time_guard.hold_time()

    def place(
        self,
        *,
        clip_ids: builtins.list[str] | None = None,
        cameras: builtins.list[str] | None = None,
        window: tuple[datetime, datetime] | None = None,
        until: datetime,
        reason: str,
        reference: str,
        empty: bool = False,
        within: tuple[sqlite3.Connection, str] | None = None,
    ) -> str:
        """Place a hold without checking its clips exist (ClipStore.hold checks them, `within` its transaction:
        a connection with the hold tables under the given schema name); `empty`: a hold naming no clip and no
        window (a preservation request with nothing in its window: it keeps only its time). Returns its id
        (starting "none-" when empty)."""
        now = self.clock.now()
        check_hold(now, clip_ids=clip_ids, cameras=cameras, window=window, until=until, reason=reason,
                   reference=reference, empty=empty)
        hold_id = new_hold_id(empty and not clip_ids and window is None)
        with contextlib.nullcontext(within[0]) if within else self._write() as db:
            insert_hold(db, within[1] if within else "main", hold_id, now, clip_ids=clip_ids, cameras=cameras,
                        window=window, until=until, reason=reason, reference=reference)
        log.info("hold %s placed until %s (reference %s)", hold_id, rfc3339(until), reference)
        return hold_id

    def release(self, hold_id: str) -> None:
        """End a hold now (idempotent); UnknownHold when there is no such hold."""
        with self._write() as db:
            row = db.execute("SELECT released_us FROM holds WHERE id = ?", (hold_id,)).fetchone()
            if row is None:
                raise UnknownHold(f"no hold with id {hold_id!r}")
            if row[0] is None:
                db.execute("UPDATE holds SET released_us = ? WHERE id = ?", (to_us(self.clock.now()), hold_id))
        log.info("hold %s released", hold_id)

    def holds(self, ids: Iterable[str] | None = None) -> builtins.list[Hold]:
        """Every hold (or those with these ids), oldest first; `active` judged at hold_now()."""
        now = to_us(self.hold_now())
        with self._connect() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM holds ORDER BY created_us, id").fetchall()
            clips = db.execute("SELECT hold_id, clip_id FROM hold_clips ORDER BY clip_id").fetchall()
            cams = db.execute("SELECT hold_id, camera FROM hold_cameras ORDER BY camera").fetchall()
        wanted = None if ids is None else set(ids)
        out = []
        for hid, created, until, reason, ref, all_cams, ws, we, released, expired in rows:
            if wanted is not None and hid not in wanted:
                continue
            out.append(Hold(
                id=hid, created=from_us(created), until=from_us(until), reason=reason, reference=ref,
                clip_ids=tuple(c for h, c in clips if h == hid),
                cameras=None if all_cams else tuple(c for h, c in cams if h == hid),
                window=(from_us(ws), from_us(we)) if ws is not None else None,
                released=from_us(released) if released is not None else None,
                expired=from_us(expired) if expired is not None else None,
                active=released is None and until > now,
            ))
        return out

    def expire_holds(self) -> builtins.list[str]:
        """The one expiry sweep: mark holds whose `until` has passed as expired; returns their ids. During a
        clock-jump grace period holds are judged at the frozen pre-jump time, so none expires (docs/time.md).
        The recorder's sweeper and the footage desk's sweep both run it; the desk then audits each request's
        hold that ended."""
        if self.readonly:
            return []
        now = to_us(self.hold_now())
        with self._write() as db:
            ids = [r[0] for r in db.execute(
                "SELECT id FROM holds WHERE released_us IS NULL AND expired_us IS NULL AND until_us <= ? ORDER BY id",
                (now,))]
            db.executemany("UPDATE holds SET expired_us = ? WHERE id = ?", [(now, i) for i in ids])
        for hid in ids:
            log.info("hold %s expired", hid)
        return ids
