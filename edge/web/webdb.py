"""The owner's page's SQLite file (<state_dir>/web/web.db): its schema, one connection per use, and what happens
when the file is lost or damaged (an SD card fails, someone deletes it while the daemon runs): the damaged file
is moved aside, a fresh empty store takes its place, and whoever listens (the page) is told."""

from __future__ import annotations

import contextlib
import logging
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from edge.sqlitetx import immediate, is_corrupt, set_aside

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
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS drafts (
    user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE, request TEXT NOT NULL, action TEXT NOT NULL,
    clips TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (user, request));
"""
# sessions' columns added since the first web.db: a session ended by a timeout (kept for its draft), and the boot
# and monotonic times that a step of the wall clock cannot move
ADDED_COLUMNS = (("ended", "REAL"), ("boot", "TEXT"), ("mono_created", "REAL"), ("mono_seen", "REAL"))
COMPANIONS = ("-journal", "-wal", "-shm")  # SQLite's files beside the database: they belong to the old file
# The wall clock may step (wrong at boot, set later): a time stored more than this ahead of now was written
# before the clock stepped back, and is not trusted to say how long ago it was.
CLOCK_SLACK_S = 60.0


class StoreReset(Exception):
    """web.db was lost or damaged and a fresh, empty store took its place while this request ran: the page
    answers it with the setup page (no account exists any more)."""


@dataclass(frozen=True)
class Reset:
    """What happened to web.db: `missing` (deleted), `damaged` (not a database, or malformed: moved aside to
    `kept`), `emptied` (a database without the page's tables: moved aside unless it is 0 bytes), `replaced`
    (another sound store under the name, e.g. made by `web setup-code` after the old one was removed)."""

    why: str
    kept: Path | None
    detail: str


def damage_of(exc: sqlite3.Error) -> str | None:
    """Which kind of loss an SQLite error means (None: not a loss, e.g. a busy database or a full disk)."""
    if is_corrupt(exc):
        return "damaged"
    if getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_CANTOPEN:
        return "missing"
    if str(exc).startswith("no such table"):
        return "emptied"
    return None


class _Replaced(Exception):
    """The file under web.db is a sound store, but not the one this process opened."""


class WebDB:
    """One connection per use (the page's handlers run in a thread pool). Each use checks the file is there and
    is the store this process opened: a random id written at creation (meta.store), because a file made anew
    can get the old one's inode number. Any loss found then or by SQLite resets the store and raises StoreReset.
    `now` (wall-clock seconds) names the moved-aside file."""

    def __init__(self, path: Path, now: Callable[[], float]) -> None:
        self.path = path
        self.now = now
        self._lock = threading.Lock()
        self._identity: str | None = None  # meta.store of the file this process uses
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
        seen = self._identity
        if not self.path.exists():
            self._lost(seen, "missing", None)
            raise StoreReset("web.db is missing")
        try:
            db = sqlite3.connect(f"file:{self.path}?mode=rw", uri=True, timeout=10, isolation_level=None)
        except sqlite3.OperationalError as exc:  # gone between the check and the open
            self._lost(seen, "missing", exc)
            raise StoreReset(str(exc)) from exc
        try:
            db.execute("PRAGMA foreign_keys = ON")
            with immediate(db):
                store = db.execute("SELECT value FROM meta WHERE key = 'store'").fetchone()
                if store is None or store[0] != seen:
                    raise _Replaced()
                yield db
        except _Replaced:
            db.close()
            self._adopt(seen)
            raise StoreReset("web.db was replaced") from None
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
            if self.path.stat().st_size == 0:  # SQLite's empty database: nothing to keep
                self._create()
                return
            try:
                self._create(check=True)
            except sqlite3.DatabaseError as exc:
                why = damage_of(exc) or "damaged"
                self._replace(why, exc)

    def _adopt(self, seen: str | None) -> None:
        """Another file now has the name (the CLI made a fresh one, or a backup was put back): use it when it is
        a sound store, otherwise treat it as damaged."""
        with self._lock:
            if self._identity != seen:
                return  # another thread adopted it already
            try:
                self._create(check=True)
            except sqlite3.DatabaseError as exc:
                self._replace(damage_of(exc) or "damaged", exc)
                return
            self._announce(Reset("replaced", None, "another file took web.db's place"))

    def _lost(self, seen: str | None, why: str, exc: BaseException | None) -> None:
        with self._lock:
            if self._identity != seen:
                return  # another thread reset the store since this one looked
            self._replace(why, exc)

    def _replace(self, why: str, exc: BaseException | None) -> None:
        """Move the lost or damaged file aside (kept for the owner, never deleted), start a fresh store, tell."""
        kept = None
        if why == "missing":
            if not self.path.exists():  # nothing to keep, but a stray journal must not be rolled into a new file
                self._set_aside(COMPANIONS)
        elif not (why == "emptied" and self.path.exists() and self.path.stat().st_size == 0):
            kept = self._set_aside(("", *COMPANIONS))
        # (a 0-byte file gets its tables in place: a `web setup-code` making the file right now keeps its code)
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
        """web.db and its companions (the given suffixes) moved aside as web.db.unreadable-<UTC time>[...]."""
        return set_aside(self.path, datetime.fromtimestamp(self.now(), UTC), suffixes)

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
                db.execute("INSERT OR IGNORE INTO meta VALUES ('store', ?)", (secrets.token_hex(16),))
                store = db.execute("SELECT value FROM meta WHERE key = 'store'").fetchone()
        finally:
            db.close()
        self.path.chmod(0o600)
        self._identity = str(store[0])

    def _announce(self, reset: Reset) -> None:
        if not self._listeners:
            self.pending.append(reset)
        for listener in self._listeners:
            try:
                listener(reset)
            except Exception:
                log.exception("web: telling the page that web.db was reset failed")
