"""The owner's page's SQLite file (<state_dir>/web/web.db): its schema, one connection per use, and what happens
when the file is lost or damaged (an SD card fails, someone deletes it while the daemon runs): the damaged file
is moved aside, a fresh empty store takes its place, and whoever listens (the page) is told."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from edge.fsutil import fsync_dir
from edge.sqlitetx import immediate

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, hash TEXT NOT NULL, created_at TEXT NOT NULL,
    password_changed_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    id_hash TEXT PRIMARY KEY, user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    csrf TEXT NOT NULL, created REAL NOT NULL, last_seen REAL NOT NULL, client TEXT NOT NULL, ended REAL,
    boot TEXT, mono_created REAL, mono_seen REAL);
CREATE TABLE IF NOT EXISTS setup_codes (code_hash TEXT PRIMARY KEY, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS login_failures (client TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS login_failures_client ON login_failures(client, at);
CREATE TABLE IF NOT EXISTS drafts (
    user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE, request TEXT NOT NULL, action TEXT NOT NULL,
    clips TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (user, request));
"""
# sessions' columns added since the first web.db: a session ended by a timeout (kept for its draft), and the boot
# and monotonic times that a step of the wall clock cannot move
ADDED_COLUMNS = (("ended", "REAL"), ("boot", "TEXT"), ("mono_created", "REAL"), ("mono_seen", "REAL"))
COMPANIONS = ("-journal", "-wal", "-shm")  # SQLite's files beside the database: they belong to the old file
DAMAGED = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
# The wall clock may step (wrong at boot, set later): a time stored more than this ahead of now was written
# before the clock stepped back, and is not trusted to say how long ago it was.
CLOCK_SLACK_S = 60.0


class StoreReset(Exception):
    """web.db was lost or damaged and a fresh, empty store took its place while this request ran: the page
    answers it with the setup page (no account exists any more)."""


@dataclass(frozen=True)
class Reset:
    """What happened to web.db: `missing` (deleted), `damaged` (not a database, or malformed: moved aside to
    `kept`), `emptied` (a database without the page's tables), `replaced` (another file under the same name, e.g.
    made by `web setup-code` after the old one was removed)."""

    why: str
    kept: Path | None
    detail: str


def damage_of(exc: sqlite3.Error) -> str | None:
    """Which kind of loss an SQLite error means (None: not a loss, e.g. a busy database or a full disk)."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code in DAMAGED:
        return "damaged"
    if code == sqlite3.SQLITE_CANTOPEN:
        return "missing"
    if str(exc).startswith("no such table"):
        return "emptied"
    return None


class WebDB:
    """One connection per use (the page's handlers run in a thread pool). Before each use the file is checked to
    be the one the store opened (same device and inode); any loss found then or by SQLite resets the store and
    raises StoreReset. `now` (wall-clock seconds) names the moved-aside file."""

    def __init__(self, path: Path, now: Callable[[], float]) -> None:
        self.path = path
        self.now = now
        self._lock = threading.Lock()
        self._identity: tuple[int, int] | None = None
        self._listeners: list[Callable[[Reset], None]] = []
        self.pending: list[Reset] = []  # resets nobody listened to yet (at start: replayed to the first listener)
        self._start()

    def listen(self, listener: Callable[[Reset], None]) -> None:
        """Call `listener` on every reset from now on, and at once for any that happened before."""
        self._listeners.append(listener)
        pending, self.pending = self.pending, []
        for reset in pending:
            listener(reset)

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """One write transaction on the store (StoreReset when the file turned out lost or damaged)."""
        seen = self._check_file()
        try:
            db = sqlite3.connect(f"file:{self.path}?mode=rw", uri=True, timeout=10, isolation_level=None)
        except sqlite3.OperationalError as exc:  # gone between the check and the open
            self._lost(seen, "missing", exc)
            raise StoreReset(str(exc)) from exc
        try:
            db.execute("PRAGMA foreign_keys = ON")
            with immediate(db):
                yield db
        except sqlite3.DatabaseError as exc:
            cause = exc.__context__  # a failed ROLLBACK may hide the error that said the file is damaged
            why = damage_of(exc) or (damage_of(cause) if isinstance(cause, sqlite3.Error) else None)
            if why is None:
                raise
            db.close()
            self._lost(seen, why, exc)
            raise StoreReset(str(exc)) from exc
        finally:
            db.close()
        with contextlib.suppress(OSError):
            self.path.chmod(0o600)

    # --- checks and resets --------------------------------------------------------------------------------

    def _start(self) -> None:
        """At start: a missing file is a fresh store (first start, or removed on purpose while stopped); a file
        SQLite calls damaged (quick_check included: it finds a truncated file) is moved aside first."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._lock:
            if not self.path.exists():
                self._set_aside(COMPANIONS)  # a stray journal must not be rolled into the new file
                self._create()
                return
            try:
                self._create(check=True)
            except sqlite3.DatabaseError as exc:
                why = damage_of(exc) or "damaged"
                self._replace(why, exc)

    def _check_file(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            seen = self._identity
            self._lost(seen, "missing", None)
            raise StoreReset("web.db is missing") from None
        identity = (st.st_dev, st.st_ino)
        if identity != self._identity:
            self._adopt(identity)
            raise StoreReset("web.db was replaced")
        return identity

    def _adopt(self, identity: tuple[int, int]) -> None:
        """Another file now has the name (the CLI made a fresh one, or a backup was put back): use it when it is
        a sound store, otherwise treat it as damaged."""
        with self._lock:
            if self._identity == identity:
                return  # another thread adopted it already
            try:
                self._create(check=True)
            except sqlite3.DatabaseError as exc:
                self._replace(damage_of(exc) or "damaged", exc)
                return
            self._announce(Reset("replaced", None, "another file took web.db's place"))

    def _lost(self, seen: tuple[int, int] | None, why: str, exc: BaseException | None) -> None:
        with self._lock:
            if self._identity != seen:
                return  # another thread reset the store since this one looked
            self._replace(why, exc)

    def _replace(self, why: str, exc: BaseException | None) -> None:
        """Move the lost or damaged file aside (kept for the owner, never deleted), start a fresh store, tell."""
        # a missing file leaves nothing to keep, but a stray journal must not be rolled into the new file
        kept = self._set_aside(COMPANIONS if why == "missing" else ("", *COMPANIONS))
        self._create()
        detail = str(exc) if exc is not None else "the file is gone"
        if kept is not None:
            log.error("web: %s is %s (%s); moved aside to %s; the page's accounts and sessions are reset: run "
                      "`doorbell-edge web setup-code` to set the owner up again", self.path, why, detail, kept.name)
        else:
            log.error("web: %s is %s (%s); a fresh one was made; the page's accounts and sessions are reset: run "
                      "`doorbell-edge web setup-code` to set the owner up again", self.path, why, detail)
        self._announce(Reset(why, kept, detail))

    def _set_aside(self, suffixes: tuple[str, ...]) -> Path | None:
        """Rename web.db and its companions (the given suffixes) to web.db.unreadable-<UTC time>[...] (the name the
        clip index uses too); returns the new name of web.db itself when it was there."""
        stamp = datetime.fromtimestamp(self.now(), UTC).strftime("%Y%m%dT%H%M%SZ")
        base = self.path.with_name(f"{self.path.name}.unreadable-{stamp}")
        n = 1
        while any(Path(f"{base}{s}").exists() for s in ("", *COMPANIONS)):
            n += 1
            base = self.path.with_name(f"{self.path.name}.unreadable-{stamp}-{n}")
        kept = None
        for suffix in suffixes:
            source = Path(f"{self.path}{suffix}")
            with contextlib.suppress(FileNotFoundError):
                os.replace(source, f"{base}{suffix}")
                if suffix == "":
                    kept = base
        with contextlib.suppress(OSError):
            fsync_dir(self.path.parent)
        return kept

    def _create(self, check: bool = False) -> None:
        """The schema (in one transaction, so a reader never sees half of it), the columns added since the first
        version, 0600; check: run quick_check first (DatabaseError when the file is not sound)."""
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        try:
            if check:
                found = db.execute("PRAGMA quick_check").fetchall()
                if found != [("ok",)]:
                    raise sqlite3.DatabaseError(f"quick_check: {found[:3]}")
            with immediate(db):
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                columns = {row[1] for row in db.execute("PRAGMA table_info(sessions)")}
                for column, kind in ADDED_COLUMNS:  # a web.db from before these existed
                    if column not in columns:
                        db.execute(f"ALTER TABLE sessions ADD COLUMN {column} {kind}")
        finally:
            db.close()
        self.path.chmod(0o600)
        st = os.stat(self.path)
        self._identity = (st.st_dev, st.st_ino)

    def _announce(self, reset: Reset) -> None:
        if not self._listeners:
            self.pending.append(reset)
        for listener in self._listeners:
            try:
                listener(reset)
            except Exception:
                log.exception("web: telling the page that web.db was reset failed")
