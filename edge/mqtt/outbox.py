"""The durable event journal and MQTT outbox: one SQLite (WAL) file; `record` numbers and stores in one transaction."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from edge.clock import Clock, SystemClock
from edge.config import Config
from edge.diskfaults import SpaceReserve, connect_readonly, with_reserve
from edge.errors import StorageError
from edge.events import Event
from edge.mqtt.payload import check_event, event_payload

log = logging.getLogger(__name__)

OUTBOX_FILE = "mqtt-outbox.sqlite3"
SCHEMA_VERSION = 1

# Drop classes, lowest dropped first when the outbox is full. Motion is cheap to lose (the next motion
# says the same); a ring, a face or a footage request is what the owner cares about, so it goes last and
# never for age.
DROP_FIRST, DROP_NEXT, KEEP = 0, 1, 2
_CLASSES = {"motion_start": DROP_FIRST, "motion_end": DROP_FIRST, "person": DROP_NEXT, "system": DROP_NEXT}


def drop_class(event_type: str) -> int:
    return _CLASSES.get(event_type, KEEP)


# Kinds with their own share of the outbox: what the owner must hear about a footage request or the device itself
# (camera lost, recording paused) must survive a flood of rings or motion while the broker is away.
RESERVED_KINDS = ("footage_request", "system")
_RESERVED_SQL = "type IN (" + ", ".join(f"'{kind}'" for kind in RESERVED_KINDS) + ")"


@dataclass(frozen=True)
class OutboxBounds:
    max_events: int = 10000
    max_age_s: float = 72 * 3600.0
    # Of max_events, this many are kept for RESERVED_KINDS: other kinds never evict them, however many arrive;
    # other kinds may use the room while the reserved kinds do not.
    reserved_events: int = 1000


@dataclass(frozen=True)
class Pending:
    """An event waiting for the broker's acknowledgement, already in its wire form."""

    seq: int
    id: str
    type: str
    payload: str
    ts: float  # when it happened, epoch seconds
    fed: bool = False  # already given to Home Assistant's doorbell feed (by this or an earlier process)


@dataclass(frozen=True)
class OutboxStats:
    waiting: int
    dropped: int
    last_seq: int


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('last_seq', 0);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    class INTEGER NOT NULL,
    ts REAL NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_class_seq ON outbox (class, seq);
-- events of the outbox already given to the doorbell feed: a re-sent ring must not ring the phones twice,
-- not even after a restart (rows go when their event leaves the outbox)
CREATE TABLE IF NOT EXISTS fed (id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS drops (
    reason TEXT NOT NULL,
    type TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (reason, type)
);
"""


def outbox_path(config: Config) -> Path:
    return config.state_dir / OUTBOX_FILE


def bounds_for(config: Config) -> OutboxBounds:
    return OutboxBounds(max_events=config.mqtt.outbox_max_events, max_age_s=config.mqtt.outbox_max_age_h * 3600.0,
                        reserved_events=config.mqtt.outbox_reserved_events)


class Outbox:
    """The event Journal: strictly increasing per-device `seq`, persisted, safe across processes.

    Every event is stored before anyone publishes it and removed only when the broker acknowledged it.
    Another process (a CLI command) may append with its own Outbox on the same file; the daemon's publisher
    picks those rows up on its next poll.
    """

    def __init__(self, path: Path, bounds: OutboxBounds | None = None, clock: Clock | None = None, *,
                 in_memory: bool = False) -> None:
        self.path = Path(path)
        self.bounds = bounds or OutboxBounds()
        self._clock: Clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []
        # Released (and the write retried) when the disk is full, so "recording paused" is still recorded.
        self.reserve = SpaceReserve(self.path.parent)
        # in_memory: the state dir is read-only; events are numbered on from the file's last seq and sent,
        # but not durable (see memory_outbox()).
        self.in_memory = in_memory
        try:
            if in_memory:
                self._db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fresh = not self.path.exists()
                # Autocommit mode: every write below is an explicit BEGIN IMMEDIATE transaction.
                self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
                if fresh:
                    os.chmod(self.path, 0o600)  # events can name people
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed event survives a power cut, not just a crash.
            self._db.execute("PRAGMA synchronous=FULL")
            # Checkpoint every 100 pages (not SQLite's 1000): the WAL then needs ~400 KiB, not 4 MiB, so a
            # full disk's space reserve (edge.diskfaults) lasts for hundreds of events.
            self._db.execute("PRAGMA wal_autocheckpoint=100")
            self._db.execute("PRAGMA busy_timeout=30000")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise StorageError(f"outbox {self.path}: schema version {version} is newer than this program "
                                   f"understands ({SCHEMA_VERSION})")
            with self._write():
                for statement in filter(None, (s.strip() for s in _SCHEMA.split(";"))):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"outbox {self.path}: cannot open: {exc}") from exc

    # --- the Journal --------------------------------------------------------------------------------

    def record(self, event: Event) -> Event:
        """Assign the next seq and store the event, in one transaction; then wake the publisher."""
        if event.seq is not None:
            raise ValueError(f"event {event.id} already has seq {event.seq}")
        check_event(event)
        event_payload(event)  # refuse unencodable fields before taking the write lock

        def store() -> Event:
            with self._write():
                (last,) = self._db.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
                stamped = replace(event, seq=int(last) + 1)
                self._db.execute("UPDATE meta SET value = ? WHERE key = 'last_seq'", (stamped.seq,))
                self._db.execute(
                    "INSERT INTO outbox (seq, id, type, class, ts, payload) VALUES (?, ?, ?, ?, ?, ?)",
                    (stamped.seq, stamped.id, stamped.type, drop_class(stamped.type), stamped.ts.timestamp(),
                     event_payload(stamped)),
                )
                self._enforce_size()
            return stamped

        with self._lock:
            try:
                stamped = with_reserve(self.reserve, f"the event journal ({event.type} event {event.id})", store)
            except sqlite3.Error as exc:
                raise StorageError(f"outbox {self.path}: cannot record {event.type} event {event.id}: {exc}") from exc
        self._notify()
        return stamped

    # --- the publisher's side -----------------------------------------------------------------------

    def pending(self, after_seq: int = 0, limit: int = 100) -> list[Pending]:
        """Waiting events with seq > after_seq, in seq order."""
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT o.seq, o.id, o.type, o.payload, o.ts, f.id IS NOT NULL FROM outbox o "
                    "LEFT JOIN fed f ON f.id = o.id WHERE o.seq > ? ORDER BY o.seq LIMIT ?",
                    (after_seq, limit),
                ).fetchall()
            except sqlite3.Error as exc:
                raise StorageError(f"outbox {self.path}: cannot read: {exc}") from exc
        return [Pending(int(s), str(i), str(t), str(p), float(ts), bool(f)) for s, i, t, p, ts, f in rows]

    def mark_fed(self, event_id: str) -> None:
        """Remember that a waiting event went to the doorbell feed (until the event leaves the outbox)."""
        with self._lock:
            try:
                with self._write():
                    self._db.execute("INSERT OR IGNORE INTO fed (id) SELECT id FROM outbox WHERE id = ?", (event_id,))
            except sqlite3.Error as exc:
                raise StorageError(f"outbox {self.path}: cannot mark event {event_id} as fed: {exc}") from exc

    def remove(self, seqs: Iterable[int]) -> int:
        """Forget acknowledged events; unknown seqs (already dropped) are ignored."""
        batch = [(int(s),) for s in seqs]
        if not batch:
            return 0

        def delete() -> int:
            with self._write():
                before = self._db.total_changes
                self._db.executemany("DELETE FROM outbox WHERE seq = ?", batch)
                removed = self._db.total_changes - before
                self._forget_fed()
            return removed

        with self._lock:
            try:
                # A delete needs a little space too (WAL pages); without it sent events would be re-sent forever.
                removed = with_reserve(self.reserve, "the event journal (acknowledged events)", delete)
            except sqlite3.Error as exc:
                raise StorageError(f"outbox {self.path}: cannot remove acknowledged events: {exc}") from exc
        return removed

    def prune(self) -> int:
        """Drop droppable events older than the age bound (logged and counted); returns how many."""
        cutoff = self._clock.now().timestamp() - self.bounds.max_age_s
        with self._lock:
            try:
                with self._write():
                    rows = self._db.execute(
                        "SELECT seq, id, type FROM outbox WHERE class < ? AND ts < ? ORDER BY seq", (KEEP, cutoff)
                    ).fetchall()
                    self._drop(rows, "age")
                    self._forget_fed()
            except sqlite3.Error as exc:
                raise StorageError(f"outbox {self.path}: cannot prune: {exc}") from exc
        return len(rows)

    def stats(self) -> OutboxStats:
        with self._lock:
            try:
                (waiting,) = self._db.execute("SELECT count(*) FROM outbox").fetchone()
                (dropped,) = self._db.execute("SELECT coalesce(sum(count), 0) FROM drops").fetchone()
                (last,) = self._db.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
            except sqlite3.Error as exc:
                raise StorageError(f"outbox {self.path}: cannot read: {exc}") from exc
        return OutboxStats(int(waiting), int(dropped), int(last))

    def drops(self) -> dict[tuple[str, str], int]:
        """Dropped-event counters by (reason, type)."""
        with self._lock:
            rows = self._db.execute("SELECT reason, type, count FROM drops").fetchall()
        return {(str(r), str(t)): int(c) for r, t, c in rows}

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Called (without locks held) after each event this object records."""
        self._listeners.append(listener)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals ----------------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[None]:
        # BEGIN IMMEDIATE takes SQLite's write lock up front, so a reader-turned-writer never deadlocks and
        # two processes never hand out the same seq.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")  # inside: a COMMIT refused for a full disk is rolled back too
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def _enforce_size(self) -> None:
        (count,) = self._db.execute("SELECT count(*) FROM outbox").fetchone()
        excess = int(count) - self.bounds.max_events
        if excess <= 0:
            return
        # Two pools: the reserved kinds are dropped only for their own volume beyond their quota; every other
        # kind only while the others hold more than the room left to them. Within a pool, lowest class first.
        (reserved,) = self._db.execute(f"SELECT count(*) FROM outbox WHERE {_RESERVED_SQL}").fetchone()
        others = int(count) - int(reserved)
        others_room = self.bounds.max_events - min(self.bounds.reserved_events, self.bounds.max_events)
        from_others = min(excess, others, max(0, others - others_room))
        rows = self._db.execute(
            f"SELECT seq, id, type FROM outbox WHERE NOT {_RESERVED_SQL} ORDER BY class, seq LIMIT ?", (from_others,)
        ).fetchall()
        rows += self._db.execute(
            f"SELECT seq, id, type FROM outbox WHERE {_RESERVED_SQL} ORDER BY class, seq LIMIT ?",
            (excess - from_others,),
        ).fetchall()
        self._drop(rows, "size")

    def _forget_fed(self) -> None:
        self._db.execute("DELETE FROM fed WHERE id NOT IN (SELECT id FROM outbox)")

    def _drop(self, rows: list[tuple[int, str, str]], reason: str) -> None:
        for seq, event_id, event_type in rows:
            level = logging.ERROR if drop_class(event_type) == KEEP else logging.WARNING
            log.log(level, "outbox: dropped %s event seq=%s id=%s (%s bound: %s)", event_type, seq, event_id,
                    reason, self.bounds.max_events if reason == "size" else f"{self.bounds.max_age_s:.0f}s")
            self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
            self._db.execute(
                "INSERT INTO drops (reason, type, count) VALUES (?, ?, 1) "
                "ON CONFLICT (reason, type) DO UPDATE SET count = count + 1",
                (reason, event_type),
            )

    def _notify(self) -> None:
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:
                log.exception("outbox listener failed")


def open_outbox(config: Config, clock: Clock | None = None) -> Outbox:
    return Outbox(outbox_path(config), bounds_for(config), clock)


def memory_outbox(config: Config, clock: Clock | None = None) -> Outbox:
    """The journal for a daemon whose state dir is read-only: in memory, numbering on from the last seq the
    file holds (read without writing), so events still reach the broker while the owner fixes the disk.
    Events recorded here are lost on restart, and a later run numbers on from the file's seq again."""
    outbox = Outbox(outbox_path(config), bounds_for(config), clock, in_memory=True)
    last = 0
    if outbox.path.exists():
        try:
            db = connect_readonly(outbox.path)
            try:
                row = db.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
                last = int(row[0]) if row else 0
            finally:
                db.close()
        except sqlite3.Error as exc:
            log.error("outbox %s cannot be read (%s); numbering events from 1", outbox.path, exc)
    with outbox._lock, outbox._write():
        outbox._db.execute("UPDATE meta SET value = ? WHERE key = 'last_seq'", (last,))
    return outbox


def emit(config: Config, event: Event) -> Event:
    """Record an event from a separate process (a CLI command); the daemon's publisher sends it.

    Returns the event with its seq. Raises StorageError when the state directory cannot be used.
    """
    with open_outbox(config) as outbox:
        stamped = outbox.record(event)
    log.info("recorded %s event %s seq=%s for the daemon to publish", stamped.type, stamped.id, stamped.seq)
    return stamped
