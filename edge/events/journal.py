"""The event journal, the device's own history: one SQLite (WAL) file that numbers and keeps every event for
`events.keep_days` (at most `events.max_events`), with each consumer's delivery marks (the MQTT publisher is one).

An event is stored with a `waiting` row per registered consumer in the same transaction that gives it its seq; the
consumer deletes its row once the event is delivered (the broker's PUBACK), or its queue limits drop it (logged,
counted and remembered as `undelivered`). History retention never removes an event a consumer still waits for.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from edge import layout
from edge.clock import Clock, SystemClock, synchronized
from edge.diskfaults import SpaceReserve, with_reserve
from edge.errors import StorageError
from edge.events.bus import Event
from edge.events.guard import check_event, event_payload
from edge.events.journal_schema import (
    MQTT,
    Stored,
    create_private,
    read_history,
    upgrade,
)

log = logging.getLogger(__name__)

JOURNAL_FILE = layout.EVENTS_JOURNAL  # edge.layout's names, kept for the tests that import them here
OLD_OUTBOX_FILE = layout.OLD_OUTBOX  # the outbox before the journal (schema 1), migrated on first open
# Every journal file keeps delivery marks for these consumers from its first event on, whichever process records
# (a CLI command too), so the daemon sends what was recorded while it was down or while MQTT was off.
CONSUMERS = (MQTT,)
AGE_EVERY_S = 60.0  # age the history at most this often while recording (and on every expire())

# Drop classes of a consumer's queue, lowest dropped first when it is full. Motion is cheap to lose (the next
# motion says the same); a ring, a face or a footage request is what the owner cares about, so it goes last and
# never for age.
DROP_FIRST, DROP_NEXT, KEEP = 0, 1, 2
_CLASSES = {"motion_start": DROP_FIRST, "motion_end": DROP_FIRST, "person": DROP_NEXT, "system": DROP_NEXT}

# Kinds with their own share of a queue: what the owner must hear about a footage request or the device itself
# (camera lost, recording paused) must survive a flood of rings or motion while the broker is away.
RESERVED_KINDS = ("footage_request", "system")
_RESERVED_SQL = "type IN (" + ", ".join(f"'{kind}'" for kind in RESERVED_KINDS) + ")"


def drop_class(event_type: str) -> int:
    return _CLASSES.get(event_type, KEEP)


@dataclass(frozen=True)
class QueueBounds:
    """A consumer's queue: what waits for it while it cannot deliver (the MQTT broker is away)."""

    max_events: int = 10000
    max_age_s: float = 72 * 3600.0
    # Of max_events, this many are kept for RESERVED_KINDS: other kinds never evict them, however many arrive;
    # other kinds may use the room while the reserved kinds do not.
    reserved_events: int = 1000


@dataclass(frozen=True)
class HistoryBounds:
    keep_days: float = 30.0
    max_events: int = 100000


@dataclass(frozen=True)
class Pending:
    """An event waiting for a consumer, already in its wire form."""

    seq: int
    id: str
    type: str
    payload: str
    ts: float  # when it happened, epoch seconds
    fed: bool = False  # the consumer's own mark (MQTT: already given to Home Assistant's doorbell feed)


@dataclass(frozen=True)
class QueueStats:
    waiting: int
    dropped: int
    last_seq: int


class EventJournal:
    """Strictly increasing per-device `seq`, persisted, safe across processes (every write is BEGIN IMMEDIATE).

    Another process (a CLI command) may record with its own EventJournal on the same file; the daemon's consumers
    pick those rows up on their next poll.
    """

    def __init__(self, path: Path, *, queues: Mapping[str, QueueBounds] | None = None,
                 history: HistoryBounds | None = None, clock: Clock | None = None, in_memory: bool = False) -> None:
        self.path = Path(path)
        self.history_bounds = history or HistoryBounds()
        self._clock: Clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []
        self._next_age = 0.0  # monotonic
        self._unsynced_said = False
        # Released (and the write retried) when the disk is full, so "recording paused" is still recorded.
        self.reserve = SpaceReserve(self.path.parent)
        # in_memory: the state dir is read-only; events are numbered on from the file's last seq and sent,
        # but not durable (see number_from()).
        self.in_memory = in_memory
        try:
            if in_memory:
                self._db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                create_private(self.path)  # events can name people: 0600 before the first byte
                # Autocommit mode: every write below is an explicit BEGIN IMMEDIATE transaction.
                self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed event survives a power cut, not just a crash.
            self._db.execute("PRAGMA synchronous=FULL")
            # Checkpoint every 100 pages (not SQLite's 1000): the WAL then needs ~400 KiB, not 4 MiB, so a
            # full disk's space reserve (edge.diskfaults) lasts for hundreds of events.
            self._db.execute("PRAGMA wal_autocheckpoint=100")
            self._db.execute("PRAGMA busy_timeout=30000")
            with self._write():
                upgrade(self._db, self.path)
                for name in (*CONSUMERS, *(queues or {})):
                    self._db.execute("INSERT OR IGNORE INTO consumers (name) VALUES (?)", (name,))
                consumers = [str(n) for (n,) in self._db.execute("SELECT name FROM consumers ORDER BY name")]
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"event journal {self.path}: cannot open: {exc}") from exc
        self.queues = {name: (queues or {}).get(name, QueueBounds()) for name in consumers}

    # --- recording ----------------------------------------------------------------------------------

    def record(self, event: Event) -> Event:
        """Assign the next seq, store the event and mark it waiting for every consumer, in one transaction; then
        wake the consumers. The privacy guard refuses it first (EventRejected), before any seq is spent."""
        if event.seq is not None:
            raise ValueError(f"event {event.id} already has seq {event.seq}")
        check_event(event)
        event_payload(event)  # refuse unencodable fields before taking the write lock

        def store() -> Event:
            with self._write():
                (last,) = self._db.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
                stamped = replace(event, seq=int(last) + 1)
                ts = stamped.ts.timestamp()
                self._db.execute("UPDATE meta SET value = ? WHERE key = 'last_seq'", (stamped.seq,))
                self._db.execute("INSERT INTO events (seq, id, type, ts, payload) VALUES (?, ?, ?, ?, ?)",
                                 (stamped.seq, stamped.id, stamped.type, ts, event_payload(stamped)))
                for consumer, bounds in self.queues.items():
                    self._db.execute(
                        "INSERT INTO waiting (consumer, seq, id, type, class, ts) VALUES (?, ?, ?, ?, ?, ?)",
                        (consumer, stamped.seq, stamped.id, stamped.type, drop_class(stamped.type), ts))
                    self._enforce_queue(consumer, bounds)
                self._expire(int(stamped.seq or 0), age=self._age_due())
            return stamped

        with self._lock:
            try:
                stamped = with_reserve(self.reserve, f"the event journal ({event.type} event {event.id})", store)
            except sqlite3.Error as exc:
                raise StorageError(f"event journal {self.path}: cannot record {event.type} event {event.id}: "
                                   f"{exc}") from exc
        self._notify()
        return stamped

    def number_from(self, last_seq: int) -> None:
        """Number the next event last_seq + 1 (an in-memory journal going on from a file it cannot write)."""
        with self._lock, self._write():
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'last_seq'", (last_seq,))

    # --- a consumer's side --------------------------------------------------------------------------

    def pending(self, consumer: str, after_seq: int = 0, limit: int = 100) -> list[Pending]:
        """Events waiting for `consumer` with seq > after_seq, in seq order."""
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT w.seq, w.id, w.type, e.payload, w.ts, w.fed FROM waiting w JOIN events e ON e.seq = w.seq "
                    "WHERE w.consumer = ? AND w.seq > ? ORDER BY w.seq LIMIT ?", (consumer, after_seq, limit),
                ).fetchall()
            except sqlite3.Error as exc:
                raise StorageError(f"event journal {self.path}: cannot read: {exc}") from exc
        return [Pending(int(s), str(i), str(t), str(p), float(ts), bool(f)) for s, i, t, p, ts, f in rows]

    def mark_fed(self, consumer: str, event_id: str) -> None:
        """The consumer's own mark on an event still waiting for it (kept until the event is delivered)."""
        with self._lock:
            try:
                with self._write():
                    self._db.execute("UPDATE waiting SET fed = 1 WHERE consumer = ? AND id = ?", (consumer, event_id))
            except sqlite3.Error as exc:
                raise StorageError(f"event journal {self.path}: cannot mark event {event_id} as fed: {exc}") from exc

    def delivered(self, consumer: str, seqs: Iterable[int]) -> int:
        """Mark events delivered to `consumer` (they stay in the history); unknown seqs are ignored."""
        batch = [(consumer, int(s)) for s in seqs]
        if not batch:
            return 0

        def delete() -> int:
            with self._write():
                before = self._db.total_changes
                self._db.executemany("DELETE FROM waiting WHERE consumer = ? AND seq = ?", batch)
                return self._db.total_changes - before

        with self._lock:
            try:
                # A delete needs a little space too (WAL pages); without it sent events would be re-sent forever.
                return with_reserve(self.reserve, "the event journal (delivered events)", delete)
            except sqlite3.Error as exc:
                raise StorageError(f"event journal {self.path}: cannot mark events delivered: {exc}") from exc

    def prune(self, consumer: str) -> int:
        """Drop droppable events older than the consumer's age bound from its queue (logged, counted, remembered
        as undelivered; they stay in the history); returns how many. Ages the history too."""
        bounds = self.queues.get(consumer, QueueBounds())
        cutoff = self._clock.now().timestamp() - bounds.max_age_s
        # Like the history, the queue is not aged on a wall clock that is not synchronised: a clock stepped weeks
        # ahead at boot would otherwise drop every waiting event before anyone noticed the step.
        aging = synchronized(self._clock) is not False
        with self._lock:
            try:
                with self._write():
                    rows = self._db.execute(
                        "SELECT seq, id, type FROM waiting WHERE consumer = ? AND class < ? AND ts < ? ORDER BY seq",
                        (consumer, KEEP, cutoff)).fetchall() if aging else []
                    self._drop(consumer, bounds, rows, "age")
                    (last,) = self._db.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
                    self._expire(int(last), age=self._age_due())
            except sqlite3.Error as exc:
                raise StorageError(f"event journal {self.path}: cannot prune: {exc}") from exc
        return len(rows)

    def stats(self, consumer: str) -> QueueStats:
        with self._lock:
            try:
                (waiting,) = self._db.execute("SELECT count(*) FROM waiting WHERE consumer = ?",
                                              (consumer,)).fetchone()
                (dropped,) = self._db.execute("SELECT coalesce(sum(count), 0) FROM drops WHERE consumer = ?",
                                              (consumer,)).fetchone()
                (last,) = self._db.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
            except sqlite3.Error as exc:
                raise StorageError(f"event journal {self.path}: cannot read: {exc}") from exc
        return QueueStats(int(waiting), int(dropped), int(last))

    def drops(self, consumer: str) -> dict[tuple[str, str], int]:
        """A consumer's dropped-event counters by (reason, type)."""
        with self._lock:
            rows = self._db.execute("SELECT reason, type, count FROM drops WHERE consumer = ?", (consumer,)).fetchall()
        return {(str(r), str(t)): int(c) for r, t, c in rows}

    # --- the history --------------------------------------------------------------------------------

    def history(self, since: datetime | None = None, until: datetime | None = None,
                types: Sequence[str] = (), limit: int = 100, newest: bool = False) -> list[Stored]:
        """See read_history(); from this process's connection."""
        with self._lock:
            try:
                return read_history(self._db, since, until, types, limit, newest)
            except sqlite3.Error as exc:
                raise StorageError(f"event journal {self.path}: cannot read: {exc}") from exc

    def expire(self) -> int:
        """Age the history now (events older than keep_days, beyond max_events); returns how many went."""
        with self._lock:
            try:
                with self._write():
                    (last,) = self._db.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
                    return self._expire(int(last), age=True)
            except sqlite3.Error as exc:
                raise StorageError(f"event journal {self.path}: cannot expire: {exc}") from exc

    # --- lifecycle ----------------------------------------------------------------------------------

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Called (without locks held) after each event this object records."""
        self._listeners.append(listener)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> EventJournal:
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

    def _age_due(self) -> bool:
        now = self._clock.monotonic()
        if now < self._next_age:
            return False
        self._next_age = now + AGE_EVERY_S
        return True

    def _expire(self, last_seq: int, *, age: bool) -> int:
        """Remove from the history what no consumer waits for and is beyond max_events (always) or older than
        keep_days (when `age`, and only while the wall clock is synchronised: a clock stepped years ahead must not
        age the whole history away)."""
        spare = "NOT EXISTS (SELECT 1 FROM waiting w WHERE w.seq = events.seq)"
        before = self._db.total_changes
        self._db.execute(f"DELETE FROM events WHERE seq <= ? AND {spare}",
                         (last_seq - self.history_bounds.max_events,))
        if age:
            if synchronized(self._clock) is False:
                if not self._unsynced_said:
                    self._unsynced_said = True
                    # INFO, not WARNING: every CLI command that records an event would print it; the daemon's clock
                    # watcher already tells the owner (log + system event) that the clock is not synchronised.
                    log.info("event journal: the wall clock is not synchronised; history is not aged by time "
                                "until it is (events.max_events still bounds it)")
            else:
                cutoff = self._clock.now().timestamp() - self.history_bounds.keep_days * 86400.0
                self._db.execute(f"DELETE FROM events WHERE ts < ? AND {spare}", (cutoff,))
        gone = self._db.total_changes - before
        if gone:
            self._db.execute("DELETE FROM undelivered WHERE seq NOT IN (SELECT seq FROM events)")
            log.debug("event journal: %d events aged out of the history", gone)
        return gone

    def _enforce_queue(self, consumer: str, bounds: QueueBounds) -> None:
        (count,) = self._db.execute("SELECT count(*) FROM waiting WHERE consumer = ?", (consumer,)).fetchone()
        excess = int(count) - bounds.max_events
        if excess <= 0:
            return
        # Two pools: the reserved kinds are dropped only for their own volume beyond their quota; every other
        # kind only while the others hold more than the room left to them. Within a pool, lowest class first.
        (reserved,) = self._db.execute(f"SELECT count(*) FROM waiting WHERE consumer = ? AND {_RESERVED_SQL}",
                                       (consumer,)).fetchone()
        others = int(count) - int(reserved)
        others_room = bounds.max_events - min(bounds.reserved_events, bounds.max_events)
        from_others = min(excess, others, max(0, others - others_room))
        rows = self._db.execute(
            f"SELECT seq, id, type FROM waiting WHERE consumer = ? AND NOT {_RESERVED_SQL} ORDER BY class, seq LIMIT ?",
            (consumer, from_others)).fetchall()
        rows += self._db.execute(
            f"SELECT seq, id, type FROM waiting WHERE consumer = ? AND {_RESERVED_SQL} ORDER BY class, seq LIMIT ?",
            (consumer, excess - from_others)).fetchall()
        self._drop(consumer, bounds, rows, "size")

    def _drop(self, consumer: str, bounds: QueueBounds, rows: list[tuple[int, str, str]], reason: str) -> None:
        for seq, event_id, event_type in rows:
            level = logging.ERROR if drop_class(event_type) == KEEP else logging.WARNING
            log.log(level, "%s: dropped %s event seq=%s id=%s (%s bound: %s; it stays in the event history)",
                    consumer, event_type, seq, event_id, reason,
                    bounds.max_events if reason == "size" else f"{bounds.max_age_s:.0f}s")
            self._db.execute("DELETE FROM waiting WHERE consumer = ? AND seq = ?", (consumer, seq))
            self._db.execute("INSERT OR REPLACE INTO undelivered (consumer, seq, reason) VALUES (?, ?, ?)",
                             (consumer, seq, reason))
            self._db.execute(
                "INSERT INTO drops (consumer, reason, type, count) VALUES (?, ?, ?, 1) "
                "ON CONFLICT (consumer, reason, type) DO UPDATE SET count = count + 1",
                (consumer, reason, event_type),
            )

    def _notify(self) -> None:
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:
                log.exception("event journal listener failed")
